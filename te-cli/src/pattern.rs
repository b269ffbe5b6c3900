//! The byte pattern `te serve --fill SEED` writes and `te bench --verify`
//! expects of its embedded target.

/// Seed of the pattern `te bench`'s embedded target is filled with.
pub const TARGET_SEED: u64 = 1;

/// The byte at offset `i` of a buffer filled with `seed`.
pub fn byte(seed: u64, i: u64) -> u8 {
    let x = ((i / 8) ^ seed.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x.to_le_bytes()[(i % 8) as usize]
}

/// Fills `buf` as the bytes at offsets `base..` of a buffer filled with `seed`.
pub fn fill(buf: &mut [u8], seed: u64, base: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte(seed, base + i as u64);
    }
}

/// Whether `buf` holds the bytes at offsets `base..` of a buffer filled with `seed`.
pub fn matches(buf: &[u8], seed: u64, base: u64) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, &b)| b == byte(seed, base + i as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_buffer_matches_its_seed_only() {
        let mut b = vec![0u8; 100];
        fill(&mut b, 7, 40);
        assert!(matches(&b, 7, 40));
        assert!(!matches(&b, 8, 40));
        assert!(!matches(&b, 7, 48));
        assert!(!matches(&[0u8; 16], TARGET_SEED, 0));
    }
}
