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
//! The owner only copies into a process whose id it verified
//! ([`pidproof`]): the peer proves, over a Unix socket the kernel vouches
//! for (`SO_PEERCRED`), that it is the process at the other end of this
//! very TCP connection.
//!
//! - [`host`]: the host identity sent in the handshake.
//! - [`pidproof`]: the challenge, the claim and the verifier thread.
//! - [`copy`]: the cross-process copies.
//! - this file: the [`Path`] choice and the hooks the engine core calls.

pub(crate) mod copy;
pub(crate) mod host;
pub(crate) mod pidproof;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use te_proto::batch::TransferRequest;
use te_proto::link::{caps, Link, LinkConfig, PidChallenge};
use te_proto::{status, Instant, Location, Result, Status, TaskId};
use tracing::{debug, info, warn};

use crate::conn::{Conn, Reg};

/// How long an engine waits for a same-host peer's challenge before it
/// reports the segment open anyway (its tasks then take TCP).
pub(crate) const CHALLENGE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Which path transfers take to a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Path {
    /// The same-host path where the peer offers it and proved its process,
    /// else TCP (the default).
    #[default]
    Auto,
    /// Always TCP.
    Tcp,
    /// Always the same-host path; a transfer to a peer without it fails
    /// `NotSupported`, naming why.
    Shm,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Auto => "auto",
            Path::Tcp => "tcp",
            Path::Shm => "shm",
        })
    }
}

impl FromStr for Path {
    type Err = Status;

    fn from_str(s: &str) -> Result<Path> {
        match s {
            "auto" => Ok(Path::Auto),
            "tcp" => Ok(Path::Tcp),
            "shm" => Ok(Path::Shm),
            _ => Err(status!(Invalid, "path {s:?}: expected tcp, shm or auto")),
        }
    }
}

/// The engine's same-host state: what it offers and the verifier of its
/// peers' process ids.
pub(crate) struct SameHost {
    /// `None` when the engine does not offer the path (forced TCP, or the
    /// OS refuses cross-process copies); the reason was logged.
    verifier: Option<Arc<pidproof::Verifier>>,
}

/// A connection's same-host state.
#[derive(Debug, Default)]
pub(crate) struct ConnShm {
    /// The token of our challenge to the peer, once sent.
    token: Option<[u8; 32]>,
    /// The peer offers the path and is on this host: it challenges us too,
    /// and we wait for that until this moment.
    expect: Option<Instant>,
    /// We answered the peer's challenge (it may come before our own
    /// `Connected` is handled).
    answered: bool,
    /// Why our requests do not use the path, once known.
    refused: Option<String>,
}

impl ConnShm {
    /// Whether the path choice for this connection is settled (nothing to
    /// wait for before transfers start). A peer that offers the path but
    /// does not challenge within [`CHALLENGE_WAIT`] gets TCP.
    pub fn settled(&self, now: Instant) -> bool {
        self.answered || self.expect.is_none_or(|until| now >= until)
    }

    /// When the wait for the peer's challenge ends, while it lasts.
    pub fn deadline(&self) -> Option<Instant> {
        self.expect.filter(|_| !self.answered)
    }
}

impl SameHost {
    /// Sets up what `path` allows, and puts the host identity and the
    /// capability bits into `link`.
    pub fn new(path: Path, link: &mut LinkConfig) -> SameHost {
        link.host_id = host::host_id();
        if path == Path::Tcp {
            return SameHost { verifier: None };
        }
        if let Err(why) = copy::probe() {
            warn!("same-host path off, transfers use TCP: {why}");
            return SameHost { verifier: None };
        }
        match pidproof::Verifier::start() {
            Ok(v) => {
                link.caps |= caps::PROCESS_VM;
                SameHost {
                    verifier: Some(Arc::new(v)),
                }
            }
            Err(why) => {
                warn!("same-host path off, transfers use TCP: {why}");
                SameHost { verifier: None }
            }
        }
    }

    /// Whether this engine offers the path.
    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// The handshake finished: challenge a same-host peer that offers the
    /// path to prove its process, and expect its challenge in turn.
    pub fn on_connected(&self, conn: &mut Conn, cfg: &LinkConfig, now: Instant) {
        let Some(v) = &self.verifier else { return };
        let Some(ends) = ends(conn) else { return };
        let (link, st) = (&mut conn.link, &mut conn.shm);
        let Some(peer) = link.peer() else { return };
        let name = peer.segment_name.to_string();
        if peer.caps & caps::PROCESS_VM == 0 {
            st.refused = Some(format!("peer {name} does not offer the same-host path"));
            return;
        }
        if !peer.same_host(cfg) {
            st.refused = Some(format!("peer {name} is on another host or network namespace"));
            info!("{}: using TCP", st.refused.as_deref().unwrap_or_default());
            return;
        }
        let token = v.expect(ends);
        if link.send_pid_challenge(token, v.socket_name()).is_ok() {
            st.token = Some(token);
            st.expect = Some(now + CHALLENGE_WAIT);
        }
    }

    /// After input: answers the peer's challenge (enabling our requests on
    /// the path), then does the copies the peer asked for.
    pub fn after_read(&self, conn: &mut Conn, cfg: &LinkConfig, reg: &mut Reg) {
        let peer_addr = conn.peer_addr;
        let ends = ends(conn);
        let (link, st) = (&mut conn.link, &mut conn.shm);
        if let Some(ch) = link.take_pid_challenge() {
            // Only the first challenge is answered: each answer may block
            // this thread for up to the claim timeout.
            let first = !std::mem::replace(&mut st.answered, true);
            let claimed = match ends {
                _ if !first => Err("the peer challenged twice; ignored".to_string()),
                None => Err("connection addresses unknown".to_string()),
                Some(ends) => self.answer(link, cfg, &ch, ends),
            };
            match claimed {
                Ok(()) => {
                    link.set_local_copy(true);
                    st.refused = None;
                    info!(peer = %peer_addr, "same-host path enabled");
                }
                Err(why) if !first => debug!(peer = %peer_addr, "{why}"),
                Err(why) => {
                    warn!(peer = %peer_addr, "same-host path refused, using TCP: {why}");
                    st.refused = Some(why);
                }
            }
        }
        if link.poll_copy().is_none() {
            return;
        }
        let pid = st.token.and_then(|t| self.verifier.as_ref()?.verified(&t));
        let Some(pid) = pid else {
            while link.poll_copy().is_some() {
                let why = status!(NotAuthorized, "peer's process id is not verified");
                link.copy_done(Err(why), reg);
            }
            return;
        };
        // Copies in one direction go in one system call, up to a window's
        // worth; should that call fail, each is done alone for its own answer.
        while let Some(first) = link.poll_copy() {
            let mut run = [first; copy::BATCH];
            let mut n = 0;
            for c in link
                .pending_copies()
                .take(copy::BATCH)
                .take_while(|c| c.to_peer == first.to_peer)
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
                link.copy_done(result, reg);
            }
        }
    }

    /// Answers a challenge when this engine offers the path, the peer is on
    /// this host and network namespace and names a te verifier socket (so a
    /// peer cannot make us talk to some other local service).
    fn answer(
        &self,
        link: &Link,
        cfg: &LinkConfig,
        ch: &PidChallenge,
        ends: Ends,
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
        pidproof::claim(ch, ends)
    }

    /// Hands a task to the link on the path `path` chooses. `NotSupported`
    /// for a forced same-host path the link does not have.
    pub fn submit(
        conn: &mut Conn,
        path: Path,
        task: TaskId,
        req: &TransferRequest,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let (link, st) = (&mut conn.link, &conn.shm);
        let host = req.local.location == Location::Cpu;
        match path {
            Path::Tcp => link.submit(task, req, deadline),
            Path::Auto if host && link.local_copy() => link.submit_local(task, req, deadline),
            Path::Auto => link.submit(task, req, deadline),
            Path::Shm if host && link.local_copy() => link.submit_local(task, req, deadline),
            Path::Shm if !host => Err(status!(
                NotSupported,
                "same-host path needs host memory, task's local memory is {}",
                req.local.location
            )),
            Path::Shm => Err(status!(
                NotSupported,
                "same-host path not available: {}",
                st.refused.as_deref().unwrap_or("peer did not offer it")
            )),
        }
    }

    /// The connection is gone: its challenge is void.
    pub fn forget(&self, st: &ConnShm) {
        if let (Some(v), Some(t)) = (&self.verifier, &st.token) {
            v.forget(t);
        }
    }
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
