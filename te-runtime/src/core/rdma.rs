//! The core's side of the RDMA path (docs/RDMA.md): queue pairs offered
//! and answered as links connect, regions announced to the peers that
//! opened links to this engine, completions handed to the links, and
//! memory regions deregistered once no peer can reach them.

use super::*;
use tracing::error;

impl EngineCore {
    /// A link this engine opened is established: offer the peer a queue
    /// pair when both sides have RDMA.
    pub(super) fn offer_rdma(&mut self, c: usize) {
        let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
            return;
        };
        let both = conn.link.peer().is_some_and(|p| p.caps.contains(Caps::RDMA))
            && self.link_cfg.caps.contains(Caps::RDMA);
        if conn.segment.is_some() && both {
            self.rdma.offer(c, &mut conn.link);
        }
    }

    /// The peer's `RdmaConn` came: answer or connect; on a link the peer
    /// opened, announce the regions it may reach.
    pub(super) fn rdma_exchanged(&mut self, c: usize) {
        let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
            return;
        };
        let up = self.rdma.on_exchange(c, &mut conn.link);
        if conn.segment.is_none() && conn.link.rdma().ready() {
            for k in self.rdma.announcements() {
                announce(&mut conn.link, k);
            }
        }
        if up {
            info!(peer = %conn.peer_addr, "RDMA path up");
        }
    }

    /// Registers host regions just registered with the engine with the
    /// NIC too, lists their rkeys and announces them to the peers whose
    /// links have RDMA.
    pub(super) fn rdma_register(&mut self, regions: &[Region]) {
        if !self.rdma.is_on() {
            return;
        }
        for r in regions.iter().filter(|r| r.span.location.is_host()) {
            let Some(k) = self.rdma.register(r) else {
                continue;
            };
            if let Err(e) = self
                .ep
                .registry_mut()
                .set_rkey(r.span.location, r.span.addr, k.rkey)
            {
                debug!("rkey of {:#x} not listed: {e}", r.span.addr);
            }
            for c in 0..self.conns.len() {
                let Some(conn) = self.conns[c].as_mut() else {
                    continue;
                };
                if conn.segment.is_none() && conn.link.rdma().ready() {
                    announce(&mut conn.link, k);
                    self.service_conn(c);
                }
            }
        }
    }

    /// Region `base` is being unregistered: its announcement is withdrawn
    /// from every peer, and its memory region goes once they answered
    /// ([`reap_rdma`](Self::reap_rdma)).
    pub(super) fn rdma_retire(&mut self, base: u64) {
        let Some(id) = self.rdma.retire(base, self.now()) else {
            return;
        };
        let mut withdrawn = Vec::new();
        for (c, conn) in self.conns.iter_mut().enumerate() {
            if let Some(conn) = conn {
                if conn.link.rdma_mut().withdraw_key(id) {
                    withdrawn.push(c);
                }
            }
        }
        for c in withdrawn {
            self.service_conn(c);
        }
        self.reap_rdma();
    }

    /// Deregisters the memory regions no peer can reach any more; peers
    /// that did not answer a withdrawal in time are waited for no more.
    pub(super) fn reap_rdma(&mut self) {
        let conns = &self.conns;
        let closing = |id: u64| conns.iter().flatten().any(|c| c.link.rdma().key_closing(id));
        let given_up = self.rdma.reap(self.now(), closing);
        for id in given_up {
            for conn in self.conns.iter_mut().flatten() {
                conn.link.rdma_mut().abandon_key(id);
            }
        }
    }

    /// Takes the NIC's completions and hands each to its link.
    pub(super) fn poll_rdma(&mut self) {
        let done = match self.rdma.poll() {
            Ok(done) => done,
            Err(why) => {
                error!("{}: RDMA is off, transfers use TCP", why.message());
                let mut links: Vec<(usize, &mut Link)> = self
                    .conns
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(c, conn)| conn.as_mut().map(|conn| (c, &mut conn.link)))
                    .collect();
                self.rdma.fail(&why, &mut links);
                for c in 0..self.conns.len() {
                    self.service_conn(c);
                }
                self.after_work();
                return;
            }
        };
        let mut touched = Vec::new();
        for f in done {
            let Some(conn) = self.conns.get_mut(f.conn).and_then(|c| c.as_mut()) else {
                continue;
            };
            conn.link.rdma_mut().done(f.task, f.result);
            if !touched.contains(&f.conn) {
                touched.push(f.conn);
            }
        }
        for c in touched {
            if self.rdma.qp_failed(c) {
                if let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) {
                    warn!(peer = %conn.peer_addr, "RDMA queue pair failed: this peer's transfers use TCP from now on");
                    let why = status!(Disconnected, "the RDMA queue pair to {} failed", conn.peer_addr);
                    conn.link.rdma_mut().set_lost(why);
                }
            }
            self.service_conn(c);
        }
        self.after_work();
    }
}

/// Announces region `k` on `link`; a full table leaves the region to TCP.
fn announce(link: &mut Link, k: te_proto::link::RdmaKey) {
    if let Err(e) = link.rdma_mut().announce_key(k) {
        debug!(
            "RDMA region {:#x}+{:#x} not announced, peers reach it over TCP: {e}",
            k.base, k.len
        );
    }
}
