//! One transfer (a READ or WRITE of any length) cut into work requests of at most
//! `max_wr_bytes`, and how its completions add up.

use crate::error::VerbsError;
use crate::qp::QpId;

/// A one-sided operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// RDMA READ: remote bytes into local memory.
    Read,
    /// RDMA WRITE: local bytes into remote memory.
    Write,
}

/// One transfer to submit: `len` bytes between local memory at `local_addr` (inside the
/// region of `lkey`) and the peer's memory at `remote_addr` (inside its region of `rkey`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Read or write.
    pub op: Op,
    /// The local region's key ([`MemoryRegion::lkey`](crate::MemoryRegion::lkey)).
    pub lkey: u32,
    /// First local byte.
    pub local_addr: u64,
    /// First remote byte.
    pub remote_addr: u64,
    /// The remote region's key.
    pub rkey: u32,
    /// Bytes to move (more than 0).
    pub len: u64,
}

/// Names a submitted transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u64);

/// Work-request ids carry the transfer id above this many bits and the chunk index below.
pub(crate) const CHUNK_BITS: u32 = 24;

/// The driver's record of a transfer in progress.
pub(crate) struct InFlight {
    pub qp: QpId,
    pub t: Transfer,
    pub chunk: u64,
    /// Chunks in all.
    pub chunks: u64,
    /// Next chunk to post.
    pub next: u64,
    /// Chunks posted whose completion has not been polled.
    pub posted: u32,
    pub bytes: u64,
    pub error: Option<VerbsError>,
}

impl InFlight {
    /// A transfer cut into chunks of `chunk` bytes.
    pub fn new(qp: QpId, t: Transfer, chunk: u64) -> InFlight {
        InFlight {
            qp,
            t,
            chunk,
            chunks: t.len.div_ceil(chunk),
            next: 0,
            posted: 0,
            bytes: 0,
            error: None,
        }
    }

    /// Offset and length of chunk `i`.
    pub fn chunk_span(&self, i: u64) -> (u64, u32) {
        let off = i * self.chunk;
        (off, (self.t.len - off).min(self.chunk) as u32)
    }

    /// Chunks not yet posted (none once the transfer failed).
    pub fn unposted(&self) -> u64 {
        if self.error.is_some() {
            0
        } else {
            self.chunks - self.next
        }
    }

    /// Whether nothing more will happen: all posted chunks completed and nothing is left to
    /// post.
    pub fn finished(&self) -> bool {
        self.posted == 0 && self.unposted() == 0
    }

    /// Records the first error.
    pub fn fail(&mut self, e: VerbsError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_cut_into_bounded_chunks() {
        let t = Transfer {
            op: Op::Write,
            lkey: 1,
            local_addr: 0,
            remote_addr: 0,
            rkey: 2,
            len: (5 << 20) + 3,
        };
        let f = InFlight::new(QpId(0), t, 1 << 20);
        assert_eq!(f.chunks, 6);
        assert_eq!(f.chunk_span(0), (0, 1 << 20));
        assert_eq!(f.chunk_span(5), (5 << 20, 3));
        assert!(!f.finished());
        let one = InFlight::new(QpId(0), Transfer { len: 1, ..t }, 1 << 20);
        assert_eq!((one.chunks, one.chunk_span(0)), (1, (0, 1)));
    }
}
