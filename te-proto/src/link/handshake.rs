//! The handshake (docs/PROTOCOL.md, "Handshake and authentication"): this
//! side's `Hello`, the peer's `Hello`/`HelloAck`/`Auth`, and the proofs of
//! the shared secret.

use super::config::{Caps, PeerInfo};
use super::state::{Phase, Reg, State};
use crate::auth::{self, Side};
use crate::error::Status;
use crate::registry::Entry;
use crate::status;
use crate::wire::{Hello, AUTH_HMAC_SHA256, AUTH_NONE};

/// How every refusal for the shared secret begins, on both sides; which
/// side has none, or that the two differ, follows it, as "this side" and
/// "the peer", whose segment name comes last (a long one is what a cut
/// message loses). Each side finds the mismatch itself (an
/// acceptor that refuses still sends its `HelloAck` first, so that the
/// connector sees which secret the acceptor has): a message about "this
/// side" never has to cross the link.
pub const SECRET_MISMATCH: &str = "shared secret mismatch: check --secret on both sides";

/// The refusal when this side has a secret and the peer `name` none.
fn peer_has_none(name: &str) -> Status {
    status!(
        NotAuthorized,
        "{SECRET_MISMATCH}: this side has one, the peer none ({name:?})"
    )
}

/// The refusal when the peer `name` has a secret and this side none.
fn this_has_none(name: &str) -> Status {
    status!(
        NotAuthorized,
        "{SECRET_MISMATCH}: this side has none, the peer one ({name:?})"
    )
}

/// The refusal when both sides have a secret and they differ.
pub(super) fn secrets_differ(name: &str) -> Status {
    status!(
        NotAuthorized,
        "{SECRET_MISMATCH}: this side's and the peer's differ ({name:?})"
    )
}

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
        let refusal = match &self.cfg.secret {
            Some(_) if h.auth != AUTH_HMAC_SHA256 => peer_has_none(h.name),
            Some(secret) => {
                self.hello_mac = auth::prove(secret, Side::Acceptor, &h.nonce, &self.nonce);
                self.phase = Phase::AwaitAuth;
                return;
            }
            None if h.auth != AUTH_NONE => this_has_none(h.name),
            None => return self.established(),
        };
        // The `HelloAck` still goes out, before the `Error`: from its auth
        // field the connector finds the mismatch itself.
        self.shut(refusal, true, reg);
        self.due.hello = true;
    }

    /// The connector's side: the acceptor's `HelloAck`.
    pub(super) fn on_hello_ack<S>(&mut self, h: &Hello<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.record_peer(h);
        match &self.cfg.secret {
            Some(_) if h.auth != AUTH_HMAC_SHA256 => return self.shut(peer_has_none(h.name), true, reg),
            Some(secret) => {
                if !auth::verify(secret, Side::Acceptor, &self.nonce, &h.nonce, &h.mac) {
                    return self.shut(secrets_differ(h.name), true, reg);
                }
                self.due.auth = Some(auth::prove(secret, Side::Connector, &self.nonce, &h.nonce));
            }
            None if h.auth != AUTH_NONE => return self.shut(this_has_none(h.name), true, reg),
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
            let why = secrets_differ(self.peer_name());
            self.shut(why, true, reg);
        }
    }

    fn established(&mut self) {
        self.phase = Phase::Established;
        self.connected_due = true;
    }
}
