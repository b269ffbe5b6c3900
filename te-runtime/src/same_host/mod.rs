//! The same-host path: when both engines run on one host and in one
//! network namespace, transfers skip TCP for their data. Requests and
//! answers still travel over the link (`LocalRead`/`LocalWrite`, answered
//! by `WriteAck`/`Error`), but the owner of the registered memory checks
//! and pins the range exactly as for TCP and then copies straight between
//! its region and the initiator's memory with `process_vm_readv`/
//! `process_vm_writev`. The initiator never touches the owner's memory, so
//! the owner's permission checks, bounds checks and draining unregister
//! hold unchanged.
//!
//! When the initiator's memory is engine-owned (a sealed memfd, see
//! `mem::HostBuffer`), the initiator announces it (`LocalMap`) and the
//! owner maps it once and copies with `memcpy`, on two cores for large
//! copies ([`split`]); the owner's checks are the same either way.
//!
//! The owner only copies into a process whose id it verified
//! ([`pidproof`]): the peer proves, over a Unix socket the kernel vouches
//! for (`SO_PEERCRED`), that it is the process at the other end of this
//! very TCP connection.
//!
//! - [`host`]: the host identity sent in the handshake.
//! - [`pidproof`]: the challenge, the claim and the verifier thread.
//! - [`copy`]: the cross-process copies.
//! - [`maps`]: the peer's announced buffers, mapped.
//! - [`split`]: large copies on two threads.
//! - [`device`]: device memory: the initiator's keys, the owner's imports.
//! - this file: the hooks the engine core calls (the path choice itself is
//!   the endpoint's rule, [`te_proto::endpoint::Path::route`]).

pub(crate) mod copy;
pub(crate) mod device;
pub(crate) mod host;
pub(crate) mod maps;
pub(crate) mod pidproof;
pub(crate) mod split;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use te_proto::link::{Caps, Link, LinkConfig, PidChallenge, SameHostCopy};
use te_proto::{status, Instant, Location};
use tracing::{debug, info, warn};

use crate::config::Path;
use crate::conn::{Conn, Reg};
use crate::devices::Devices;

/// How long an engine waits for a same-host peer's challenge before it
/// reports the segment open anyway (its tasks then take TCP).
pub(crate) const CHALLENGE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The engine's same-host state: what it offers and the verifier of its
/// peers' process ids.
pub(crate) struct SameHost {
    /// `None` when the engine does not offer the path (forced TCP, or the
    /// OS refuses cross-process copies); the reason was logged.
    verifier: Option<Arc<pidproof::Verifier>>,
    /// Claim threads write a byte to the second end when they finish; the
    /// first is registered with the engine's poll under the listener's
    /// token. `None` with the path off.
    notice: Option<(mio::net::UnixStream, Arc<std::os::unix::net::UnixStream>)>,
    /// Copies through mapped buffers, on two threads when large; started
    /// with the path.
    splitter: Option<split::Splitter>,
    /// Claims under way (each on a thread), at most [`CLAIMS_AT_ONCE`].
    claims: Arc<AtomicUsize>,
    /// Peers' buffers mapped, over all connections.
    mappings: Arc<AtomicUsize>,
}

/// Most claims of one engine under way at once; a peer challenging beyond
/// that gets TCP.
const CLAIMS_AT_ONCE: usize = 16;

/// A connection's same-host state.
#[derive(Debug, Default)]
pub(crate) struct ConnShm {
    /// The token of our challenge to the peer, once sent.
    token: Option<[u8; 32]>,
    /// The peer offers the path and is on this host: it challenges us too,
    /// and we wait for that until this moment.
    expect: Option<Instant>,
    /// The peer challenged us (it may come before our own `Connected` is
    /// handled); only the first challenge is answered.
    challenged: bool,
    /// Our claim is under way on a thread of its own.
    claiming: Option<Claiming>,
    /// Our answer to the peer's challenge is settled, accepted or not.
    answered: bool,
    /// Our verifier proved the peer's process for this link (looked up once
    /// the peer announces a buffer).
    peer_proven: bool,
    /// Our verifier proved the peer's process (looked up at each notice
    /// until it has): tasks on device memory need it to export to the peer.
    peer_verified: bool,
    /// Why our requests do not use the path, once known.
    refused: Option<String>,
    /// The peer's announced buffers, as mapped here.
    maps: maps::PeerMaps,
    /// Our device regions exported to the peer.
    pub(crate) exports: device::Exports,
    /// The peer's device buffers, as imported here.
    imports: device::Imports,
    /// The peer's copies started and not yet reported, oldest first: the
    /// first `started.len()` of the link's pending copies.
    started: std::collections::VecDeque<device::Started>,
    /// How many of `started` were on a device when a copy before them
    /// failed there: a stream's error taints the outcome of the copies
    /// queued behind the failed one, so a failure of theirs is checked by
    /// copying again (synchronously) before it is reported.
    tainted: usize,
}

impl ConnShm {
    /// Whether copies of the peer's run on a device (the loop looks again
    /// soon: they end without telling).
    pub fn copies_in_flight(&self) -> bool {
        self.started
            .iter()
            .any(|s| matches!(s, device::Started::Device { .. }))
    }

    /// Why this link has no same-host path, once that is known.
    pub fn refusal(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Whether the path choice for this connection is settled (nothing to
    /// wait for before transfers start). A peer that offers the path but
    /// does not challenge within [`CHALLENGE_WAIT`] gets TCP.
    /// Our proof of the peer's process is awaited too (the path's device
    /// buffers are exported to that process), within the same wait.
    pub fn settled(&self, now: Instant) -> bool {
        self.done() || self.expect.is_none_or(|until| now >= until)
    }

    /// Both challenges are settled: ours answered (or refused) and the
    /// peer's process proven, where we challenged it.
    fn done(&self) -> bool {
        self.answered && (self.peer_verified || self.token.is_none() || self.refused.is_some())
    }

    /// When the wait for the peer's challenge ends, while it lasts, or
    /// a withdrawn key is closed without the peer's answer.
    pub fn deadline(&self) -> Option<Instant> {
        let challenge = self.expect.filter(|_| !self.done());
        challenge.into_iter().chain(self.exports.deadline()).min()
    }

    /// Ends the wait for the peer's challenge once it has passed, so that
    /// it no longer counts as a deadline (a past one would make the loop
    /// spin).
    pub fn expire(&mut self, now: Instant) {
        if self.expect.is_some_and(|until| now >= until) {
            self.expect = None;
        }
    }
}

impl SameHost {
    /// Sets up what `path` allows, and puts the host identity and the
    /// capability bits into `link`.
    pub fn new(path: Path, link: &mut LinkConfig, poll: &mio::Registry, token: mio::Token) -> SameHost {
        link.host_id = host::host_id();
        let off = SameHost {
            verifier: None,
            notice: None,
            splitter: None,
            claims: Arc::default(),
            mappings: Arc::default(),
        };
        if path == Path::Tcp {
            return off;
        }
        let started = copy::probe()
            .and_then(|()| pidproof::unprivileged())
            .and_then(|()| notice_pair(poll, token))
            .and_then(|notice| {
                let v = pidproof::Verifier::start(Some(notice.1.clone()))?;
                Ok((notice, v))
            });
        match started {
            Ok((notice, v)) => {
                link.caps |= Caps::PROCESS_VM | Caps::SHARED_MEMORY;
                SameHost {
                    verifier: Some(Arc::new(v)),
                    notice: Some(notice),
                    splitter: split::Splitter::start(),
                    claims: Arc::default(),
                    mappings: Arc::default(),
                }
            }
            Err(why) => {
                warn!("same-host path off, transfers use TCP: {why}");
                off
            }
        }
    }

    /// Whether this engine offers the path.
    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// The peer's process id, once our verifier proved it.
    pub fn peer_pid(&self, st: &ConnShm) -> Option<u32> {
        let pid = st.token.and_then(|t| self.verifier.as_ref()?.verified(&t))?;
        u32::try_from(pid.pid()).ok()
    }

    /// The handshake finished: challenge a same-host peer that offers the
    /// path to prove its process, and expect its challenge in turn.
    pub fn on_connected(&self, conn: &mut Conn, cfg: &LinkConfig, now: Instant) {
        let Some(v) = &self.verifier else { return };
        let Some(ends) = ends(conn) else { return };
        let (link, st) = (&mut conn.link, &mut conn.shm);
        let Some(peer) = link.peer() else { return };
        let name = te_proto::text::Escaped(&peer.segment_name).to_string();
        if !peer.caps.contains(Caps::PROCESS_VM) {
            st.refused = Some(format!("peer {name} does not offer the same-host path"));
            return;
        }
        if !peer.same_host(cfg) {
            st.refused = Some(format!("peer {name} is on another host or network namespace"));
            info!("{}: using TCP", st.refused.as_deref().unwrap_or_default());
            return;
        }
        let token = v.expect(ends);
        if link
            .same_host_mut()
            .send_pid_challenge(token, v.socket_name())
            .is_ok()
        {
            st.token = Some(token);
            st.expect = Some(now + CHALLENGE_WAIT);
        }
    }

    /// After input: starts answering the peer's challenge (the claim runs
    /// on a thread; [`poll_claim`](Self::poll_claim) takes its outcome),
    /// then does the copies the peer asked for.
    pub fn after_read(
        &self,
        conn: &mut Conn,
        cfg: &LinkConfig,
        reg: &mut Reg,
        devices: &mut Devices,
        now: Instant,
    ) {
        let peer_addr = conn.peer_addr;
        let challenge = conn.link.same_host_mut().take_pid_challenge();
        // Asked of the socket only for a challenge: a system call per read
        // otherwise (docs/PERFORMANCE.md, "Changes measured").
        let ends = challenge.as_ref().and_then(|_| ends(conn));
        let (link, st) = (&mut conn.link, &mut conn.shm);
        if let Some(ch) = challenge {
            // Only the first challenge is answered: each answer takes a
            // thread for up to the claim timeout.
            let first = !std::mem::replace(&mut st.challenged, true);
            let checked = match ends {
                _ if !first => Err("the peer challenged twice; ignored".to_string()),
                None => Err("connection addresses unknown".to_string()),
                Some(ends) => self.check_challenge(link, cfg, &ch).map(|()| ends),
            };
            match checked {
                Ok(ends) => st.claiming = Some(Claiming::start(ch, ends, self.notifier(), &self.claims)),
                Err(why) if !first => debug!(peer = %peer_addr, "{why}"),
                Err(why) => {
                    warn!(peer = %peer_addr, "same-host path refused, using TCP: {why}");
                    st.refused = Some(why);
                    st.answered = true;
                }
            }
        }
        if !st.peer_proven && link.same_host().peer_local_maps().next().is_some() {
            // A LocalMap before the proof (docs/PROTOCOL.md 15.5). Checked
            // after the read, never before: the verifier records the proof
            // before it answers the claimant, who announces only after that
            // answer, so an honest peer's buffer always finds it recorded.
            st.peer_proven = st
                .token
                .and_then(|t| self.verifier.as_ref()?.verified(&t))
                .is_some();
            if !st.peer_proven {
                let id = link.same_host().peer_local_maps().next().map_or(0, |m| m.id);
                let why = status!(
                    Invalid,
                    "peer announced buffer {id:#x} with LocalMap before its process was proven"
                );
                // Logged with the close, as every violation.
                link.refuse_peer(why, reg);
                return;
            }
        }
        st.maps.retain_announced(link);
        st.exports.reap(link, devices, now);
        // Withdrawn imports go once no copy runs through them.
        st.imports
            .retain_announced(link, devices, st.started.make_contiguous());
        if link.same_host().poll_copy().is_none() {
            return;
        }
        let pid = st.token.and_then(|t| self.verifier.as_ref()?.verified(&t));
        let Some(pid) = pid else {
            // Nothing was started without a proven process.
            while link.same_host().poll_copy().is_some() {
                let why = status!(NotAuthorized, "peer's process id is not verified");
                link.same_host_mut().copy_done(Err(why), reg);
            }
            return;
        };
        // Copies started earlier (on a device) end in order; while one
        // runs, the copies behind it are started too.
        if !st.started.is_empty() {
            self.run_started(link, st, &pid, reg, devices, now);
            if !st.started.is_empty() {
                return;
            }
        }
        // Copies into or out of a buffer the peer announced go through its
        // mapping. The others, in one direction, go in one system call, up
        // to a window's worth; should that call fail, each is done alone
        // for its own answer.
        while let Some(first) = link.same_host().poll_copy() {
            if first.peer_device || !first.span.location.is_host() {
                match self.start(&first, link, st, &pid, devices, now) {
                    device::Started::Done(result) => {
                        if let Err(e) = &result {
                            debug!(peer = %peer_addr, "device copy failed: {e}");
                        }
                        link.same_host_mut().copy_done(result, reg);
                        continue;
                    }
                    running => {
                        st.started.push_back(running);
                        self.run_started(link, st, &pid, reg, devices, now);
                        if !st.started.is_empty() {
                            return;
                        }
                        continue;
                    }
                }
            }
            let host = first.span.location == Location::Cpu;
            if let Some(map) = link
                .same_host()
                .peer_local_map(first.peer_addr, first.span.len)
                .filter(|_| host)
            {
                if let Some(theirs) =
                    st.maps
                        .address(&pid, &self.mappings, map, first.peer_addr, first.span.len)
                {
                    self.copy_mapped(&first, theirs);
                    link.same_host_mut().copy_done(Ok(()), reg);
                    continue;
                }
            }
            let mut run = [first; copy::BATCH];
            let mut n = 0;
            for (_, c) in link
                .same_host()
                .pending_copies()
                .take(copy::BATCH)
                .enumerate()
                .take_while(|(_, c)| c.to_peer == first.to_peer)
                .take_while(|(_, c)| !c.peer_device && c.span.location.is_host())
                .take_while(|(i, c)| {
                    *i == 0 || link.same_host().peer_local_map(c.peer_addr, c.span.len).is_none()
                })
            {
                run[n] = c;
                n += 1;
            }
            let together = copy::run_all(&pid, &run[..n]);
            for c in &run[..n] {
                let result = match together {
                    Ok(()) => Ok(()),
                    Err(_) => copy::run(&pid, c),
                };
                link.same_host_mut().copy_done(result, reg);
            }
        }
    }

    /// Reports the started copies that have ended, oldest first, and starts
    /// the copies behind them while the oldest still runs.
    fn run_started(
        &self,
        link: &mut te_proto::link::Link,
        st: &mut ConnShm,
        pid: &copy::Pid,
        reg: &mut Reg,
        devices: &mut Devices,
        now: Instant,
    ) {
        loop {
            while let Some(front) = st.started.front() {
                let result = match *front {
                    device::Started::Done(ref r) => r.clone(),
                    device::Started::Device { copy, src, dst } => match copy.poll(devices, now) {
                        None => break,
                        Some(Err(e)) if st.tainted > 0 => {
                            debug!("same-host device copy failed behind a failed one, copying again: {e}");
                            devices.copy_device(src, dst).map_err(|_| e)
                        }
                        Some(Err(e)) => {
                            st.tainted = st.started.len();
                            Err(e)
                        }
                        Some(Ok(())) => Ok(()),
                    },
                };
                st.started.pop_front();
                st.tainted = st.tainted.saturating_sub(1);
                if let Err(e) = &result {
                    debug!("same-host device copy failed: {e}");
                }
                link.same_host_mut().copy_done(result, reg);
            }
            if st.started.is_empty() {
                // Every copy started was reported; the caller serves the
                // rest as usual.
                return;
            }
            let Some(next) = link.same_host().pending_copies().nth(st.started.len()) else {
                return;
            };
            let s = self.start(&next, link, st, pid, devices, now);
            st.started.push_back(s);
        }
    }

    /// Starts copy `c`: device to device on our device's stream, every
    /// other kind done now (its outcome kept for its turn to be reported).
    fn start(
        &self,
        c: &SameHostCopy,
        link: &te_proto::link::Link,
        st: &mut ConnShm,
        pid: &copy::Pid,
        devices: &mut Devices,
        now: Instant,
    ) -> device::Started {
        if c.peer_device {
            let busy = st.copies_in_flight();
            return st.imports.start(c, busy, link, devices, now);
        }
        if !c.span.location.is_host() {
            return device::Started::Done(self.copy_staged(c, link, &mut st.maps, pid, devices));
        }
        let mapped = link
            .same_host()
            .peer_local_map(c.peer_addr, c.span.len)
            .and_then(|m| st.maps.address(pid, &self.mappings, m, c.peer_addr, c.span.len));
        device::Started::Done(match mapped {
            Some(theirs) => {
                self.copy_mapped(c, theirs);
                Ok(())
            }
            None => copy::run(pid, c),
        })
    }

    /// Waits for the peer's copies still running on a device (the
    /// connection is going away: its pins and imports are released next),
    /// at most `limit` for all of them.
    pub fn drain(
        &self,
        st: &mut ConnShm,
        devices: &mut Devices,
        now: impl Fn() -> Instant,
        limit: std::time::Duration,
    ) {
        st.tainted = 0;
        let deadline = std::time::Instant::now() + limit;
        for s in st.started.drain(..) {
            if let device::Started::Device { copy, .. } = s {
                if copy.wait(devices, &now, deadline).is_none() {
                    warn!("a same-host device copy did not end in {limit:?}");
                }
            }
        }
    }

    /// Does copy `c` between our device span and the peer's host memory,
    /// through a host buffer: the device half by the driver, the host half
    /// through the peer's mapped buffer or `process_vm_*`.
    fn copy_staged(
        &self,
        c: &SameHostCopy,
        link: &te_proto::link::Link,
        maps: &mut maps::PeerMaps,
        pid: &copy::Pid,
        devices: &mut Devices,
    ) -> te_proto::Result<()> {
        // At most our max_payload bytes (the link refuses a larger request).
        // The host half's own span is `buf`, alive until both halves are
        // done and referenced by nothing else meanwhile, as the host copies
        // require of their spans.
        let mut buf = vec![0u8; c.span.len as usize];
        let host = SameHostCopy {
            span: te_proto::Span::cpu(buf.as_mut_ptr() as u64, c.span.len),
            ..*c
        };
        if c.to_peer {
            devices.read(c.span, &mut buf)?;
        }
        let mapped = link
            .same_host()
            .peer_local_map(c.peer_addr, c.span.len)
            .and_then(|m| maps.address(pid, &self.mappings, m, c.peer_addr, c.span.len));
        match mapped {
            Some(theirs) => self.copy_mapped(&host, theirs),
            None => copy::run(pid, &host)?,
        }
        if !c.to_peer {
            devices.write(c.span, &buf)?;
        }
        Ok(())
    }

    /// Does copy `c` between our span and the peer's bytes mapped at `theirs`.
    fn copy_mapped(&self, c: &SameHostCopy, theirs: *mut u8) {
        let ours = c.span.addr as usize as *mut u8;
        let len = c.span.len as usize;
        let (dst, src) = if c.to_peer {
            (theirs, ours.cast_const())
        } else {
            (ours, theirs.cast_const())
        };
        // SAFETY: `ours` is our registered host span, pinned by the link
        // until `copy_done`; `theirs` lies inside the peer's buffer mapped
        // here for its announced length, which its seals keep valid. They
        // do not overlap (the mapping is a fresh one). No Rust reference to
        // either is alive; the peer changing its bytes meanwhile tears the
        // copy, which is its own affair, as over TCP.
        match &self.splitter {
            Some(s) => unsafe { s.copy(dst, src, len) },
            None => unsafe { std::ptr::copy_nonoverlapping(src, dst, len) },
        }
    }

    /// Empties the claim notice socket; true when a claim has ended since
    /// the last call.
    pub fn take_notice(&mut self) -> bool {
        let Some((rx, _)) = self.notice.as_mut() else {
            return false;
        };
        let mut any = false;
        let mut buf = [0u8; 64];
        loop {
            match std::io::Read::read(rx, &mut buf) {
                Ok(0) => return any,
                Ok(_) => any = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return any,
            }
        }
    }

    /// The end claim threads write to.
    fn notifier(&self) -> Option<Arc<std::os::unix::net::UnixStream>> {
        self.notice.as_ref().map(|(_, tx)| tx.clone())
    }

    /// Looks up whether our verifier has proven the peer's process, until
    /// it has; true when that happened now (the connection may be settled
    /// now, and its device tasks may export).
    pub fn poll_proof(&self, conn: &mut Conn) -> bool {
        let st = &mut conn.shm;
        if st.peer_verified || st.token.is_none() {
            return false;
        }
        st.peer_verified = self.peer_pid(st).is_some();
        st.peer_verified
    }

    /// Takes the outcome of the connection's claim once it has ended:
    /// enables the path for our requests, or records why not. True when
    /// the outcome came now (the connection has new work).
    pub fn poll_claim(&self, conn: &mut Conn) -> bool {
        let Some(outcome) = conn.shm.claiming.as_ref().and_then(Claiming::outcome) else {
            return false;
        };
        let st = &mut conn.shm;
        st.claiming = None;
        st.answered = true;
        match outcome {
            Ok(()) => {
                conn.link.same_host_mut().set_available(true);
                st.refused = None;
                info!(peer = %conn.peer_addr, "same-host path enabled");
            }
            Err(why) => {
                warn!(peer = %conn.peer_addr, "same-host path refused, using TCP: {why}");
                st.refused = Some(why);
            }
        }
        true
    }

    /// Whether to answer a challenge: this engine offers the path, the peer
    /// is on this host and network namespace and names a te verifier
    /// socket (so a peer cannot make us talk to some other local service).
    fn check_challenge(
        &self,
        link: &Link,
        cfg: &LinkConfig,
        ch: &PidChallenge,
    ) -> std::result::Result<(), String> {
        if !self.enabled() {
            return Err("this engine does not offer the same-host path".into());
        }
        if !link.peer().is_some_and(|p| p.same_host(cfg)) {
            return Err("challenge from a peer on another host or network namespace".into());
        }
        if !ch.socket.starts_with(pidproof::SOCKET_PREFIX) {
            return Err(format!(
                "challenge names socket {:?}, not a te verifier",
                String::from_utf8_lossy(&ch.socket)
            ));
        }
        Ok(())
    }

    /// The connection is gone: its challenge is void, and its device
    /// exports and imports are closed.
    pub fn forget(&self, st: &mut ConnShm, devices: &mut Devices) {
        if let (Some(v), Some(t)) = (&self.verifier, &st.token) {
            v.forget(t);
        }
        st.imports.close_all(devices);
        st.exports.close_all(devices);
    }
}

/// A claim answering the peer's challenge, made on a thread of its own:
/// it waits on the peer's verifier for up to the claim timeout, which must
/// not hold up the event loop (and every API call waiting for its lock).
#[derive(Debug)]
struct Claiming {
    outcome: Arc<Outcome>,
}

impl Claiming {
    /// Starts the claim (counted in `claims`); when it ends, a byte on
    /// `notice` wakes the loop.
    fn start(
        ch: PidChallenge,
        ends: Ends,
        notice: Option<Arc<std::os::unix::net::UnixStream>>,
        claims: &Arc<AtomicUsize>,
    ) -> Claiming {
        let outcome = Arc::new(Mutex::new(None));
        if claims.fetch_add(1, Ordering::AcqRel) >= CLAIMS_AT_ONCE {
            claims.fetch_sub(1, Ordering::AcqRel);
            let why = format!("{CLAIMS_AT_ONCE} claims of this engine are under way");
            report(&outcome, Err(why), notice.as_deref());
            return Claiming { outcome };
        }
        let (slot, count, n) = (outcome.clone(), claims.clone(), notice.clone());
        let spawned = std::thread::Builder::new()
            .name("te-pid-claim".into())
            .spawn(move || {
                let r = pidproof::claim(&ch, ends);
                count.fetch_sub(1, Ordering::AcqRel);
                report(&slot, r, n.as_deref());
            });
        if let Err(e) = spawned {
            claims.fetch_sub(1, Ordering::AcqRel);
            report(
                &outcome,
                Err(format!("cannot start a claim thread: {e}")),
                notice.as_deref(),
            );
        }
        Claiming { outcome }
    }

    /// The claim's outcome, once it has ended.
    fn outcome(&self) -> Option<std::result::Result<(), String>> {
        lock(&self.outcome).take()
    }
}

type Outcome = Mutex<Option<std::result::Result<(), String>>>;

/// Records a claim's outcome and wakes the loop with a byte on `notice`,
/// sent without blocking (a full socket already holds a notice) and
/// without `SIGPIPE` (the engine may be gone).
fn report(
    slot: &Outcome,
    r: std::result::Result<(), String>,
    notice: Option<&std::os::unix::net::UnixStream>,
) {
    *lock(slot) = Some(r);
    wake(notice);
}

/// Writes a byte to `notice` (if any) to wake the loop, without blocking
/// (a full socket already holds a notice) and without `SIGPIPE` (the
/// engine may be gone).
fn wake(notice: Option<&std::os::unix::net::UnixStream>) {
    if let Some(n) = notice {
        use std::os::fd::AsRawFd;
        // SAFETY: a one-byte buffer and a descriptor we hold.
        let _ = unsafe {
            libc::send(
                n.as_raw_fd(),
                [1u8].as_ptr().cast(),
                1,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The claim notice socket pair, its reading end registered under `token`.
fn notice_pair(
    poll: &mio::Registry,
    token: mio::Token,
) -> std::result::Result<(mio::net::UnixStream, Arc<std::os::unix::net::UnixStream>), String> {
    let (rx, tx) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("notice socket: {e}"))?;
    for s in [&rx, &tx] {
        s.set_nonblocking(true)
            .map_err(|e| format!("notice socket: {e}"))?;
    }
    let mut rx = mio::net::UnixStream::from_std(rx);
    poll.register(&mut rx, token, mio::Interest::READABLE)
        .map_err(|e| format!("notice socket: {e}"))?;
    Ok((rx, Arc::new(tx)))
}

/// Both ends of a connection, once connected.
fn ends(conn: &Conn) -> Option<Ends> {
    Some(Ends {
        local: conn.stream.local_addr().ok()?,
        peer: conn.peer_addr,
    })
}

/// The two ends of a TCP connection, as this side sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ends {
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub peer: SocketAddr,
}
