//! What the RDMA path carries on the wire (docs/PROTOCOL.md, "RDMA path"):
//! how a peer reaches one queue pair ([`ConnInfo`]), the queue pairs one
//! side offers ([`Conns`]), why a side has no RDMA ([`RdmaOff`]), and the
//! rule of a common fabric ([`common_fabric`]).

use core::fmt;

/// Bytes of [`ConnInfo::encode`].
pub const CONN_INFO_LEN: usize = 27;

/// Most queue pairs one side offers on one link (one per NIC it stripes
/// over).
pub const MAX_RDMA_QPS: usize = 4;

/// How a peer reaches one queue pair: what `ibv_modify_qp` to RTR and RTS
/// needs from the other side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
    pub const WIRE_LEN: usize = CONN_INFO_LEN;

    /// The wire form: qpn (4), psn (4), gid (16), lid (2), mtu (1), big-endian.
    pub fn encode(&self) -> [u8; CONN_INFO_LEN] {
        let mut b = [0u8; CONN_INFO_LEN];
        b[0..4].copy_from_slice(&self.qpn.to_be_bytes());
        b[4..8].copy_from_slice(&self.psn.to_be_bytes());
        b[8..24].copy_from_slice(&self.gid);
        b[24..26].copy_from_slice(&self.lid.to_be_bytes());
        b[26] = self.mtu;
        b
    }

    /// Parses [`ConnInfo::encode`]'s form; `None` when the length is wrong
    /// or a field is out of range (QPN or PSN over 24 bits, MTU not 1..=5).
    pub fn decode(b: &[u8]) -> Option<ConnInfo> {
        let b: &[u8; CONN_INFO_LEN] = b.try_into().ok()?;
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

    /// InfiniBand (a LID is set) rather than RoCE (LID 0, the GID routes).
    pub fn is_infiniband(&self) -> bool {
        self.lid != 0
    }
}

/// The queue pairs one side offers on a link: 1 to [`MAX_RDMA_QPS`]
/// [`ConnInfo`]s, one per NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conns {
    len: u8,
    items: [ConnInfo; MAX_RDMA_QPS],
}

impl Conns {
    /// The offer of `conns`; `None` when there are none or more than
    /// [`MAX_RDMA_QPS`].
    pub fn new(conns: &[ConnInfo]) -> Option<Conns> {
        if conns.is_empty() || conns.len() > MAX_RDMA_QPS {
            return None;
        }
        let mut items = [ConnInfo::default(); MAX_RDMA_QPS];
        items[..conns.len()].copy_from_slice(conns);
        Some(Conns {
            len: conns.len() as u8,
            items,
        })
    }

    /// The queue pairs, in the order offered (NIC order).
    pub fn as_slice(&self) -> &[ConnInfo] {
        &self.items[..usize::from(self.len)]
    }
}

/// Why a side has no RDMA with its peer, carried in the refusing answer
/// (docs/PROTOCOL.md, "RDMA path").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RdmaOff {
    /// This side has no RDMA device (the library or a device is missing).
    NoDevice = 1,
    /// RDMA is switched off in this side's configuration.
    Disabled = 2,
    /// No queue pair of the offer shares a fabric with this side's NICs.
    NoCommonFabric = 3,
    /// This side could not set up its queue pair (out of resources, or the
    /// NIC refused the peer's connection data).
    SetupFailed = 4,
}

impl RdmaOff {
    /// The reason of wire value `v`, or `None` for an unknown one.
    pub const fn from_u8(v: u8) -> Option<RdmaOff> {
        match v {
            1 => Some(RdmaOff::NoDevice),
            2 => Some(RdmaOff::Disabled),
            3 => Some(RdmaOff::NoCommonFabric),
            4 => Some(RdmaOff::SetupFailed),
            _ => None,
        }
    }

    /// The wire value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl RdmaOff {
    /// What the reason says, as the side that did not refuse reads it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RdmaOff::NoDevice => "the peer has no RDMA device",
            RdmaOff::Disabled => "RDMA is off in the peer's configuration",
            RdmaOff::NoCommonFabric => "no common RDMA fabric with the peer",
            RdmaOff::SetupFailed => "the peer could not set up its queue pair",
        }
    }
}

impl fmt::Display for RdmaOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether queue pairs `a` and `b` can reach each other: the same link
/// layer (both InfiniBand or both RoCE), on InfiniBand the same subnet
/// prefix (the first 8 bytes of the GID; crossing subnets needs a GRH and a
/// router this rule does not assume), on RoCE a GID set on both (routable
/// by IP; whether the route exists only a connection attempt tells).
pub fn common_fabric(a: &ConnInfo, b: &ConnInfo) -> bool {
    match (a.is_infiniband(), b.is_infiniband()) {
        (true, true) => a.gid[..8] == b.gid[..8],
        (false, false) => a.gid != [0; 16] && b.gid != [0; 16],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(lid: u16, gid0: u8) -> ConnInfo {
        let mut gid = [0; 16];
        gid[0] = gid0;
        gid[15] = 1;
        ConnInfo {
            qpn: 0x12_3456,
            psn: 0xab_cdef,
            gid,
            lid,
            mtu: 3,
        }
    }

    #[test]
    fn conn_info_round_trips_and_refuses_bad_fields() {
        let c = conn(9, 0xfe);
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
        bad = b;
        bad[4] = 1;
        assert_eq!(ConnInfo::decode(&bad), None);
    }

    #[test]
    fn conns_hold_one_to_max() {
        assert_eq!(Conns::new(&[]), None);
        assert_eq!(Conns::new(&[conn(1, 0); MAX_RDMA_QPS + 1]), None);
        let c = Conns::new(&[conn(1, 0), conn(2, 0)]).unwrap();
        assert_eq!(c.as_slice(), &[conn(1, 0), conn(2, 0)]);
    }

    #[test]
    fn reasons_round_trip_and_unknown_ones_are_none() {
        for r in [
            RdmaOff::NoDevice,
            RdmaOff::Disabled,
            RdmaOff::NoCommonFabric,
            RdmaOff::SetupFailed,
        ] {
            assert_eq!(RdmaOff::from_u8(r.as_u8()), Some(r));
        }
        assert_eq!(RdmaOff::from_u8(0), None);
        assert_eq!(RdmaOff::from_u8(5), None);
    }

    #[test]
    fn fabric_needs_one_link_layer_and_on_infiniband_one_subnet() {
        assert!(common_fabric(&conn(1, 0xfe), &conn(2, 0xfe)));
        assert!(!common_fabric(&conn(1, 0xfe), &conn(2, 0xfd)));
        assert!(common_fabric(&conn(0, 0x0a), &conn(0, 0x0b)));
        assert!(!common_fabric(&conn(1, 0xfe), &conn(0, 0xfe)));
        let mut none = conn(0, 0);
        none.gid = [0; 16];
        assert!(!common_fabric(&none, &conn(0, 0x0a)));
    }
}
