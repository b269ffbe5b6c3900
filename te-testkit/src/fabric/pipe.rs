//! One direction of a simulated connection: bytes written at one time,
//! readable from a later time, in order, with a bounded capacity.

use std::collections::VecDeque;

use te_proto::Instant;

/// Bytes accepted by one write, readable from `ready` on.
struct Chunk {
    ready: Instant,
    bytes: Vec<u8>,
    read: usize,
}

/// A directed byte pipe. Delivery times never go backwards, so bytes stay
/// in order whatever delay each write drew.
pub(crate) struct Pipe {
    chunks: VecDeque<Chunk>,
    queued: usize,
    capacity: usize,
    last_ready: Instant,
    /// The writer closed its side: after the queued bytes the reader sees
    /// the end of the stream.
    pub eof: bool,
}

impl Pipe {
    pub fn new(capacity: usize) -> Pipe {
        Pipe {
            chunks: VecDeque::new(),
            queued: 0,
            capacity,
            last_ready: Instant::ZERO,
            eof: false,
        }
    }

    /// Bytes the pipe still accepts.
    pub fn room(&self) -> usize {
        if self.eof {
            return 0;
        }
        self.capacity.saturating_sub(self.queued)
    }

    /// Bytes written and not yet read.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The configured bound on [`queued`](Self::queued).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `bytes`, readable from `ready` (or later, to keep the order).
    pub fn push(&mut self, ready: Instant, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let ready = ready.max(self.last_ready);
        self.last_ready = ready;
        self.queued += bytes.len();
        self.chunks.push_back(Chunk {
            ready,
            bytes,
            read: 0,
        });
    }

    /// When the next unread byte becomes readable.
    pub fn next_ready(&self) -> Option<Instant> {
        self.chunks.front().map(|c| c.ready)
    }

    /// Bytes readable at `now`.
    pub fn ready_len(&self, now: Instant) -> usize {
        self.chunks
            .iter()
            .take_while(|c| c.ready <= now)
            .map(|c| c.bytes.len() - c.read)
            .sum()
    }

    /// True when the reader has seen everything and the writer closed.
    pub fn at_end(&self) -> bool {
        self.eof && self.chunks.is_empty()
    }

    /// Copies up to `max` bytes readable at `now` into `out` (cleared
    /// first) without consuming them.
    pub fn peek(&self, now: Instant, max: usize, out: &mut Vec<u8>) {
        out.clear();
        for c in self.chunks.iter().take_while(|c| c.ready <= now) {
            let want = max - out.len();
            if want == 0 {
                break;
            }
            let rest = &c.bytes[c.read..];
            out.extend_from_slice(&rest[..rest.len().min(want)]);
        }
    }

    /// Drops the first `n` unread bytes (which [`peek`](Self::peek) showed).
    pub fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(c) = self.chunks.front_mut() else { return };
            let take = (c.bytes.len() - c.read).min(n);
            c.read += take;
            n -= take;
            self.queued -= take;
            if c.read == c.bytes.len() {
                self.chunks.pop_front();
            }
        }
    }

    /// Forgets every unread byte (the connection was reset).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.queued = 0;
    }
}
