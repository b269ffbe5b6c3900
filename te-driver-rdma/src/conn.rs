//! What two sides exchange before one-sided RDMA: each queue pair's address ([`ConnInfo`])
//! and each region's key ([`RemoteKey`]). Both are plain values with a fixed big-endian
//! encoding; [`ConnInfo`] is te-proto's, the form its `RdmaConn` frame carries.

pub use te_proto::rdma::ConnInfo;

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
    fn keys_round_trip_and_refuse_bad_fields() {
        let k = RemoteKey {
            addr: 0x7f00_0000_1000,
            len: 4096,
            rkey: 0xdead_beef,
        };
        assert_eq!(RemoteKey::decode(&k.encode()), Some(k));
        assert_eq!(RemoteKey::decode(&k.encode()[1..]), None);
        let wrap = RemoteKey {
            addr: u64::MAX,
            len: 2,
            rkey: 1,
        };
        assert_eq!(RemoteKey::decode(&wrap.encode()), None);
    }
}
