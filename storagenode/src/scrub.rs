//! Background scrubbing: re-hash every stored chunk at a bounded rate. A
//! chunk whose bytes no longer match its id is quarantined by the store
//! (never served again) and reported to the metadata service, which unlists
//! the replica and has the repair worker copy a good one back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::chunk_store::ChunkStore;
use crate::error::StoreError;
use crate::replication::Replicator;

/// Counters of the scrubber since start (for status pages).
#[derive(Debug, Default)]
pub struct ScrubStats {
    pub passes: AtomicU64,
    pub chunks_checked: AtomicU64,
    pub bytes_checked: AtomicU64,
    pub corrupt_found: AtomicU64,
}

pub struct Scrubber {
    pub store: ChunkStore,
    pub replicator: Replicator,
    /// Bytes re-hashed per second; 0 disables scrubbing.
    pub bytes_per_sec: u64,
    /// Pause before each pass.
    pub pause: Duration,
    pub stats: Arc<ScrubStats>,
}

/// How long to wait after checking `len` bytes to hold `rate` bytes/s.
pub fn throttle(len: u64, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(len as f64 / rate as f64)
}

impl Scrubber {
    /// Scrubs pass after pass until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if self.bytes_per_sec == 0 {
            tracing::info!("scrubbing disabled");
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.pause) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() || !self.pass(&mut shutdown).await {
                return;
            }
        }
    }

    /// One pass over the inventory; false on shutdown.
    async fn pass(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let inventory = match self.store.inventory().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "scrub: cannot list chunks");
                return true;
            }
        };
        let (mut checked, mut corrupt) = (0u64, 0u64);
        for id in inventory {
            if *shutdown.borrow() {
                return false;
            }
            let len = match self.store.get(id, 0, 0).await {
                Ok(r) => r.stored_len,
                Err(e @ StoreError::Corrupt(_)) => {
                    corrupt += 1;
                    self.stats.corrupt_found.fetch_add(1, Ordering::Relaxed);
                    let node = self.replicator.node_id().to_string();
                    tracing::error!(chunk = %id.short(), "scrub: corrupt replica quarantined");
                    self.replicator
                        .report_failure(&node, Some(id), "scrub", &e.to_string())
                        .await;
                    0
                }
                // Deleted since the listing: nothing to check.
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(chunk = %id.short(), error = %e, "scrub: cannot read chunk");
                    continue;
                }
            };
            checked += 1;
            self.stats.chunks_checked.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_checked.fetch_add(len, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(throttle(len, self.bytes_per_sec)) => {}
                _ = shutdown.changed() => return false,
            }
        }
        self.stats.passes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(checked, corrupt, "scrub pass done");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_holds_the_rate() {
        assert_eq!(throttle(1 << 20, 1 << 20), Duration::from_secs(1));
        assert_eq!(throttle(1 << 19, 1 << 20), Duration::from_millis(500));
        assert_eq!(throttle(5, 0), Duration::ZERO);
    }
}
