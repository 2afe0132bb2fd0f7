//! Names and identifiers: how a client names a stream, topic, user or group (by numeric id or
//! by name, as Iggy's `Identifier`), and what a valid name is.

use super::error::MetadataError;

pub const NAME_LEN_MAX: usize = 255;

/// A stream, topic, user or consumer group, by id or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ident {
    Id(u32),
    Name(String),
}

impl std::fmt::Display for Ident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ident::Id(id) => write!(f, "#{id}"),
            Ident::Name(name) => write!(f, "'{name}'"),
        }
    }
}

/// The entry of `map` that `ident` names: by key, or by the name `name_of` reads off it.
pub fn find<'a, V>(
    map: &'a std::collections::BTreeMap<u32, V>,
    ident: &Ident,
    name_of: impl Fn(&V) -> &str,
) -> Option<&'a V> {
    match ident {
        Ident::Id(id) => map.get(id),
        Ident::Name(name) => map.values().find(|v| name_of(v) == name),
    }
}

/// 1 to 255 bytes of UTF-8 without control characters.
pub fn validate_name(name: &str) -> Result<(), MetadataError> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(MetadataError::InvalidName(format!(
            "{} bytes (1 to {NAME_LEN_MAX})",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(MetadataError::InvalidName(
            "control characters are not allowed".to_string(),
        ));
    }
    Ok(())
}

/// The lowest id not in use, below `limit`.
pub fn lowest_free_id<V>(taken: &std::collections::BTreeMap<u32, V>, limit: u32) -> Option<u32> {
    let mut candidate = 0u32;
    for id in taken.keys() {
        if *id != candidate {
            break;
        }
        candidate += 1;
    }
    (candidate < limit).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn names_are_checked_and_ids_reuse_the_lowest_gap() {
        assert!(validate_name("orders").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert!(validate_name("a\nb").is_err());
        let mut taken: BTreeMap<u32, ()> = BTreeMap::new();
        assert_eq!(lowest_free_id(&taken, 3), Some(0));
        taken.insert(0, ());
        taken.insert(1, ());
        taken.insert(3, ());
        assert_eq!(lowest_free_id(&taken, 10), Some(2));
        taken.insert(2, ());
        assert_eq!(lowest_free_id(&taken, 4), None);
    }
}
