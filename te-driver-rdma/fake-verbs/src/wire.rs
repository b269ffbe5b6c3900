//! The fake NIC's own wire: what a requesting queue pair sends to the responder's NIC thread
//! over a Unix stream socket, and what comes back. Little-endian, fixed size.

use std::io::{self, Read, Write};

/// Opcode byte of a request: RDMA READ.
pub const OP_READ: u8 = 1;
/// Opcode byte of a request: RDMA WRITE (the payload follows the header).
pub const OP_WRITE: u8 = 2;

/// The abstract Unix socket name of the NIC whose port has `gid`.
pub fn nic_name(gid: &[u8; 16]) -> String {
    let hex: String = gid.iter().map(|b| format!("{b:02x}")).collect();
    format!("te-fake-verbs-{hex}")
}

/// First message on a connection: which responder QP is addressed, and who asks.
pub struct Hello {
    /// The responder's QP number (the requester's `dest_qp_num`).
    pub dest_qpn: u32,
    /// The requester's QP number.
    pub src_qpn: u32,
    /// The requester's port GID.
    pub src_gid: [u8; 16],
}

impl Hello {
    /// Writes the hello.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.dest_qpn.to_le_bytes());
        b[4..8].copy_from_slice(&self.src_qpn.to_le_bytes());
        b[8..24].copy_from_slice(&self.src_gid);
        w.write_all(&b)
    }

    /// Reads a hello.
    pub fn read(r: &mut impl Read) -> io::Result<Hello> {
        let mut b = [0u8; 24];
        r.read_exact(&mut b)?;
        let mut src_gid = [0u8; 16];
        src_gid.copy_from_slice(&b[8..24]);
        Ok(Hello {
            dest_qpn: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            src_qpn: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            src_gid,
        })
    }
}

/// One RDMA request: [`OP_READ`] or [`OP_WRITE`] of `len` bytes at `addr` under `rkey`.
pub struct Request {
    /// [`OP_READ`] or [`OP_WRITE`].
    pub op: u8,
    /// Bytes to move.
    pub len: u32,
    /// Remote virtual address.
    pub addr: u64,
    /// Remote key.
    pub rkey: u32,
}

impl Request {
    /// Writes the header (a write's payload is written after it by the caller).
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut b = [0u8; 20];
        b[0] = self.op;
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_le_bytes());
        w.write_all(&b)
    }

    /// Reads a header.
    pub fn read(r: &mut impl Read) -> io::Result<Request> {
        let mut b = [0u8; 20];
        r.read_exact(&mut b)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[8..16]);
        Ok(Request {
            op: b[0],
            len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            addr: u64::from_le_bytes(a),
            rkey: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
        })
    }
}
