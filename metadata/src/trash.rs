//! The trash: files whose last name went (unlink, or a rename over them)
//! stay recoverable for `trash_retention_ms` (MooseFS "trash time").
//!
//! A trashed file keeps its inode and its layout, so its chunks keep their
//! references and garbage collection leaves them alone until the entry is
//! purged or expires; then the inode is freed as an unlink would have.
//! `Unlink` and `Rename` carry the retention the leader's configuration
//! says (0: no trash), so every member decides the same. Expiry is a leader
//! duty ([`Command::ExpireTrash`](crate::state::Command)) with the time
//! chosen before proposing.
//!
//! Bounded: at most [`MAX_TRASH_ENTRIES`] entries; past that, the entry
//! closest to expiry is freed to make room. Only regular files go to the
//! trash (directories are empty when removed; symlinks and special files
//! hold no data).

use std::collections::{BTreeMap, BTreeSet};

use bigfs_proto::errno::{EEXIST, ENOENT, ENOTDIR};
use bigfs_proto::{ROOT_INO, validate_name};
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::namespace::{self, NewInode};
use crate::state::{Kind, State, Time};

/// Most files the trash holds. A constant, not a setting: every member
/// must evict the same entries. An entry is its path and two times (plus
/// the inode and layout it keeps), so a full trash adds some hundred MB to
/// the state; the inodes it keeps count as files until they go.
pub const MAX_TRASH_ENTRIES: usize = 1_000_000;

/// Most entries one `ExpireTrash` command frees, so one apply stays short;
/// the worker proposes again on its next tick if more are due.
pub const MAX_EXPIRE_BATCH: usize = 10_000;

/// One trashed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The path it was deleted from (absolute, from the real root).
    pub path: String,
    pub deleted: Time,
    /// When expiry frees it (ms since the epoch).
    pub expires_ms: u64,
}

/// The trashed files by inode, with an index by expiry so that expiring
/// costs nothing proportional to the trash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trash {
    entries: BTreeMap<u64, Entry>,
    by_expiry: BTreeSet<(u64, u64)>,
}

impl Trash {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, ino: u64) -> Option<&Entry> {
        self.entries.get(&ino)
    }

    pub fn contains(&self, ino: u64) -> bool {
        self.entries.contains_key(&ino)
    }

    /// Every entry, by inode (the order files were created in).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries.iter().map(|(i, e)| (*i, e))
    }

    /// Whether an entry's expiry is at or before `now_ms`.
    pub fn any_expired(&self, now_ms: u64) -> bool {
        self.by_expiry.first().is_some_and(|(at, _)| *at <= now_ms)
    }

    fn remove(&mut self, ino: u64) -> Option<Entry> {
        let e = self.entries.remove(&ino)?;
        self.by_expiry.remove(&(e.expires_ms, ino));
        Some(e)
    }
}

/// The path of directory `dir` from the real root. Walks up the parents,
/// finding each name in its parent's entries: cost is the sizes of the
/// directories on the way, not the namespace.
pub fn dir_path(state: &State, mut dir: u64) -> String {
    let mut parts = Vec::new();
    // The depth is bounded by the number of inodes; guard against a cycle.
    for _ in 0..=state.inodes.len() {
        if dir == ROOT_INO {
            break;
        }
        let Some(parent) = state.inodes.get(&dir).map(|i| i.parent) else {
            break;
        };
        let name = state.dirs.get(&parent).and_then(|d| {
            d.entries
                .iter()
                .find(|(_, (i, _))| *i == dir)
                .map(|(n, _)| n.clone())
        });
        match name {
            Some(n) => parts.push(n),
            None => break,
        }
        dir = parent;
    }
    let mut out = String::new();
    for p in parts.iter().rev() {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The path of `name` in directory `parent`.
pub fn child_path(state: &State, parent: u64, name: &str) -> String {
    let dir = dir_path(state, parent);
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// Puts `ino` (a file whose last name just went) in the trash until
/// `now + retention_ms`. Makes room first if the trash is full.
pub(crate) fn put(state: &mut State, ino: u64, path: String, retention_ms: u64, now: Time) {
    put_bounded(state, ino, path, retention_ms, now, MAX_TRASH_ENTRIES);
}

fn put_bounded(
    state: &mut State,
    ino: u64,
    path: String,
    retention_ms: u64,
    now: Time,
    cap: usize,
) {
    while state.trash.len() >= cap.max(1) {
        let Some(&(_, oldest)) = state.trash.by_expiry.first() else {
            break;
        };
        tracing::info!(
            ino = oldest,
            "trash full: the entry closest to expiry is freed"
        );
        namespace::free_inode(state, oldest, now);
    }
    let expires_ms = now.as_ms().saturating_add(retention_ms);
    state.orphans.remove(&ino);
    state.trash.by_expiry.insert((expires_ms, ino));
    state.trash.entries.insert(
        ino,
        Entry {
            path,
            deleted: now,
            expires_ms,
        },
    );
}

/// Forgets `ino`'s entry (its inode is being freed).
pub(crate) fn forget(state: &mut State, ino: u64) {
    state.trash.remove(ino);
}

/// Frees up to [`MAX_EXPIRE_BATCH`] entries whose expiry is at or before
/// `now`.
pub(crate) fn expire(state: &mut State, now: Time) {
    let now_ms = now.as_ms();
    let due: Vec<u64> = state
        .trash
        .by_expiry
        .iter()
        .take_while(|(at, _)| *at <= now_ms)
        .take(MAX_EXPIRE_BATCH)
        .map(|(_, ino)| *ino)
        .collect();
    for ino in due {
        namespace::free_inode(state, ino, now);
    }
}

/// Frees the trashed files among `inos` (others are skipped).
pub(crate) fn purge(state: &mut State, inos: &[u64], now: Time) {
    for &ino in inos {
        if state.trash.contains(ino) {
            namespace::free_inode(state, ino, now);
        }
    }
}

/// Gives trashed file `ino` the name `path` again. Missing parent
/// directories are recreated (mode 0755, owned by the file's owner); a
/// path that is taken (EEXIST) or crosses a non-directory (ENOTDIR) is
/// refused and nothing changes.
pub(crate) fn restore(state: &mut State, ino: u64, path: &str, now: Time) -> Result<(), MetaError> {
    if !state.trash.contains(ino) {
        return Err(MetaError::ns(
            ENOENT,
            format!("inode {ino} is not in the trash"),
        ));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Err(MetaError::InvalidArgument(format!(
            "{path:?} names no file to restore to"
        )));
    };
    for p in &parts {
        validate_name(p)?;
        if *p == "." || *p == ".." {
            return Err(MetaError::InvalidArgument(format!(
                "{path:?}: give a plain path, without . or .."
            )));
        }
    }
    // Check first: walk the existing prefix.
    let mut dir = ROOT_INO;
    let mut missing = 0;
    for (i, p) in dirs.iter().enumerate() {
        match namespace::dir(state, dir)?.entries.get(*p) {
            Some(&(child, _)) => {
                if state.inode(child)?.kind != Kind::Directory {
                    return Err(MetaError::ns(
                        ENOTDIR,
                        format!("{path:?}: {p:?} is not a directory"),
                    ));
                }
                dir = child;
            }
            None => {
                missing = dirs.len() - i;
                break;
            }
        }
    }
    if missing == 0 && namespace::dir(state, dir)?.entries.contains_key(*name) {
        return Err(MetaError::ns(
            EEXIST,
            format!("{path:?} exists: move it away or restore elsewhere"),
        ));
    }
    let (uid, gid) = {
        let i = state.inode(ino)?;
        (i.uid, i.gid)
    };
    // Checks done: recreate the missing directories, then the name.
    for p in &dirs[dirs.len() - missing..] {
        dir = namespace::create(
            state,
            &NewInode {
                parent: dir,
                name: p,
                kind: Kind::Directory,
                mode: 0o755,
                uid,
                gid,
                symlink_target: "",
                exclusive: true,
                rdev: 0,
                chunk_size: 0,
                replication: 0,
                umask: 0,
            },
            now,
        )?;
    }
    state.trash.remove(ino);
    namespace::insert_dentry(state, dir, name, ino);
    namespace::touch_dir(state, dir, now, 0);
    if let Some(i) = state.inodes.get_mut(&ino) {
        i.nlink = 1;
        i.parent = dir;
        i.ctime = now;
    }
    Ok(())
}

#[cfg(test)]
#[path = "trash_tests.rs"]
mod tests;
