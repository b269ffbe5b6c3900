//! The host identity sent in the handshake: boot id, machine id and the
//! network namespace, so that equal identities mean "same kernel, same
//! machine image, same network namespace" (never compared by host name).

use std::fs;
use std::os::unix::fs::MetadataExt;

/// 16 bytes of the boot id, 8 of the machine id, 8 of the network
/// namespace's inode. Parts that cannot be read stay random, so that such
/// a host is never taken for another.
pub(crate) fn host_id() -> [u8; 32] {
    let mut id = random_bytes();
    if let Some(b) = read_hex("/proc/sys/kernel/random/boot_id") {
        if b.len() >= 16 {
            id[..16].copy_from_slice(&b[..16]);
        }
    }
    if let Some(m) = read_hex("/etc/machine-id") {
        if m.len() >= 8 {
            id[16..24].copy_from_slice(&m[..8]);
        }
    }
    if let Ok(ns) = fs::metadata("/proc/self/ns/net") {
        id[24..32].copy_from_slice(&(ns.ino() ^ ns.dev().rotate_left(32)).to_be_bytes());
    }
    id
}

/// The hex digits of a file (dashes and whitespace skipped), as bytes.
fn read_hex(path: &str) -> Option<Vec<u8>> {
    let s = fs::read_to_string(path).ok()?;
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| (c as char).to_digit(16).unwrap_or(0) as u8)
        .collect();
    Some(digits.chunks_exact(2).map(|p| p[0] << 4 | p[1]).collect())
}

pub(crate) use crate::core::random_nonce as random_bytes;

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_id_is_stable_within_a_process() {
        assert_eq!(super::host_id(), super::host_id());
    }
}
