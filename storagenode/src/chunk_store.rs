//! The chunk files of one node, over one or more data directories
//! ("disks", see [`crate::disk`] for the layout of each).
//!
//! - Placement: a new chunk goes to an `ok` disk chosen at random weighted
//!   by its free space (the reserve and any configured capacity taken off),
//!   so disks fill evenly whatever their sizes.
//! - An in-memory index says which disk holds each chunk; it is built from
//!   the scan at open and kept up to date by every put, delete and
//!   quarantine, so a read opens one file.
//! - A disk that fails (an I/O error meaning the device is gone, or the
//!   periodic [`check_disks`](ChunkStore::check_disks) finding its directory
//!   replaced or its marker gone) is marked bad: its chunks leave the index
//!   (never served, never in the inventory), and the change is signalled
//!   so the node registers again with the smaller inventory and the disk
//!   named bad; the metadata service then unlists those copies and heals
//!   them elsewhere. The other disks keep serving.
//!
//! Every read re-hashes the whole chunk, so corruption is never served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bigfs_proto::{ChunkId, MAX_CHUNK_SIZE};
use bytes::Bytes;
use tokio::sync::watch;

use crate::disk::{Disk, DiskFigures, is_disk_failure};
use crate::error::StoreError;
use crate::marker::{self, Verdict};

/// Sizes the store works with, per disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Bytes always left free on each disk's file system.
    pub reserve_bytes: u64,
    /// Bytes each disk offers; 0 = its file system's size.
    pub capacity_bytes: u64,
}

/// The chunk files of one node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    disks: Vec<Disk>,
    /// Which disk (index into `disks`) holds each chunk.
    index: Mutex<HashMap<ChunkId, usize>>,
    /// Bumped each time a disk goes bad.
    bad_disks: watch::Sender<u64>,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was written now.
    Stored,
    /// The chunk was already present; nothing was written.
    AlreadyPresent,
}

/// Whether a read checks the chunk's bytes against its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Hash the whole chunk; a corrupt copy is quarantined.
    Verify,
    /// The reader checks the bytes itself (the client's end-to-end check).
    CallerVerifies,
}

/// A range read from a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRead {
    pub data: Vec<u8>,
    pub stored_len: u64,
}

/// How the disks are opened.
#[derive(Debug, Clone, Default)]
pub struct DiskOptions {
    /// Written into the marker of a disk initialised now.
    pub node_id: String,
    /// Initialise every data directory without a marker (`--init-disks`).
    pub init_disks: bool,
}

impl ChunkStore {
    /// Opens a store on one data directory (created if needed): for tests
    /// and tools.
    pub async fn open(data_dir: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        Self::open_disks(&[data_dir.to_path_buf()], limits, DiskOptions::default()).await
    }

    /// Opens the store over `dirs`: checks each directory's marker (see
    /// [`crate::marker`]), removes stale temporary files and indexes the
    /// chunks. A directory that cannot be used is kept as a bad disk (shown
    /// and reported); an error only when no disk can be used.
    pub async fn open_disks(
        dirs: &[PathBuf],
        limits: StoreLimits,
        options: DiskOptions,
    ) -> Result<Self, StoreError> {
        let dirs = dirs.to_vec();
        blocking(move || {
            let markers: Vec<_> = dirs.iter().map(|d| marker::read(d)).collect();
            let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            let verdicts = marker::decide(&refs, &markers, options.init_disks);
            let mut disks = Vec::new();
            let mut index = HashMap::new();
            for (dir, verdict) in dirs.iter().zip(verdicts) {
                let opened = open_one(dir, verdict, limits, &options.node_id);
                let (disk, found) = match opened {
                    Ok(d) => d,
                    Err(reason) => {
                        tracing::error!(disk = %dir.display(), %reason, "data directory is bad; not used");
                        disks.push(Disk::bad_from_start(dir, limits, reason));
                        continue;
                    }
                };
                let i = disks.len();
                for (id, _) in found {
                    match index.entry(id) {
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(i);
                        }
                        std::collections::hash_map::Entry::Occupied(_) => {
                            // A crash between two puts of one chunk to two
                            // disks: keep the first copy.
                            tracing::warn!(chunk = %id.short(), disk = %dir.display(), "chunk also on another disk; removing this copy");
                            let _ = disk.take_out(id, None, None);
                        }
                    }
                }
                let (qbytes, qfiles) = disk.unlisted();
                tracing::info!(disk = %dir.display(), chunks = disk.chunk_count(), used_bytes = disk.used_total(), quarantined = qfiles, quarantined_bytes = qbytes, "disk opened");
                disks.push(disk);
            }
            warn_shared_devices(&disks);
            if disks.iter().all(Disk::is_bad) {
                let reasons: Vec<String> =
                    disks.iter().map(|d| d.figures().reason).collect();
                return Err(StoreError::NoDisk(reasons.join("; ")));
            }
            Ok(ChunkStore {
                inner: Arc::new(Inner {
                    disks,
                    index: Mutex::new(index),
                    bad_disks: watch::channel(0).0,
                }),
            })
        })
        .await
    }

    /// Verifies `data` hashes to `id`, then stores it durably on one disk.
    /// A chunk already present is not rewritten.
    pub async fn put(&self, id: ChunkId, data: Bytes) -> Result<PutOutcome, StoreError> {
        if data.len() > MAX_CHUNK_SIZE as usize {
            return Err(StoreError::TooLarge {
                id,
                len: data.len(),
            });
        }
        let inner = self.inner.clone();
        blocking(move || inner.put(id, &data)).await
    }

    /// Reads `len` bytes (0 = to the end) from `offset` of a chunk after
    /// verifying the whole chunk. A corrupt chunk is quarantined.
    pub async fn get(&self, id: ChunkId, offset: u64, len: u64) -> Result<ChunkRead, StoreError> {
        self.read(id, offset, len, Check::Verify).await
    }

    /// Reads like [`get`](Self::get), but with `Check::CallerVerifies`
    /// skips the SHA-256 pass: for readers that check the bytes themselves.
    pub async fn read(
        &self,
        id: ChunkId,
        offset: u64,
        len: u64,
        check: Check,
    ) -> Result<ChunkRead, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut data = inner.read_whole(id, check)?;
            let stored_len = data.len() as u64;
            if offset > stored_len {
                return Err(StoreError::OutOfRange {
                    id,
                    offset,
                    stored_len,
                });
            }
            let end = if len == 0 {
                stored_len
            } else {
                offset.saturating_add(len).min(stored_len)
            };
            // Both bounds are <= stored_len, which came from a Vec length.
            data.truncate(end as usize);
            data.drain(..offset as usize);
            Ok(ChunkRead { data, stored_len })
        })
        .await
    }

    /// Which of `ids` are present (on a good disk).
    pub async fn has(&self, ids: Vec<ChunkId>) -> Result<Vec<bool>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            Ok(ids
                .iter()
                .map(|id| {
                    inner
                        .locate(id)
                        .is_some_and(|i| inner.disks[i].chunk_path(id).is_file())
                })
                .collect())
        })
        .await
    }

    /// Deletes a chunk; answers whether it existed.
    pub async fn delete(&self, id: ChunkId) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.take_out(id, None, false)).await
    }

    /// Deletes a chunk unless its file was written at or after `cutoff` (a
    /// chunk stored since an inventory was taken must not be removed on the
    /// strength of that inventory). Answers whether it was deleted.
    pub async fn delete_if_older(
        &self,
        id: ChunkId,
        cutoff: SystemTime,
    ) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.take_out(id, Some(cutoff), false)).await
    }

    /// Moves a chunk the metadata service does not list for this node to
    /// its disk's `quarantine/unlisted/`, unless its file was written at or
    /// after `cutoff` (as [`delete_if_older`](Self::delete_if_older)). It
    /// leaves the inventory; its bytes stay in `used` until the sweep
    /// deletes it. Answers whether it was moved.
    pub async fn quarantine_unlisted(
        &self,
        id: ChunkId,
        cutoff: SystemTime,
    ) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.take_out(id, Some(cutoff), true)).await
    }

    /// Deletes the unlisted chunks quarantined `grace` ago or longer, on
    /// every good disk; answers how many files and bytes went.
    pub async fn sweep_unlisted(&self, grace: Duration) -> Result<(usize, u64), StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            let (mut files, mut bytes) = (0, 0);
            for (i, d) in inner.disks.iter().enumerate() {
                if d.is_bad() {
                    continue;
                }
                match d.sweep_unlisted(grace) {
                    Ok((f, b)) => {
                        files += f;
                        bytes += b;
                    }
                    Err(e) => {
                        inner.failed(i, &e);
                        tracing::warn!(disk = %d.root().display(), error = %e, "quarantine sweep failed");
                    }
                }
            }
            Ok((files, bytes))
        })
        .await
    }

    /// Every chunk id on a good disk, sorted.
    pub async fn inventory(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut ids: Vec<ChunkId> = self.inner.lock_index().keys().copied().collect();
        ids.sort();
        Ok(ids)
    }

    /// Checks every good disk is still the one opened (same directory,
    /// same marker); marks the others bad. Answers how many went bad now.
    pub async fn check_disks(&self) -> usize {
        let inner = self.inner.clone();
        blocking(move || {
            let mut newly_bad = 0;
            for (i, d) in inner.disks.iter().enumerate() {
                if d.is_bad() {
                    continue;
                }
                if let Err(reason) = d.check_health()
                    && inner.mark_bad(i, &reason)
                {
                    newly_bad += 1;
                }
            }
            Ok(newly_bad)
        })
        .await
        .unwrap_or(0)
    }

    /// Changes each time a disk goes bad.
    pub fn bad_disk_changes(&self) -> watch::Receiver<u64> {
        self.inner.bad_disks.subscribe()
    }

    /// Each disk's figures, in configuration order.
    pub fn disk_figures(&self) -> Vec<DiskFigures> {
        self.inner.disks.iter().map(Disk::figures).collect()
    }

    /// Number of disks in use (not bad).
    pub fn good_disks(&self) -> usize {
        self.inner.disks.iter().filter(|d| !d.is_bad()).count()
    }

    /// Bytes this node's chunks take on its good disks: chunk files, and
    /// unlisted ones quarantined until their deletion (they still hold the
    /// space).
    pub fn used_bytes(&self) -> u64 {
        self.good().map(Disk::used_total).sum()
    }

    /// Bytes and number of quarantined unlisted chunk files on good disks.
    pub fn unlisted(&self) -> (u64, u64) {
        self.good()
            .map(Disk::unlisted)
            .fold((0, 0), |(b, n), (db, dn)| (b + db, n + dn))
    }

    /// Number of chunk files stored on good disks.
    pub fn chunk_count(&self) -> u64 {
        self.good().map(Disk::chunk_count).sum()
    }

    /// Bytes this node offers: the sum over good disks of the configured
    /// capacity, else of their file systems' sizes (a file system holding
    /// several data directories counted once).
    pub fn capacity_bytes(&self) -> u64 {
        let mut seen = Vec::new();
        let mut total = 0u64;
        for d in self.good() {
            if !d.has_configured_capacity()
                && let Some(dev) = d.device()
            {
                if seen.contains(&dev) {
                    continue;
                }
                seen.push(dev);
            }
            total = total.saturating_add(d.capacity_bytes());
        }
        total
    }

    /// Where a chunk's file lives (on the first disk if it is nowhere).
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let i = self.inner.locate(id).unwrap_or(0);
        self.inner.disks[i].chunk_path(id)
    }

    fn good(&self) -> impl Iterator<Item = &Disk> {
        self.inner.disks.iter().filter(|d| !d.is_bad())
    }
}

/// Opens one data directory as its verdict says; the reason when it
/// cannot be used.
fn open_one(
    dir: &Path,
    verdict: Verdict,
    limits: StoreLimits,
    node_id: &str,
) -> Result<(Disk, Vec<(ChunkId, u64)>), String> {
    let uuid = match verdict {
        Verdict::Bad(reason) => return Err(reason),
        Verdict::Use(m) => {
            if m.node_id != node_id && !node_id.is_empty() {
                tracing::warn!(disk = %dir.display(), marker_node = %m.node_id, node = node_id, "disk was initialised by another node id; adopting it");
                let adopted = marker::Marker {
                    node_id: node_id.to_string(),
                    ..m.clone()
                };
                marker::write(dir, &adopted)
                    .map_err(|e| format!("cannot rewrite the marker of {}: {e}", dir.display()))?;
            }
            m.disk_uuid
        }
        Verdict::Init => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let m = marker::Marker::new(node_id);
            marker::write(dir, &m)
                .map_err(|e| format!("cannot write the marker of {}: {e}", dir.display()))?;
            tracing::info!(disk = %dir.display(), uuid = %m.disk_uuid, "new disk initialised");
            m.disk_uuid
        }
    };
    Disk::open(dir, limits, uuid).map_err(|e| e.to_string())
}

/// Several data directories on one file system share its space and fail
/// together: worth a warning, not a refusal (tests, small machines).
fn warn_shared_devices(disks: &[Disk]) {
    for (i, a) in disks.iter().enumerate() {
        for b in &disks[i + 1..] {
            if a.device().is_some() && a.device() == b.device() {
                tracing::warn!(a = %a.root().display(), b = %b.root().display(), "two data directories on one file system: they share its space and its failures");
            }
        }
    }
}

impl Inner {
    fn lock_index(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkId, usize>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn locate(&self, id: &ChunkId) -> Option<usize> {
        self.lock_index().get(id).copied()
    }

    /// Handles an error of disk `i`: counts it, and marks the disk bad if
    /// it says the device failed. Answers whether it did.
    fn failed(&self, i: usize, e: &StoreError) -> bool {
        let StoreError::Io { source, .. } = e else {
            return false;
        };
        self.disks[i].count_io_error();
        metrics::counter!("bigfs_storage_disk_io_errors_total").increment(1);
        is_disk_failure(source) && self.mark_bad(i, &e.to_string())
    }

    /// Marks disk `i` bad: its chunks leave the index and the change is
    /// signalled. Answers whether it was good until now.
    fn mark_bad(&self, i: usize, reason: &str) -> bool {
        let disk = &self.disks[i];
        if !disk.mark_bad(reason) {
            return false;
        }
        let lost = {
            let mut index = self.lock_index();
            let before = index.len();
            index.retain(|_, d| *d != i);
            before - index.len()
        };
        metrics::counter!("bigfs_storage_disks_failed_total").increment(1);
        tracing::error!(disk = %disk.root().display(), chunks = lost, %reason, "disk marked bad; its chunks are reported lost on this node");
        self.bad_disks.send_modify(|n| *n += 1);
        true
    }

    fn put(&self, id: ChunkId, data: &[u8]) -> Result<PutOutcome, StoreError> {
        let actual = ChunkId::of(data);
        if actual != id {
            return Err(StoreError::HashMismatch {
                expected: id,
                actual,
                len: data.len(),
            });
        }
        if let Some(i) = self.locate(&id) {
            if self.disks[i].chunk_path(&id).is_file() {
                return Ok(PutOutcome::AlreadyPresent);
            }
            // Gone behind our back: store it again.
            self.forget(&id, i);
        }
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(i) = self.pick_disk(data.len() as u64, &tried) {
            tried.push(i);
            match self.disks[i].put(id, data) {
                Ok(outcome) => return Ok(self.settle_put(id, i, outcome)),
                Err(e @ (StoreError::DiskFull { .. } | StoreError::CapacityReached { .. })) => {
                    last = Some(e);
                }
                Err(e) if self.failed(i, &e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::NoDisk("every disk is bad".into())))
    }

    /// Records a chunk stored on disk `i`, unless a concurrent put stored
    /// it on another disk first: then this copy goes.
    fn settle_put(&self, id: ChunkId, i: usize, outcome: PutOutcome) -> PutOutcome {
        let mut index = self.lock_index();
        match index.get(&id) {
            Some(&j) if j != i => {
                drop(index);
                if outcome == PutOutcome::Stored {
                    let _ = self.disks[i].take_out(id, None, None);
                }
                PutOutcome::AlreadyPresent
            }
            _ => {
                index.insert(id, i);
                outcome
            }
        }
    }

    /// A good disk not yet tried for a chunk of `len` bytes: at random,
    /// weighted by free space, among those it fits on; else the one with
    /// the most free space (its put says why it does not fit).
    fn pick_disk(&self, len: u64, tried: &[usize]) -> Option<usize> {
        let free: Vec<(usize, u64)> = (self.disks.iter().enumerate())
            .filter(|(i, d)| !d.is_bad() && !tried.contains(i))
            .map(|(i, d)| (i, d.free_bytes()))
            .collect();
        let fitting: Vec<(usize, u64)> = free.iter().copied().filter(|(_, f)| *f >= len).collect();
        if fitting.is_empty() {
            return free.iter().max_by_key(|(_, f)| *f).map(|(i, _)| *i);
        }
        let total: u128 = fitting.iter().map(|(_, f)| u128::from(*f)).sum();
        let mut point = rand::random::<u128>() % total.max(1);
        for (i, f) in &fitting {
            if point < u128::from(*f) {
                return Some(*i);
            }
            point -= u128::from(*f);
        }
        fitting.last().map(|(i, _)| *i)
    }

    fn forget(&self, id: &ChunkId, disk: usize) {
        let mut index = self.lock_index();
        if index.get(id) == Some(&disk) {
            index.remove(id);
        }
    }

    fn read_whole(&self, id: ChunkId, check: Check) -> Result<Vec<u8>, StoreError> {
        let i = self.locate(&id).ok_or(StoreError::NotFound(id))?;
        let disk = &self.disks[i];
        let data = match disk.read(id) {
            Ok(d) => d,
            Err(e @ StoreError::NotFound(_)) => {
                self.forget(&id, i);
                return Err(e);
            }
            Err(e) => {
                if self.failed(i, &e) {
                    return Err(StoreError::NotFound(id));
                }
                return Err(e);
            }
        };
        if check == Check::Verify && !id.matches(&data) {
            disk.quarantine_corrupt(id, data.len() as u64);
            self.forget(&id, i);
            return Err(StoreError::Corrupt(id));
        }
        Ok(data)
    }

    /// Deletes (or, with `quarantine`, moves to `quarantine/unlisted/`) a
    /// chunk unless written at or after `cutoff`; answers whether it did.
    fn take_out(
        &self,
        id: ChunkId,
        cutoff: Option<SystemTime>,
        quarantine: bool,
    ) -> Result<bool, StoreError> {
        let Some(i) = self.locate(&id) else {
            return Ok(false);
        };
        let disk = &self.disks[i];
        let result = if quarantine {
            disk.quarantine_unlisted(id, cutoff.unwrap_or_else(SystemTime::now))
        } else {
            disk.take_out(id, cutoff, None)
        };
        match result {
            Ok(done) => {
                if !disk.chunk_path(&id).exists() {
                    self.forget(&id, i);
                }
                Ok(done)
            }
            Err(e) => {
                self.failed(i, &e);
                Err(e)
            }
        }
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Checks the disks every `interval` until shutdown (see
/// [`ChunkStore::check_disks`]).
pub struct DiskWatcher {
    pub store: ChunkStore,
    pub interval: Duration,
}

impl DiskWatcher {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            self.store.check_disks().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> StoreLimits {
        StoreLimits {
            reserve_bytes: 0,
            capacity_bytes: 0,
        }
    }

    async fn store() -> (tempfile::TempDir, ChunkStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), limits()).await.unwrap();
        (dir, s)
    }

    fn chunk(seed: &str) -> (ChunkId, Bytes) {
        let data = seed.repeat(100).into_bytes();
        (ChunkId::of(&data), Bytes::from(data))
    }

    #[tokio::test]
    async fn put_then_get_returns_the_bytes() {
        let (_d, s) = store().await;
        let (id, data) = chunk("hello");
        assert_eq!(s.put(id, data.clone()).await.unwrap(), PutOutcome::Stored);
        let got = s.get(id, 0, 0).await.unwrap();
        assert_eq!(got.data, *data);
        assert_eq!(got.stored_len, data.len() as u64);
        assert_eq!(s.used_bytes(), data.len() as u64);
        assert_eq!(s.chunk_count(), 1);
        let hex = id.to_hex();
        assert!(
            s.chunk_path(&id)
                .ends_with(format!("chunks/{}/{hex}", &hex[..2]))
        );
    }

    #[tokio::test]
    async fn wrong_hash_is_refused_and_nothing_is_written() {
        let (d, s) = store().await;
        let (id, _) = chunk("a");
        let (_, other) = chunk("b");
        let err = s.put(id, other).await.unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::DataLoss);
        assert!(!s.chunk_path(&id).exists());
        assert!(s.inventory().await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(s.used_bytes(), 0);
    }

    #[tokio::test]
    async fn corrupt_file_is_detected_and_quarantined() {
        let (d, s) = store().await;
        let (id, data) = chunk("c");
        s.put(id, data).await.unwrap();
        std::fs::write(s.chunk_path(&id), b"bit rot").unwrap();
        let err = s.get(id, 0, 0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::DataLoss);
        assert!(!s.chunk_path(&id).exists());
        // One corrupt file beside the `unlisted/` directory.
        let files = std::fs::read_dir(d.path().join("quarantine")).unwrap();
        assert_eq!(files.flatten().filter(|f| f.path().is_file()).count(), 1);
        assert_eq!(s.chunk_count(), 0);
        assert!(matches!(
            s.get(id, 0, 0).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn second_put_of_a_chunk_is_a_no_op() {
        let (_d, s) = store().await;
        let (id, data) = chunk("d");
        s.put(id, data.clone()).await.unwrap();
        let mtime = std::fs::metadata(s.chunk_path(&id))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            s.put(id, data.clone()).await.unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert_eq!(
            std::fs::metadata(s.chunk_path(&id))
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
        assert_eq!(s.used_bytes(), data.len() as u64);
        assert_eq!(s.chunk_count(), 1);
    }

    #[tokio::test]
    async fn delete_removes_and_reports_existence() {
        let (_d, s) = store().await;
        let (id, data) = chunk("e");
        s.put(id, data).await.unwrap();
        assert!(s.delete(id).await.unwrap());
        assert!(!s.delete(id).await.unwrap());
        assert_eq!(s.has(vec![id]).await.unwrap(), vec![false]);
        assert_eq!(s.used_bytes(), 0);
        assert_eq!(s.chunk_count(), 0);
    }

    #[tokio::test]
    async fn delete_if_older_spares_a_chunk_written_after_the_cutoff() {
        let (_d, s) = store().await;
        let (id, data) = chunk("f");
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        s.put(id, data).await.unwrap();
        assert!(!s.delete_if_older(id, before).await.unwrap());
        assert!(s.chunk_path(&id).exists());
        let after = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(s.delete_if_older(id, after).await.unwrap());
    }

    #[tokio::test]
    async fn an_unlisted_chunk_is_quarantined_not_served_and_still_counted_as_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), limits()).await.unwrap();
        let (id, data) = chunk("u");
        let len = data.len() as u64;
        s.put(id, data).await.unwrap();
        let before = SystemTime::now() - Duration::from_secs(60);
        assert!(
            !s.quarantine_unlisted(id, before).await.unwrap(),
            "too recent"
        );
        let after = SystemTime::now() + Duration::from_secs(60);
        assert!(s.quarantine_unlisted(id, after).await.unwrap());
        assert!(!s.quarantine_unlisted(id, after).await.unwrap(), "gone");
        assert!(s.inventory().await.unwrap().is_empty());
        assert!(matches!(
            s.get(id, 0, 0).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.chunk_count(), 0);
        assert_eq!(s.used_bytes(), len, "the disk still holds it");
        assert_eq!(s.unlisted(), (len, 1));
        let files = std::fs::read_dir(dir.path().join("quarantine/unlisted")).unwrap();
        let names: Vec<String> = files
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(
            names[0].starts_with(&format!("{}.", id.to_hex())),
            "{names:?}"
        );

        // A reopened store counts it again.
        drop(s);
        let s = ChunkStore::open(dir.path(), limits()).await.unwrap();
        assert_eq!((s.used_bytes(), s.unlisted()), (len, (len, 1)));

        // Kept within its grace, deleted after it.
        assert_eq!(
            s.sweep_unlisted(Duration::from_secs(3600)).await.unwrap(),
            (0, 0)
        );
        assert_eq!(s.unlisted(), (len, 1));
        assert_eq!(s.sweep_unlisted(Duration::ZERO).await.unwrap(), (1, len));
        assert_eq!((s.used_bytes(), s.unlisted()), (0, (0, 0)));
    }

    #[tokio::test]
    async fn a_non_ascii_name_in_a_fanout_directory_is_ignored_not_a_panic() {
        // Found by fuzz/chunk_files: a 64-byte name starting with a
        // multi-byte character panicked the scan at open.
        let dir = tempfile::tempdir().unwrap();
        let (a, da) = chunk("i");
        let fanout = dir.path().join("chunks").join(&a.to_hex()[..2]);
        std::fs::create_dir_all(&fanout).unwrap();
        std::fs::write(fanout.join(format!("\u{20ac}{}", "0".repeat(61))), b"x").unwrap();
        std::fs::write(fanout.join(a.to_hex()), &da).unwrap();
        let s = ChunkStore::open(dir.path(), limits()).await.unwrap();
        assert_eq!(s.inventory().await.unwrap(), vec![a]);
    }

    #[tokio::test]
    async fn inventory_lists_chunks_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), limits()).await.unwrap();
        let (a, da) = chunk("g");
        let (b, db) = chunk("h");
        s.put(a, da.clone()).await.unwrap();
        s.put(b, db.clone()).await.unwrap();
        std::fs::write(dir.path().join("tmp/leftover"), b"x").unwrap();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(s.inventory().await.unwrap(), want);
        assert_eq!(
            s.has(vec![a, ChunkId([0; 32]), b]).await.unwrap(),
            vec![true, false, true]
        );

        let reopened = ChunkStore::open(dir.path(), limits()).await.unwrap();
        assert_eq!(reopened.inventory().await.unwrap(), want);
        assert_eq!(reopened.used_bytes(), (da.len() + db.len()) as u64);
        assert_eq!(reopened.chunk_count(), 2);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn range_reads_clip_to_the_end_and_refuse_offsets_beyond_it() {
        let (_d, s) = store().await;
        let data: Vec<u8> = (0..=255u8).collect();
        let id = ChunkId::of(&data);
        s.put(id, Bytes::from(data.clone())).await.unwrap();
        assert_eq!(s.get(id, 10, 5).await.unwrap().data, data[10..15]);
        assert_eq!(s.get(id, 250, 100).await.unwrap().data, data[250..]);
        assert_eq!(s.get(id, 200, 0).await.unwrap().data, data[200..]);
        assert!(s.get(id, 256, 0).await.unwrap().data.is_empty());
        let err = s.get(id, 257, 1).await.unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::OutOfRange);
    }

    #[tokio::test]
    async fn oversize_chunk_is_refused() {
        let (_d, s) = store().await;
        let data = vec![0u8; MAX_CHUNK_SIZE as usize + 1];
        let id = ChunkId::of(&data);
        let err = s.put(id, Bytes::from(data)).await.unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
        assert!(!s.chunk_path(&id).exists());
    }

    #[tokio::test]
    async fn full_disk_or_capacity_is_resource_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let huge_reserve = StoreLimits {
            reserve_bytes: u64::MAX / 2,
            capacity_bytes: 0,
        };
        let s = ChunkStore::open(dir.path(), huge_reserve).await.unwrap();
        let (id, data) = chunk("i");
        let err = s.put(id, data.clone()).await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::ResourceExhausted
        );

        let small = StoreLimits {
            reserve_bytes: 0,
            capacity_bytes: 10,
        };
        let s = ChunkStore::open(dir.path(), small).await.unwrap();
        assert_eq!(s.capacity_bytes(), 10);
        let err = s.put(id, data).await.unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::ResourceExhausted
        );
    }

    async fn two_disks(root: &Path, init_disks: bool) -> Result<ChunkStore, StoreError> {
        let dirs = [root.join("a"), root.join("b")];
        let options = DiskOptions {
            node_id: "n1".into(),
            init_disks,
        };
        ChunkStore::open_disks(&dirs, limits(), options).await
    }

    /// Stores `n` chunks; answers their ids.
    async fn fill(s: &ChunkStore, prefix: &str, n: usize) -> Vec<ChunkId> {
        let mut ids = Vec::new();
        for i in 0..n {
            let (id, data) = chunk(&format!("{prefix}{i}"));
            s.put(id, data).await.unwrap();
            ids.push(id);
        }
        ids
    }

    #[tokio::test]
    async fn chunks_spread_over_the_disks_and_are_found_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = two_disks(dir.path(), false).await.unwrap();
        let mut ids = fill(&s, "spread", 40).await;
        let on = |d: &str| {
            ids.iter()
                .filter(|id| s.chunk_path(id).starts_with(dir.path().join(d)))
                .count()
        };
        assert!(on("a") > 0 && on("b") > 0, "{} and {}", on("a"), on("b"));
        assert_eq!(s.chunk_count(), 40);
        drop(s);
        let s = two_disks(dir.path(), false).await.unwrap();
        ids.sort();
        assert_eq!(s.inventory().await.unwrap(), ids);
        for id in &ids {
            assert_eq!(ChunkId::of(&s.get(*id, 0, 0).await.unwrap().data), *id);
        }
    }

    #[tokio::test]
    async fn a_replaced_disk_is_marked_bad_and_its_chunks_leave_the_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let s = two_disks(dir.path(), false).await.unwrap();
        let ids = fill(&s, "bad", 20).await;
        let on_a: Vec<bool> = (ids.iter())
            .map(|id| s.chunk_path(id).starts_with(dir.path().join("a")))
            .collect();
        assert!(on_a.contains(&true) && on_a.contains(&false));
        let changes = s.bad_disk_changes();
        std::fs::rename(dir.path().join("b"), dir.path().join("b.old")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        assert_eq!(s.check_disks().await, 1);
        assert!(changes.has_changed().unwrap());
        let figures = s.disk_figures();
        assert!(!figures[0].bad && figures[1].bad, "{figures:?}");
        assert!(
            figures[1].reason.contains("no longer the directory"),
            "{figures:?}"
        );
        let left = s.inventory().await.unwrap();
        assert_eq!(left.len() as u64, s.chunk_count());
        for (id, on_a) in ids.iter().zip(on_a) {
            assert_eq!(left.contains(id), on_a);
            assert_eq!(s.get(*id, 0, 0).await.is_ok(), on_a);
        }
        // New chunks go to the good disk only.
        let (id, data) = chunk("after");
        s.put(id, data).await.unwrap();
        assert!(s.chunk_path(&id).starts_with(dir.path().join("a")));
        assert_eq!(s.check_disks().await, 0, "marked once");
    }

    #[tokio::test]
    async fn a_disk_without_marker_beside_a_marked_one_is_bad_until_the_operator_says() {
        let dir = tempfile::tempdir().unwrap();
        drop(two_disks(dir.path(), false).await.unwrap());
        std::fs::remove_dir_all(dir.path().join("b")).unwrap();
        let s = two_disks(dir.path(), false).await.unwrap();
        assert!(s.disk_figures()[1].bad);
        assert!(!dir.path().join("b").exists(), "not initialised");
        drop(s);
        let s = two_disks(dir.path(), true).await.unwrap();
        assert!(s.disk_figures().iter().all(|d| !d.bad));
        // No usable disk at all: the store does not open.
        drop(s);
        for d in ["a", "b"] {
            std::fs::remove_file(dir.path().join(d).join(".bigfs-disk")).unwrap();
            std::fs::write(dir.path().join(d).join(".bigfs-disk"), "x =").unwrap();
        }
        let err = two_disks(dir.path(), false).await.unwrap_err();
        assert!(matches!(err, StoreError::NoDisk(_)), "{err}");
    }
}
