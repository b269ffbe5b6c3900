//! A loopback TCP proxy with a gate in one direction, for tests that need
//! a transfer to be *under way* at a chosen moment without racing the
//! wire: the gate forwards a byte budget, then holds (the sender's socket
//! fills and it blocks mid-frame) until the test releases it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Which direction of the proxied connection the gate holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bytes from the engine that connects (the initiator) to the target:
    /// requests and write payloads.
    ToTarget,
    /// Bytes from the target to the initiator: answers and read payloads.
    FromTarget,
}

/// Budget of the gated direction.
struct Budget {
    /// Bytes still allowed through; `None`: no limit.
    left: Option<u64>,
    /// Set on drop: the forwarders stop.
    closed: bool,
    /// Both sockets of the proxied connection once it is made.
    sockets: Vec<TcpStream>,
}

struct State {
    budget: Mutex<Budget>,
    changed: Condvar,
}

impl State {
    fn budget(&self) -> MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A proxy for one connection to `target`, listening on a free loopback
/// port; open [`name`](Gate::name) instead of the target's segment name.
pub struct Gate {
    addr: SocketAddr,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

/// Forwarding granularity: small, so the gate stops close to its budget.
const CHUNK: usize = 64 << 10;

impl Gate {
    /// Starts the proxy; the gated `direction` lets `budget` bytes through
    /// (the handshake included), then holds until [`release`](Gate::release).
    pub fn start(target: &str, direction: Direction, budget: u64) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind gate");
        let addr = listener.local_addr().expect("gate address");
        let target: SocketAddr = target.parse().expect("target is host:port");
        let state = Arc::new(State {
            budget: Mutex::new(Budget {
                left: Some(budget),
                closed: false,
                sockets: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            let Ok((initiator, _)) = listener.accept() else {
                return;
            };
            let Ok(target) = TcpStream::connect(target) else {
                return;
            };
            let clone = |s: &TcpStream| s.try_clone().expect("clone proxied socket");
            {
                // Under the lock drop takes: either drop sees the sockets
                // and shuts them down, or this sees `closed`.
                let mut b = st.budget();
                if b.closed {
                    return;
                }
                b.sockets.extend([clone(&initiator), clone(&target)]);
            }
            let (to_target, from_target) = match direction {
                Direction::ToTarget => (true, false),
                Direction::FromTarget => (false, true),
            };
            let st2 = st.clone();
            let (i2, t2) = (clone(&initiator), clone(&target));
            let back = std::thread::spawn(move || forward(t2, i2, &st2, from_target));
            forward(initiator, target, &st, to_target);
            let _ = back.join();
        });
        Gate {
            addr,
            state,
            threads: vec![accept],
        }
    }

    /// The segment name to open (`127.0.0.1:port`).
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// Whether the gated direction has used up its budget (the gate holds).
    pub fn holding(&self) -> bool {
        self.state.budget().left == Some(0)
    }

    /// Lifts the budget: everything held, and everything after, goes through.
    pub fn release(&self) {
        self.state.budget().left = None;
        self.state.changed.notify_all();
    }
}

/// Copies `from` to `to` until either ends; when `gated`, each chunk first
/// takes its size out of the budget, waiting while the budget is spent.
fn forward(mut from: TcpStream, mut to: TcpStream, st: &State, gated: bool) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let want = if gated {
            let mut b = st.budget();
            while b.left == Some(0) && !b.closed {
                b = st.changed.wait(b).unwrap_or_else(|p| p.into_inner());
            }
            if b.closed {
                break;
            }
            b.left.map_or(CHUNK, |l| CHUNK.min(l as usize))
        } else {
            CHUNK
        };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if gated {
            if let Some(l) = st.budget().left.as_mut() {
                *l -= n as u64;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Gate {
    fn drop(&mut self) {
        {
            let mut b = self.state.budget();
            b.closed = true;
            // End the forwarders' reads and writes.
            for s in &b.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        self.state.changed.notify_all();
        // Wake an accept still waiting.
        let _ = TcpStream::connect(self.addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
