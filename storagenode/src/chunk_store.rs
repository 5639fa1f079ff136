//! Chunk files on local disk.
//!
//! Layout under the data directory:
//! - `chunks/<first 2 hex chars>/<64 hex chars>`: one file per chunk, named
//!   by its SHA-256; the 256 fan-out directories keep listings short.
//! - `tmp/`: writes in progress; a file is fsync'd there and then linked into
//!   `chunks/`, so a chunk file is either absent or complete. Stale files are
//!   removed on open.
//! - `quarantine/`: chunk files out of service, by reason (corrupt, or not
//!   listed for this node and awaiting deletion); see [`crate::quarantine`].
//!
//! Every read re-hashes the whole chunk, so corruption is never served.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bigfs_proto::{ChunkId, MAX_CHUNK_SIZE};
use bytes::Bytes;

use crate::error::StoreError;
use crate::quarantine::{self, corrupt_dir, unlisted_dir};

/// Sizes the store works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Bytes always left free on the file system.
    pub reserve_bytes: u64,
    /// Bytes this node offers; 0 = the file system's size.
    pub capacity_bytes: u64,
}

/// The chunk files of one node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    limits: StoreLimits,
    /// Bytes and number of files in `chunks/`.
    used: AtomicU64,
    count: AtomicU64,
    /// Bytes and number of files in `quarantine/unlisted/`.
    unlisted_bytes: AtomicU64,
    unlisted_count: AtomicU64,
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

impl ChunkStore {
    /// Opens (creating if needed) the store under `data_dir`, removes stale
    /// temporary files and counts the chunks already there.
    pub async fn open(data_dir: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        let root = data_dir.to_path_buf();
        blocking(move || {
            for dir in [chunks_dir(&root), tmp_dir(&root), unlisted_dir(&root)] {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
            }
            let tmp = tmp_dir(&root);
            let entries = std::fs::read_dir(&tmp)
                .map_err(|e| StoreError::io(format!("listing {}", tmp.display()), e))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temporary file");
                } else {
                    tracing::info!(path = %path.display(), "removed stale temporary file");
                }
            }
            let (count, used) = scan(&root)?
                .iter()
                .fold((0u64, 0u64), |(c, u), (_, len)| (c + 1, u + len));
            let unlisted = quarantine::scan_unlisted(&root)
                .map_err(|e| StoreError::io("listing the quarantine", e))?;
            let unlisted_bytes = unlisted.iter().map(|e| e.len).sum();
            tracing::info!(chunks = count, used_bytes = used, quarantined = unlisted.len(), quarantined_bytes = unlisted_bytes, dir = %root.display(), "chunk store opened");
            Ok(ChunkStore {
                inner: Arc::new(Inner {
                    root,
                    limits,
                    used: AtomicU64::new(used),
                    count: AtomicU64::new(count),
                    unlisted_bytes: AtomicU64::new(unlisted_bytes),
                    unlisted_count: AtomicU64::new(unlisted.len() as u64),
                }),
            })
        })
        .await
    }

    /// Verifies `data` hashes to `id`, then stores it durably. A chunk
    /// already present is not rewritten.
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
            let mut data = match check {
                Check::Verify => inner.read_verified(id)?,
                Check::CallerVerifies => inner.read_unverified(id)?,
            };
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

    /// Which of `ids` are present.
    pub async fn has(&self, ids: Vec<ChunkId>) -> Result<Vec<bool>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            Ok(ids
                .iter()
                .map(|id| inner.chunk_path(id).is_file())
                .collect())
        })
        .await
    }

    /// Deletes a chunk; answers whether it existed.
    pub async fn delete(&self, id: ChunkId) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.delete(id, None)).await
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
        blocking(move || inner.delete(id, Some(cutoff))).await
    }

    /// Moves a chunk the metadata service does not list for this node to
    /// `quarantine/unlisted/`, unless its file was written at or after
    /// `cutoff` (as [`delete_if_older`](Self::delete_if_older)). It leaves
    /// the inventory; its bytes stay in `used` until the sweep deletes it.
    /// Answers whether it was moved.
    pub async fn quarantine_unlisted(
        &self,
        id: ChunkId,
        cutoff: SystemTime,
    ) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.quarantine_unlisted(id, cutoff)).await
    }

    /// Deletes the unlisted chunks quarantined `grace` ago or longer;
    /// answers how many files and bytes went.
    pub async fn sweep_unlisted(&self, grace: Duration) -> Result<(usize, u64), StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.sweep_unlisted(grace)).await
    }

    /// Every chunk id on disk.
    pub async fn inventory(&self) -> Result<Vec<ChunkId>, StoreError> {
        let root = self.inner.root.clone();
        blocking(move || Ok(scan(&root)?.into_iter().map(|(id, _)| id).collect())).await
    }

    /// Bytes this node's chunks take on disk: chunk files, and unlisted
    /// ones quarantined until their deletion (they still hold the space).
    pub fn used_bytes(&self) -> u64 {
        self.inner.used_total()
    }

    /// Bytes and number of quarantined unlisted chunk files.
    pub fn unlisted(&self) -> (u64, u64) {
        (
            self.inner.unlisted_bytes.load(Ordering::Relaxed),
            self.inner.unlisted_count.load(Ordering::Relaxed),
        )
    }

    /// Number of chunk files stored.
    pub fn chunk_count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Bytes this node offers: the configured capacity, else the size of the
    /// file system.
    pub fn capacity_bytes(&self) -> u64 {
        if self.inner.limits.capacity_bytes > 0 {
            return self.inner.limits.capacity_bytes;
        }
        match fs_space(&self.inner.root) {
            Ok(space) => space.total,
            Err(e) => {
                tracing::warn!(error = %e, "statvfs failed; reporting capacity 0");
                0
            }
        }
    }

    /// Where a chunk's file lives.
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.inner.chunk_path(id)
    }
}

impl Inner {
    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        chunks_dir(&self.root).join(&hex[..2]).join(hex)
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
        let path = self.chunk_path(&id);
        if path.is_file() {
            return Ok(PutOutcome::AlreadyPresent);
        }
        self.check_space(data.len() as u64)?;

        let tmp =
            tmp_dir(&self.root).join(format!("{}.{:016x}", id.to_hex(), rand::random::<u64>()));
        let result = self.write_and_link(&tmp, &path, data);
        // The temporary name is only a staging area; it goes whatever happened.
        let _ = std::fs::remove_file(&tmp);
        let outcome = result?;
        if outcome == PutOutcome::Stored {
            self.used.fetch_add(data.len() as u64, Ordering::Relaxed);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    fn write_and_link(
        &self,
        tmp: &Path,
        path: &Path,
        data: &[u8],
    ) -> Result<PutOutcome, StoreError> {
        write_durably(tmp, data)
            .map_err(|e| StoreError::io(format!("writing {}", tmp.display()), e))?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        // A hard link, unlike rename, refuses to replace: two concurrent puts
        // of one chunk store it once and count it once.
        match std::fs::hard_link(tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Ok(PutOutcome::AlreadyPresent);
            }
            Err(e) => return Err(StoreError::io(format!("linking {}", path.display()), e)),
        }
        sync_dir(&dir)?;
        Ok(PutOutcome::Stored)
    }

    fn check_space(&self, needed: u64) -> Result<(), StoreError> {
        let reserve = self.limits.reserve_bytes;
        let space =
            fs_space(&self.root).map_err(|e| StoreError::io("statvfs of the data directory", e))?;
        if space.available < needed.saturating_add(reserve) {
            return Err(StoreError::DiskFull {
                needed,
                available: space.available,
                reserve,
            });
        }
        let capacity = self.limits.capacity_bytes;
        let used = self.used_total();
        if capacity > 0 && used.saturating_add(needed) > capacity {
            return Err(StoreError::CapacityReached {
                used,
                capacity,
                needed,
            });
        }
        Ok(())
    }

    fn read_unverified(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        let path = self.chunk_path(&id);
        match std::fs::read(&path) {
            Ok(d) => Ok(d),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound(id)),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    fn read_verified(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        let data = self.read_unverified(id)?;
        if !id.matches(&data) {
            let path = self.chunk_path(&id);
            self.quarantine(id, &path, data.len() as u64);
            return Err(StoreError::Corrupt(id));
        }
        Ok(data)
    }

    /// Moves a corrupt chunk file aside so it is never served again.
    fn quarantine(&self, id: ChunkId, path: &Path, len: u64) {
        let dest = corrupt_dir(&self.root).join(quarantine::stamped_name(&id, SystemTime::now()));
        match std::fs::rename(path, &dest) {
            Ok(()) => {
                self.forget(len);
                tracing::error!(chunk = %id.short(), to = %dest.display(), "corrupt chunk quarantined");
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(chunk = %id.short(), error = %e, "cannot quarantine corrupt chunk; removing it");
                if std::fs::remove_file(path).is_ok() {
                    self.forget(len);
                }
            }
        }
    }

    fn used_total(&self) -> u64 {
        self.used
            .load(Ordering::Relaxed)
            .saturating_add(self.unlisted_bytes.load(Ordering::Relaxed))
    }

    fn delete(&self, id: ChunkId, cutoff: Option<SystemTime>) -> Result<bool, StoreError> {
        self.take_out(id, cutoff, None)
    }

    fn quarantine_unlisted(&self, id: ChunkId, cutoff: SystemTime) -> Result<bool, StoreError> {
        let dest = unlisted_dir(&self.root).join(quarantine::stamped_name(&id, SystemTime::now()));
        self.take_out(id, Some(cutoff), Some(&dest))
    }

    fn sweep_unlisted(&self, grace: Duration) -> Result<(usize, u64), StoreError> {
        let now = SystemTime::now();
        let entries = quarantine::scan_unlisted(&self.root)
            .map_err(|e| StoreError::io("listing the quarantine", e))?;
        let (mut files, mut bytes) = (0usize, 0u64);
        for e in entries
            .iter()
            .filter(|e| quarantine::expired(e, grace, now))
        {
            match std::fs::remove_file(&e.path) {
                Ok(()) => {
                    saturating_sub(&self.unlisted_bytes, e.len);
                    saturating_sub(&self.unlisted_count, 1);
                    files += 1;
                    bytes += e.len;
                }
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(StoreError::io(
                        format!("removing {}", e.path.display()),
                        err,
                    ));
                }
            }
        }
        Ok((files, bytes))
    }

    /// Removes a chunk file (deleted, or renamed to `to`) unless it was
    /// written at or after `cutoff`; answers whether it was there.
    fn take_out(
        &self,
        id: ChunkId,
        cutoff: Option<SystemTime>,
        to: Option<&Path>,
    ) -> Result<bool, StoreError> {
        let path = self.chunk_path(&id);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(format!("stat of {}", path.display()), e)),
        };
        if let (Some(cutoff), Ok(mtime)) = (cutoff, meta.modified())
            && mtime >= cutoff
        {
            return Ok(false);
        }
        let moved = match to {
            None => std::fs::remove_file(&path),
            Some(dest) => std::fs::rename(&path, dest),
        };
        match moved {
            Ok(()) => {
                self.forget(meta.len());
                if to.is_some() {
                    self.unlisted_bytes.fetch_add(meta.len(), Ordering::Relaxed);
                    self.unlisted_count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(format!("taking out {}", path.display()), e)),
        }
    }

    fn forget(&self, len: u64) {
        saturating_sub(&self.used, len);
        saturating_sub(&self.count, 1);
    }
}

/// Subtracts without wrapping: a counter must never wrap even if the disk
/// changed behind our back.
fn saturating_sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

fn chunks_dir(root: &Path) -> PathBuf {
    root.join("chunks")
}

fn tmp_dir(root: &Path) -> PathBuf {
    root.join("tmp")
}

/// Every well-named chunk file with its size. Files with other names are
/// ignored (and logged).
fn scan(root: &Path) -> Result<Vec<(ChunkId, u64)>, StoreError> {
    let dir = chunks_dir(root);
    let mut found = Vec::new();
    let fanout = std::fs::read_dir(&dir)
        .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    for sub in fanout.flatten() {
        let sub_path = sub.path();
        let Ok(entries) = std::fs::read_dir(&sub_path) else {
            continue;
        };
        let prefix = sub.file_name();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let parsed = name
                .to_str()
                // `get`, not `[..2]`: a 64-byte name may start with a
                // multi-byte character, and slicing it would panic.
                .filter(|n| n.len() == 64 && n.get(..2) == prefix.to_str())
                .and_then(|n| ChunkId::from_hex(n).ok());
            let Some(id) = parsed else {
                tracing::warn!(path = %entry.path().display(), "ignoring a file that is not a chunk");
                continue;
            };
            match entry.metadata() {
                Ok(m) if m.is_file() => found.push((id, m.len())),
                _ => {}
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Alignment O_DIRECT needs for buffers, offsets and lengths on Linux
/// block devices (the logical block size is at most this).
const DIRECT_ALIGN: usize = 4096;

/// Smallest chunk written with O_DIRECT. Below it a synchronous device
/// write costs more than the page-cache copy it saves (measured: 4 KiB
/// files were slower direct, 4 MiB ones three times faster).
const DIRECT_MIN: usize = 256 * 1024;

/// Writes `data` to a new file at `path` and makes it durable (fdatasync).
///
/// The block-aligned bulk goes through O_DIRECT: the bytes go straight to
/// the disk instead of being copied into the page cache and written back
/// by the flush, which costs several times more CPU for a chunk that is
/// not read again soon. The unaligned tail is written normally. Where
/// O_DIRECT is refused (tmpfs, some network file systems), it falls back
/// to an ordinary write.
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let aligned = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    let direct = if aligned >= DIRECT_MIN {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    } else {
        None
    };
    let mut file = match direct {
        Some(mut f) => {
            // An aligned copy of the bulk: O_DIRECT reads from memory
            // aligned to the block size. Filled by the copy itself, with
            // no zeroing pass first.
            let mut buf: Vec<u8> = Vec::with_capacity(aligned + DIRECT_ALIGN);
            let shift = buf.as_ptr().align_offset(DIRECT_ALIGN);
            buf.resize(shift, 0);
            buf.extend_from_slice(&data[..aligned]);
            let window = &buf[shift..];
            match f.write_all(window) {
                Ok(()) => {
                    // Back to buffered I/O for the tail.
                    let fd = f.as_raw_fd();
                    // SAFETY: fcntl on a descriptor we own, with plain flags.
                    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                    // SAFETY: as above.
                    if flags < 0
                        || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    f.write_all(&data[aligned..])?;
                    f
                }
                Err(_) => {
                    // The file system took the open but not the write.
                    drop(f);
                    std::fs::remove_file(path)?;
                    write_buffered(path, data)?
                }
            }
        }
        None => write_buffered(path, data)?,
    };
    // fdatasync: the bytes and the size, which is all a reader needs.
    file.sync_data()?;
    file.flush()
}

fn write_buffered(path: &Path, data: &[u8]) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(data)?;
    Ok(f)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsync of directory {}", dir.display()), e))
}

/// Space on the file system holding `path`.
#[derive(Debug, Clone, Copy)]
struct FsSpace {
    total: u64,
    available: u64,
}

// The statvfs field types differ between targets (u32 on 32-bit Linux), so
// the casts are only redundant on 64-bit.
#[allow(clippy::unnecessary_cast)]
fn fs_space(path: &Path) -> std::io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is a valid NUL-terminated string and st points to
    // writable memory of the right type; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct (and it was
    // zeroed before anyway).
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Ok(FsSpace {
        total: (st.f_blocks as u64).saturating_mul(frsize),
        available: (st.f_bavail as u64).saturating_mul(frsize),
    })
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
}
