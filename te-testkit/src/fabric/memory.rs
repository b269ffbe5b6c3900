//! Simulated memory: each node owns one arena of bytes at a made-up base
//! address. Every access is bounds-checked against the arena.

use te_proto::{Location, Span};

/// A node's memory: `len` bytes from address `base`, host memory (`cpu`).
pub struct Arena {
    base: u64,
    bytes: Vec<u8>,
}

impl Arena {
    /// `len` zero bytes at `base`.
    pub fn new(base: u64, len: usize) -> Arena {
        Arena {
            base,
            bytes: vec![0; len],
        }
    }

    /// The first address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an arena of no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The offsets of `span` in the arena, `None` when any of it lies
    /// outside or it is not host memory.
    fn offsets(&self, span: Span) -> Option<core::ops::Range<usize>> {
        if span.location != Location::Cpu {
            return None;
        }
        let start = span.addr.checked_sub(self.base)?;
        let end = start.checked_add(span.len)?;
        if end > self.bytes.len() as u64 {
            return None;
        }
        Some(start as usize..end as usize)
    }

    /// The bytes of `span`, `None` when it is not all inside the arena.
    pub fn get(&self, span: Span) -> Option<&[u8]> {
        let r = self.offsets(span)?;
        self.bytes.get(r)
    }

    /// The bytes of `span` for writing, `None` when it is not all inside.
    pub fn get_mut(&mut self, span: Span) -> Option<&mut [u8]> {
        let r = self.offsets(span)?;
        self.bytes.get_mut(r)
    }
}
