//! The input format of the endpoint harness: bytes decoded into a script
//! of [`Op`]s, and [`encode`] for hand-written seeds.
//!
//! The first byte picks the number of segments (2 or 3); then each op is
//! one opcode byte followed by its arguments. Past the end of the input
//! every read yields zero, and the script ends there.

/// Reads the input front to back; past the end every read yields zeros.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` next bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// One request of a submission, in the script's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Req {
    /// A write (else a read).
    pub write: bool,
    /// Which local region candidate the local address starts in.
    pub local: u8,
    /// Offset into it, in 256-byte steps.
    pub offset: u8,
    /// Segment index (one past the last is a handle never opened).
    pub seg: u8,
    /// Which remote address: a peer region (and offset) or garbage.
    pub remote: u8,
    /// Bytes (0 is invalid on purpose).
    pub len: u16,
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Register local region candidate `r`.
    Register(u8),
    /// Unregister local region candidate `r`.
    Unregister(u8),
    /// Allocate a batch of `cap` tasks.
    Alloc(u8),
    /// Free a batch (`b` picks a live one, or a stale id with bit 7).
    Free(u8),
    /// Submit into batch `b`, with a notification when `notify`; `path`
    /// picks the task path (default, TCP, same-host).
    Submit {
        /// Which batch.
        b: u8,
        /// `submit_with_notify` instead of `submit`.
        notify: bool,
        /// 0: endpoint default, 1: TCP, 2: same-host.
        path: u8,
        /// The requests (none is invalid on purpose).
        reqs: Vec<Req>,
    },
    /// Cancel task `index` of batch `b`.
    Cancel(u8, u8),
    /// Feed segment `s`'s link from its queue.
    Feed(u8),
    /// Make a link pair for segment `s` (if it has none) and report it up.
    Connect(u8),
    /// Move frames and payloads both ways on segment `s` for `rounds`
    /// rounds; with `hold`, the last payload sent is not reported sent.
    Pump {
        /// Segment.
        s: u8,
        /// Rounds.
        rounds: u8,
        /// Hold the payload being sent.
        hold: bool,
    },
    /// Deliver up to `n` queued bytes on segment `s`, to the peer or to us.
    Deliver {
        /// Segment.
        s: u8,
        /// Direction: towards the peer.
        to_peer: bool,
        /// Most bytes.
        n: u16,
    },
    /// Append raw bytes to a stream of segment `s`.
    Inject {
        /// Segment.
        s: u8,
        /// Direction: towards the peer.
        to_peer: bool,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The connection of segment `s` is gone (handle_disconnect, link_closed).
    Drop(u8),
    /// No link to segment `s` could be made (only while it has none).
    LinkFailed(u8),
    /// Close segment `s`'s link from our side.
    Close(u8),
    /// Time passes by `8 ms * n`; links and endpoint handle their timeouts.
    Advance(u8),
    /// Only the endpoint handles its timeout, now.
    EpTimeout,
    /// `begin_finalize`.
    Finalize,
    /// `fail_queued(Canceled)`.
    FailQueued,
    /// Reserve a standalone notification for segment `s`.
    ReserveNote(u8),
    /// Hand segment `s`'s queued notifications to its link.
    SendNotes(u8),
    /// Drain and act on the endpoint's events.
    PollEvents,
    /// Hold batch `b` (bit 7: a stale id).
    Hold(u8),
    /// Release batch `b`: its queued tasks go on, or end `RuntimeError`
    /// with `fail`.
    Release {
        /// Which batch.
        b: u8,
        /// Release with an error.
        fail: bool,
    },
    /// The peer of segment `s` submits a task of its own to us.
    PeerSubmit {
        /// Segment.
        s: u8,
        /// A write to us (else a read from us).
        write: bool,
        /// Which of our region candidates it targets.
        region: u8,
        /// Bytes.
        len: u16,
    },
}

/// Opcodes, in the order of [`Op`].
const OPS: u8 = 26;

/// Decodes the next op, `None` at the end of the input.
pub fn next_op(inp: &mut Input<'_>) -> Option<Op> {
    if inp.is_empty() {
        return None;
    }
    let code = inp.u8() % OPS;
    Some(match code {
        0 => Op::Register(inp.u8()),
        1 => Op::Unregister(inp.u8()),
        2 => Op::Alloc(inp.u8()),
        3 => Op::Free(inp.u8()),
        4 | 5 => {
            let b = inp.u8();
            let path = inp.u8();
            let n = inp.u8() % 5;
            let reqs = (0..n)
                .map(|_| {
                    let flags = inp.u8();
                    Req {
                        write: flags & 1 != 0,
                        local: (flags >> 1) & 7,
                        offset: inp.u8(),
                        seg: (flags >> 4) & 3,
                        remote: inp.u8(),
                        len: inp.u16(),
                    }
                })
                .collect();
            Op::Submit {
                b,
                notify: code == 5,
                path,
                reqs,
            }
        }
        6 => Op::Cancel(inp.u8(), inp.u8()),
        7 => Op::Feed(inp.u8()),
        8 => Op::Connect(inp.u8()),
        9 => {
            let s = inp.u8();
            let r = inp.u8();
            Op::Pump {
                s,
                rounds: r & 0x7f,
                hold: r & 0x80 != 0,
            }
        }
        10 => {
            let s = inp.u8();
            Op::Deliver {
                s: s & 0x7f,
                to_peer: s & 0x80 != 0,
                n: inp.u16(),
            }
        }
        11 => {
            let s = inp.u8();
            let n = inp.u8() as usize;
            Op::Inject {
                s: s & 0x7f,
                to_peer: s & 0x80 != 0,
                bytes: inp.bytes(n).to_vec(),
            }
        }
        12 => Op::Drop(inp.u8()),
        13 => Op::LinkFailed(inp.u8()),
        14 => Op::Close(inp.u8()),
        15 => Op::Advance(inp.u8()),
        16 => Op::EpTimeout,
        17 => Op::Finalize,
        18 => Op::FailQueued,
        19 => Op::ReserveNote(inp.u8()),
        20 => Op::SendNotes(inp.u8()),
        21 => Op::PollEvents,
        22 => {
            let s = inp.u8();
            Op::PeerSubmit {
                s: s & 0x7f,
                write: s & 0x80 != 0,
                region: inp.u8(),
                len: inp.u16(),
            }
        }
        23 => Op::Hold(inp.u8()),
        24 => {
            let b = inp.u8();
            Op::Release {
                b: b & 0x7f,
                fail: b & 0x80 != 0,
            }
        }
        _ => Op::Cancel(inp.u8() | 0x80, inp.u8()),
    })
}

/// The bytes that decode to `ops` over `segments` segments (2 or 3): how
/// seeds are written.
pub fn encode(segments: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![segments.saturating_sub(2)];
    for op in ops {
        match op {
            Op::Register(r) => out.extend([0, *r]),
            Op::Unregister(r) => out.extend([1, *r]),
            Op::Alloc(c) => out.extend([2, *c]),
            Op::Free(b) => out.extend([3, *b]),
            Op::Submit {
                b,
                notify,
                path,
                reqs,
            } => {
                out.extend([if *notify { 5 } else { 4 }, *b, *path, reqs.len() as u8]);
                for r in reqs {
                    let flags = u8::from(r.write) | ((r.local & 7) << 1) | ((r.seg & 3) << 4);
                    out.extend([flags, r.offset, r.remote]);
                    out.extend(r.len.to_be_bytes());
                }
            }
            Op::Cancel(b, i) => out.extend([6, *b, *i]),
            Op::Feed(s) => out.extend([7, *s]),
            Op::Connect(s) => out.extend([8, *s]),
            Op::Pump { s, rounds, hold } => {
                out.extend([9, *s, (rounds & 0x7f) | if *hold { 0x80 } else { 0 }])
            }
            Op::Deliver { s, to_peer, n } => {
                out.extend([10, (s & 0x7f) | if *to_peer { 0x80 } else { 0 }]);
                out.extend(n.to_be_bytes());
            }
            Op::Inject { s, to_peer, bytes } => {
                out.extend([
                    11,
                    (s & 0x7f) | if *to_peer { 0x80 } else { 0 },
                    bytes.len() as u8,
                ]);
                out.extend(&bytes[..bytes.len().min(255)]);
            }
            Op::Drop(s) => out.extend([12, *s]),
            Op::LinkFailed(s) => out.extend([13, *s]),
            Op::Close(s) => out.extend([14, *s]),
            Op::Advance(n) => out.extend([15, *n]),
            Op::EpTimeout => out.push(16),
            Op::Finalize => out.push(17),
            Op::FailQueued => out.push(18),
            Op::ReserveNote(s) => out.extend([19, *s]),
            Op::SendNotes(s) => out.extend([20, *s]),
            Op::PollEvents => out.push(21),
            Op::Hold(b) => out.extend([23, *b]),
            Op::Release { b, fail } => out.extend([24, (b & 0x7f) | if *fail { 0x80 } else { 0 }]),
            Op::PeerSubmit {
                s,
                write,
                region,
                len,
            } => {
                out.extend([22, (s & 0x7f) | if *write { 0x80 } else { 0 }, *region]);
                out.extend(len.to_be_bytes());
            }
        }
    }
    out
}
