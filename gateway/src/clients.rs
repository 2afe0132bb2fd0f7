//! The clients connected to this gateway, for GetMe, GetClient and GetClients: each
//! connection's number, address, logged-in user and the consumer groups it joined. Entries
//! live exactly as long as their connection (a guard removes them, a panic included), so the
//! registry is bounded by the gateway's connection limit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::wire::put_long_str;

/// (stream id, topic id, group id).
pub type GroupKey = (u32, u32, u32);

/// Groups one connection may be recorded in (a client joins a handful; the bound keeps a
/// misbehaving one from growing the registry).
const GROUPS_PER_CLIENT_MAX: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientEntry {
    /// The connection's identity as a consumer-group member.
    pub member: u128,
    pub address: String,
    pub user_id: Option<u32>,
    pub groups: BTreeSet<GroupKey>,
}

#[derive(Default)]
pub struct ClientRegistry {
    entries: Mutex<BTreeMap<u32, ClientEntry>>,
}

impl ClientRegistry {
    fn update(&self, number: u32, change: impl FnOnce(&mut ClientEntry)) {
        let mut entries = self.entries.lock().expect("no thread panics holding it");
        if let Some(entry) = entries.get_mut(&number) {
            change(entry);
        }
    }

    pub fn set_user(&self, number: u32, user_id: Option<u32>) {
        self.update(number, |entry| {
            entry.user_id = user_id;
            if user_id.is_none() {
                entry.groups.clear();
            }
        });
    }

    pub fn joined(&self, number: u32, group: GroupKey) {
        self.update(number, |entry| {
            if entry.groups.len() < GROUPS_PER_CLIENT_MAX {
                entry.groups.insert(group);
            }
        });
    }

    pub fn left(&self, number: u32, group: GroupKey) {
        self.update(number, |entry| {
            entry.groups.remove(&group);
        });
    }

    pub fn holds(&self, number: u32) -> bool {
        let entries = self.entries.lock().expect("no thread panics holding it");
        entries.contains_key(&number)
    }

    pub fn get(&self, number: u32) -> Option<ClientEntry> {
        let entries = self.entries.lock().expect("no thread panics holding it");
        entries.get(&number).cloned()
    }

    /// Every client, by number.
    pub fn all(&self) -> Vec<(u32, ClientEntry)> {
        let entries = self.entries.lock().expect("no thread panics holding it");
        entries.iter().map(|(n, e)| (*n, e.clone())).collect()
    }
}

/// A connection's entry, removed when the guard drops.
pub struct Registered {
    registry: Arc<ClientRegistry>,
    number: u32,
}

impl Registered {
    pub fn new(
        registry: Arc<ClientRegistry>,
        number: u32,
        member: u128,
        address: String,
    ) -> Registered {
        // The accept loop, the only one that registers, picked a number nobody holds.
        let previous = registry
            .entries
            .lock()
            .expect("no thread panics holding it")
            .insert(
                number,
                ClientEntry {
                    member,
                    address,
                    ..ClientEntry::default()
                },
            );
        assert!(
            previous.is_none(),
            "connection numbers are unique while open"
        );
        Registered { registry, number }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .expect("no thread panics holding it")
            .remove(&self.number);
    }
}

/// `[client id u32][user id u32, MAX = none][transport u8 = 1 TCP][address u32-len]
/// [groups count u32]`, then, with `with_groups`, `[stream u32][topic u32][group u32]` each
/// (GetMe and GetClient; GetClients lists the count only).
pub fn put_client(out: &mut Vec<u8>, number: u32, entry: &ClientEntry, with_groups: bool) {
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&entry.user_id.unwrap_or(u32::MAX).to_le_bytes());
    out.push(1);
    put_long_str(out, &entry.address);
    let count = u32::try_from(entry.groups.len()).expect("bounded");
    out.extend_from_slice(&count.to_le_bytes());
    if with_groups {
        for (stream, topic, group) in &entry.groups {
            out.extend_from_slice(&stream.to_le_bytes());
            out.extend_from_slice(&topic.to_le_bytes());
            out.extend_from_slice(&group.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_their_connection() {
        let registry = Arc::new(ClientRegistry::default());
        let guard = Registered::new(registry.clone(), 9, 77, "1.2.3.4:5".into());
        registry.set_user(9, Some(3));
        registry.joined(9, (1, 2, 3));
        registry.joined(7, (1, 2, 3)); // not registered: ignored
        let entry = registry.get(9).unwrap();
        assert_eq!(entry.user_id, Some(3));
        let mut out = Vec::new();
        put_client(&mut out, 9, &entry, true);
        let expected = [
            &9u32.to_le_bytes()[..],
            &3u32.to_le_bytes(),
            &[1],
            &9u32.to_le_bytes(),
            b"1.2.3.4:5",
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            &3u32.to_le_bytes(),
        ]
        .concat();
        assert_eq!(out, expected);
        registry.left(9, (1, 2, 3));
        registry.set_user(9, None);
        assert_eq!(registry.all().len(), 1);
        assert_eq!(registry.get(7), None);
        drop(guard);
        assert!(registry.all().is_empty());
    }
}
