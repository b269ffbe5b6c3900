//! A switch with impairments, for the network fault tests: forwards
//! Ethernet frames between the interfaces it is given (packet sockets, a
//! learning switch) and delays, drops, reorders or rate-limits them per
//! port, as `tc netem` would. It exists because the kernels te is tested on
//! may lack `sch_netem`: this needs only packet sockets and veth.
//!
//! Usage: `te-netem [--seed N] <port>...`; prints `READY` once every port
//! is open, then reads commands from stdin, one per line, answering `ok`
//! or `error <why>`:
//!
//! - `set <port> [delay_ms=N] [jitter_ms=N] [loss_pct=P] [reorder_pct=P]
//!   [rate_kbit=N] [down=0|1] [for_ms=N]`: the port's impairment, for
//!   frames from it and to it (keys not given are off); with `for_ms` it
//!   lasts that long, then the port is clear again and `healed <port>` is
//!   printed;
//! - `clear`: every port clear.
//!
//! Exits when stdin closes. Frames are read with their virtio-net header
//! (`PACKET_VNET_HDR`), so TCP segmentation offload and partial checksums
//! pass through unchanged. Pending frames are bounded by
//! [`MAX_PENDING_BYTES`]; beyond, frames are dropped.

use std::collections::{BinaryHeap, HashMap};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use te_testkit::rng::SimRng;
use te_tests::impair::{Impairment, Stage};

/// Bytes of frames waiting for their time at most.
const MAX_PENDING_BYTES: usize = 64 << 20;
/// Length of the virtio-net header before each frame.
const VNET_HDR: usize = 10;
/// The largest frame with its header (64 KiB offloaded segments and more).
const MAX_FRAME: usize = 70_000;
/// Frames read from one port per round, so that no port starves the others.
const BURST: usize = 64;

/// A frame due on a port at a time; ordered by time, then arrival.
#[derive(PartialEq, Eq)]
struct Due {
    at: Duration,
    seq: u64,
    port: usize,
    frame: Vec<u8>,
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        // Earliest first out of the max-heap.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One port: its packet socket and its two stages.
struct Port {
    name: String,
    fd: OwnedFd,
    /// Frames arriving from the port.
    from: Stage,
    /// Frames leaving to the port.
    to: Stage,
    /// When a timed impairment ends.
    heal_at: Option<Duration>,
}

impl Port {
    /// Gives both directions of the port `imp`, until `heal_at` if given.
    fn set(&mut self, imp: Impairment, heal_at: Option<Duration>) {
        self.from.impairment = imp;
        self.to.impairment = imp;
        self.heal_at = heal_at;
    }
}

fn fail(why: String) -> ! {
    eprintln!("te-netem: {why}");
    std::process::exit(2);
}

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A raw packet socket on interface `name`, with virtio-net headers.
fn open_port(name: &str) -> Result<OwnedFd, String> {
    let c = CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(last_error(&format!("interface {name}")));
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain system call; a valid descriptor or -1 comes back.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    if raw < 0 {
        return Err(last_error("packet socket"));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let on: libc::c_int = 1;
    // SAFETY: the option value is a c_int that lives across the call, and
    // its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_error("PACKET_VNET_HDR"));
    }
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: `sll` is a sockaddr_ll of the size passed, alive across the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_error(&format!("bind to {name}")));
    }
    Ok(fd)
}

/// Receives one frame that arrived on the port (frames this process sent
/// out of it are skipped); `None` when none is waiting.
fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    loop {
        // SAFETY: as in `open_port`.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are valid for writes of the sizes passed.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return None;
        }
        if from.sll_pkttype != libc::PACKET_OUTGOING {
            return Some(n as usize);
        }
    }
}

fn send_frame(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: `frame` is valid for reads of its length. A failed send
    // (a full queue) is a lost frame, as on a real link.
    let _ = unsafe {
        libc::send(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT,
        )
    };
}

struct Switch {
    ports: Vec<Port>,
    /// Which port each source address was last seen on.
    learned: HashMap<[u8; 6], usize>,
    pending: BinaryHeap<Due>,
    pending_bytes: usize,
    seq: u64,
    rng: SimRng,
    start: Instant,
}

impl Switch {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Queues a frame that arrived on port `from` for the ports it goes to.
    fn forward(&mut self, from: usize, frame: &[u8]) {
        if frame.len() < VNET_HDR + 14 {
            return;
        }
        let eth = &frame[VNET_HDR..];
        let dst: [u8; 6] = eth[0..6].try_into().expect("6 bytes");
        let src: [u8; 6] = eth[6..12].try_into().expect("6 bytes");
        if src[0] & 1 == 0 {
            self.learned.insert(src, from);
        }
        let now = self.now();
        let Some(arrived) = self.ports[from].from.pass(now, frame.len(), &mut self.rng) else {
            return;
        };
        let targets: Vec<usize> = match self.learned.get(&dst) {
            Some(&p) if dst[0] & 1 == 0 => vec![p],
            _ => (0..self.ports.len()).collect(),
        };
        for to in targets.into_iter().filter(|&p| p != from) {
            if self.pending_bytes + frame.len() > MAX_PENDING_BYTES {
                return;
            }
            let Some(at) = self.ports[to].to.pass(arrived, frame.len(), &mut self.rng) else {
                continue;
            };
            self.seq += 1;
            self.pending_bytes += frame.len();
            self.pending.push(Due {
                at,
                seq: self.seq,
                port: to,
                frame: frame.to_vec(),
            });
        }
    }

    /// Sends what is due, ends timed impairments, and returns how long
    /// until the next thing to do.
    fn tick(&mut self, out: &mut impl Write) -> Option<Duration> {
        let now = self.now();
        while self.pending.peek().is_some_and(|d| d.at <= now) {
            let d = self.pending.pop().expect("peeked");
            self.pending_bytes -= d.frame.len();
            send_frame(&self.ports[d.port].fd, &d.frame);
        }
        for p in &mut self.ports {
            if p.heal_at.is_some_and(|t| t <= now) {
                p.set(Impairment::default(), None);
                let _ = writeln!(out, "healed {}", p.name);
                let _ = out.flush();
            }
        }
        let next_frame = self.pending.peek().map(|d| d.at);
        let next_heal = self.ports.iter().filter_map(|p| p.heal_at).min();
        [next_frame, next_heal]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_sub(now))
    }

    fn command(&mut self, line: &str) -> Result<(), String> {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("set") => {
                let name = words.next().ok_or("set needs a port")?;
                let i = self
                    .ports
                    .iter()
                    .position(|p| p.name == name)
                    .ok_or_else(|| format!("no port {name:?}"))?;
                let (lasts, rest): (Vec<&str>, Vec<&str>) = words.partition(|w| w.starts_with("for_ms="));
                let imp = Impairment::parse(rest)?;
                let heal_at = match lasts.last().map(|w| &w["for_ms=".len()..]) {
                    Some(v) => {
                        let ms: u64 = v.parse().map_err(|_| format!("for_ms: {v:?} is not a number"))?;
                        Some(self.now() + Duration::from_millis(ms))
                    }
                    None => None,
                };
                self.ports[i].set(imp, heal_at);
                Ok(())
            }
            Some("clear") => {
                for p in &mut self.ports {
                    p.set(Impairment::default(), None);
                }
                Ok(())
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut seed = 1;
    if args.peek().map(String::as_str) == Some("--seed") {
        args.next();
        seed = args
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fail("--seed needs a number".into()));
    }
    let names: Vec<String> = args.collect();
    if names.len() < 2 {
        fail("usage: te-netem [--seed N] <port> <port>...".into());
    }
    let ports = names
        .iter()
        .map(|n| {
            Ok(Port {
                name: n.clone(),
                fd: open_port(n)?,
                from: Stage::default(),
                to: Stage::default(),
                heal_at: None,
            })
        })
        .collect::<Result<Vec<Port>, String>>()
        .unwrap_or_else(|e| fail(e));
    let mut sw = Switch {
        ports,
        learned: HashMap::new(),
        pending: BinaryHeap::new(),
        pending_bytes: 0,
        seq: 0,
        rng: SimRng::with_seed(seed),
        start: Instant::now(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut input = Vec::new();
    loop {
        let wait = sw.tick(&mut out);
        let mut fds: Vec<libc::pollfd> = sw
            .ports
            .iter()
            .map(|p| p.fd.as_raw_fd())
            .chain([libc::STDIN_FILENO])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Round up, so that a frame due in 0.4 ms is not polled for 0 ms
        // over and over.
        let timeout = wait.map_or(-1, |w| w.as_micros().div_ceil(1000).min(1000) as i32);
        // SAFETY: `fds` is a valid array of the length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            continue;
        }
        for (i, pfd) in fds.iter().enumerate().take(sw.ports.len()) {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            for _ in 0..BURST {
                let Some(len) = recv_frame(&sw.ports[i].fd, &mut buf) else {
                    break;
                };
                sw.forward(i, &buf[..len]);
            }
        }
        if fds[sw.ports.len()].revents != 0 {
            let mut chunk = [0u8; 4096];
            // SAFETY: `chunk` is valid for writes of its length.
            let n = unsafe { libc::read(libc::STDIN_FILENO, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                return;
            }
            input.extend_from_slice(&chunk[..n as usize]);
            while let Some(end) = input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = input.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let reply = match sw.command(line.trim()) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("error {e}"),
                };
                let _ = writeln!(out, "{reply}");
                let _ = out.flush();
            }
        }
    }
}
