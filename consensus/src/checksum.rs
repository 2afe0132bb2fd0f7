//! Checksums for headers and bodies: xxh3-128 over the exact bytes.

/// The checksum of `bytes`. Every header, body and on-disk record is identified by one.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
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
}
