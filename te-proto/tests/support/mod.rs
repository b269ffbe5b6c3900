//! A test shell for te-proto links: two links wired back to back through
//! in-memory byte pipes, with fake memory behind fake addresses. No sockets.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use te_proto::batch::{BatchId, Op, TaskId, TransferRequest};
use te_proto::link::{Event, Link, LinkConfig, Notification, PayloadDest, SegmentPage};
use te_proto::wire::MAX_CONTROL_LEN;
use te_proto::{Entry, Instant, Location, Perm, Region, Registry, Result, Span};

/// A deterministic xorshift generator: tests stay reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Fake memory: blocks of bytes at fake addresses.
#[derive(Default)]
pub struct Memory {
    blocks: Vec<(Span, Vec<u8>)>,
}

impl Memory {
    pub fn add(&mut self, span: Span, bytes: Vec<u8>) {
        assert_eq!(bytes.len() as u64, span.len);
        self.blocks.push((span, bytes));
    }

    fn find(&self, span: Span) -> (usize, usize) {
        for (i, (b, _)) in self.blocks.iter().enumerate() {
            if b.location == span.location && span.addr >= b.addr && span.addr + span.len <= b.addr + b.len {
                return (i, (span.addr - b.addr) as usize);
            }
        }
        panic!("access outside any memory block: {span:?}");
    }

    pub fn read(&self, span: Span) -> &[u8] {
        let (i, off) = self.find(span);
        &self.blocks[i].1[off..off + span.len as usize]
    }

    pub fn write(&mut self, span: Span, data: &[u8]) {
        let (i, off) = self.find(span);
        self.blocks[i].1[off..off + data.len()].copy_from_slice(data);
    }
}

/// One end: a link, its registry, its memory and what it reported.
pub struct Side {
    pub link: Link,
    pub reg: Registry<Box<[Entry]>>,
    pub mem: Memory,
    pub done: HashMap<TaskId, Result<()>>,
    pub progress: Vec<(TaskId, u64)>,
    pub notes: Vec<Notification>,
    pub pages: Vec<Result<SegmentPage>>,
    pub connected: bool,
    /// `Event::Rdma` was reported (once per link).
    pub rdma_heard: bool,
    pub closed: Option<te_proto::Status>,
    /// Spans the peer may touch here: checked on every payload access.
    pub remote_checks: bool,
    pub bytes_out: u64,
    /// Memory whose bytes cannot be read (a failing device): payloads from
    /// it are reported unavailable.
    pub unreadable: Option<Span>,
    /// Memory whose bytes cannot be written: landings into it fail.
    pub unwritable: Option<Span>,
    /// The shell does not do the peer's same-host copies for now.
    pub copies_paused: bool,
    /// Same-host copies done for the peer.
    pub copies_done: u64,
}

/// Whether two spans share a byte.
pub fn overlaps(a: Span, b: Option<Span>) -> bool {
    b.is_some_and(|b| a.location == b.location && a.addr < b.addr + b.len && b.addr < a.addr + a.len)
}

impl Side {
    pub fn new(link: Link) -> Side {
        Side {
            link,
            reg: Registry::new(vec![Entry::EMPTY; 4096].into_boxed_slice()),
            mem: Memory::default(),
            done: HashMap::new(),
            progress: Vec::new(),
            notes: Vec::new(),
            pages: Vec::new(),
            connected: false,
            rdma_heard: false,
            closed: None,
            remote_checks: true,
            bytes_out: 0,
            unreadable: None,
            unwritable: None,
            copies_paused: false,
            copies_done: 0,
        }
    }

    /// Adds `len` bytes of memory at `addr` filled from `rng` and registers it.
    pub fn region(&mut self, addr: u64, len: u64, perm: Perm, rng: &mut Rng) {
        let mut bytes = vec![0u8; len as usize];
        rng.fill(&mut bytes);
        self.mem.add(Span::cpu(addr, len), bytes);
        self.reg
            .register(Region::new(addr, len, Location::Cpu, perm))
            .unwrap();
    }

    pub fn submit(&mut self, task: TaskId, op: Op, local: Span, remote_addr: u64) -> Result<()> {
        self.link.submit(task, &request(op, local, remote_addr), None)
    }

    /// As [`submit`](Self::submit), over the same-host path.
    pub fn submit_local(&mut self, task: TaskId, op: Op, local: Span, remote_addr: u64) -> Result<()> {
        self.link
            .same_host_mut()
            .submit(task, &request(op, local, remote_addr), None)
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.link.poll_event() {
            match e {
                Event::Connected => self.connected = true,
                Event::Progress { task, transferred } => self.progress.push((task, transferred)),
                Event::TaskDone { task, result } => {
                    assert!(
                        self.done.insert(task, result).is_none(),
                        "task {task:?} reported done twice"
                    );
                }
                Event::Notification => self.notes.push(self.link.take_notification().expect("announced")),
                Event::SegmentInfo => self.pages.push(self.link.take_segment_info().expect("announced")),
                Event::Rdma => {
                    assert!(!self.rdma_heard, "Event::Rdma reported twice");
                    self.rdma_heard = true;
                }
                Event::Closed(why) => {
                    assert!(self.closed.is_none(), "closed reported twice");
                    self.closed = Some(why);
                }
            }
        }
    }
}

/// A request of `op` between `local` and the peer's `remote_addr`.
pub fn request(op: Op, local: Span, remote_addr: u64) -> TransferRequest {
    TransferRequest {
        op,
        local,
        segment: 0,
        remote_addr,
        remote_location: None,
    }
}

/// Places each size at its own odd offset, 3 bytes apart from the last:
/// `(index, length, offset)`.
pub fn placed(sizes: &[u64]) -> Vec<(u32, u64, u64)> {
    sizes
        .iter()
        .scan(1u64, |off, &len| {
            let at = *off;
            *off += len + 3;
            Some((len, at))
        })
        .enumerate()
        .map(|(i, (len, off))| (i as u32, len, off))
        .collect()
}

pub fn task(batch: u64, index: u32) -> TaskId {
    TaskId {
        batch: BatchId::from_u64(batch),
        index,
    }
}

pub fn config(name: &str, max_payload: u32) -> LinkConfig {
    let mut c = LinkConfig::new(name).unwrap();
    c.max_payload = max_payload;
    c
}

/// Two sides and the two pipes between them.
pub struct Pair {
    pub a: Side,
    pub b: Side,
    a_to_b: VecDeque<u8>,
    b_to_a: VecDeque<u8>,
    pub now: Instant,
    pub rng: Rng,
    /// Largest piece handed to `handle_input` or landed at once.
    pub max_piece: usize,
    /// When false, nothing moves from b to a (a silent or stuck peer).
    pub b_talks: bool,
}

impl Pair {
    pub fn new(a: LinkConfig, b: LinkConfig, seed: u64) -> Pair {
        let now = Instant::from_nanos(1_000_000);
        let a = Side::new(Link::connect(a, now, [1; 32]).unwrap());
        let b = Side::new(Link::accept(b, now, [2; 32]).unwrap());
        Pair {
            a,
            b,
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            now,
            rng: Rng(seed | 1),
            max_piece: usize::MAX,
            b_talks: true,
        }
    }

    /// Moves bytes until nothing moves any more.
    pub fn run(&mut self) {
        for _ in 0..10_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("pair did not settle");
    }

    /// One round: each side sends what it has, then each receives. Returns
    /// whether anything moved.
    pub fn step(&mut self) -> bool {
        self.step_with_budget(usize::MAX)
    }

    /// As [`step`](Self::step), but b takes at most `budget` bytes from the
    /// pipe from a (a slow link in that direction; the rest waits).
    pub fn step_with_budget(&mut self, budget: usize) -> bool {
        let mut moved = transmit(&mut self.a, &mut self.a_to_b, self.now);
        if self.b_talks {
            moved |= transmit(&mut self.b, &mut self.b_to_a, self.now);
        }
        if budget >= self.a_to_b.len() {
            moved |= receive(
                &mut self.b,
                &mut self.a_to_b,
                self.now,
                self.max_piece,
                &mut self.rng,
            );
        } else {
            let mut part: VecDeque<u8> = self.a_to_b.drain(..budget).collect();
            moved |= receive(&mut self.b, &mut part, self.now, self.max_piece, &mut self.rng);
            while let Some(b) = part.pop_back() {
                self.a_to_b.push_front(b);
            }
        }
        moved |= receive(
            &mut self.a,
            &mut self.b_to_a,
            self.now,
            self.max_piece,
            &mut self.rng,
        );
        moved |= copies(&mut self.b, &mut self.a);
        moved |= copies(&mut self.a, &mut self.b);
        self.a.drain_events();
        self.b.drain_events();
        moved
    }

    /// Advances virtual time by `d` and lets both links act on it.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        for side in [&mut self.a, &mut self.b] {
            if side.link.poll_timeout().is_some_and(|t| t <= self.now) {
                side.link.handle_timeout(self.now, &mut side.reg);
            }
            side.drain_events();
        }
    }

    /// Bytes waiting in the pipe from a to b.
    pub fn pending_a_to_b(&self) -> usize {
        self.a_to_b.len()
    }

    /// Injects raw bytes as if a had sent them to b.
    pub fn inject_to_b(&mut self, bytes: &[u8]) {
        self.a_to_b.extend(bytes);
    }

    /// Injects raw bytes as if b had sent them to a.
    pub fn inject_to_a(&mut self, bytes: &[u8]) {
        self.b_to_a.extend(bytes);
    }
}

/// Does the same-host copies `owner`'s peer asked for, between the two
/// fake memories, as a shell with `process_vm_*` would.
fn copies(owner: &mut Side, peer: &mut Side) -> bool {
    let mut moved = false;
    while !owner.copies_paused {
        // The span is pinned in owner's registry (perhaps draining): the
        // link checked it when the request arrived.
        let Some(c) = owner.link.same_host().poll_copy() else {
            break;
        };
        let theirs = Span::cpu(c.peer_addr, c.span.len);
        if c.to_peer {
            let data = owner.mem.read(c.span).to_vec();
            peer.mem.write(theirs, &data);
        } else {
            let data = peer.mem.read(theirs).to_vec();
            owner.mem.write(c.span, &data);
        }
        owner.link.same_host_mut().copy_done(Ok(()), &mut owner.reg);
        owner.copies_done += 1;
        moved = true;
    }
    moved
}

fn transmit(side: &mut Side, pipe: &mut VecDeque<u8>, now: Instant) -> bool {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let mut moved = false;
    while let Some(t) = side.link.poll_transmit(now, &mut buf, &side.reg) {
        if let Some(span) = t.payload.filter(|s| overlaps(*s, side.unreadable)) {
            let why = te_proto::status!(RuntimeError, "cannot read {:#x}", span.addr);
            let dropped = side.link.payload_unavailable(why, &mut side.reg);
            assert!(dropped > 0 && dropped <= t.len, "{dropped} of {}", t.len);
            pipe.extend(&buf[..t.len - dropped]);
            side.bytes_out += (t.len - dropped) as u64;
            moved = true;
            continue;
        }
        pipe.extend(&buf[..t.len]);
        side.bytes_out += t.len as u64;
        if let Some(span) = t.payload {
            pipe.extend(side.mem.read(span));
            side.bytes_out += span.len;
            side.link.payload_sent(&mut side.reg);
        }
        moved = true;
    }
    moved
}

fn receive(side: &mut Side, pipe: &mut VecDeque<u8>, now: Instant, max_piece: usize, rng: &mut Rng) -> bool {
    let mut moved = false;
    loop {
        if pipe.is_empty() {
            return moved;
        }
        let piece = if max_piece == usize::MAX {
            usize::MAX
        } else {
            1 + rng.below(max_piece as u64) as usize
        };
        if let Some(dest) = side.link.poll_payload() {
            let n = match dest {
                PayloadDest::Memory(span) => {
                    if side.remote_checks {
                        assert_memory_allowed(side, span);
                    }
                    let n = (span.len as usize).min(pipe.len()).min(piece);
                    if overlaps(
                        Span {
                            len: n as u64,
                            ..span
                        },
                        side.unwritable,
                    ) {
                        let why = te_proto::status!(RuntimeError, "cannot write {:#x}", span.addr);
                        side.link.landing_failed(why, &mut side.reg);
                        assert!(matches!(side.link.poll_payload(), Some(PayloadDest::Discard(_))));
                        continue;
                    }
                    let data: Vec<u8> = pipe.drain(..n).collect();
                    side.mem.write(
                        Span {
                            len: n as u64,
                            ..span
                        },
                        &data,
                    );
                    n
                }
                PayloadDest::Discard(len) => {
                    let n = (len as usize).min(pipe.len()).min(piece);
                    pipe.drain(..n);
                    n
                }
            };
            side.link.payload_landed(now, n as u64, &mut side.reg);
            moved = true;
            continue;
        }
        let contiguous = pipe.make_contiguous();
        let take = contiguous.len().min(piece);
        let used = side.link.handle_input(now, &contiguous[..take], &mut side.reg);
        pipe.drain(..used);
        side.drain_events();
        if used == 0 {
            return moved;
        }
        moved = true;
    }
}

/// A payload destination must be registered memory (a peer's write) or the
/// local side of a task (an answer to a read); here it is enough that it
/// lies inside a registered region.
fn assert_memory_allowed(side: &Side, span: Span) {
    assert!(
        side.reg.lookup_local(span).is_ok(),
        "payload lands outside registered memory: {span:?}"
    );
}
