//! Proof of a peer's process id, so that the same-host path copies only
//! into the process at the other end of the connection.
//!
//! The verifier sends a random token over the TCP link (`PidChallenge`),
//! naming its abstract Unix socket. The claimant connects to that socket
//! and sends the token, both ends of its TCP connection as it sees them,
//! and the address of a copy of the token in its own memory; the kernel
//! tells the verifier the claimant's pid (`SO_PEERCRED`). The verifier
//! accepts when the token is one it sent, the connection ends match its
//! own, reversed, and it can read the token back from the claimant with
//! `process_vm_readv`, which also proves that the copies the path needs
//! are allowed between the two (ptrace restrictions such as Yama's
//! `ptrace_scope` forbid them between unrelated processes; the claimant
//! then stays on TCP and logs the verifier's reason).
//!
//! Why both: the token proves the claimant read our link (a third process
//! cannot claim it); the connection ends stop a relay, where a peer passes
//! our token on to an honest third process as its own challenge: that
//! process truthfully names its own connection, which is not ours. An
//! abstract socket lives in one network namespace, so a peer in another
//! cannot even reach it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use te_proto::link::PidChallenge;
use tracing::{debug, warn};

use super::copy::Pid;
use super::Ends;

/// How long a claimant waits for the verifier's answer, and the verifier
/// for a claim.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(1);
/// Every verifier socket name starts with this; a claimant connects to
/// nothing else.
pub(crate) const SOCKET_PREFIX: &[u8] = b"te-pid-";
/// Longest claim line.
const CLAIM_MAX: usize = 256;
/// Most challenges waiting for their claim; the oldest is dropped beyond.
const PENDING_MAX: usize = 4096;
/// Most claims checked at once, each on a thread of its own (a claimant
/// may take the whole claim timeout); more are refused at once.
const CLAIMS_AT_ONCE: usize = 16;

/// What the verifier knows of one challenge.
struct Pending {
    ends: Ends,
    /// Set once the claim was accepted.
    pid: Option<Arc<Pid>>,
    /// Insertion order, for dropping the oldest.
    seq: u64,
}

#[derive(Default)]
struct Table {
    pending: HashMap<[u8; 32], Pending>,
    seq: u64,
}

/// The engine's verifier: an abstract Unix socket served by a thread.
pub(crate) struct Verifier {
    name: Vec<u8>,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Verifier {
    /// Binds a fresh abstract socket and starts its thread; each proof
    /// recorded writes a byte to `notice`, to wake the engine's loop.
    pub fn start(notice: Option<Arc<std::os::unix::net::UnixStream>>) -> Result<Verifier, String> {
        let r = super::host::random_bytes();
        let mut name = SOCKET_PREFIX.to_vec();
        name.extend(format!("{}-{}", std::process::id(), hex(&r[..8])).bytes());
        let addr = UnixAddr::from_abstract_name(&name).map_err(|e| format!("abstract socket name: {e}"))?;
        let listener =
            UnixListener::bind_addr(&addr).map_err(|e| format!("cannot bind abstract socket: {e}"))?;
        let table = Arc::new(Mutex::new(Table::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (table.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("te-pid-verifier".into())
            .spawn(move || serve(listener, &t, &s, notice))
            .map_err(|e| format!("cannot start the verifier thread: {e}"))?;
        Ok(Verifier {
            name,
            table,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's abstract name.
    pub fn socket_name(&self) -> &[u8] {
        &self.name
    }

    /// A fresh token for the connection `ends`, to send as a challenge.
    pub fn expect(&self, ends: Ends) -> [u8; 32] {
        let token = super::host::random_bytes();
        let mut t = lock(&self.table);
        t.seq += 1;
        let seq = t.seq;
        if t.pending.len() >= PENDING_MAX {
            let oldest = t.pending.iter().min_by_key(|(_, p)| p.seq).map(|(k, _)| *k);
            if let Some(k) = oldest {
                t.pending.remove(&k);
            }
        }
        t.pending.insert(token, Pending { ends, pid: None, seq });
        token
    }

    /// The process proven for `token`, if its claim was accepted.
    pub fn verified(&self, token: &[u8; 32]) -> Option<Arc<Pid>> {
        lock(&self.table).pending.get(token)?.pid.clone()
    }

    /// Forgets a connection's challenge (the connection closed).
    pub fn forget(&self, token: &[u8; 32]) {
        lock(&self.table).pending.remove(token);
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept: a connection that says nothing.
        if let Ok(addr) = UnixAddr::from_abstract_name(&self.name) {
            let _ = UnixStream::connect_addr(&addr);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accepts claimants and checks each claim on a thread of its own, at
/// most [`CLAIMS_AT_ONCE`] at a time, so that a slow or silent claimant
/// delays no other.
fn serve(
    listener: UnixListener,
    table: &Arc<Mutex<Table>>,
    stop: &AtomicBool,
    notice: Option<Arc<std::os::unix::net::UnixStream>>,
) {
    let busy = Arc::new(AtomicUsize::new(0));
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let s = match conn {
            Ok(s) => s,
            Err(e) => {
                debug!("verifier accept: {e}");
                continue;
            }
        };
        // The claimant's identity as the kernel recorded it at connect
        // time, before anything else can happen to that process. Another
        // user's process is turned away here, without a thread or a log
        // line of its own.
        let who = match super::copy::peer(s.as_fd()) {
            Ok(who) if who.uid == euid => Ok(who),
            Ok(who) => {
                answer_quietly(
                    s,
                    &format!(
                        "process {} runs as uid {}, this engine as {euid}",
                        who.pid, who.uid
                    ),
                );
                continue;
            }
            Err(e) => Err(e),
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= CLAIMS_AT_ONCE {
            busy.fetch_sub(1, Ordering::AcqRel);
            answer_quietly(s, &format!("{CLAIMS_AT_ONCE} claims are being checked"));
            continue;
        }
        let (t, b, n) = (table.clone(), busy.clone(), notice.clone());
        let spawned = std::thread::Builder::new()
            .name("te-pid-check".into())
            .spawn(move || {
                let r = who
                    .map_err(|e| format!("peer credentials: {e}"))
                    .and_then(|who| check_claim(&s, who, &t));
                if r.is_ok() {
                    super::wake(n.as_deref());
                }
                answer(s, r);
                b.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::AcqRel);
            debug!("cannot start a claim check: {e}");
        }
    }
}

/// Sends the verdict on a claim.
fn answer(mut s: UnixStream, verdict: Result<(), String>) {
    let line = match verdict {
        Ok(()) => "1\n".to_string(),
        Err(why) => {
            warn!("refused a same-host claim: {why}");
            format!("0 {why}\n")
        }
    };
    let _ = s.set_write_timeout(Some(CLAIM_TIMEOUT));
    let _ = s.write_all(line.as_bytes());
}

/// Answers a claimant refused before its claim was read, logging only at
/// debug level (anyone local may connect, as often as it likes).
fn answer_quietly(mut s: UnixStream, why: &str) {
    debug!("refused a same-host claimant: {why}");
    let _ = s.set_write_timeout(Some(CLAIM_TIMEOUT));
    let _ = s.write_all(format!("0 {why}\n").as_bytes());
}

/// Reads one claim and records the claimant's process when it holds (its
/// uid was checked at accept).
fn check_claim(s: &UnixStream, who: super::copy::Peer, table: &Mutex<Table>) -> Result<(), String> {
    let super::copy::Peer { pid, pidfd, .. } = who;
    let line = read_line(s).map_err(|e| format!("reading the claim: {e}"))?;
    let Claim { token, ends, probe } =
        parse_claim(&line).ok_or_else(|| format!("malformed claim {line:?}"))?;
    let mut back = [0u8; 32];
    super::copy::peek(pid, probe, &mut back).map_err(|e| {
        format!("cannot read process {pid} ({e}): cross-process copies are not allowed (ptrace_scope?)")
    })?;
    if back != token {
        return Err(format!("process {pid} does not hold the token at {probe:#x}"));
    }
    let mut t = lock(table);
    let p = t.pending.get_mut(&token).ok_or("unknown token")?;
    let reversed = Ends {
        local: ends.peer,
        peer: ends.local,
    };
    if canonical(p.ends) != canonical(reversed) {
        return Err(format!(
            "connection {}<->{} is not ours ({}<->{})",
            ends.local, ends.peer, p.ends.local, p.ends.peer
        ));
    }
    if p.pid.is_some() {
        return Err("token already claimed".into());
    }
    p.pid = Some(Arc::new(Pid::new(pid, pidfd)));
    debug!("peer process {pid} proven for {}", p.ends.peer);
    Ok(())
}

/// Reads one line of at most `CLAIM_MAX` bytes within `CLAIM_TIMEOUT` in
/// all, however slowly the other side trickles it.
fn read_line(mut s: &UnixStream) -> io::Result<String> {
    let deadline = std::time::Instant::now() + CLAIM_TIMEOUT;
    let mut buf = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while buf.len() < CLAIM_MAX {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        s.set_read_timeout(Some(left))?;
        match s.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => buf.push(byte[0]),
        }
    }
    String::from_utf8(buf).map_err(|_| io::ErrorKind::InvalidData.into())
}

/// What a claimant says: `hex(token) local peer probe`.
#[derive(Debug, PartialEq, Eq)]
struct Claim {
    token: [u8; 32],
    /// The claimant's view of the TCP connection.
    ends: Ends,
    /// Where the claimant holds a copy of the token.
    probe: u64,
}

fn parse_claim(line: &str) -> Option<Claim> {
    let mut it = line.split(' ');
    let hex_token = it.next()?;
    let local = it.next()?.parse().ok()?;
    let peer = it.next()?.parse().ok()?;
    let probe = it.next()?.parse().ok()?;
    if it.next().is_some() || hex_token.len() != 64 {
        return None;
    }
    let mut token = [0u8; 32];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex_token.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Claim {
        token,
        ends: Ends { local, peer },
        probe,
    })
}

fn canonical(e: Ends) -> Ends {
    let c = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    Ends {
        local: c(e.local),
        peer: c(e.peer),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Refuses the path for an engine that may write into processes of other
/// users (`CAP_SYS_PTRACE` without being root): a proven peer could exec a
/// set-user-id program and have the engine's copies land in it. A root
/// engine only serves root peers (same uid), which gain nothing.
pub(crate) fn unprivileged() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    const CAP_SYS_PTRACE: u32 = 19;
    if eff & (1 << CAP_SYS_PTRACE) != 0 {
        return Err("this engine holds CAP_SYS_PTRACE without being root: it could be made to write into other users' processes".into());
    }
    Ok(())
}

/// Connects to the abstract socket `name`, waiting at most [`CLAIM_TIMEOUT`]
/// when its queue is full (std's `connect` would wait for ever, and any
/// local process may serve a `te-pid-` socket that never accepts).
fn connect_abstract(name: &[u8]) -> io::Result<UnixStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: plain socket creation; returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let s = unsafe { UnixStream::from_raw_fd(fd) };
    // A Unix stream `connect` honours SO_SNDTIMEO.
    s.set_write_timeout(Some(CLAIM_TIMEOUT))?;
    // SAFETY: `sockaddr_un` is plain C data; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // An abstract name: a NUL, then the name.
    if name.len() + 1 > addr.sun_path.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (d, &b) in addr.sun_path[1..].iter_mut().zip(name) {
        *d = b as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as libc::socklen_t;
    // SAFETY: `addr` is a valid `sockaddr_un` of at least `len` bytes.
    let r = unsafe { libc::connect(s.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// Answers a peer's challenge: proves this process to the peer's verifier.
pub(crate) fn claim(ch: &PidChallenge, ends: Ends) -> Result<(), String> {
    let mut s = connect_abstract(&ch.socket).map_err(|e| format!("cannot reach the peer's verifier: {e}"))?;
    s.set_read_timeout(Some(CLAIM_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CLAIM_TIMEOUT))
        .map_err(|e| e.to_string())?;
    // The verifier reads the token back from here while we wait.
    let held = Box::new(ch.token);
    let probe = held.as_ptr() as u64;
    let line = format!("{} {} {} {probe}\n", hex(&ch.token), ends.local, ends.peer);
    s.write_all(line.as_bytes())
        .map_err(|e| format!("sending the claim: {e}"))?;
    let answer = read_line(&s).map_err(|e| format!("no answer from the peer's verifier: {e}"))?;
    drop(held);
    match answer.split_once(' ') {
        _ if answer == "1" => Ok(()),
        Some(("0", why)) => Err(format!(
            "the peer's verifier refused our claim: {}",
            te_proto::text::Escaped(why)
        )),
        _ => Err(format!("the peer's verifier answered {answer:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(a: &str, b: &str) -> Ends {
        Ends {
            local: a.parse().unwrap(),
            peer: b.parse().unwrap(),
        }
    }

    #[test]
    fn claim_line_round_trips_and_rejects_junk() {
        let t = [0xabu8; 32];
        let e = ends("127.0.0.1:1000", "127.0.0.1:2000");
        let line = format!("{} {} {} 4096", hex(&t), e.local, e.peer);
        let want = Claim {
            token: t,
            ends: e,
            probe: 4096,
        };
        assert_eq!(parse_claim(&line), Some(want));
        assert_eq!(parse_claim("zz 127.0.0.1:1 127.0.0.1:2 4096"), None);
        assert_eq!(parse_claim(&format!("{} {} {}", hex(&t), e.local, e.peer)), None);
        assert_eq!(parse_claim(&format!("{line} extra")), None);
        assert_eq!(parse_claim(&line.replace("2000", "x")), None);
    }

    #[test]
    fn a_claim_for_our_connection_is_accepted_once() {
        let v = Verifier::start(None).unwrap();
        let ours = ends("127.0.0.1:5000", "127.0.0.1:6000");
        let token = v.expect(ours);
        let ch = PidChallenge::new(token, v.socket_name()).unwrap();
        // The claimant sees the connection from the other end.
        let theirs = ends("127.0.0.1:6000", "127.0.0.1:5000");
        claim(&ch, theirs).unwrap();
        let pid = v.verified(&token).expect("claim recorded");
        assert_eq!(pid.pid(), std::process::id() as i32);
        assert!(claim(&ch, theirs).is_err(), "a token is claimed once");
    }

    #[test]
    fn a_relayed_or_forged_claim_is_refused() {
        let v = Verifier::start(None).unwrap();
        let token = v.expect(ends("127.0.0.1:5000", "127.0.0.1:6000"));
        // An honest third process, handed our token as its own challenge,
        // names its own connection: refused.
        let ch = PidChallenge::new(token, v.socket_name()).unwrap();
        assert!(claim(&ch, ends("127.0.0.1:7000", "127.0.0.1:8000")).is_err());
        assert!(v.verified(&token).is_none());
        // A token we never sent: refused.
        let forged = PidChallenge::new([1; 32], v.socket_name()).unwrap();
        let why = claim(&forged, ends("127.0.0.1:6000", "127.0.0.1:5000")).unwrap_err();
        assert!(why.contains("unknown token"), "{why}");
    }

    #[test]
    fn a_silent_claimant_does_not_hold_up_an_honest_one() {
        let v = Verifier::start(None).unwrap();
        let addr = UnixAddr::from_abstract_name(v.socket_name()).unwrap();
        // Connected and silent: its check waits for the claim timeout.
        let _silent = UnixStream::connect_addr(&addr).unwrap();
        let token = v.expect(ends("127.0.0.1:5000", "127.0.0.1:6000"));
        let ch = PidChallenge::new(token, v.socket_name()).unwrap();
        // Served one after the other, this claim would get no answer
        // within its own timeout, the silent one's check taking as long.
        claim(&ch, ends("127.0.0.1:6000", "127.0.0.1:5000")).expect("claimed beside a silent claimant");
        assert!(v.verified(&token).is_some());
    }

    #[test]
    fn a_claim_to_a_socket_whose_queue_is_full_gives_up() {
        use std::os::fd::AsRawFd;
        // Any local process can serve a `te-pid-` abstract socket: this one
        // never accepts, and its queue (backlog 0) already holds a connection.
        let name = format!("te-pid-full-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        // SAFETY: listen() again on our own listening socket sets its backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let _queued = UnixStream::connect_addr(&addr).unwrap();
        let ch = PidChallenge::new([5; 32], name.as_bytes()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(claim(&ch, ends("127.0.0.1:1", "127.0.0.1:2")));
        });
        // A hang, not a time, is what this catches: the wait is generous.
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the claim never ends");
        assert!(r.unwrap_err().contains("cannot reach"));
    }

    #[test]
    fn a_claimant_must_hold_the_token_where_it_says() {
        let v = Verifier::start(None).unwrap();
        let token = v.expect(ends("127.0.0.1:5000", "127.0.0.1:6000"));
        let elsewhere = [0u8; 32];
        let addr = UnixAddr::from_abstract_name(v.socket_name()).unwrap();
        let mut s = UnixStream::connect_addr(&addr).unwrap();
        let line = format!(
            "{} 127.0.0.1:6000 127.0.0.1:5000 {}\n",
            hex(&token),
            elsewhere.as_ptr() as u64
        );
        s.write_all(line.as_bytes()).unwrap();
        let answer = read_line(&s).unwrap();
        assert!(
            answer.starts_with("0 ") && answer.contains("does not hold the token"),
            "{answer}"
        );
        assert!(v.verified(&token).is_none());
    }
}
