//! The gateway's shared copy of the applied metadata for the data path: sends and single
//! consumers' polls and offsets look their topic up here instead of fetching a checkpoint
//! from the metadata primary on every request. An entry serves only when it holds every
//! metadata write made through this gateway (by any of its connections) and is younger than
//! `AGE_MAX`; a topic it does not know sends the caller to the primary (it may have just been
//! created through another gateway). So a change made through this gateway is seen at once by
//! all its connections, and one made through another gateway within `AGE_MAX`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use galgo_replica::metadata::Metadata;

/// How long a fetched checkpoint serves: the bound on how late the data path sees a
/// metadata change made elsewhere (a deleted topic, a revoked permission).
pub const AGE_MAX: Duration = Duration::from_secs(1);

struct Cached {
    /// The newest metadata op committed through this gateway: entries below it do not serve.
    written: u64,
    applied: u64,
    fetched: Instant,
    metadata: Arc<Metadata>,
}

#[derive(Default)]
pub struct MetadataCache {
    cached: Mutex<Option<Cached>>,
}

impl MetadataCache {
    /// The cached metadata, if it was applied through at least `floor` and is young enough.
    pub fn fresh(&self, floor: u64, now: Instant) -> Option<Arc<Metadata>> {
        let cached = self.cached.lock().expect("no thread panics holding it");
        cached
            .as_ref()
            .filter(|c| {
                c.applied >= floor.max(c.written)
                    && now.saturating_duration_since(c.fetched) < AGE_MAX
            })
            .map(|c| c.metadata.clone())
    }

    /// A metadata op committed through this gateway at `op`: no connection is served a copy
    /// from before it.
    pub fn written(&self, op: u64) {
        let mut cached = self.cached.lock().expect("no thread panics holding it");
        if let Some(c) = cached.as_mut() {
            c.written = c.written.max(op);
        }
    }

    /// What a new copy must have applied to serve: the newer of the cached copy and the
    /// newest write through this gateway (0 when empty).
    pub fn floor(&self) -> u64 {
        let cached = self.cached.lock().expect("no thread panics holding it");
        cached.as_ref().map_or(0, |c| c.applied.max(c.written))
    }

    /// Keeps `metadata` unless the cache holds a newer one (equal ones refresh the age).
    pub fn store(&self, applied: u64, metadata: Arc<Metadata>, now: Instant) {
        let mut cached = self.cached.lock().expect("no thread panics holding it");
        if cached.as_ref().is_some_and(|c| c.applied > applied) {
            return;
        }
        let written = cached.as_ref().map_or(0, |c| c.written);
        *cached = Some(Cached {
            written,
            applied,
            fetched: now,
            metadata,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galgo_replica::metadata::Limits;

    #[test]
    fn entries_serve_only_when_new_enough_and_young() {
        let cache = MetadataCache::default();
        let start = Instant::now();
        assert!(cache.fresh(0, start).is_none());
        cache.store(
            10,
            Arc::new(Metadata::new(vec![0], 1, Limits::default())),
            start,
        );
        assert!(cache.fresh(10, start).is_some());
        assert!(
            cache.fresh(11, start).is_none(),
            "older than the caller's writes"
        );
        assert!(cache.fresh(0, start + AGE_MAX).is_none(), "too old");
        // An older checkpoint never replaces a newer one.
        cache.store(
            5,
            Arc::new(Metadata::new(vec![0], 1, Limits::default())),
            start + AGE_MAX,
        );
        assert_eq!(cache.floor(), 10);
        assert!(cache.fresh(0, start + AGE_MAX).is_none());
        cache.store(
            12,
            Arc::new(Metadata::new(vec![0], 1, Limits::default())),
            start + AGE_MAX,
        );
        assert!(cache.fresh(12, start + AGE_MAX).is_some());
        // A write through this gateway at op 13: the copy at 12 serves no connection.
        cache.written(13);
        assert!(cache.fresh(0, start + AGE_MAX).is_none());
        assert_eq!(cache.floor(), 13);
        cache.store(
            13,
            Arc::new(Metadata::new(vec![0], 1, Limits::default())),
            start + AGE_MAX,
        );
        assert!(cache.fresh(0, start + AGE_MAX).is_some());
    }
}
