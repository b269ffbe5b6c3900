//! Loopback TCP proxies that hold bytes back at a moment the test picks,
//! without racing the wire.
//!
//! - [`Gate`]: one direction forwards a byte budget, then holds (the
//!   sender's socket fills and it blocks mid-frame) until the test
//!   releases it: a transfer *under way*.
//! - [`Proxy`]: every connection forwarded, and any one of them held
//!   from a chosen moment and released however late: what a frozen
//!   router or a long queue does to a connection its sender gave up on.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bytes from the engine that connects (the initiator) to the target:
    /// requests and write payloads.
    ToTarget,
    /// Bytes from the target to the initiator: answers and read payloads.
    FromTarget,
}

/// Forwarding granularity: small, so a budget stops close to its end.
const CHUNK: usize = 64 << 10;
/// How long [`Proxy`]'s calls wait for a connection that should arrive.
const ARRIVAL: Duration = Duration::from_secs(30);

/// The state of one proxied connection, shared with its two forwarders.
#[derive(Default)]
struct PipeState {
    /// Bytes each direction may still forward, by [`Direction`] index;
    /// `None`: no limit.
    budget: [Option<u64>; 2],
    /// Bytes to the target wait, once read, while set.
    held: bool,
    /// Bytes written on, by direction.
    forwarded: [u64; 2],
    /// The target closed its end: its forwarder saw EOF or an error.
    target_closed: bool,
    /// The proxy is dropped: the forwarders stop.
    closed: bool,
}

#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
}

impl Pipe {
    fn state(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut PipeState)) {
        f(&mut self.state());
        self.changed.notify_all();
    }

    /// Waits until `done` holds; `false` if `timeout` passed first.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&PipeState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while !done(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Waits, however long, while `blocked` holds and the proxy lives;
    /// returns the state, or `None` once the proxy is dropped.
    fn wait_while(&self, blocked: impl Fn(&PipeState) -> bool) -> Option<MutexGuard<'_, PipeState>> {
        let st = self.state();
        let st = self
            .changed
            .wait_while(st, |s| blocked(s) && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        (!st.closed).then_some(st)
    }
}

/// What the accepting thread and the test share.
#[derive(Default)]
struct Shared {
    /// Accepted connections in the order they came, with their sockets
    /// (shut down on drop).
    pipes: Mutex<Vec<(Arc<Pipe>, [TcpStream; 2])>>,
    added: Condvar,
    /// The budgets a new connection starts with.
    budget: Mutex<[Option<u64>; 2]>,
    /// New connections start held.
    hold_new: Mutex<bool>,
    closed: Mutex<bool>,
}

/// A proxy on a free loopback port in front of one target address; open
/// [`name`](Proxy::name) instead of the target's segment name.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards every connection to `target` (`host:port`) unlimited.
    pub fn start(target: &str) -> Proxy {
        Proxy::with_budget(target, [None, None])
    }

    fn with_budget(target: &str, budget: [Option<u64>; 2]) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let target: SocketAddr = target.parse().expect("target is host:port");
        let shared = Arc::new(Shared {
            budget: Mutex::new(budget),
            ..Shared::default()
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if *sh.closed.lock().unwrap_or_else(|p| p.into_inner()) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue; // the client sees its connection closed
                };
                let budget = *sh.budget.lock().unwrap_or_else(|p| p.into_inner());
                let pipe = Arc::new(Pipe::default());
                pipe.state().budget = budget;
                pipe.state().held = *sh.hold_new.lock().unwrap_or_else(|p| p.into_inner());
                let clone = |s: &TcpStream| s.try_clone().expect("clone a proxied socket");
                let (c2, s2, c3, s3) = (clone(&client), clone(&server), clone(&client), clone(&server));
                let (up, down) = (pipe.clone(), pipe.clone());
                std::thread::spawn(move || forward(client, server, &up, Direction::ToTarget));
                std::thread::spawn(move || forward(s2, c2, &down, Direction::FromTarget));
                sh.pipes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((pipe, [c3, s3]));
                sh.added.notify_all();
            }
        });
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The segment name to open (`127.0.0.1:port`).
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections the proxy accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.pipes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Connection `k` (0 = the first accepted), waiting for it to arrive.
    fn pipe(&self, k: usize) -> Arc<Pipe> {
        let deadline = Instant::now() + ARRIVAL;
        let mut pipes = self.shared.pipes.lock().unwrap_or_else(|p| p.into_inner());
        while pipes.len() <= k {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "proxy: connection {k} did not arrive within {ARRIVAL:?} ({} did)",
                pipes.len()
            );
            pipes = self
                .shared
                .added
                .wait_timeout(pipes, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        pipes[k].0.clone()
    }

    /// Holds connection `k`'s bytes to the target from now on, including
    /// any its forwarder is reading right now.
    pub fn hold(&self, k: usize) {
        self.pipe(k).update(|s| s.held = true);
    }

    /// Holds the bytes to the target of every connection made from now on
    /// (`on`), from their first byte; or no longer (`!on`).
    pub fn hold_new_connections(&self, on: bool) {
        *self.shared.hold_new.lock().unwrap_or_else(|p| p.into_inner()) = on;
    }

    /// Sends on what connection `k` held, and everything after it.
    pub fn release(&self, k: usize) {
        self.pipe(k).update(|s| s.held = false);
    }

    /// Bytes of connection `k` written to the target so far.
    pub fn forwarded(&self, k: usize) -> u64 {
        self.pipe(k).state().forwarded[Direction::ToTarget as usize]
    }

    /// Waits up to `timeout` until the target has closed connection `k`
    /// (so it has read, or refused, everything sent to it); returns
    /// whether it did.
    pub fn wait_target_closed(&self, k: usize, timeout: Duration) -> bool {
        self.pipe(k).wait_for(timeout, |s| s.target_closed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        *self.shared.closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
        for (pipe, sockets) in self.shared.pipes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            pipe.update(|s| s.closed = true);
            for s in sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        // Wake the accepting thread.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A proxy for one connection to `target` whose one direction forwards a
/// byte budget, then holds until [`release`](Gate::release).
pub struct Gate {
    proxy: Proxy,
    direction: Direction,
}

impl Gate {
    /// Starts the proxy; the gated `direction` lets `budget` bytes through
    /// (the handshake included), then holds.
    pub fn start(target: &str, direction: Direction, budget: u64) -> Gate {
        let mut budgets = [None, None];
        budgets[direction as usize] = Some(budget);
        Gate {
            proxy: Proxy::with_budget(target, budgets),
            direction,
        }
    }

    /// The segment name to open (`127.0.0.1:port`).
    pub fn name(&self) -> String {
        self.proxy.name()
    }

    /// Whether the gated direction has used up its budget (the gate holds).
    pub fn holding(&self) -> bool {
        let pipes = self.proxy.shared.pipes.lock().unwrap_or_else(|p| p.into_inner());
        pipes
            .first()
            .is_some_and(|(p, _)| p.state().budget[self.direction as usize] == Some(0))
    }

    /// Lifts the budget: everything held, and everything after, goes through.
    pub fn release(&self) {
        *self.proxy.shared.budget.lock().unwrap_or_else(|p| p.into_inner()) = [None, None];
        for (pipe, _) in self
            .proxy
            .shared
            .pipes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            pipe.update(|s| s.budget = [None, None]);
        }
    }
}

/// Copies `from` to `to` in direction `dir` until either ends: each chunk
/// fits the direction's budget (waiting while it is spent) and waits while
/// the pipe is held. Bytes from the target are read on after the client
/// has gone, so that the target's close is seen.
fn forward(mut from: TcpStream, mut to: TcpStream, pipe: &Pipe, dir: Direction) {
    let d = dir as usize;
    let mut buf = vec![0u8; CHUNK];
    let mut to_gone = false;
    loop {
        let want = match pipe.wait_while(|s| s.budget[d] == Some(0)) {
            Some(st) => st.budget[d].map_or(CHUNK, |l| CHUNK.min(l as usize)),
            None => break,
        };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pipe.update(|s| {
            if let Some(l) = s.budget[d].as_mut() {
                *l = l.saturating_sub(n as u64);
            }
        });
        if dir == Direction::ToTarget && pipe.wait_while(|s| s.held).is_none() {
            break;
        }
        if !to_gone && to.write_all(&buf[..n]).is_err() {
            if dir == Direction::ToTarget {
                return; // the target is gone; the rest is lost, as on a wire
            }
            to_gone = true;
        }
        pipe.update(|s| s.forwarded[d] += n as u64);
    }
    if dir == Direction::FromTarget {
        pipe.update(|s| s.target_closed = true);
    } else {
        // A held end of stream waits for the bytes before it.
        let _ = pipe.wait_while(|s| s.held);
    }
    let _ = to.shutdown(Shutdown::Write);
}
