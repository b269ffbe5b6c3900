//! A simulated fabric for deterministic simulation of te-proto links.
//!
//! [`Fabric`] holds any number of nodes (each with simulated memory, an
//! [`Arena`], and a te-proto [`Endpoint`], whose [`Registry`] the links
//! are lent) and connections between them.
//! A connection is two te-proto [`Link`]s and two directed byte pipes. The
//! fabric plays the shell for every link, as te-runtime does over TCP:
//! frames and payload spans from `poll_transmit` go into the outgoing pipe
//! (payload bytes read straight from the arena), incoming bytes go to
//! `handle_input`, payloads land straight in the arena where
//! `poll_payload` says, timers fire from `poll_timeout`.
//!
//! Nothing happens by itself: [`Fabric::step`] performs one action chosen
//! at random among those possible now (write a random number of bytes,
//! from 1 up, into a pipe, with a random delivery delay; read a random
//! number of the bytes delivered so far; fire a due timer) and reports
//! what the links said. When nothing is possible, [`Fabric::advance_to`]
//! moves the virtual clock, at most to [`Fabric::next_wakeup`]. Faults are
//! calls: [`Fabric::cut`] resets a connection (both links see the
//! disconnect), [`Fabric::freeze`] stops a node from reading, writing and
//! acting on time for a while (its peers see silence),
//! and [`Fabric::restart`] resets every connection of a node; [`Fabric::close`]
//! closes a link politely. Notifications are taken from the links at once
//! or, as configured, later (so inboxes fill and input stalls). All
//! randomness comes from one [`SimRng`]: the same seed and the same calls
//! give the same run, bit for bit ([`Fabric::digest`]).
//!
//! Every payload access is checked: the span must lie inside the node's
//! arena and inside a region its registry still holds (draining regions
//! count: transfers in flight finish on them). A violation is recorded
//! ([`Fabric::violations`]), never a panic, and the access is skipped.
//! Each access is also reported ([`Report::Access`]) so a model can check
//! more (for example that a read lands only in its own task's span).
//!
//! # Example
//!
//! ```
//! use te_testkit::fabric::{Fabric, FabricConfig, Report};
//! use te_proto::batch::{BatchId, Op, TaskId, TransferRequest};
//! use te_proto::endpoint::{Endpoint, EndpointConfig, Parts};
//! use te_proto::link::{Event, LinkConfig};
//! use te_proto::{Location, Perm, Region, Span};
//!
//! let mut fab = Fabric::new(7, FabricConfig::default());
//! let ep = || Endpoint::new(EndpointConfig::default(), Parts::with_capacity(4, 1, 1, 1));
//! let a = fab.add_node(0x1_0000, 4096, ep()?);
//! let b = fab.add_node(0x2_0000, 4096, ep()?);
//! fab.node_mut(a).ep.register_batch(&[Region::new(0x1_0000, 4096, Location::Cpu, Perm::LOCAL_ONLY)])?;
//! fab.node_mut(b).ep.register_batch(&[Region::new(0x2_0000, 4096, Location::Cpu, Perm::REMOTE_READ)])?;
//! fab.node_mut(b).arena.get_mut(Span::cpu(0x2_0100, 5)).unwrap().copy_from_slice(b"hello");
//!
//! let c = fab.connect(a, b, LinkConfig::new("a")?, LinkConfig::new("b")?)?;
//! let task = TaskId { batch: BatchId::from_u64(1), index: 0 };
//! let read = TransferRequest {
//!     op: Op::Read,
//!     local: Span::cpu(0x1_0000, 5),
//!     segment: 0,
//!     remote_addr: 0x2_0100,
//!     remote_location: None,
//! };
//! fab.link_mut(c, a).unwrap().0.submit(task, &read, None)?;
//!
//! let mut reports = Vec::new();
//! let mut done = None;
//! while done.is_none() {
//!     if !fab.step(&mut reports) {
//!         let t = fab.next_wakeup().expect("something is due");
//!         fab.advance_to(t);
//!     }
//!     for r in reports.drain(..) {
//!         if let Report::Event { event: Event::TaskDone { result, .. }, .. } = r {
//!             done = Some(result);
//!         }
//!     }
//! }
//! assert_eq!(done, Some(Ok(())));
//! assert_eq!(fab.node(a).arena.get(Span::cpu(0x1_0000, 5)), Some(&b"hello"[..]));
//! assert!(fab.violations().is_empty());
//! # Ok::<(), te_proto::Status>(())
//! ```

mod config;
mod io;
mod memory;
mod pipe;
mod report;

use std::time::Duration;

use te_proto::endpoint::{Endpoint, Heap};
use te_proto::link::{Link, LinkConfig};
use te_proto::wire::MAX_CONTROL_LEN;
use te_proto::{Entry, Instant, Registry, Span};

pub use self::config::{FabricConfig, Sabotage};
use self::io::{Action, Conn, EndState};
pub use self::memory::Arena;
use self::pipe::Pipe;
pub use self::report::{ConnFaults, Report, Violation};
use crate::rng::SimRng;

/// The registry type of a simulated node.
pub type SimRegistry = Registry<Box<[Entry]>>;

/// The endpoint of a simulated node: the real te-proto one, on the heap.
pub type SimEndpoint = Endpoint<Heap>;

/// Identifies a node of a [`Fabric`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// Identifies a connection of a [`Fabric`] (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub usize);

/// One simulated process.
pub struct Node {
    /// Its memory.
    pub arena: Arena,
    /// Its endpoint: registration table, batches, per-segment queues.
    pub ep: SimEndpoint,
    frozen_until: Option<Instant>,
}

impl Node {
    /// Its registration table.
    pub fn reg(&self) -> &SimRegistry {
        self.ep.registry()
    }

    /// Whether the node is frozen now.
    pub fn is_frozen(&self) -> bool {
        self.frozen_until.is_some()
    }
}

/// The simulated fabric. See the [module docs](self).
pub struct Fabric {
    cfg: FabricConfig,
    now: Instant,
    rng: SimRng,
    nodes: Vec<Node>,
    /// Boxed: a connection holds two links of some KiB each, which a
    /// growing vector would otherwise move.
    conns: Vec<Box<Conn>>,
    live: Vec<usize>,
    violations: Vec<Violation>,
    sabotaged: bool,
    scratch: Vec<u8>,
    actions: Vec<Action>,
}

impl Fabric {
    /// An empty fabric at virtual time zero whose randomness is fixed by `seed`.
    pub fn new(seed: u64, cfg: FabricConfig) -> Fabric {
        Fabric {
            cfg,
            now: Instant::ZERO,
            rng: SimRng::with_seed(seed),
            nodes: Vec::new(),
            conns: Vec::new(),
            live: Vec::new(),
            violations: Vec::new(),
            sabotaged: false,
            scratch: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The fabric's generator: workloads draw from it too, so one seed
    /// fixes everything.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Contracts broken so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Records a broken contract found outside the fabric (by a model).
    pub fn violation(&mut self, what: String) {
        self.violations.push(Violation { at: self.now, what });
    }

    /// Adds a node with `arena_len` bytes of memory at `base` and the
    /// endpoint `ep` (whose registry its links are lent).
    pub fn add_node(&mut self, base: u64, arena_len: usize, ep: SimEndpoint) -> NodeId {
        self.nodes.push(Node {
            arena: Arena::new(base, arena_len),
            ep,
            frozen_until: None,
        });
        NodeId(self.nodes.len() - 1)
    }

    /// The node `n`.
    pub fn node(&self, n: NodeId) -> &Node {
        &self.nodes[n.0]
    }

    /// The node `n`, to change its memory or registry.
    pub fn node_mut(&mut self, n: NodeId) -> &mut Node {
        &mut self.nodes[n.0]
    }

    /// Opens a connection: `from` connects with `from_cfg`, `to` accepts
    /// with `to_cfg`. `Invalid` for a configuration te-proto refuses.
    pub fn connect(
        &mut self,
        from: NodeId,
        to: NodeId,
        from_cfg: LinkConfig,
        to_cfg: LinkConfig,
    ) -> te_proto::Result<ConnId> {
        let mut nonce = [[0u8; 32]; 2];
        self.rng.fill(&mut nonce[0]);
        self.rng.fill(&mut nonce[1]);
        let a = Link::connect(from_cfg, self.now, nonce[0])?;
        let b = Link::accept(to_cfg, self.now, nonce[1])?;
        let caps = [
            self.rng
                .range(self.cfg.pipe_capacity.0 as u64, self.cfg.pipe_capacity.1 as u64) as usize,
            self.rng
                .range(self.cfg.pipe_capacity.0 as u64, self.cfg.pipe_capacity.1 as u64) as usize,
        ];
        let end = |node: usize, link: Link| EndState {
            node,
            link,
            wbuf: vec![0; MAX_CONTROL_LEN].into_boxed_slice(),
            wpos: 0,
            wlen: 0,
            fresh: false,
            timeout: None,
            payload: None,
            gone: false,
            close_by: None,
            notes_due: 0,
        };
        let frozen = self.nodes[from.0].is_frozen() || self.nodes[to.0].is_frozen();
        self.conns.push(Box::new(Conn {
            ends: [end(from.0, a), end(to.0, b)],
            pipes: [Pipe::new(caps[0].max(1)), Pipe::new(caps[1].max(1))],
            faults: ConnFaults {
                frozen,
                ..ConnFaults::default()
            },
            gone_reported: false,
        }));
        self.live.push(self.conns.len() - 1);
        Ok(ConnId(self.conns.len() - 1))
    }

    /// The link of `node` on connection `c` with that node's endpoint, for
    /// feeding, canceling and notifying; `None` once that end is closed.
    pub fn link_mut(&mut self, c: ConnId, node: NodeId) -> Option<(&mut Link, &mut SimEndpoint)> {
        let conn = self.conns.get_mut(c.0)?;
        let end = conn.ends.iter_mut().find(|e| e.node == node.0 && !e.gone)?;
        end.fresh = false;
        Some((&mut end.link, &mut self.nodes[node.0].ep))
    }

    /// The link of `node` on connection `c`, also after the end closed.
    pub fn link(&self, c: ConnId, node: NodeId) -> Option<&Link> {
        let conn = self.conns.get(c.0)?;
        conn.ends.iter().find(|e| e.node == node.0).map(|e| &e.link)
    }

    /// Whether `node`'s end of connection `c` is still open.
    pub fn is_open(&self, c: ConnId, node: NodeId) -> bool {
        self.conns
            .get(c.0)
            .is_some_and(|conn| conn.ends.iter().any(|e| e.node == node.0 && !e.gone))
    }

    /// The faults that touched connection `c`.
    pub fn faults(&self, c: ConnId) -> ConnFaults {
        self.conns
            .get(c.0)
            .map_or_else(ConnFaults::default, |conn| conn.faults)
    }

    /// The two nodes of connection `c`: connector, acceptor.
    pub fn nodes_of(&self, c: ConnId) -> (NodeId, NodeId) {
        let conn = &self.conns[c.0];
        (NodeId(conn.ends[0].node), NodeId(conn.ends[1].node))
    }

    /// Connections with at least one open end.
    pub fn live_conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.live.iter().map(|&c| ConnId(c))
    }

    /// A one-line description of connection `c`, for traces.
    pub fn describe(&self, c: ConnId) -> String {
        let conn = &self.conns[c.0];
        let mut out = format!("conn {} {:?}:", c.0, conn.faults);
        for (i, e) in conn.ends.iter().enumerate() {
            out += &format!(
                " [node {} {:?} gone {} unsent {} payload {:?} pipe {}/{} next {:?} eof {} timeout {:?} reqs {} tasks {}]",
                e.node,
                e.link.state(),
                e.gone,
                e.wlen - e.wpos,
                e.payload,
                conn.pipes[i].queued(),
                conn.pipes[i].capacity(),
                conn.pipes[i].next_ready().map(Instant::as_nanos),
                conn.pipes[i].eof,
                e.link.poll_timeout().map(Instant::as_nanos),
                e.link.requests_in_flight(),
                e.link.tasks_in_flight(),
            );
        }
        out
    }

    // ---- faults ----

    /// Resets connection `c`: unread bytes are lost and both links see the
    /// disconnect.
    pub fn cut(&mut self, c: ConnId, reports: &mut Vec<Report>) {
        let Some(conn) = self.conns.get_mut(c.0) else {
            return;
        };
        conn.faults.cut = true;
        for i in 0..2 {
            self.drop_end(c.0, i, true, reports);
        }
        self.reap(reports);
    }

    /// Closes `node`'s link on `c` on purpose ([`Link::close`]): its tasks
    /// end `Canceled`, the peer gets a `Goodbye` and ends its own with
    /// `Disconnected`.
    pub fn close(&mut self, c: ConnId, node: NodeId, reports: &mut Vec<Report>) {
        let Some(conn) = self.conns.get_mut(c.0) else {
            return;
        };
        let Some(e) = conn.ends.iter_mut().find(|e| e.node == node.0 && !e.gone) else {
            return;
        };
        conn.faults.closed = true;
        e.link.close(self.nodes[node.0].ep.registry_mut());
        self.drain(c, node, reports);
    }

    /// Freezes node `n` for `d`: it reads, writes and handles timeouts no
    /// more until then (a peer that stops answering).
    pub fn freeze(&mut self, n: NodeId, d: Duration) {
        let until = self.now + d;
        let node = &mut self.nodes[n.0];
        node.frozen_until = Some(node.frozen_until.map_or(until, |t| t.max(until)));
        for &c in &self.live {
            let conn = &mut self.conns[c];
            if conn.ends.iter().any(|e| e.node == n.0) {
                conn.faults.frozen = true;
            }
        }
    }

    /// Thaws every frozen node now.
    pub fn thaw_all(&mut self) {
        for node in &mut self.nodes {
            node.frozen_until = None;
        }
    }

    /// Restarts node `n`: every connection it has is reset (its peers see
    /// the disconnect) and it thaws.
    pub fn restart(&mut self, n: NodeId, reports: &mut Vec<Report>) {
        let mine: Vec<usize> = self
            .live
            .iter()
            .copied()
            .filter(|&c| self.conns[c].ends.iter().any(|e| e.node == n.0))
            .collect();
        for c in mine {
            self.cut(ConnId(c), reports);
        }
        self.nodes[n.0].frozen_until = None;
    }

    // ---- time ----

    /// When something next becomes possible without a new call: a delivery,
    /// a link timer, a thaw, a closing link's grace running out.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |y| y.min(x)));
            }
        };
        for node in &self.nodes {
            at(node.frozen_until);
        }
        for &c in &self.live {
            let conn = &self.conns[c];
            for (i, e) in conn.ends.iter().enumerate() {
                if e.gone || self.nodes[e.node].is_frozen() {
                    continue;
                }
                at(conn.pipes[1 - i].next_ready());
                at(if e.fresh { e.timeout } else { e.link.poll_timeout() });
                at(e.close_by);
            }
        }
        t
    }

    /// Moves the virtual clock to `t` (never backwards) and thaws the nodes
    /// whose freeze has ended.
    pub fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
        for node in &mut self.nodes {
            if node.frozen_until.is_some_and(|u| u <= self.now) {
                node.frozen_until = None;
            }
        }
    }

    // ---- stepping ----

    /// Performs one action chosen at random among those possible now and
    /// appends what happened to `reports`. Returns false when nothing is
    /// possible until the clock moves.
    pub fn step(&mut self, reports: &mut Vec<Report>) -> bool {
        self.collect_actions();
        let Some(k) = self.rng.index(self.actions.len()) else {
            return false;
        };
        match self.actions[k] {
            Action::Write(c, i) => self.write(c, i, reports),
            Action::Read(c, i) => self.read(c, i, reports),
            Action::TakeNote(c, i) => self.take_note(c, i, reports),
            Action::Timer(c, i) => {
                let now = self.now;
                let conn = &mut self.conns[c];
                let e = &mut conn.ends[i];
                if e.close_by.is_some_and(|t| t <= now) {
                    self.drop_end(c, i, false, reports);
                } else {
                    e.link.handle_timeout(now, self.nodes[e.node].ep.registry_mut());
                }
            }
        }
        let (c, i) = match self.actions[k] {
            Action::Write(c, i) | Action::Read(c, i) | Action::Timer(c, i) | Action::TakeNote(c, i) => (c, i),
        };
        self.after_action(c, i, reports);
        self.reap(reports);
        true
    }

    /// Reports the events of `node`'s link on `c` and closes that end if
    /// its link closed: call it after acting on the link directly
    /// (submit, cancel, notify) so what that caused is seen at once.
    pub fn drain(&mut self, c: ConnId, node: NodeId, reports: &mut Vec<Report>) {
        let Some(conn) = self.conns.get(c.0) else { return };
        if let Some(i) = conn.ends.iter().position(|e| e.node == node.0 && !e.gone) {
            self.after_action(c.0, i, reports);
            self.reap(reports);
        }
    }

    /// FNV-1a (over 64-bit words) of the virtual clock and every node's memory: two runs of
    /// the same seed with the same calls end with the same digest.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |w: u64| {
            h ^= w;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        eat(self.now.as_nanos());
        for node in &self.nodes {
            let all = Span::cpu(node.arena.base(), node.arena.len() as u64);
            for chunk in node.arena.get(all).unwrap_or_default().chunks(8) {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                eat(u64::from_le_bytes(w));
            }
        }
        h
    }
}

#[cfg(test)]
mod tests;
