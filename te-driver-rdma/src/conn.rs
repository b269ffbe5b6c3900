//! What two sides exchange before one-sided RDMA: each queue pair's address ([`ConnInfo`])
//! and each region's key ([`RemoteKey`]). Both are plain values with a fixed big-endian
//! encoding, so te-proto's handshake and region listing can carry them as they are.

/// How a peer reaches one queue pair: what `ibv_modify_qp` to RTR and RTS needs from the
/// other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// QP number (24 bits).
    pub qpn: u32,
    /// First packet sequence number the QP sends (24 bits); the peer's `rq_psn`.
    pub psn: u32,
    /// The port GID (RoCE, or InfiniBand across subnets).
    pub gid: [u8; 16],
    /// The port LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// The port's active MTU as `enum ibv_mtu` (1 = 256 .. 5 = 4096).
    pub mtu: u8,
}

impl ConnInfo {
    /// Bytes of [`ConnInfo::encode`].
    pub const WIRE_LEN: usize = 27;

    /// The wire form: qpn (4), psn (4), gid (16), lid (2), mtu (1), big-endian.
    pub fn encode(&self) -> [u8; Self::WIRE_LEN] {
        let mut b = [0u8; Self::WIRE_LEN];
        b[0..4].copy_from_slice(&self.qpn.to_be_bytes());
        b[4..8].copy_from_slice(&self.psn.to_be_bytes());
        b[8..24].copy_from_slice(&self.gid);
        b[24..26].copy_from_slice(&self.lid.to_be_bytes());
        b[26] = self.mtu;
        b
    }

    /// Parses [`ConnInfo::encode`]'s form; `None` when the length is wrong or a field is out
    /// of range (QPN or PSN over 24 bits, MTU not 1..=5).
    pub fn decode(b: &[u8]) -> Option<ConnInfo> {
        if b.len() != Self::WIRE_LEN {
            return None;
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[8..24]);
        let c = ConnInfo {
            qpn: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            psn: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            gid,
            lid: u16::from_be_bytes([b[24], b[25]]),
            mtu: b[26],
        };
        (c.qpn <= 0xff_ffff && c.psn <= 0xff_ffff && (1..=5).contains(&c.mtu)).then_some(c)
    }
}

/// A region a peer may access: its address range in the owner's process and the rkey its
/// NIC checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteKey {
    /// First byte (the owner's virtual address).
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// The memory region's rkey.
    pub rkey: u32,
}

impl RemoteKey {
    /// Bytes of [`RemoteKey::encode`].
    pub const WIRE_LEN: usize = 20;

    /// The wire form: addr (8), len (8), rkey (4), big-endian.
    pub fn encode(&self) -> [u8; Self::WIRE_LEN] {
        let mut b = [0u8; Self::WIRE_LEN];
        b[0..8].copy_from_slice(&self.addr.to_be_bytes());
        b[8..16].copy_from_slice(&self.len.to_be_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_be_bytes());
        b
    }

    /// Parses [`RemoteKey::encode`]'s form; `None` for a wrong length or a wrapping range.
    pub fn decode(b: &[u8]) -> Option<RemoteKey> {
        if b.len() != Self::WIRE_LEN {
            return None;
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let k = RemoteKey {
            addr: u64_at(0),
            len: u64_at(8),
            rkey: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
        };
        k.addr.checked_add(k.len).map(|_| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_info_and_keys_round_trip_and_refuse_bad_fields() {
        let c = ConnInfo {
            qpn: 0x12_3456,
            psn: 0xab_cdef,
            gid: [7; 16],
            lid: 9,
            mtu: 3,
        };
        let b = c.encode();
        assert_eq!(&b[0..4], &[0, 0x12, 0x34, 0x56]);
        assert_eq!(ConnInfo::decode(&b), Some(c));
        assert_eq!(ConnInfo::decode(&b[1..]), None);
        let mut bad = b;
        bad[26] = 6;
        assert_eq!(ConnInfo::decode(&bad), None);
        bad = b;
        bad[0] = 1;
        assert_eq!(ConnInfo::decode(&bad), None);
        let k = RemoteKey {
            addr: 0x7f00_0000_1000,
            len: 4096,
            rkey: 0xdead_beef,
        };
        assert_eq!(RemoteKey::decode(&k.encode()), Some(k));
        let wrap = RemoteKey {
            addr: u64::MAX,
            len: 2,
            rkey: 1,
        };
        assert_eq!(RemoteKey::decode(&wrap.encode()), None);
    }
}
