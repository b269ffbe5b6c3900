//! Shared helpers of te's integration tests.

use std::time::Duration;

use te_runtime::{BatchId, Engine, EngineConfig, ErrorCode, Op, Path, Request, SegmentId, Status, TaskState};

pub mod acl;
pub mod gate;
pub mod impair;
pub mod netns;
pub mod proc;
pub mod stores;
pub mod verbs;

/// An engine with default settings on a free loopback port.
pub fn engine() -> Engine {
    Engine::start(EngineConfig::default()).expect("engine starts")
}

/// Asserts that every task of `batch` completed or was refused with
/// `NotAuthorized` (its region was unregistered meanwhile).
pub fn assert_completed_or_refused(e: &Engine, batch: BatchId) {
    for (i, t) in e.tasks_status(batch).expect("tasks").iter().enumerate() {
        assert!(
            matches!(
                t.state,
                TaskState::Completed | TaskState::Failed(ErrorCode::NotAuthorized)
            ),
            "task {i}: {t:?}"
        );
    }
}

/// How long [`transfer`] waits for its batch: only a hang reaches it.
const TRANSFER_WAIT: Duration = Duration::from_secs(60);

/// One transfer of `len` bytes as a batch of its own over `path`: `Ok` once
/// every byte moved, else the failure the engine recorded for it.
pub fn transfer(
    e: &Engine,
    seg: SegmentId,
    op: Op,
    local: u64,
    remote: u64,
    len: u64,
    path: Path,
) -> Result<(), Status> {
    let batch = e.allocate_batch(1).expect("allocate");
    let req = Request {
        op,
        local,
        segment: seg,
        remote,
        len,
    };
    let result = e.submit_via(batch, &[req], path).and_then(|()| {
        let st = e.wait_batch(batch, TRANSFER_WAIT).expect("batch ends");
        match st.state {
            TaskState::Completed => {
                let task = e.tasks_status(batch).expect("tasks")[0];
                assert_eq!(task.transferred, len, "{op:?} completed short");
                Ok(())
            }
            TaskState::Failed(_) => Err(e.batch_error(batch).expect("the failure is recorded")),
            other => panic!("{op:?} of {len} bytes ended {other:?}"),
        }
    });
    e.free_batch(batch).expect("free");
    result
}

/// A deterministic byte pattern: byte `i` of a buffer seeded with `seed`.
pub fn pattern(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// Fills `len` bytes at `addr` with [`pattern`].
///
/// # Safety
/// `addr..addr + len` must be writable memory owned by the caller.
pub unsafe fn fill(addr: u64, len: u64, seed: u64) {
    // SAFETY: the caller owns the memory.
    let s = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) };
    for (i, b) in s.iter_mut().enumerate() {
        *b = pattern(seed, i as u64);
    }
}

/// The bytes at `addr`.
///
/// # Safety
/// `addr..addr + len` must be readable memory that nothing writes meanwhile.
pub unsafe fn bytes<'a>(addr: u64, len: u64) -> &'a [u8] {
    // SAFETY: the caller guarantees the memory is readable and stable.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }
}

// ---- raw sockets ----

/// `frame`'s bytes.
pub fn encode(frame: &te_proto::wire::Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0; te_proto::wire::MAX_CONTROL_LEN];
    let n = frame.encode(&mut buf).expect("encode");
    buf.truncate(n);
    buf
}

/// A raw client's `Hello` (segment `raw-client`, no same-host path) with
/// auth mode `auth`.
pub fn hello(auth: u8) -> Vec<u8> {
    encode(&te_proto::wire::Frame::Hello(te_proto::wire::Hello {
        caps: 0,
        max_payload: 1 << 20,
        max_outstanding: 32,
        auth,
        host_id: [0; 32],
        nonce: [7; 32],
        mac: [0; 32],
        name: "raw-client",
    }))
}

// ---- helpers of semantics.rs and transfers.rs ----

/// Fills `len` bytes at `addr` with a fast deterministic pattern of 64-bit
/// words (an xorshift stream seeded with `seed`); much faster than [`fill`]
/// for buffers of hundreds of MiB. Compare with [`fast_pattern_matches`] or
/// against the source memory.
///
/// # Safety
/// `addr..addr + len` must be writable memory owned by the caller.
pub unsafe fn fill_fast(addr: u64, len: u64, seed: u64) {
    // SAFETY: the caller owns the memory.
    let s = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) };
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunks = s.chunks_exact_mut(8);
    for c in &mut chunks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&x.to_le_bytes()[..n]);
}

/// Whether the `len` bytes at `addr` are what [`fill_fast`] with `seed`
/// writes.
///
/// # Safety
/// `addr..addr + len` must be readable memory that nothing writes meanwhile.
pub unsafe fn fast_pattern_matches(addr: u64, len: u64, seed: u64) -> bool {
    let mut want = vec![0u8; len as usize];
    // SAFETY: `want` is ours.
    unsafe { fill_fast(want.as_mut_ptr() as u64, len, seed) };
    // SAFETY: forwarded contract.
    unsafe { bytes(addr, len) == want.as_slice() }
}

/// A fake peer on a free loopback port that completes the handshake (it
/// answers `HelloAck` at once, no secret) and then never says anything
/// again: requests sent to it stay unanswered, so tasks on it stay
/// `Pending` until their deadline. It accepts any number of connections;
/// dropping it closes them all.
pub struct SilentPeer {
    addr: std::net::SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentPeer {
    /// Starts listening; the handshake is answered on a thread of its own.
    pub fn start() -> SilentPeer {
        SilentPeer::spawn(false, None)
    }

    /// As [`start`](Self::start), but the peer reads the engine's `Hello`
    /// first and claims to be on the same host (its host id) and to offer
    /// the same-host path, which it then never takes up (no challenge).
    pub fn start_same_host() -> SilentPeer {
        SilentPeer::spawn(true, None)
    }

    /// As [`start_same_host`](Self::start_same_host), and right after the
    /// handshake it challenges the engine to prove its process at the
    /// abstract Unix socket `socket` (which the test serves).
    pub fn start_challenging(socket: &[u8]) -> SilentPeer {
        SilentPeer::spawn(true, Some(socket.to_vec()))
    }

    fn spawn(same_host: bool, challenge: Option<Vec<u8>>) -> SilentPeer {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        use te_proto::link::Caps;
        use te_proto::wire::{Frame, Hello, AUTH_NONE, MAX_CONTROL_LEN};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind silent peer");
        let addr = listener.local_addr().expect("silent peer address");
        let name = addr.to_string();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_CONTROL_LEN];
            for stream in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let host_id = match same_host {
                    true => match read_hello_host_id(&mut stream) {
                        Some(id) => id,
                        None => continue,
                    },
                    false => [0; 32],
                };
                let ack = Frame::HelloAck(Hello {
                    caps: if same_host { Caps::PROCESS_VM.bits() } else { 0 },
                    max_payload: 1 << 20,
                    max_outstanding: 32,
                    auth: AUTH_NONE,
                    host_id,
                    nonce: [7; 32],
                    mac: [0; 32],
                    name: &name,
                });
                let mut n = ack.encode(&mut buf).expect("encode HelloAck");
                if let Some(socket) = &challenge {
                    let ch = Frame::PidChallenge {
                        token: [9; 32],
                        socket,
                    };
                    n += ch.encode(&mut buf[n..]).expect("encode PidChallenge");
                }
                // Counted before the engine can see the handshake end, so
                // that `connections()` never lags behind `open_segment`.
                let mut conns = c.lock().unwrap_or_else(|p| p.into_inner());
                if stream.write_all(&buf[..n]).is_ok() {
                    conns.push(stream);
                }
            }
        });
        SilentPeer {
            addr,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    /// The segment name to open (`127.0.0.1:port`).
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far (and not reset).
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Bytes received on the connections and not read (the peer reads
    /// nothing): what the engines have managed to send to it so far, up to
    /// the socket buffers' capacity.
    pub fn queued_bytes(&self) -> usize {
        let mut buf = vec![0u8; 16 << 20];
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .iter()
            .map(|s| {
                let _ = s.set_nonblocking(true);
                s.peek(&mut buf).unwrap_or(0)
            })
            .sum()
    }

    /// Closes every accepted connection abruptly: with unread bytes in its
    /// receive queue the socket answers with a reset. New connections are
    /// still accepted (and stay silent).
    pub fn reset(&self) {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        // Wake the accept loop so that it sees `stop`.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Reads a connector's `Hello` and returns its host id (`None` when the
/// connection ends or sends something else first).
fn read_hello_host_id(stream: &mut std::net::TcpStream) -> Option<[u8; 32]> {
    use std::io::Read;
    use te_proto::wire::{Decoder, Frame, Progress};
    let mut d = Decoder::new(1 << 20);
    let mut byte = [0u8; 1];
    while d.progress() == Progress::NeedMore {
        stream.read_exact(&mut byte).ok()?;
        d.feed(&byte).ok()?;
    }
    match d.frame()? {
        Ok(Frame::Hello(h)) => Some(h.host_id),
        _ => None,
    }
}

/// Calls `cond` until it returns true or `timeout` passes (then false),
/// yielding the CPU in between. For conditions no engine API can wait on,
/// such as "a transfer has made some progress"; never a fixed sleep.
pub fn spin_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}
