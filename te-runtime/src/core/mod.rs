//! [`EngineCore`]: the whole engine on one thread, driven by a mio poll
//! that belongs to the caller. [`Engine`](crate::Engine) runs one on a
//! thread of its own; a single-threaded mio service embeds one directly.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use te_proto::batch::{BatchSlot, BatchTable, Op, Task, TaskState, TaskStatus, TransferRequest};
use te_proto::link::{Event, Link, LinkConfig, LinkState};
use te_proto::{
    status, BatchId, BatchStatus, Entry, ErrorCode, Instant, Location, Perm, PinKey, Region, Registry,
    Result, Span, Status, TaskId, Unregister,
};
use tracing::{debug, info, warn};

use crate::config::EngineConfig;
use crate::conn::{Conn, Flow, Reg};
use crate::devices::Devices;
use crate::shm::{Path, SameHost};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Finalizing,
    Finalized,
}

/// The engine, single-threaded and IO-driven by the caller's mio poll.
///
/// Sources are registered with tokens `base`, `base + 1`, ...; hand every
/// event whose token [`owns`](Self::owns) says is ours to
/// [`handle_event`](Self::handle_event), sleep at most
/// [`poll_timeout`](Self::poll_timeout), and call
/// [`handle_timeout`](Self::handle_timeout) after every wake-up.
pub struct EngineCore {
    cfg: EngineConfig,
    link_cfg: LinkConfig,
    epoch: std::time::Instant,
    poll: mio::Registry,
    base: usize,
    /// `None` once finalized: new peers are refused at once.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    segment_name: String,
    reg: Reg,
    batches: BatchTable<Box<[BatchSlot]>, Box<[Task]>>,
    conns: Vec<Option<Conn>>,
    segments: Vec<Segment>,
    segment_by_name: HashMap<String, usize>,
    local_pins: HashMap<TaskId, PinKey>,
    batch_notes: HashMap<BatchId, (usize, String, Vec<u8>)>,
    /// The first failure of each batch, with the message that names why.
    batch_errors: HashMap<BatchId, Status>,
    scratch: Scratch,
    inbox: VecDeque<Notification>,
    owned: HashMap<u64, Owned>,
    /// Device drivers: device memory and the copies that reach it.
    devices: Devices,
    /// Engine-owned buffers being freed: unmapped once their region is gone.
    freeing: Vec<u64>,
    phase: Phase,
    same_host: SameHost,
    /// Tasks submitted with a path other than the engine's.
    task_paths: HashMap<TaskId, Path>,
    /// The path of the submission under way, when not the engine's.
    submit_path: Option<Path>,
}

/// Vectors reused by every submission.
#[derive(Default)]
struct Scratch {
    reqs: Vec<TransferRequest>,
    pins: Vec<PinKey>,
    segments: Vec<usize>,
}

fn io_status(what: &str, e: &io::Error) -> Status {
    status!(RuntimeError, "{what}: {e}")
}

/// 32 random bytes from the kernel.
pub(crate) fn random_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    let mut filled = 0;
    while filled < n.len() {
        match rustix::rand::getrandom(&mut n[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    n
}

/// TCP_NODELAY; socket buffers stay under the kernel's autotuning, which
/// measured faster on loopback than fixed 1, 4 or 16 MiB buffers
/// (docs/PERFORMANCE.md).
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

mod batches;
mod memory;
mod notify;
mod segments;

pub use self::batches::Request;
use self::memory::Owned;
pub use self::notify::Notification;
pub use self::segments::SegmentId;
use self::segments::{Segment, SEGMENT_INFO_CAP};

impl EngineCore {
    /// Binds the listen address and registers the listener with `poll`
    /// under token `base`; connections get the tokens after it.
    pub fn new(cfg: EngineConfig, poll: &mio::Registry, base: Token) -> Result<EngineCore> {
        cfg.validate()?;
        let want: SocketAddr = cfg
            .listen
            .to_socket_addrs()
            .map_err(|e| status!(Invalid, "listen address {:?}: {e}", cfg.listen))?
            .next()
            .ok_or_else(|| status!(Invalid, "listen address {:?} resolves to nothing", cfg.listen))?;
        let mut listener =
            TcpListener::bind(want).map_err(|e| status!(RuntimeError, "cannot listen on {want}: {e}"))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| io_status("listener address", &e))?;
        let poll = poll.try_clone().map_err(|e| io_status("mio registry", &e))?;
        poll.register(&mut listener, base, Interest::READABLE)
            .map_err(|e| io_status("register listener", &e))?;
        let segment_name = cfg.segment_name.clone().unwrap_or_else(|| local_addr.to_string());
        let mut link_cfg = cfg.link_config(&segment_name)?;
        // The same-host path copies host memory between processes; device
        // memory goes through the driver's staging, which only TCP does.
        let path = if cfg.location.is_host() {
            cfg.path
        } else {
            if cfg.path == Path::Shm {
                warn!(
                    "same-host path off for {}: it copies host memory only",
                    cfg.location
                );
            }
            Path::Tcp
        };
        let same_host = SameHost::new(path, &mut link_cfg, &poll, base);
        info!(segment = %segment_name, "engine listening on {local_addr}");
        Ok(EngineCore {
            reg: Registry::new(vec![Entry::EMPTY; cfg.max_regions].into_boxed_slice()),
            batches: BatchTable::new(
                vec![BatchSlot::EMPTY; cfg.max_batches].into_boxed_slice(),
                vec![Task::EMPTY; cfg.max_tasks].into_boxed_slice(),
            ),
            link_cfg,
            epoch: std::time::Instant::now(),
            poll,
            base: base.0,
            listener: Some(listener),
            local_addr,
            segment_name,
            conns: Vec::new(),
            segments: Vec::new(),
            segment_by_name: HashMap::new(),
            local_pins: HashMap::new(),
            batch_notes: HashMap::new(),
            batch_errors: HashMap::new(),
            scratch: Scratch::default(),
            inbox: VecDeque::new(),
            owned: HashMap::new(),
            devices: Devices::new(&cfg)?,
            freeing: Vec::new(),
            phase: Phase::Running,
            same_host,
            task_paths: HashMap::new(),
            submit_path: None,
            cfg,
        })
    }

    /// The core's clock (nanoseconds since it started), on which
    /// [`next_deadline`](Self::next_deadline) is given.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    fn check_running(&self) -> Result<()> {
        match self.phase {
            Phase::Running => Ok(()),
            _ => Err(status!(NotReady, "engine {} is finalizing", self.segment_name)),
        }
    }

    /// This engine's segment name.
    pub fn segment_name(&self) -> &str {
        &self.segment_name
    }

    /// The address the engine listens on (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether `token` belongs to this engine.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.base && token.0 <= self.base + self.conns.len()
    }

    // ---- event loop ----

    /// Handles one mio event for a token this engine owns.
    pub fn handle_event(&mut self, event: &mio::event::Event) {
        let t = event.token().0;
        if t == self.base {
            // The listener, and the same-host path's notice that a claim ended.
            self.accept();
            if self.same_host.take_notice() {
                self.poll_claims();
            }
            return;
        }
        let Some(c) = t.checked_sub(self.base + 1) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
            return;
        };
        if conn.connecting {
            if let Ok(Some(e)) | Err(e) = conn.stream.take_error() {
                let why = status!(RuntimeError, "connect to {} failed: {e}", conn.peer_addr);
                warn!("{}", why.message());
                conn.link.abort(why, &mut self.reg);
            } else if conn.stream.peer_addr().is_ok() {
                conn.connecting = false;
            } else if event.is_error() || event.is_write_closed() {
                let why = status!(RuntimeError, "connect to {} failed", conn.peer_addr);
                conn.link.abort(why, &mut self.reg);
            } else {
                return;
            }
        }
        self.service(c);
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    let live = self.conns.iter().filter(|c| c.is_some()).count();
                    if live >= self.cfg.max_connections || self.phase != Phase::Running {
                        warn!(peer = %addr, "refusing connection: {live} connections open");
                        continue;
                    }
                    tune(&stream);
                    let link = match Link::accept(self.link_cfg.clone(), self.now(), random_nonce()) {
                        Ok(l) => l,
                        Err(e) => {
                            warn!("cannot accept {addr}: {e}");
                            continue;
                        }
                    };
                    match self.insert_conn(Conn::new(stream, link, addr, None)) {
                        Ok(c) => {
                            debug!(peer = %addr, "accepted");
                            self.service(c);
                        }
                        Err(e) => warn!("cannot accept {addr}: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Services connection `c`, then unmaps buffers whose last transfer
    /// just ended (a peer's read unpins when its payload is sent).
    fn service(&mut self, c: usize) {
        self.service_conn(c);
        if !self.freeing.is_empty() {
            self.reap_owned();
        }
    }

    /// Reads, reports, hands pending tasks to the link and writes, until
    /// the connection has nothing more to do now; closes it when its link
    /// is closed and flushed.
    fn service_conn(&mut self, c: usize) {
        let now = self.now();
        let grace = self.close_grace();
        for _ in 0..64 {
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return;
            };
            let mut progressed = false;
            if !conn.connecting {
                let failure = match conn.read(now, &mut self.reg, &mut self.devices) {
                    Ok(Flow::Eof) => Some(status!(
                        Disconnected,
                        "connection to {} closed by the peer",
                        conn.peer_addr
                    )),
                    Ok(_) => None,
                    Err(e) => Some(status!(
                        Disconnected,
                        "connection to {} failed: {e}",
                        conn.peer_addr
                    )),
                };
                if let Some(why) = failure {
                    return self.fail_conn(c, why);
                }
                self.same_host.after_read(conn, &self.link_cfg, &mut self.reg);
            }
            progressed |= self.drain_link_events(c);
            self.pump(c);
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return;
            };
            if !conn.connecting {
                if let Err(e) = conn.flush(now, &mut self.reg, &mut self.devices) {
                    let why = status!(Disconnected, "write to {} failed: {e}", conn.peer_addr);
                    return self.fail_conn(c, why);
                }
            }
            progressed |= self.drain_link_events(c);
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return;
            };
            if conn.link.state() == LinkState::Closed {
                if !conn.has_pending_write() {
                    return self.drop_conn(c);
                }
                // The last frames (the Error or Goodbye that says why) get a
                // short grace period; a peer that does not read them is
                // dropped. A peer found silent gets none: it reads nothing.
                let silent = conn
                    .link
                    .close_reason()
                    .is_some_and(|r| r.code() == ErrorCode::Timeout);
                if silent {
                    return self.drop_conn(c);
                }
                if conn.closed_at.is_none() {
                    conn.closed_at = Some(now + grace);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// How long a closed link may wait for its last frames to be written.
    fn close_grace(&self) -> Duration {
        self.cfg.idle_timeout.min(Duration::from_secs(1))
    }

    /// The socket failed: nothing more can be sent or received, so the
    /// connection goes now, failing its tasks with `why`.
    fn fail_conn(&mut self, c: usize, why: Status) {
        if let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) {
            conn.link.abort(why, &mut self.reg);
        }
        self.drop_conn(c);
    }

    fn drop_conn(&mut self, c: usize) {
        let Some(mut conn) = self.conns.get_mut(c).and_then(|c| c.take()) else {
            return;
        };
        // Release everything the link and the socket still hold, then report.
        conn.discard_writes(&mut self.reg);
        conn.link.handle_disconnect(&mut self.reg);
        let _ = self.poll.deregister(&mut conn.stream);
        self.same_host.forget(&conn.shm);
        let mut events = Vec::new();
        while let Some(e) = conn.link.poll_event() {
            events.push(e);
        }
        let seg = conn.segment;
        for e in events {
            self.on_link_event(c, seg, e);
        }
        if let Some(s) = seg {
            if self.segments[s].conn == Some(c) {
                self.segments[s].conn = None;
                let lost = self.segments[s].notes.len();
                if lost > 0 {
                    warn!(
                        "{lost} notifications for {} not sent: connection closed",
                        self.segments[s].name
                    );
                    self.segments[s].notes.clear();
                }
                let why = self.segments[s]
                    .last_error
                    .clone()
                    .unwrap_or_else(|| status!(Disconnected, "connection closed"));
                self.fail_pending(s, &why);
            }
        }
        debug!(peer = %conn.peer_addr, "connection closed");
        self.reap_owned();
    }

    fn drain_link_events(&mut self, c: usize) -> bool {
        let mut any = false;
        loop {
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return any;
            };
            let seg = conn.segment;
            let Some(e) = conn.link.poll_event() else {
                return any;
            };
            any = true;
            self.on_link_event(c, seg, e);
        }
    }

    fn on_link_event(&mut self, c: usize, seg: Option<usize>, e: Event) {
        match e {
            Event::Connected => {
                let now = self.now();
                if let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) {
                    self.same_host.on_connected(conn, &self.link_cfg, now);
                    let peer = conn
                        .link
                        .peer()
                        .map(|p| p.segment_name.to_string())
                        .unwrap_or_default();
                    info!(peer = %peer, addr = %conn.peer_addr, "link established");
                }
            }
            Event::Progress { task, transferred } => {
                let _ = self.batches.set_progress(task, transferred);
            }
            Event::TaskDone { task, result } => {
                let state = match &result {
                    Ok(()) => TaskState::Completed,
                    Err(e) if e.code() == ErrorCode::Canceled => TaskState::Canceled,
                    Err(e) if e.code() == ErrorCode::Timeout => TaskState::Timeout,
                    Err(e) => TaskState::Failed(e.code()),
                };
                if let Err(e) = result {
                    debug!(task = %task, "task failed: {e}");
                    self.batch_errors
                        .entry(task.batch)
                        .or_insert_with(|| status!(=e.code(), "task {}: {}", task.index, e.message()));
                }
                self.finish_task(task, state);
            }
            Event::Notification => self.pull_notifications(c),
            Event::SegmentInfo => {
                let Some(s) = seg else { return };
                let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                    return;
                };
                match conn.link.take_segment_info() {
                    Some(Ok(page)) => {
                        self.segments[s].info.extend(page.regions.iter().copied());
                        if page.more {
                            // The link asks for the next page itself.
                            return;
                        }
                        let info = std::mem::take(&mut self.segments[s].info);
                        self.segments[s].info_result = Some(if page.truncated {
                            Err(status!(
                                NotSupported,
                                "segment {:?} lists more than {SEGMENT_INFO_CAP} regions",
                                self.segments[s].name
                            ))
                        } else {
                            Ok(info)
                        });
                    }
                    Some(Err(e)) => self.segments[s].info_result = Some(Err(e)),
                    None => {}
                }
            }
            Event::Closed(why) => {
                info!("link closed: {why}");
                if let Some(s) = seg {
                    if self.segments[s].info_result.is_none() && !self.segments[s].info.is_empty() {
                        self.segments[s].info_result = Some(Err(why.clone()));
                    }
                    self.segments[s].last_error = Some(why);
                }
            }
        }
    }

    fn pull_notifications(&mut self, c: usize) {
        let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
            return;
        };
        while self.inbox.len() < self.cfg.max_notifications {
            let Some(n) = conn.link.take_notification() else {
                return;
            };
            let from = conn
                .link
                .peer()
                .map(|p| p.segment_name.to_string())
                .unwrap_or_default();
            self.inbox.push_back(Notification {
                from,
                name: n.name.to_string(),
                msg: n.msg.to_vec(),
            });
        }
    }

    /// Hands pending tasks of the connection's segment to its link.
    fn pump(&mut self, c: usize) {
        let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
            return;
        };
        let Some(s) = conn.segment else { return };
        let seg = &mut self.segments[s];
        while let Some((name, msg)) = seg.notes.front() {
            if conn.link.send_notification(name, msg).is_err() {
                break;
            }
            seg.notes.pop_front();
        }
        while conn.link.can_submit() {
            let Some((task, deadline)) = seg.pending.pop_front() else {
                break;
            };
            let Ok(req) = self.batches.request(task) else {
                continue;
            };
            let path = self.task_paths.remove(&task).unwrap_or(self.cfg.path);
            let local_map = match self.local_pins.get(&task).and_then(|p| self.owned.get(&p.base)) {
                Some(Owned::Host(buf)) => buf.mapping(),
                _ => None,
            };
            if let Err(e) = SameHost::submit(conn, path, task, &req, Some(deadline), local_map) {
                self.batch_errors
                    .entry(task.batch)
                    .or_insert_with(|| status!(=e.code(), "task {}: {}", task.index, e.message()));
                let state = TaskState::Failed(e.code());
                let _ = self.batches.finish(task, state);
                if let Some(pin) = self.local_pins.remove(&task) {
                    self.reg.unpin(pin);
                }
            }
        }
    }

    fn fail_pending(&mut self, s: usize, why: &Status) {
        let state = match why.code() {
            ErrorCode::Timeout => TaskState::Timeout,
            ErrorCode::Canceled => TaskState::Canceled,
            code => TaskState::Failed(code),
        };
        while let Some((task, _)) = self.segments[s].pending.pop_front() {
            self.batch_errors
                .entry(task.batch)
                .or_insert_with(|| status!(=why.code(), "task {}: {}", task.index, why.message()));
            self.finish_task(task, state);
        }
    }

    fn finish_task(&mut self, task: TaskId, state: TaskState) {
        let _ = self.batches.finish(task, state);
        self.task_paths.remove(&task);
        if let Some(pin) = self.local_pins.remove(&task) {
            self.reg.unpin(pin);
            if !self.freeing.is_empty() {
                self.reap_owned();
            }
        }
        self.maybe_send_batch_note(task.batch);
    }

    fn maybe_send_batch_note(&mut self, batch: BatchId) {
        let Ok(st) = self.batches.status(batch) else {
            return;
        };
        if st.state == TaskState::Pending {
            return;
        }
        let Some((s, name, msg)) = self.batch_notes.remove(&batch) else {
            return;
        };
        if st.state != TaskState::Completed {
            debug!(
                "batch {batch} ended {:?}: its notification {name:?} is not sent",
                st.state
            );
            return;
        }
        // Queued behind nothing but other notifications: pump() hands it to
        // the link as soon as the link's queue has room.
        self.segments[s].notes.push_back((name, msg));
    }

    /// How long the caller may sleep before [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let now = self.now();
        self.next_deadline().map(|t| t - now)
    }

    /// The earliest deadline of the engine, on its own clock (nanoseconds
    /// since it started): what [`poll_timeout`](Self::poll_timeout) counts down to.
    pub fn next_deadline(&self) -> Option<Instant> {
        let links = self
            .conns
            .iter()
            .flatten()
            .flat_map(|c| [c.link.poll_timeout().or(c.closed_at), c.shm.deadline()])
            .flatten();
        let pending = self
            .segments
            .iter()
            .filter_map(|s| s.pending.front().map(|p| p.1));
        links.chain(pending).min()
    }

    /// Takes the outcome of every claim that has ended and serves those
    /// connections (their tasks may take the same-host path now).
    fn poll_claims(&mut self) {
        for c in 0..self.conns.len() {
            let claimed = match self.conns[c].as_mut() {
                Some(conn) => self.same_host.poll_claim(conn),
                None => false,
            };
            if claimed {
                self.service(c);
            }
        }
    }

    /// Acts on the passing of time: deadlines, heartbeats, silent peers.
    pub fn handle_timeout(&mut self) {
        let now = self.now();
        for c in 0..self.conns.len() {
            let Some(conn) = self.conns[c].as_mut() else {
                continue;
            };
            if conn.closed_at.is_some_and(|t| t <= now) {
                self.drop_conn(c);
                continue;
            }
            conn.shm.expire(now);
            if conn.link.poll_timeout().is_some_and(|t| t <= now) {
                conn.link.handle_timeout(now, &mut self.reg);
                self.service(c);
            }
        }
        for s in 0..self.segments.len() {
            while let Some(&(task, deadline)) = self.segments[s].pending.front() {
                if deadline > now {
                    break;
                }
                self.segments[s].pending.pop_front();
                self.finish_task(task, TaskState::Timeout);
            }
        }
    }

    // ---- shutdown ----

    /// Refuses new work from now on (`NotReady`); work in flight goes on.
    pub fn begin_finalize(&mut self) {
        if self.phase == Phase::Running {
            self.phase = Phase::Finalizing;
        }
    }

    /// Ends everything still running (`Canceled`), says goodbye to every
    /// peer and closes the listener. Idempotent.
    pub fn shutdown(&mut self) {
        self.begin_finalize();
        if self.phase == Phase::Finalized {
            return;
        }
        for s in 0..self.segments.len() {
            self.fail_pending(s, &status!(Canceled, "engine finalized"));
        }
        let now = self.now();
        for c in 0..self.conns.len() {
            if let Some(conn) = self.conns[c].as_mut() {
                conn.link.close(&mut self.reg);
                let _ = conn.flush(now, &mut self.reg, &mut self.devices);
            }
            self.drop_conn(c);
        }
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.deregister(&mut l);
        }
        self.phase = Phase::Finalized;
        info!(segment = %self.segment_name, "engine finalized");
    }

    /// Whether [`shutdown`](Self::shutdown) has run.
    pub fn is_finalized(&self) -> bool {
        self.phase == Phase::Finalized
    }
}

impl Drop for EngineCore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a mapping of this process starts at `addr`.
    fn mapped_at(addr: u64) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        maps.lines().any(|l| l.starts_with(&format!("{addr:x}-")))
    }

    #[test]
    fn engine_memory_freed_while_a_task_uses_it_stays_mapped_until_the_task_ends() {
        let poll = mio::Poll::new().expect("poll");
        let mut core = EngineCore::new(EngineConfig::default(), poll.registry(), Token(0)).expect("core");
        // A peer that never answers the handshake: the task stays pending.
        let quiet = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let seg = core
            .open_segment(&quiet.local_addr().expect("addr").to_string())
            .expect("open");
        let x = core.alloc_memory(1 << 20, Perm::LOCAL_ONLY).expect("alloc");
        let batch = core.alloc_batch(1).expect("batch");
        let req = Request {
            op: Op::Read,
            local: x,
            segment: seg,
            remote: 0x1000,
            len: 1 << 20,
        };
        core.submit(batch, &[req]).expect("submit");
        let r = core.free_memory(x).expect("free");
        assert!(matches!(r, Unregister::Draining { .. }), "{r:?}");
        assert!(core.region_exists(x), "the task still pins the region");
        assert!(mapped_at(x), "unmapped while a task may still write into it");
        // The task ends; then the buffer goes.
        core.cancel_task(TaskId { batch, index: 0 }).expect("cancel");
        core.reap_owned();
        assert!(!core.region_exists(x));
        assert!(!mapped_at(x), "the freed buffer outlived its last task");
    }
}
