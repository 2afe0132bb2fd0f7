//! Checksums of on-disk records: xxh3-64 over the exact bytes (a 64-bit hash per record is
//! enough to tell damage from data; the VSR identity of a prepare is its own 128-bit checksum).

pub fn checksum64(parts: &[&[u8]]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_hash_like_their_concatenation_and_any_bit_changes_it() {
        let whole = checksum64(&[b"abcdef"]);
        assert_eq!(checksum64(&[b"abc", b"def"]), whole);
        assert_ne!(checksum64(&[b"abcdeg"]), whole);
    }
}
