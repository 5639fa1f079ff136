//! One data directory (a "disk") of a storage node and its chunk files.
//!
//! Layout under the directory:
//! - `.bigfs-disk`: the marker written at first use (see [`crate::marker`]);
//!   a directory without it is not taken for this disk;
//! - `node_id`: the node's pinned id (on every disk, so any one survives);
//! - `chunks/<first 2 hex chars>/<64 hex chars>`: one file per chunk, named
//!   by its SHA-256; the 256 fan-out directories keep listings short;
//! - `tmp/`: writes in progress; a file is fsync'd there and then linked into
//!   `chunks/`, so a chunk file is either absent or complete. Stale files are
//!   removed on open;
//! - `quarantine/`: chunk files out of service, by reason (corrupt, or not
//!   listed for this node and awaiting deletion); see [`crate::quarantine`].
//!   It is on the disk's own file system, so moving a chunk there is a rename.
//!
//! A disk is `ok` or `bad`. A bad disk (I/O errors, its directory gone or
//! replaced, its marker missing) is never written or read again by this
//! process; [`crate::chunk_store`] decides and reports it.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bigfs_proto::ChunkId;

use crate::chunk_store::{PutOutcome, StoreLimits};
use crate::error::StoreError;
use crate::marker;
use crate::quarantine::{self, corrupt_dir, unlisted_dir};

/// One data directory and what this process knows about it.
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    limits: StoreLimits,
    /// The marker's disk uuid; empty for a disk bad from the start.
    uuid: String,
    /// (device, inode) of the directory when it was opened: another file
    /// system mounted over it, or the directory replaced, changes them.
    identity: Option<(u64, u64)>,
    bad: AtomicBool,
    reason: Mutex<String>,
    io_errors: AtomicU64,
    /// Bytes and number of files in `chunks/`.
    used: AtomicU64,
    count: AtomicU64,
    /// Bytes and number of files in `quarantine/unlisted/`.
    unlisted_bytes: AtomicU64,
    unlisted_count: AtomicU64,
}

/// A disk's figures at one moment (for `/metrics` and the heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFigures {
    pub path: String,
    pub bad: bool,
    pub reason: String,
    pub capacity: u64,
    pub used: u64,
    pub chunks: u64,
    pub io_errors: u64,
}

impl Disk {
    /// Opens a usable disk: creates the layout, removes stale temporary
    /// files and lists its chunks (with their sizes).
    pub fn open(
        root: &Path,
        limits: StoreLimits,
        uuid: String,
    ) -> Result<(Disk, Vec<(ChunkId, u64)>), StoreError> {
        for dir in [chunks_dir(root), tmp_dir(root), unlisted_dir(root)] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        }
        let tmp = tmp_dir(root);
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
        let found = scan(root)?;
        let unlisted = quarantine::scan_unlisted(root)
            .map_err(|e| StoreError::io("listing the quarantine", e))?;
        let meta = std::fs::metadata(root)
            .map_err(|e| StoreError::io(format!("stat of {}", root.display()), e))?;
        let disk = Disk {
            root: root.to_path_buf(),
            limits,
            uuid,
            identity: Some((meta.dev(), meta.ino())),
            bad: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            io_errors: AtomicU64::new(0),
            used: AtomicU64::new(found.iter().map(|(_, len)| len).sum()),
            count: AtomicU64::new(found.len() as u64),
            unlisted_bytes: AtomicU64::new(unlisted.iter().map(|e| e.len).sum()),
            unlisted_count: AtomicU64::new(unlisted.len() as u64),
        };
        Ok((disk, found))
    }

    /// A disk that cannot be used from the start, and why.
    pub fn bad_from_start(root: &Path, limits: StoreLimits, reason: String) -> Disk {
        Disk {
            root: root.to_path_buf(),
            limits,
            uuid: String::new(),
            identity: None,
            bad: AtomicBool::new(true),
            reason: Mutex::new(reason),
            io_errors: AtomicU64::new(0),
            used: AtomicU64::new(0),
            count: AtomicU64::new(0),
            unlisted_bytes: AtomicU64::new(0),
            unlisted_count: AtomicU64::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_bad(&self) -> bool {
        self.bad.load(Ordering::Acquire)
    }

    /// Marks the disk bad; answers whether it was ok until now.
    pub fn mark_bad(&self, reason: &str) -> bool {
        if self.bad.swap(true, Ordering::AcqRel) {
            return false;
        }
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
        true
    }

    pub fn count_io_error(&self) {
        self.io_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The disk's figures now (statvfs for the capacity of an ok disk).
    pub fn figures(&self) -> DiskFigures {
        let bad = self.is_bad();
        DiskFigures {
            path: self.root.display().to_string(),
            bad,
            reason: self
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            capacity: if bad { 0 } else { self.capacity_bytes() },
            used: self.used_total(),
            chunks: self.count.load(Ordering::Relaxed),
            io_errors: self.io_errors.load(Ordering::Relaxed),
        }
    }

    /// The device the directory was on when opened.
    pub fn device(&self) -> Option<u64> {
        self.identity.map(|(dev, _)| dev)
    }

    pub fn has_configured_capacity(&self) -> bool {
        self.limits.capacity_bytes > 0
    }

    /// Bytes this disk offers: the configured capacity, else the size of
    /// its file system.
    pub fn capacity_bytes(&self) -> u64 {
        if self.limits.capacity_bytes > 0 {
            return self.limits.capacity_bytes;
        }
        match fs_space(&self.root) {
            Ok(space) => space.total,
            Err(e) => {
                tracing::warn!(disk = %self.root.display(), error = %e, "statvfs failed; reporting capacity 0");
                0
            }
        }
    }

    /// Bytes a new chunk may still take here (the reserve and the
    /// configured capacity respected); 0 when statvfs fails.
    pub fn free_bytes(&self) -> u64 {
        let Ok(space) = fs_space(&self.root) else {
            return 0;
        };
        let mut free = space.available.saturating_sub(self.limits.reserve_bytes);
        if self.limits.capacity_bytes > 0 {
            free = free.min(self.limits.capacity_bytes.saturating_sub(self.used_total()));
        }
        free
    }

    /// Bytes of chunk files, quarantined unlisted ones included.
    pub fn used_total(&self) -> u64 {
        self.used
            .load(Ordering::Relaxed)
            .saturating_add(self.unlisted_bytes.load(Ordering::Relaxed))
    }

    pub fn chunk_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn unlisted(&self) -> (u64, u64) {
        (
            self.unlisted_bytes.load(Ordering::Relaxed),
            self.unlisted_count.load(Ordering::Relaxed),
        )
    }

    /// Checks the disk is still the one opened: the directory has the same
    /// device and inode, and its marker names the same disk.
    pub fn check_health(&self) -> Result<(), String> {
        let meta = std::fs::metadata(&self.root)
            .map_err(|e| format!("cannot stat {}: {e}", self.root.display()))?;
        if Some((meta.dev(), meta.ino())) != self.identity {
            return Err(format!(
                "{} is no longer the directory opened at start (unmounted or replaced)",
                self.root.display()
            ));
        }
        match marker::read(&self.root) {
            Ok(Some(m)) if m.disk_uuid == self.uuid => Ok(()),
            Ok(Some(m)) => Err(format!(
                "the marker of {} names disk {}, not {}",
                self.root.display(),
                m.disk_uuid,
                self.uuid
            )),
            Ok(None) => Err(format!(
                "the marker {} is gone",
                self.root.join(marker::MARKER_FILE).display()
            )),
            Err(e) => Err(format!(
                "cannot read the marker of {}: {e}",
                self.root.display()
            )),
        }
    }

    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        chunks_dir(&self.root).join(&hex[..2]).join(hex)
    }

    /// Stores `data` (already checked against `id`) durably.
    pub fn put(&self, id: ChunkId, data: &[u8]) -> Result<PutOutcome, StoreError> {
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
        let space = fs_space(&self.root)
            .map_err(|e| StoreError::io(format!("statvfs of {}", self.root.display()), e))?;
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

    /// The chunk's bytes, unchecked.
    pub fn read(&self, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        let path = self.chunk_path(&id);
        match std::fs::read(&path) {
            Ok(d) => Ok(d),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound(id)),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Moves a corrupt chunk file aside so it is never served again.
    pub fn quarantine_corrupt(&self, id: ChunkId, len: u64) {
        let path = self.chunk_path(&id);
        let dest = corrupt_dir(&self.root).join(quarantine::stamped_name(&id, SystemTime::now()));
        match std::fs::rename(&path, &dest) {
            Ok(()) => {
                self.forget(len);
                tracing::error!(chunk = %id.short(), to = %dest.display(), "corrupt chunk quarantined");
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(chunk = %id.short(), error = %e, "cannot quarantine corrupt chunk; removing it");
                if std::fs::remove_file(&path).is_ok() {
                    self.forget(len);
                }
            }
        }
    }

    /// Moves an unlisted chunk to `quarantine/unlisted/` unless written at
    /// or after `cutoff`; answers whether it was moved.
    pub fn quarantine_unlisted(&self, id: ChunkId, cutoff: SystemTime) -> Result<bool, StoreError> {
        let dest = unlisted_dir(&self.root).join(quarantine::stamped_name(&id, SystemTime::now()));
        self.take_out(id, Some(cutoff), Some(&dest))
    }

    /// Deletes the unlisted chunks quarantined `grace` ago or longer.
    pub fn sweep_unlisted(&self, grace: Duration) -> Result<(usize, u64), StoreError> {
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
    pub fn take_out(
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

/// Whether an I/O error means the disk itself failed (as opposed to a
/// missing file, a full disk or a bad argument): the disk is then marked
/// bad. ENOTCONN is a FUSE file system whose daemon died, ESTALE a network
/// one that lost its export, EUCLEAN a file system that found corruption.
pub fn is_disk_failure(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EIO
                | libc::ENXIO
                | libc::ENODEV
                | libc::ENOTCONN
                | libc::ESTALE
                | libc::EROFS
                | libc::EUCLEAN
        )
    )
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
                // A failed disk answers the buffered write the same way;
                // its error is the one to report.
                Err(e) if is_disk_failure(&e) => return Err(e),
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

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
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
