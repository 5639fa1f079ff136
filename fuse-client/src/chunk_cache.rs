//! LRU cache of verified chunk bytes, bounded in bytes, keyed by chunk id.
//!
//! Chunks are immutable and named by their hash, so a cached chunk can never
//! be stale: the cache needs no invalidation.

use std::sync::Mutex;

use bytes::Bytes;

use bigfs_proto::ChunkId;
use lru::LruCache;

pub struct ChunkCache {
    inner: Mutex<Inner>,
    capacity: u64,
}

struct Inner {
    lru: LruCache<ChunkId, Bytes>,
    bytes: u64,
}

impl ChunkCache {
    pub fn new(capacity_bytes: u64) -> Self {
        ChunkCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity: capacity_bytes,
        }
    }

    pub fn get(&self, id: &ChunkId) -> Option<Bytes> {
        self.inner.lock().ok()?.lru.get(id).cloned()
    }

    /// Whether `id` is cached, without touching its recency.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.inner
            .lock()
            .map(|i| i.lru.contains(id))
            .unwrap_or(false)
    }

    /// Inserts verified bytes, evicting the least recently used chunks.
    /// A chunk larger than the whole cache is not kept.
    pub fn insert(&self, id: ChunkId, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.lru.put(id, data) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_to_stay_within_bytes() {
        let c = ChunkCache::new(10);
        let a = ChunkId::of(b"a");
        let b = ChunkId::of(b"b");
        let d = ChunkId::of(b"d");
        c.insert(a, Bytes::from(vec![0; 4]));
        c.insert(b, Bytes::from(vec![0; 4]));
        assert!(c.get(&a).is_some()); // a is now most recent
        c.insert(d, Bytes::from(vec![0; 4]));
        assert_eq!(c.bytes(), 8);
        assert!(c.contains(&a));
        assert!(!c.contains(&b));
        assert!(c.contains(&d));
    }

    #[test]
    fn a_chunk_larger_than_the_cache_is_not_kept() {
        let c = ChunkCache::new(3);
        c.insert(ChunkId::of(b"x"), Bytes::from(vec![0; 4]));
        assert_eq!(c.bytes(), 0);
    }
}
