//! The files a mount has open.
//!
//! Every `open` of one inode in a mount shares one [`FileHandle`], so all
//! readers and writers in the mount see the same buffered bytes. Kernel file
//! handles (`fh`) map to that shared handle and count its users.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::file::FileHandle;

struct Shared {
    handle: Arc<FileHandle>,
    opens: usize,
}

#[derive(Default)]
struct Tables {
    by_ino: HashMap<u64, Shared>,
    by_fh: HashMap<u64, u64>,
    /// Layout version of each inode when it was last opened here, so an
    /// unchanged file keeps its page cache on the next open.
    versions: HashMap<u64, u64>,
    /// Open inodes whose last name was removed here (released at last close).
    unlinked: std::collections::HashSet<u64>,
}

#[derive(Default)]
pub struct OpenFiles {
    tables: Mutex<Tables>,
    next_fh: AtomicU64,
}

/// What `release` learned: the handle, and whether it was the last user.
pub struct Released {
    pub handle: Arc<FileHandle>,
    pub last: bool,
}

impl OpenFiles {
    /// Registers an open of `ino`. `make` builds the shared handle when the
    /// inode is not open yet. Returns the new fh, the handle, and whether the
    /// page cache may be kept (same layout version as the last open).
    pub fn open(
        &self,
        ino: u64,
        version: u64,
        make: impl FnOnce() -> FileHandle,
    ) -> (u64, Arc<FileHandle>, bool) {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let keep_cache = t.versions.insert(ino, version) == Some(version);
        let shared = t.by_ino.entry(ino).or_insert_with(|| Shared {
            handle: Arc::new(make()),
            opens: 0,
        });
        shared.opens += 1;
        let handle = Arc::clone(&shared.handle);
        t.by_fh.insert(fh, ino);
        (fh, handle, keep_cache)
    }

    /// The shared handle behind kernel handle `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<FileHandle>> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let ino = t.by_fh.get(&fh)?;
        t.by_ino.get(ino).map(|s| Arc::clone(&s.handle))
    }

    /// The shared handle of `ino` if some process has it open here.
    pub fn by_ino(&self, ino: u64) -> Option<Arc<FileHandle>> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.by_ino.get(&ino).map(|s| Arc::clone(&s.handle))
    }

    /// Whether any file is open here (if not, no removal needs a lease).
    pub fn any_open(&self) -> bool {
        self.tables
            .lock()
            .map(|t| !t.by_ino.is_empty())
            .unwrap_or(true)
    }

    pub fn is_open(&self, ino: u64) -> bool {
        self.tables
            .lock()
            .map(|t| t.by_ino.contains_key(&ino))
            .unwrap_or(false)
    }

    /// The layout version this mount last saw of `ino` (opened or wrote).
    pub fn version(&self, ino: u64) -> Option<u64> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.versions.get(&ino).copied()
    }

    /// Records the layout version this mount has now written (so its own
    /// writes do not drop its page cache on the next open).
    pub fn set_version(&self, ino: u64, version: u64) {
        if let Ok(mut t) = self.tables.lock() {
            t.versions.insert(ino, version);
        }
    }

    /// Notes that `ino`, open here, lost its last name through this mount.
    pub fn mark_unlinked(&self, ino: u64) {
        if let Ok(mut t) = self.tables.lock() {
            t.unlinked.insert(ino);
        }
    }

    /// Whether `ino` was unlinked while open (clears the mark).
    pub fn take_unlinked(&self, ino: u64) -> bool {
        self.tables
            .lock()
            .map(|mut t| t.unlinked.remove(&ino))
            .unwrap_or(false)
    }

    /// Ends kernel handle `fh`.
    pub fn release(&self, fh: u64) -> Option<Released> {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let ino = t.by_fh.remove(&fh)?;
        let shared = t.by_ino.get_mut(&ino)?;
        shared.opens -= 1;
        let handle = Arc::clone(&shared.handle);
        let last = shared.opens == 0;
        if last {
            t.by_ino.remove(&ino);
        }
        Some(Released { handle, last })
    }

    /// Every handle still open (for a flush at unmount).
    pub fn all(&self) -> Vec<Arc<FileHandle>> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.by_ino.values().map(|s| Arc::clone(&s.handle)).collect()
    }

    /// Inodes open here (for lease renewal).
    pub fn open_inodes(&self) -> Vec<u64> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        t.by_ino.keys().copied().collect()
    }
}
