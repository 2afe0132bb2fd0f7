//! Checksums for headers and bodies: xxh3-128 over the exact bytes (twox-hash, which picks
//! AVX2 or SSE2 at run time).

/// The checksum of `bytes`. Every header, body and on-disk record is identified by one.
pub fn checksum(bytes: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_changes_with_any_bit() {
        let mut bytes = vec![7u8; 300];
        let base = checksum(&bytes);
        for index in [0usize, 1, 150, 299] {
            bytes[index] ^= 1;
            assert_ne!(checksum(&bytes), base);
            bytes[index] ^= 1;
        }
        assert_eq!(checksum(&bytes), base);
    }

    /// Headers and prepares already on disk were checksummed with xxhash-rust: same values.
    #[test]
    fn values_match_the_reference_implementation() {
        let bytes: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for len in [
            0, 1, 16, 17, 128, 129, 240, 241, 256, 1024, 65_536, 2_000_000,
        ] {
            let data = &bytes[..len];
            assert_eq!(checksum(data), xxhash_rust::xxh3::xxh3_128(data), "{len}");
        }
    }
}
