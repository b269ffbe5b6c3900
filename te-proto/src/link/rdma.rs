//! The RDMA half of a link (docs/PROTOCOL.md, "RDMA path"): the queue pairs
//! this side offered or answered with, what the peer said, and the
//! `RdmaConn` frame due. The exchange runs once, after the handshake (so
//! after authentication when a secret is set): the connector offers, the
//! acceptor answers with its own queue pairs or refuses with a reason.
//! The shell creates and connects the queue pairs; the link only carries
//! their [`ConnInfo`]s and enforces the order.

use super::config::Caps;
use super::state::{Phase, Reg, Role, State};
use super::Link;
use crate::error::Result;
use crate::rdma::{common_fabric, ConnInfo, Conns, RdmaOff, MAX_RDMA_QPS};
use crate::registry::Entry;
use crate::status;
use crate::wire::RdmaMsg;

/// The RDMA half of a link, from [`Link::rdma`]: what each side said.
#[derive(Debug, Default)]
pub struct Rdma {
    /// This side's queue pairs, offered or answered with.
    local: Option<Conns>,
    /// This side's refusal of the peer's offer.
    refused: Option<RdmaOff>,
    /// The peer's queue pairs, or its refusal of our offer.
    peer: Option<core::result::Result<Conns, RdmaOff>>,
    /// The frame this side owes the peer.
    due: Option<RdmaMsg>,
    /// The peer's frame came and [`Event::Rdma`](super::Event::Rdma) is owed.
    announce: bool,
}

impl Rdma {
    /// This side's queue pairs, once offered or answered with.
    pub fn local(&self) -> Option<&[ConnInfo]> {
        self.local.as_ref().map(Conns::as_slice)
    }

    /// The peer's queue pairs (`Ok`), or why it has no RDMA with this side
    /// (`Err`, from its refusal); `None` until it said either.
    pub fn peer(&self) -> Option<core::result::Result<&[ConnInfo], RdmaOff>> {
        self.peer
            .as_ref()
            .map(|p| p.as_ref().map(Conns::as_slice).map_err(|r| *r))
    }

    /// Both sides gave their queue pairs: transfers may go over RDMA.
    pub fn ready(&self) -> bool {
        self.local.is_some() && matches!(self.peer, Some(Ok(_)))
    }

    /// Both sides gave queue pairs and one of this side's shares a fabric
    /// with one of the peer's ([`common_fabric`]): the path rule may pick
    /// RDMA.
    pub fn usable(&self) -> bool {
        match (self.local(), self.peer()) {
            (Some(mine), Some(Ok(theirs))) => mine.iter().any(|a| theirs.iter().any(|b| common_fabric(a, b))),
            _ => false,
        }
    }

    /// Why this link has no RDMA, once one side refused: this side's own
    /// refusal or the peer's.
    pub fn refusal(&self) -> Option<RdmaOff> {
        self.refused.or(match self.peer {
            Some(Err(r)) => Some(r),
            _ => None,
        })
    }

    /// The acceptor's side: the peer's offer came and is not answered yet.
    pub fn offer_pending(&self) -> bool {
        matches!(self.peer, Some(Ok(_))) && self.local.is_none() && self.refused.is_none()
    }

    pub(super) fn has_frame_due(&self) -> bool {
        self.due.is_some()
    }

    pub(super) fn due(&self) -> Option<RdmaMsg> {
        self.due
    }

    pub(super) fn sent(&mut self) {
        self.due = None;
    }

    pub(super) fn take_announce(&mut self) -> bool {
        core::mem::take(&mut self.announce)
    }
}

fn conns(conns: &[ConnInfo]) -> Result<Conns> {
    Conns::new(conns).ok_or_else(|| {
        status!(
            Invalid,
            "RDMA offer of {} queue pairs: must be 1 to {MAX_RDMA_QPS}",
            conns.len()
        )
    })
}

impl Link {
    /// The RDMA half: what this side and the peer said.
    pub fn rdma(&self) -> &Rdma {
        &self.s.rdma
    }

    /// The connector's side: offers the peer this side's queue pairs (one
    /// per NIC, 1 to [`MAX_RDMA_QPS`]), once, after [`Event::Connected`](super::Event::Connected).
    /// The answer comes as [`Event::Rdma`](super::Event::Rdma). `NotReady`
    /// before the handshake ends or after the link closed, `NotSupported`
    /// when this side's or the peer's handshake lacks [`Caps::RDMA`],
    /// `Invalid` on the acceptor, for a second offer or a bad count.
    pub fn offer_rdma(&mut self, offer: &[ConnInfo]) -> Result<()> {
        let s = &mut self.s;
        if s.phase != Phase::Established {
            return Err(status!(
                NotReady,
                "RDMA offer before the handshake ended or after the close"
            ));
        }
        if s.role != Role::Connector {
            return Err(status!(
                Invalid,
                "RDMA offer from the acceptor: only the connector offers"
            ));
        }
        let peer_caps = s.peer.as_ref().map_or(Caps::empty(), |p| p.caps);
        if !s.cfg.caps.contains(Caps::RDMA) || !peer_caps.contains(Caps::RDMA) {
            return Err(status!(
                NotSupported,
                "RDMA offer to {:?}: the RDMA capability is missing on {}",
                s.peer_name(),
                if s.cfg.caps.contains(Caps::RDMA) {
                    "the peer"
                } else {
                    "this side"
                }
            ));
        }
        if s.rdma.local.is_some() {
            return Err(status!(Invalid, "a second RDMA offer on this link"));
        }
        let c = conns(offer)?;
        s.rdma.local = Some(c);
        s.rdma.due = Some(RdmaMsg::Offer(c));
        Ok(())
    }

    /// The acceptor's side: answers the peer's offer ([`Rdma::offer_pending`])
    /// with this side's queue pairs (`Ok`, connected to the peer's) or
    /// refuses it with a reason (`Err`), once. `NotReady` after the link
    /// closed, `Invalid` without an offer pending or for a bad count.
    pub fn answer_rdma(&mut self, answer: core::result::Result<&[ConnInfo], RdmaOff>) -> Result<()> {
        let s = &mut self.s;
        if s.phase != Phase::Established {
            return Err(status!(NotReady, "RDMA answer on a link that is not open"));
        }
        if !s.rdma.offer_pending() {
            return Err(status!(
                Invalid,
                "RDMA answer with no offer from the peer pending"
            ));
        }
        let msg = match answer {
            Ok(a) => {
                let c = conns(a)?;
                s.rdma.local = Some(c);
                RdmaMsg::Answer(c)
            }
            Err(why) => {
                s.rdma.refused = Some(why);
                RdmaMsg::Off(why)
            }
        };
        s.rdma.due = Some(msg);
        Ok(())
    }
}

impl State {
    /// The peer's `RdmaConn`: an offer reaches only an acceptor that set
    /// [`Caps::RDMA`], once; an answer or refusal only the connector that
    /// offered, once. Anything else is a protocol violation.
    pub(super) fn on_rdma<S>(&mut self, msg: RdmaMsg, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let said = match msg {
            RdmaMsg::Offer(c) => {
                if self.role != Role::Acceptor {
                    return self.violation(reg, format_args!("RdmaConn offer sent to the connector"));
                }
                if !self.cfg.caps.contains(Caps::RDMA) {
                    return self.violation(
                        reg,
                        format_args!("RdmaConn offer to a side without the RDMA capability"),
                    );
                }
                Ok(c)
            }
            RdmaMsg::Answer(c) => Ok(c),
            RdmaMsg::Off(why) => Err(why),
        };
        if self.rdma.peer.is_some() {
            return self.violation(reg, format_args!("a second RdmaConn from the peer"));
        }
        if !matches!(msg, RdmaMsg::Offer(_)) && (self.role != Role::Connector || self.rdma.local.is_none()) {
            return self.violation(reg, format_args!("RdmaConn answer to no offer of this side"));
        }
        self.rdma.peer = Some(said);
        self.rdma.announce = true;
    }
}
