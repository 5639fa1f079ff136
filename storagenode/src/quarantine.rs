//! Chunk files taken out of service, kept apart by reason under each
//! disk's `quarantine/` (see [`crate::disk`]):
//!
//! - `quarantine/<hex>.<ms>`: corrupt copies (their bytes no longer hash to
//!   their id), kept for inspection;
//! - `quarantine/unlisted/<hex>.<ms>`: copies the metadata service does not
//!   list for this node. A wrong unlisting (an id taken over, an inventory
//!   taken as the truth by mistake) must not destroy data at once, so they
//!   are deleted only a grace period later, by the [`Sweeper`].
//!
//! `<ms>` is when the file was moved, in ms since the Unix epoch (a rename
//! keeps the write time as mtime, so the name carries it). The directory is
//! on the disk's own file system: moving a chunk there is a rename.
//! Quarantined chunks are in no inventory (never served, never counted as
//! copies) but their bytes count as used: they still take the disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bigfs_proto::ChunkId;
use tokio::sync::watch;

use crate::chunk_store::ChunkStore;

/// Where corrupt chunk files go.
pub fn corrupt_dir(root: &Path) -> PathBuf {
    root.join("quarantine")
}

/// Where unlisted chunk files wait for their deletion.
pub fn unlisted_dir(root: &Path) -> PathBuf {
    corrupt_dir(root).join("unlisted")
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The name of `id`'s file quarantined at `at`.
pub fn stamped_name(id: &ChunkId, at: SystemTime) -> String {
    format!("{}.{}", id.to_hex(), epoch_ms(at))
}

/// When a file named by [`stamped_name`] was quarantined (ms since the
/// epoch); None for any other name.
fn stamp_of(name: &str) -> Option<u64> {
    let (hex, ms) = name.rsplit_once('.')?;
    ChunkId::from_hex(hex).ok()?;
    ms.parse().ok()
}

/// One quarantined unlisted chunk file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub len: u64,
    /// When it was quarantined, ms since the epoch.
    pub since_ms: u64,
}

/// Every well-named file in `quarantine/unlisted/`; others are ignored.
pub fn scan_unlisted(root: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(unlisted_dir(root))?.flatten() {
        let name = entry.file_name();
        let Some(since_ms) = name.to_str().and_then(stamp_of) else {
            tracing::warn!(path = %entry.path().display(), "ignoring a file that is not a quarantined chunk");
            continue;
        };
        match entry.metadata() {
            Ok(m) if m.is_file() => out.push(Entry {
                path: entry.path(),
                len: m.len(),
                since_ms,
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `e` has been quarantined for `grace` at `now`.
pub fn expired(e: &Entry, grace: Duration, now: SystemTime) -> bool {
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    e.since_ms.saturating_add(grace_ms) <= epoch_ms(now)
}

/// Deletes quarantined unlisted chunks past their grace, at start and then
/// every `interval`, until shutdown.
pub struct Sweeper {
    pub store: ChunkStore,
    pub grace: Duration,
    pub interval: Duration,
}

impl Sweeper {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.store.sweep_unlisted(self.grace).await {
                Ok((0, _)) => {}
                Ok((files, bytes)) => {
                    tracing::info!(files, bytes, grace = ?self.grace, "deleted quarantined unlisted chunks past their grace")
                }
                Err(e) => tracing::warn!(error = %e, "quarantine sweep failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_names_round_trip_and_others_are_refused() {
        let id = ChunkId::of(b"x");
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1234);
        let name = stamped_name(&id, at);
        assert_eq!(stamp_of(&name), Some(1234));
        assert_eq!(stamp_of(&id.to_hex()), None);
        assert_eq!(stamp_of("zz.12"), None);
        assert_eq!(stamp_of(&format!("{}.x", id.to_hex())), None);
    }

    #[test]
    fn an_entry_expires_after_its_grace() {
        let e = Entry {
            path: PathBuf::new(),
            len: 1,
            since_ms: 10_000,
        };
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let grace = Duration::from_secs(5);
        assert!(!expired(&e, grace, at(14_999)));
        assert!(expired(&e, grace, at(15_000)));
    }
}
