//! Shared-secret challenge-response for the handshake (HMAC-SHA256).
//!
//! Both sides send a fresh 32-byte nonce. The acceptor proves the secret
//! with `HMAC(secret, "te1 acceptor" || nonce_c || nonce_a)`, the connector
//! with `HMAC(secret, "te1 connector" || nonce_c || nonce_a)`, where
//! `nonce_c` is the connector's nonce and `nonce_a` the acceptor's. The
//! labels keep one side's proof from being replayed as the other's, and the
//! fresh nonces keep old proofs from being replayed at all.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest shared secret, in bytes.
pub const SECRET_MAX: usize = 64;

/// Which side a proof is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Connector,
    Acceptor,
}

fn mac(secret: &[u8], side: Side, nonce_c: &[u8; 32], nonce_a: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => Hmac::<Sha256>::new(&Default::default()),
    };
    m.update(match side {
        Side::Connector => b"te1 connector",
        Side::Acceptor => b"te1 acceptor",
    });
    m.update(nonce_c);
    m.update(nonce_a);
    m
}

/// The proof of `side`.
pub(crate) fn prove(secret: &[u8], side: Side, nonce_c: &[u8; 32], nonce_a: &[u8; 32]) -> [u8; 32] {
    mac(secret, side, nonce_c, nonce_a).finalize().into_bytes().into()
}

/// Checks a proof of `side` in constant time.
pub(crate) fn verify(
    secret: &[u8],
    side: Side,
    nonce_c: &[u8; 32],
    nonce_a: &[u8; 32],
    proof: &[u8; 32],
) -> bool {
    mac(secret, side, nonce_c, nonce_a).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_side_and_nonces() {
        let (c, a) = ([1u8; 32], [2u8; 32]);
        let p = prove(b"secret", Side::Connector, &c, &a);
        assert!(verify(b"secret", Side::Connector, &c, &a, &p));
        assert!(!verify(b"secreT", Side::Connector, &c, &a, &p));
        assert!(!verify(b"secret", Side::Acceptor, &c, &a, &p));
        assert!(!verify(b"secret", Side::Connector, &a, &c, &p));
    }
}
