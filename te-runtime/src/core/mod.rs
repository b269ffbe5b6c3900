//! [`EngineCore`]: the whole engine on one thread, driven by a mio poll
//! that belongs to the caller. [`Engine`](crate::Engine) runs one on a
//! thread of its own; a single-threaded mio service embeds one directly.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use te_proto::batch::{TaskState, TaskStatus};
use te_proto::endpoint::{self, Cancel, Endpoint, EndpointConfig, Feed, Heap, NoteOutcome, Parts};
use te_proto::link::{Caps, Event, Link, LinkConfig, LinkState, LocalKey, LocalMap};
use te_proto::text::Escaped;
use te_proto::{
    status, BatchId, BatchStatus, ErrorCode, Instant, Location, Perm, PinKey, Region, Result, Span, Status,
    TaskId, Unregister,
};
use tracing::{debug, info, warn};

use crate::admission::{Admission, RateLog, Verdict};
use crate::config::EngineConfig;
use crate::config::Path;
use crate::conn::{Conn, Flow};
use crate::devices::Devices;
use crate::rdma::Rdma;
use crate::same_host::{ConnShm, SameHost};

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
    /// The rules above the links: registry, batches, per-segment queues.
    ep: Endpoint<Heap>,
    conns: Vec<Option<Conn>>,
    segments: Vec<Segment>,
    segment_by_name: HashMap<String, usize>,
    /// The bytes of batches' notifications, sent when the endpoint says.
    batch_notes: HashMap<BatchId, (String, Vec<u8>)>,
    inbox: VecDeque<Notification>,
    owned: HashMap<u64, Owned>,
    /// Device drivers: device memory and the copies that reach it.
    devices: Devices,
    /// Engine-owned buffers being freed: unmapped once their region is gone.
    freeing: Vec<u64>,
    /// `shutdown` has run.
    finalized: bool,
    same_host: SameHost,
    /// The RDMA device, or why there is none.
    rdma: Rdma,
    /// Who of the accepted connections keeps a slot.
    admission: Admission,
    /// Refused and evicted connections, logged once per source and interval.
    refusals: RateLog,
    /// Peers refused for the shared secret, logged once per peer and interval.
    auth_refusals: RateLog,
    /// The last ticket handed to an accepted link (lineage.rs).
    tickets: u64,
    /// Batches ordered on an application's device stream (streams.rs).
    fenced: HashMap<BatchId, streams::Fenced>,
}

/// ", N more not logged" after a rate-limited line, or nothing.
fn quieted(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last report)")
    }
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
mod lineage;
mod memory;
mod notify;
mod rdma;
mod segments;
mod streams;

use self::memory::Owned;
pub use self::notify::Notification;
use self::segments::{Segment, SEGMENT_INFO_CAP};
pub use te_proto::endpoint::{Request, SegmentId};

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
        let mut devices = Devices::new(&cfg)?;
        let mut link_cfg = cfg.link_config(&segment_name)?;
        // The same-host path copies host memory between processes, and
        // device memory where the driver can share it between processes
        // (ACL IPC); other device memory goes through the driver's staging,
        // which only TCP does.
        let path = if cfg.location.is_host() || devices.ipc(cfg.location) {
            cfg.path
        } else {
            if matches!(cfg.path, Path::Shm | Path::Rdma) {
                warn!(
                    "{} path off for {}, transfers use TCP: its driver cannot share device memory between processes \
                     and the RDMA path registers host memory only",
                    cfg.path,
                    cfg.location
                );
            }
            Path::Tcp
        };
        let same_host = SameHost::new(path, &mut link_cfg, &poll, base);
        let mut rdma = Rdma::open(&cfg.rdma, cfg.transfer_timeout);
        if rdma.is_on() {
            if !cfg.location.is_host() || !matches!(cfg.path, Path::Auto | Path::Rdma) {
                rdma.turn_off(&format!(
                    "not used: the engine's memory is {} and its path {} (RDMA carries host memory on paths auto and rdma)",
                    cfg.location, cfg.path
                ));
            } else if let Some(fd) = rdma.event_fd() {
                // The listener's token: its handler also takes completions.
                match poll.register(&mut mio::unix::SourceFd(&fd), base, Interest::READABLE) {
                    Ok(()) => link_cfg.caps |= Caps::RDMA,
                    Err(e) => rdma.turn_off(&format!("cannot watch the completion channel: {e}")),
                }
            }
        }
        if same_host.enabled() && devices.imports(&cfg) {
            link_cfg.caps |= Caps::DEVICE_IPC;
        }
        info!(segment = %segment_name, "engine listening on {local_addr}");
        let ep_cfg = EndpointConfig {
            location: cfg.location,
            transfer_timeout: cfg.transfer_timeout,
            max_notifications: cfg.max_notifications as u32,
            path: cfg.path,
        };
        let parts = Parts::with_capacity(cfg.max_regions, cfg.max_batches, cfg.max_tasks, cfg.max_segments);
        Ok(EngineCore {
            ep: Endpoint::new(ep_cfg, parts)?,
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
            batch_notes: HashMap::new(),
            inbox: VecDeque::new(),
            owned: HashMap::new(),
            devices,
            freeing: Vec::new(),
            finalized: false,
            same_host,
            rdma,
            admission: Admission::new(cfg.admission_limits()),
            refusals: RateLog::default(),
            auth_refusals: RateLog::default(),
            tickets: 0,
            fenced: HashMap::new(),
            cfg,
        })
    }

    /// `RDMA: <device> port <n> gid index <i>`, or `RDMA off: <reason>`.
    pub fn rdma_status(&self) -> &str {
        self.rdma.status()
    }

    /// The core's clock (nanoseconds since it started), on which
    /// [`next_deadline`](Self::next_deadline) is given.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    fn check_running(&self) -> Result<()> {
        self.ep
            .check_running()
            .map_err(|_| status!(NotReady, "engine {} is finalizing", self.segment_name))
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
            if self.rdma.is_on() {
                self.poll_rdma();
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
                conn.link.abort(why, self.ep.registry_mut());
            } else if conn.stream.peer_addr().is_ok() {
                conn.connecting = false;
            } else if event.is_error() || event.is_write_closed() {
                let why = status!(RuntimeError, "connect to {} failed", conn.peer_addr);
                conn.link.abort(why, self.ep.registry_mut());
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
                    if self.ep.is_finalizing() {
                        debug!(peer = %addr, "refusing connection: finalizing");
                        continue;
                    }
                    if !self.admit(addr) {
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
                    match self.insert_conn(Conn::new(stream, link, addr, None, self.cfg.staging_slots)) {
                        Ok(c) => {
                            let entered = self.admission.insert(c, addr.ip());
                            debug_assert!(entered, "admitted, then no room");
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

    /// Whether a connection from `addr` gets a slot, closing a connection
    /// still in the handshake where [`Admission`] says so. Refusals and
    /// evictions are logged at most once per source and interval.
    fn admit(&mut self, addr: SocketAddr) -> bool {
        let now = self.now();
        let src = crate::admission::source_of(addr.ip());
        // One eviction makes room (admission.rs); the bound only guards.
        for _ in 0..4 {
            match self.admission.check(src) {
                Verdict::Admit => return true,
                Verdict::Evict(k) => {
                    let Some(victim) = self.conns.get(k).and_then(|c| c.as_ref()).map(|c| c.peer_addr) else {
                        self.admission.remove(k);
                        continue;
                    };
                    if let Some(n) = self.refusals.note(victim.ip(), now) {
                        warn!(
                            peer = %victim,
                            "closing a connection still in the handshake to make room for {addr}{}",
                            quieted(n)
                        );
                    }
                    let why = status!(
                        Canceled,
                        "connection from {victim} closed in its handshake to make room"
                    );
                    // It leaves the table with the connection (drop_conn).
                    self.fail_conn(k, why);
                    debug_assert!(
                        !self.admission.is_handshaking(k),
                        "an evicted connection kept its slot"
                    );
                }
                Verdict::Refuse(why) => {
                    if let Some(n) = self.refusals.note(src, now) {
                        warn!(peer = %addr, "refusing connections from {src}: {why}{}", quieted(n));
                    }
                    return false;
                }
            }
        }
        false
    }

    /// Services connection `c`, then acts on what the endpoint reports.
    fn service(&mut self, c: usize) {
        self.service_conn(c);
        self.after_work();
    }

    /// Drains the endpoint's events, then unmaps buffers whose last
    /// transfer just ended (a peer's read unpins when its payload is sent).
    fn after_work(&mut self) {
        while let Some(e) = self.ep.poll_event() {
            match e {
                endpoint::Event::Service(id) => {
                    let s = id.0 as usize;
                    match self.ensure_connection(s) {
                        Ok(()) => {
                            if let Some(c) = self.segments[s].conn {
                                self.service_conn(c);
                            }
                        }
                        Err(e) => self.ep.link_failed(id, e),
                    }
                }
                endpoint::Event::BatchEnded { batch, state, note } => self.batch_ended(batch, state, note),
            }
        }
        if self.rdma.any_retiring() {
            self.reap_rdma();
        }
        if !self.freeing.is_empty() {
            self.reap_owned();
        }
    }

    /// A batch ended: its notification goes to every segment it touched,
    /// queued behind nothing but other notifications, or is dropped.
    fn batch_ended(&mut self, batch: BatchId, state: TaskState, note: NoteOutcome) {
        self.batch_unfenced(batch);
        let Some((name, msg)) = self.batch_notes.remove(&batch) else {
            return;
        };
        if note != NoteOutcome::Send {
            debug!("batch {batch} ended {state:?}: its notification {name:?} is not sent");
            return;
        }
        let mut to = Vec::new();
        let _ = self.ep.batch_segments(batch, |s| to.push(s.0 as usize));
        for s in to {
            self.segments[s].notes.push_back((name.clone(), msg.clone()));
            if let Some(c) = self.segments[s].conn {
                self.service_conn(c);
            }
        }
    }

    /// Reads, reports, hands pending tasks to the link and writes, until
    /// the connection has nothing more to do now; closes it when its link
    /// is closed and flushed.
    fn service_conn(&mut self, c: usize) {
        self.serve_conn(c);
        let now = self.now();
        if let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) {
            conn.due = conn.next_due(now);
        }
    }

    /// [`service_conn`](Self::service_conn) but for the refreshed deadline.
    fn serve_conn(&mut self, c: usize) {
        let now = self.now();
        let grace = self.close_grace();
        for _ in 0..64 {
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return;
            };
            let mut progressed = false;
            if !conn.connecting {
                let failure = match conn.read(now, self.ep.registry_mut(), &mut self.devices) {
                    Ok(Flow::Eof) if conn.link.state() == LinkState::Handshaking => Some(status!(
                        Disconnected,
                        "{} closed the connection in the handshake (not te, or it refused us)",
                        conn.peer_addr
                    )),
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
                // Before anything is written (the HelloAck) or another
                // connection is read.
                self.order_links(c);
                let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                    return;
                };
                self.same_host.after_read(
                    conn,
                    &self.link_cfg,
                    self.ep.registry_mut(),
                    &mut self.devices,
                    now,
                );
            }
            progressed |= self.drain_link_events(c);
            self.pump(c);
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return;
            };
            if !conn.connecting {
                if let Err(e) = conn.flush(now, self.ep.registry_mut(), &mut self.devices) {
                    let why = status!(Disconnected, "write to {} failed: {e}", conn.peer_addr);
                    return self.fail_conn(c, why);
                }
            }
            progressed |= self.drain_link_events(c);
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return;
            };
            if conn.link.state() == LinkState::Closed {
                if conn.closed_at.is_none() && conn.shm.copies_in_flight() {
                    // The closed link has released the pins of the peer's
                    // copies; those still on a device end now, in this
                    // turn, before any unregister can see their regions
                    // unpinned.
                    let epoch = self.epoch;
                    let clock = move || Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
                    self.same_host.drain(
                        &mut conn.shm,
                        &mut self.devices,
                        clock,
                        crate::conn::COPY_DRAIN_LIMIT,
                    );
                }
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
                    // What is queued would only reach it late, if ever.
                    conn.reset_on_close();
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
            conn.link.abort(why, self.ep.registry_mut());
        }
        self.drop_conn(c);
    }

    fn drop_conn(&mut self, c: usize) {
        let Some(mut conn) = self.conns.get_mut(c).and_then(|c| c.take()) else {
            return;
        };
        // The NIC first: once the queue pair is gone it touches no task's memory.
        self.rdma.drop_link(c, &mut conn.link);
        // Release everything the link and the socket still hold, then report.
        let epoch = self.epoch;
        let clock = move || Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
        conn.discard_writes(clock, self.ep.registry_mut(), &mut self.devices);
        self.same_host.drain(
            &mut conn.shm,
            &mut self.devices,
            clock,
            crate::conn::COPY_DRAIN_LIMIT,
        );
        conn.link.handle_disconnect(self.ep.registry_mut());
        let _ = self.poll.deregister(&mut conn.stream);
        self.same_host.forget(&mut conn.shm, &mut self.devices);
        let mut events = Vec::new();
        while let Some(e) = conn.link.poll_event() {
            events.push(e);
        }
        let (seg, addr) = (conn.segment, conn.peer_addr);
        for e in events {
            self.on_link_event(c, seg, addr, e);
        }
        self.admission.remove(c);
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
                self.ep.link_closed(SegmentId(s as u32), lost as u32);
            }
        }
        debug!(peer = %conn.peer_addr, "connection closed");
    }

    fn drain_link_events(&mut self, c: usize) -> bool {
        let mut any = false;
        loop {
            let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
                return any;
            };
            let (seg, addr) = (conn.segment, conn.peer_addr);
            let Some(e) = conn.link.poll_event() else {
                return any;
            };
            any = true;
            self.on_link_event(c, seg, addr, e);
        }
    }

    /// One event of connection `c`'s link: the endpoint takes what is its
    /// own, the rest is the runtime's.
    fn on_link_event(&mut self, c: usize, seg: Option<usize>, addr: SocketAddr, e: Event) {
        let Some(e) = self.ep.handle_link_event(seg.map(|s| SegmentId(s as u32)), e) else {
            return;
        };
        match e {
            Event::Connected => {
                let now = self.now();
                self.admission.established(c);
                if let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) {
                    self.same_host.on_connected(conn, &self.link_cfg, now);
                    let peer = conn.link.peer().map_or("", |p| p.segment_name.as_str());
                    info!(peer = %Escaped(peer), addr = %conn.peer_addr, "link established");
                }
                self.check_peer_name(c);
                self.check_one_link_per_peer(c);
                self.offer_rdma(c);
            }
            Event::Progress { .. } | Event::TaskDone { .. } => {}
            Event::Rdma => self.rdma_exchanged(c),
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
                let side = if seg.is_some() { "to" } else { "from" };
                if why.code() == ErrorCode::NotAuthorized {
                    // Once per peer and interval: a peer with the wrong
                    // secret may retry in a loop.
                    if let Some(n) = self.auth_refusals.note(addr.ip(), self.now()) {
                        // The peer's name in full, should the reason be cut.
                        let name = self
                            .conns
                            .get(c)
                            .and_then(|c| c.as_ref())
                            .and_then(|c| c.link.peer());
                        let name = name.map_or("", |p| p.segment_name.as_str());
                        warn!(
                            peer = %addr,
                            segment = %Escaped(name),
                            "link {side} {addr} refused: {why}{}",
                            quieted(n)
                        );
                    }
                } else if self.admission.is_handshaking(c) {
                    // A client that never finished its handshake: a flood
                    // of them must not flood the log (admission.rs logs
                    // refusals and evictions, rate-limited).
                    debug!(peer = %addr, "link {side} {addr} closed in its handshake: {why}");
                } else {
                    info!(peer = %addr, "link {side} {addr} closed: {why}");
                }
                if let Some(s) = seg {
                    if self.segments[s].info_result.is_none() && !self.segments[s].info.is_empty() {
                        self.segments[s].info_result = Some(Err(why));
                    }
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

    /// Hands the notifications and the queued tasks of the connection's
    /// segment to its link.
    fn pump(&mut self, c: usize) {
        let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
            return;
        };
        let Some(s) = conn.segment else { return };
        let id = SegmentId(s as u32);
        let seg = &mut self.segments[s];
        while let Some((name, msg)) = seg.notes.front() {
            if conn.link.send_notification(name, msg).is_err() {
                break;
            }
            seg.notes.pop_front();
            self.ep.note_sent(id);
        }
        // Tasks wait for the RDMA exchange under way: they may take it.
        if conn.link.rdma().answer_pending() {
            return;
        }
        let importer = self.same_host.peer_pid(&conn.shm);
        let peer_imports = conn
            .link
            .peer()
            .is_some_and(|p| p.caps.contains(Caps::DEVICE_IPC));
        let mut feed = ConnFeed {
            shm: &mut conn.shm,
            owned: &self.owned,
            devices: &mut self.devices,
            importer: importer.filter(|_| peer_imports),
            rdma: &self.rdma,
        };
        self.ep.feed(id, &mut conn.link, &mut feed);
        self.rdma.post(c, &mut conn.link);
    }

    /// How long the caller may sleep before [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let now = self.now();
        self.next_deadline().map(|t| t - now)
    }

    /// The earliest deadline of the engine, on its own clock (nanoseconds
    /// since it started): what [`poll_timeout`](Self::poll_timeout) counts down to.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Each connection's as of the last time it was served (which every
        // change to it goes through): no link is asked every round.
        #[cfg(debug_assertions)]
        self.check_dues();
        let links = self.conns.iter().flatten().filter_map(|c| c.due);
        // The work an application's stream runs before a fence ends
        // without telling: look again soon.
        let fences = self.next_fence_poll(self.now());
        links
            .chain(self.ep.poll_timeout())
            .chain(fences)
            .chain(self.rdma.next_deadline())
            .min()
    }

    /// Debug builds: no connection's cached deadline is later than the one
    /// it has now (a change that did not go through `service_conn` would
    /// make the loop sleep through a timer).
    #[cfg(debug_assertions)]
    fn check_dues(&self) {
        let now = self.now();
        for (c, conn) in self.conns.iter().enumerate() {
            let Some(conn) = conn else { continue };
            if let Some(fresh) = conn.next_due(now) {
                debug_assert!(
                    conn.due.is_some_and(|d| d <= fresh),
                    "connection {c}: cached deadline {:?} later than its next one {fresh:?}",
                    conn.due
                );
            }
        }
    }

    /// Takes the outcome of every claim that has ended and serves those
    /// connections (their tasks may take the same-host path now).
    fn poll_claims(&mut self) {
        for c in 0..self.conns.len() {
            let claimed = match self.conns[c].as_mut() {
                Some(conn) => self.same_host.poll_proof(conn) | self.same_host.poll_claim(conn),
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
            // Only connections whose time has come, or whose device exports
            // wait for the peer's answer (closed as soon as it came).
            if conn.due.is_none_or(|t| t > now) && !conn.shm.exports.awaiting_answers() {
                continue;
            }
            if conn.closed_at.is_some_and(|t| t <= now) {
                self.drop_conn(c);
                continue;
            }
            conn.shm.expire(now);
            conn.shm.exports.reap(&mut conn.link, &mut self.devices, now);
            if conn.link.poll_timeout().is_some_and(|t| t <= now) {
                conn.link.handle_timeout(now, self.ep.registry_mut());
                self.service_conn(c);
            } else if conn.copies_in_flight() {
                self.service_conn(c);
            } else {
                conn.due = conn.next_due(now);
            }
        }
        self.poll_fences();
        self.ep.handle_timeout(now);
        if self.rdma.is_on() {
            self.poll_rdma();
        }
        self.after_work();
    }

    // ---- shutdown ----

    /// Refuses new work from now on (`NotReady`); work in flight goes on.
    pub fn begin_finalize(&mut self) {
        self.ep.begin_finalize();
    }

    /// Ends everything still running (`Canceled`), says goodbye to every
    /// peer and closes the listener. Idempotent.
    pub fn shutdown(&mut self) {
        self.begin_finalize();
        if self.finalized {
            return;
        }
        self.ep.fail_queued(&status!(Canceled, "engine finalized"));
        let now = self.now();
        for c in 0..self.conns.len() {
            if let Some(conn) = self.conns[c].as_mut() {
                conn.link.close(self.ep.registry_mut());
                let _ = conn.flush(now, self.ep.registry_mut(), &mut self.devices);
            }
            self.drop_conn(c);
        }
        self.after_work();
        // Every queue pair went with its connection; the memory regions go
        // before any engine-owned buffer is unmapped.
        self.rdma.close();
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.deregister(&mut l);
        }
        self.finalized = true;
        info!(segment = %self.segment_name, "engine finalized");
    }

    /// Whether [`shutdown`](Self::shutdown) has run.
    pub fn is_finalized(&self) -> bool {
        self.finalized
    }

    /// Whether any link still serves a request a peer made of this engine
    /// (a read being answered, a write landing, a same-host copy).
    pub fn serving_peers(&self) -> bool {
        self.conns.iter().flatten().any(|c| c.link.is_serving())
    }
}

/// What the endpoint asks about one connection while it feeds its link.
struct ConnFeed<'a> {
    shm: &'a mut ConnShm,
    owned: &'a HashMap<u64, Owned>,
    devices: &'a mut Devices,
    /// The peer's verified process, where the peer imports device buffers.
    importer: Option<u32>,
    rdma: &'a Rdma,
}

impl Feed for ConnFeed<'_> {
    fn same_host_refusal(&self) -> Option<&str> {
        self.shm.refusal()
    }

    fn local_map(&mut self, pin: PinKey) -> Option<LocalMap> {
        match self.owned.get(&pin.base) {
            Some(Owned::Host(buf)) => buf.mapping(),
            _ => None,
        }
    }

    fn announce_failed(&mut self, map: LocalMap, why: Status) {
        debug!(
            "buffer {} not announced, the peer copies with process_vm: {why}",
            map.id
        );
    }

    fn local_key(&mut self, _pin: PinKey, region: Span) -> Option<LocalKey> {
        let importer = self.importer?;
        self.shm.exports.key(region, importer, self.devices)
    }

    fn announce_key_failed(&mut self, key: LocalKey, why: Status) {
        info!(
            "{} buffer at {:#x} not announced, its task uses TCP: {why}",
            key.location, key.base
        );
        self.shm.exports.announce_failed(key, self.devices);
    }

    fn rdma_lkey(&mut self, pin: PinKey) -> Option<u32> {
        self.rdma.lkey(pin.base)
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
    use te_proto::batch::Op;

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
