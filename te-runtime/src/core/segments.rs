//! Peer segments: opening, connection state, segment info.

use super::*;

/// Most regions of a peer that [`EngineCore::query_segment_info`] lists
/// (a peer with more is answered `NotSupported`): 2^20, so that a listing
/// holds at most a few tens of MiB while a peer with more regions than the
/// default registration table (65536) is still listed in full.
pub(super) const SEGMENT_INFO_CAP: usize = 1 << 20;

pub(super) struct Segment {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    /// Found through a directory: the peer must announce this name.
    pub(super) named: bool,
    pub(super) conn: Option<usize>,
    /// Notifications waiting for room in the link's queue.
    pub(super) notes: VecDeque<(String, Vec<u8>)>,
    pub(super) info: Vec<Region>,
    pub(super) info_result: Option<Result<Vec<Region>>>,
}

impl EngineCore {
    /// Opens the peer segment `name` (`host:port`) and starts connecting;
    /// an open segment whose connection was lost reconnects.
    pub fn open_segment(&mut self, name: &str) -> Result<SegmentId> {
        self.check_running()?;
        if let Some(&i) = self.segment_by_name.get(name) {
            self.ensure_connection(i)?;
            return Ok(SegmentId(i as u32));
        }
        let addr = name
            .to_socket_addrs()
            .map_err(|e| status!(Invalid, "segment name {name:?} is not host:port: {e}"))?
            .next()
            .ok_or_else(|| status!(Invalid, "segment {name:?} resolves to no address"))?;
        self.open_new_segment(name, addr, false)
    }

    /// Opens the peer segment `name` at `addr`, where a directory says it
    /// runs, and starts connecting; the engine that answers there must call
    /// itself `name`, else the link fails `RuntimeError` (a stale entry). An
    /// open segment whose connection was lost reconnects to `addr`.
    pub fn open_segment_at(&mut self, name: &str, addr: SocketAddr) -> Result<SegmentId> {
        self.check_running()?;
        if let Some(&i) = self.segment_by_name.get(name) {
            let seg = &mut self.segments[i];
            if seg.conn.is_none() {
                seg.addr = addr;
                seg.named = true;
            }
            self.ensure_connection(i)?;
            return Ok(SegmentId(i as u32));
        }
        self.open_new_segment(name, addr, true)
    }

    /// The open segment `name` whose connection is up or being set up.
    pub fn connected_segment(&self, name: &str) -> Option<SegmentId> {
        let &i = self.segment_by_name.get(name)?;
        self.segments[i].conn.map(|_| SegmentId(i as u32))
    }

    fn open_new_segment(&mut self, name: &str, addr: SocketAddr, named: bool) -> Result<SegmentId> {
        // Another name of an open segment (`localhost:P` and `127.0.0.1:P`):
        // the same segment, since te keeps one link per pair of engines.
        // (Not remembered under this name: names are the caller's, unbounded.)
        // A name from a directory is not an alias of another such name: the
        // other's entry may be stale, and the name check tells them apart.
        if let Some(i) = self
            .segments
            .iter()
            .position(|s| s.addr == addr && !(named && s.named))
        {
            self.ensure_connection(i)?;
            return Ok(SegmentId(i as u32));
        }
        let id = self.ep.open_segment(name)?;
        let i = id.0 as usize;
        debug_assert_eq!(i, self.segments.len(), "segment ids are handed out in order");
        self.segments.push(Segment {
            name: name.to_string(),
            addr,
            named,
            conn: None,
            notes: VecDeque::new(),
            info: Vec::new(),
            info_result: None,
        });
        self.segment_by_name.insert(name.to_string(), i);
        self.ensure_connection(i)?;
        Ok(SegmentId(i as u32))
    }

    /// Fails connection `c` when its segment was found through a directory
    /// and the engine that answered has another name: the entry was stale
    /// (its port now someone else's).
    pub(super) fn check_peer_name(&mut self, c: usize) {
        let Some(conn) = self.conns.get(c).and_then(|c| c.as_ref()) else {
            return;
        };
        let (Some(s), Some(peer)) = (conn.segment, conn.link.peer()) else {
            return;
        };
        let seg = &self.segments[s];
        if !seg.named || peer.segment_name.as_str() == seg.name {
            return;
        }
        let why = status!(
            RuntimeError,
            "stale directory entry: {} answers as {}",
            seg.addr,
            Escaped(&peer.segment_name)
        );
        warn!(segment = %Escaped(&seg.name), "{}", why.message());
        self.fail_conn(c, why);
    }

    pub(super) fn segment(&self, id: SegmentId) -> Result<&Segment> {
        self.segments
            .get(id.0 as usize)
            .ok_or_else(|| status!(NotFound, "no open segment with handle {}", id.0))
    }

    /// The state of the segment's connection: `Ok(true)` once the handshake
    /// finished, `Ok(false)` while it runs, the failure otherwise.
    pub fn segment_state(&self, id: SegmentId) -> Result<bool> {
        let seg = self.segment(id)?;
        match seg.conn.and_then(|c| self.conns[c].as_ref()) {
            Some(c) => Ok(c.link.state() == LinkState::Established
                && c.shm.settled(self.now())
                && !c.link.rdma().answer_pending()),
            None => Err(self
                .ep
                .segment_error(id)
                .cloned()
                .unwrap_or_else(|| status!(Disconnected, "segment {} is closed", seg.name))),
        }
    }

    /// The path tasks to this segment take under [`Path::Auto`]: `Shm` once
    /// the peer offered the same-host path and verified this process, else
    /// `Rdma` once both queue pairs are connected, else `Tcp`; for an
    /// engine whose configured path is `Rdma`, `Rdma` once connected.
    /// `Disconnected` when the segment has no connection.
    pub fn segment_path(&self, id: SegmentId) -> Result<Path> {
        let seg = self.segment(id)?;
        match seg.conn.and_then(|c| self.conns[c].as_ref()) {
            Some(c) if self.cfg.path == Path::Rdma && c.link.rdma().available() => Ok(Path::Rdma),
            Some(c) if c.link.same_host().available() => Ok(Path::Shm),
            Some(c) if c.link.rdma().available() => Ok(Path::Rdma),
            Some(_) => Ok(Path::Tcp),
            None => Err(status!(Disconnected, "segment {} is closed", seg.name)),
        }
    }

    /// Closes the segment's connection; its running tasks end `Canceled`.
    pub fn close_segment(&mut self, id: SegmentId) -> Result<()> {
        let seg = self.segment(id)?;
        if let Some(c) = seg.conn {
            if let Some(conn) = self.conns[c].as_mut() {
                conn.link.close(self.ep.registry_mut());
            }
            self.service(c);
        }
        Ok(())
    }

    pub(super) fn ensure_connection(&mut self, i: usize) -> Result<()> {
        let seg = &self.segments[i];
        if seg.conn.is_some() {
            return Ok(());
        }
        let addr = seg.addr;
        let stream =
            TcpStream::connect(addr).map_err(|e| status!(RuntimeError, "connect to {addr} failed: {e}"))?;
        tune(&stream);
        let link = Link::connect(self.link_cfg.clone(), self.now(), random_nonce())?;
        let c = self.insert_conn(Conn::new(stream, link, addr, Some(i), self.cfg.staging_slots))?;
        self.segments[i].conn = Some(c);
        self.ep.link_up(SegmentId(i as u32))?;
        debug!(peer = %addr, "connecting");
        Ok(())
    }

    pub(super) fn insert_conn(&mut self, mut conn: Conn) -> Result<usize> {
        let idx = match self.conns.iter().position(|c| c.is_none()) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.poll
            .register(
                &mut conn.stream,
                Token(self.base + 1 + idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| io_status("register connection", &e))?;
        conn.due = conn.next_due(self.now());
        self.conns[idx] = Some(conn);
        Ok(idx)
    }

    /// Asks the peer for its remotely visible regions; the answer arrives
    /// later, see [`take_segment_info`](Self::take_segment_info).
    pub fn query_segment_info(&mut self, id: SegmentId) -> Result<()> {
        self.check_running()?;
        let i = id.0 as usize;
        self.segment(id)?;
        self.ensure_connection(i)?;
        let seg = &mut self.segments[i];
        seg.info.clear();
        seg.info_result = None;
        let c = seg.conn.unwrap_or(usize::MAX);
        if let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) {
            conn.link.query_segment_info(SEGMENT_INFO_CAP)?;
        }
        self.service(c);
        Ok(())
    }

    /// The answer to [`query_segment_info`](Self::query_segment_info), once complete.
    pub fn take_segment_info(&mut self, id: SegmentId) -> Option<Result<Vec<Region>>> {
        self.segments.get_mut(id.0 as usize)?.info_result.take()
    }
}
