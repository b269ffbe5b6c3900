//! The handshake (docs/PROTOCOL.md, "Handshake and authentication"): this
//! side's `Hello`, the peer's `Hello`/`HelloAck`/`Auth`, and the proofs of
//! the shared secret.

use super::config::{Caps, PeerInfo};
use super::state::{Phase, Reg, State};
use crate::auth::{self, Side};
use crate::registry::Entry;
use crate::status;
use crate::wire::{Hello, AUTH_HMAC_SHA256, AUTH_NONE};

/// How every refusal for the shared secret begins, on both sides: which
/// side has none, or that the two differ, follows it, naming the segments
/// (never "the peer", which reads wrong once the message reaches the
/// other side).
pub const SECRET_MISMATCH: &str = "shared secret mismatch: check --secret on both sides";

impl State {
    /// This side's `Hello` (or `HelloAck`) fields.
    pub(super) fn hello(&self) -> Hello<'_> {
        Hello {
            caps: self.cfg.caps.bits(),
            max_payload: self.cfg.max_payload,
            max_outstanding: self.cfg.max_outstanding,
            auth: if self.cfg.secret.is_some() {
                AUTH_HMAC_SHA256
            } else {
                AUTH_NONE
            },
            host_id: self.cfg.host_id,
            nonce: self.nonce,
            mac: self.hello_mac,
            name: &self.cfg.segment_name,
        }
    }

    fn record_peer(&mut self, h: &Hello<'_>) {
        let mut name = heapless::String::new();
        // The decoder bounded the name by SEGMENT_NAME_MAX, the capacity.
        let fits = name.push_str(h.name);
        debug_assert!(fits.is_ok(), "a segment name beyond SEGMENT_NAME_MAX");
        self.peer = Some(PeerInfo {
            segment_name: name,
            host_id: h.host_id,
            caps: Caps::from_bits_retain(h.caps),
            max_payload: h.max_payload,
            max_outstanding: h.max_outstanding,
        });
        self.peer_nonce = h.nonce;
    }

    /// The acceptor's side: the connector's `Hello`.
    pub(super) fn on_hello<S>(&mut self, h: &Hello<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.record_peer(h);
        self.due.hello = true;
        let own = self.cfg.segment_name.as_str();
        match &self.cfg.secret {
            Some(_) if h.auth != AUTH_HMAC_SHA256 => {
                let st = status!(NotAuthorized, "{SECRET_MISMATCH}: {:?} has none", h.name);
                self.shut(st, true, reg)
            }
            Some(secret) => {
                self.hello_mac = auth::prove(secret, Side::Acceptor, &h.nonce, &self.nonce);
                self.phase = Phase::AwaitAuth;
            }
            None if h.auth != AUTH_NONE => {
                let st = status!(NotAuthorized, "{SECRET_MISMATCH}: {own:?} has none");
                self.shut(st, true, reg)
            }
            None => self.established(),
        }
    }

    /// The connector's side: the acceptor's `HelloAck`.
    pub(super) fn on_hello_ack<S>(&mut self, h: &Hello<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.record_peer(h);
        let own = self.cfg.segment_name.as_str();
        match &self.cfg.secret {
            Some(_) if h.auth != AUTH_HMAC_SHA256 => {
                let st = status!(NotAuthorized, "{SECRET_MISMATCH}: {:?} has none", h.name);
                return self.shut(st, true, reg);
            }
            Some(secret) => {
                if !auth::verify(secret, Side::Acceptor, &self.nonce, &h.nonce, &h.mac) {
                    let st = status!(
                        NotAuthorized,
                        "{SECRET_MISMATCH}: {own:?} and {:?} differ",
                        h.name
                    );
                    return self.shut(st, true, reg);
                }
                self.due.auth = Some(auth::prove(secret, Side::Connector, &self.nonce, &h.nonce));
            }
            None if h.auth != AUTH_NONE => {
                let st = status!(NotAuthorized, "{SECRET_MISMATCH}: {own:?} has none");
                return self.shut(st, true, reg);
            }
            None => {}
        }
        self.established();
    }

    /// The acceptor's side: the connector's `Auth`.
    pub(super) fn on_auth<S>(&mut self, mac: &[u8; 32], reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let secret = self.cfg.secret.as_deref().unwrap_or(&[]);
        if auth::verify(secret, Side::Connector, &self.peer_nonce, &self.nonce, mac) {
            self.established();
        } else {
            let peer = self.peer.as_ref().map_or("", |p| p.segment_name.as_str());
            let own = self.cfg.segment_name.as_str();
            let st = status!(NotAuthorized, "{SECRET_MISMATCH}: {peer:?} and {own:?} differ");
            self.shut(st, true, reg);
        }
    }

    fn established(&mut self) {
        self.phase = Phase::Established;
        self.connected_due = true;
    }
}
