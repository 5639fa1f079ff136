//! Open directory handles: their listings, and the attributes a
//! directory had when it was opened.
//!
//! A directory that is open can be removed or renamed over by another
//! process. `fstat` on the open descriptor must keep working then, with
//! `st_nlink` 0, as it does for files: the mount answers it from the
//! attributes it last saw for the directory (from lookups and getattrs,
//! kept for recently seen directories), since the metadata service no
//! longer has the inode.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bigfs_proto::pb;

use crate::client::Client;
use crate::error::ClientError;
use crate::trash_view::{TRASH_INO, TrashView};

/// Directories whose attributes are remembered for a later `opendir`: the
/// kernel opens a directory right after looking it up, so a few thousand
/// recent ones cover every open in flight.
const RECENT_DIRS: usize = 4096;

#[derive(Default)]
struct Handles {
    /// Open handle -> directory inode.
    ino_of: HashMap<u64, u64>,
    /// Open directory inode -> (open handles, last attributes seen).
    open: HashMap<u64, (usize, Option<pb::Attr>)>,
    /// Listing fetched for each handle (see `listing`).
    listings: HashMap<u64, Arc<Vec<pb::DirEntry>>>,
}

pub struct OpenDirs {
    next_fh: std::sync::atomic::AtomicU64,
    handles: Mutex<Handles>,
    recent: Mutex<lru::LruCache<u64, pb::Attr>>,
}

impl Default for OpenDirs {
    fn default() -> Self {
        OpenDirs {
            next_fh: Default::default(),
            handles: Default::default(),
            recent: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(RECENT_DIRS).expect("RECENT_DIRS is not zero"),
            )),
        }
    }
}

impl OpenDirs {
    fn handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new handle on directory `ino`.
    pub fn open(&self, ino: u64) -> u64 {
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let seen = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned();
        let mut h = self.handles();
        h.ino_of.insert(fh, ino);
        let entry = h.open.entry(ino).or_insert((0, None));
        entry.0 += 1;
        if seen.is_some() {
            entry.1 = seen;
        }
        fh
    }

    pub fn release(&self, fh: u64) {
        let mut h = self.handles();
        h.listings.remove(&fh);
        if let Some(ino) = h.ino_of.remove(&fh)
            && let Some(entry) = h.open.get_mut(&ino)
        {
            entry.0 -= 1;
            if entry.0 == 0 {
                h.open.remove(&ino);
            }
        }
    }

    /// Notes the attributes of `a` if it is a directory.
    pub fn seen(&self, a: &pb::Attr) {
        if a.kind != pb::FileKind::Directory as i32 {
            return;
        }
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(a.ino, a.clone());
        if let Some(entry) = self.handles().open.get_mut(&a.ino) {
            entry.1 = Some(a.clone());
        }
    }

    /// The attributes of an open directory the metadata service no longer
    /// has (removed or renamed over): as last seen, with no links.
    pub fn removed_while_open(&self, ino: u64) -> Option<pb::Attr> {
        let h = self.handles();
        let mut a = h.open.get(&ino)?.1.clone()?;
        a.nlink = 0;
        Some(a)
    }

    /// The listing of `ino` for handle `fh`. The kernel reads a directory a
    /// few dozen entries per call; fetching the listing once per `opendir`
    /// (and again at a rewind to offset 0) keeps that to one round of RPCs
    /// instead of one per call.
    /// `trash`: the `.trash` view, whose inode lists the trash.
    pub async fn listing(
        &self,
        client: &Client,
        (ino, trash): (u64, Option<&TrashView>),
        fh: u64,
        offset: u64,
    ) -> Result<Arc<Vec<pb::DirEntry>>, ClientError> {
        if offset > 0
            && let Some(l) = self.handles().listings.get(&fh).cloned()
        {
            return Ok(l);
        }
        let listing = Arc::new(match trash {
            Some(view) if ino == TRASH_INO => view.listing(client).await?,
            _ => client.readdir_all(ino).await?,
        });
        if fh != 0 {
            let mut h = self.handles();
            if h.ino_of.contains_key(&fh) {
                h.listings.insert(fh, Arc::clone(&listing));
            }
        }
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ino: u64, nlink: u32) -> pb::Attr {
        pb::Attr {
            ino,
            kind: pb::FileKind::Directory as i32,
            nlink,
            mode: 0o755,
            ..Default::default()
        }
    }

    #[test]
    fn an_open_directory_keeps_its_attributes_with_no_links() {
        let d = OpenDirs::default();
        d.seen(&dir(7, 2));
        let a = d.open(7);
        let b = d.open(7);
        assert_eq!(
            d.removed_while_open(7).map(|a| (a.mode, a.nlink)),
            Some((0o755, 0))
        );
        d.release(a);
        assert!(d.removed_while_open(7).is_some(), "still open once");
        d.release(b);
        assert!(d.removed_while_open(7).is_none(), "closed: nothing kept");
    }

    #[test]
    fn files_are_not_remembered_and_unseen_directories_have_nothing() {
        let d = OpenDirs::default();
        let mut f = dir(8, 1);
        f.kind = pb::FileKind::File as i32;
        d.seen(&f);
        d.open(8);
        assert!(d.removed_while_open(8).is_none());
        d.open(9);
        d.seen(&dir(9, 3));
        assert_eq!(
            d.removed_while_open(9).map(|a| a.nlink),
            Some(0),
            "seen after open"
        );
    }
}
