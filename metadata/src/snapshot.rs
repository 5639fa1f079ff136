//! File-system snapshots (`bigfs snapshot SRC DST`): a copy of a tree made
//! by copying its inodes, directory entries and layouts, sharing every
//! chunk (its reference count goes up by one per layout reference). Time
//! and state grow with the number of inodes and chunk references, never
//! with the bytes. Not to be confused with the Raft snapshots of `store`.
//!
//! Copy-on-write needs nothing more: chunks are immutable and content
//! addressed, so a later write to either side uploads new chunks and
//! commits a new layout for that inode only (releasing its old
//! references), a truncate cuts only that inode's layout, and a chunk is
//! collected only once no layout references it.
//!
//! Bounded: one command copies at most `max_inodes` (the leader's
//! `snapshot_max_inodes`); a larger tree is refused before anything
//! changes. Hard links inside the tree stay hard links in the copy.
//!
//! A read-only snapshot lists its inodes in `State::read_only`: writes,
//! attribute changes, new entries and renames in it answer EROFS, but its
//! entries may be removed, so `rm -r` drops it.

use std::collections::{BTreeMap, VecDeque};

use bigfs_proto::errno::{EEXIST, EINVAL, ENOSPC, EROFS};
use bigfs_proto::validate_name;

use crate::chunks;
use crate::error::MetaError;
use crate::namespace;
use crate::state::{Dir, Kind, State, Time};

/// Refuses (EROFS) a change to an inode of a read-only snapshot. Its
/// entries may still be removed (`rm -r` drops a read-only snapshot):
/// only creating, renaming, writing and changing attributes are refused.
pub(crate) fn check_writable(state: &State, ino: u64) -> Result<(), MetaError> {
    if state.read_only.contains(&ino) {
        return Err(MetaError::ns(
            EROFS,
            format!("inode {ino} belongs to a read-only snapshot"),
        ));
    }
    Ok(())
}

/// What one snapshot copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub inodes: u64,
    pub chunk_refs: u64,
}

/// The inodes of the tree at `src` (itself first, breadth first), or an
/// error if there are more than `max_inodes`.
fn tree(state: &State, src: u64, max_inodes: u64) -> Result<Vec<u64>, MetaError> {
    let mut out = vec![src];
    let mut seen = std::collections::BTreeSet::from([src]);
    let mut queue = VecDeque::from([src]);
    while let Some(dir) = queue.pop_front() {
        let Some(d) = state.dirs.get(&dir) else {
            continue;
        };
        for &(child, _) in d.entries.values() {
            if !seen.insert(child) {
                continue; // another hard link to a file already listed
            }
            if out.len() as u64 >= max_inodes {
                return Err(MetaError::ns(
                    ENOSPC,
                    format!(
                        "the tree has more than {max_inodes} inodes, the limit of one \
                         snapshot (snapshot_max_inodes): snapshot its subtrees one by one"
                    ),
                ));
            }
            out.push(child);
            if state.dirs.contains_key(&child) {
                queue.push_back(child);
            }
        }
    }
    Ok(out)
}

/// Copies the tree at `src` to `dst_name` in directory `dst_parent`.
pub(crate) fn snapshot(
    state: &mut State,
    src: u64,
    (dst_parent, dst_name): (u64, &str),
    (max_inodes, read_only): (u64, bool),
    now: Time,
) -> Result<Copied, MetaError> {
    validate_name(dst_name)?;
    check_writable(state, dst_parent)?;
    state.inode(src)?;
    if namespace::dir(state, dst_parent)?
        .entries
        .contains_key(dst_name)
    {
        return Err(MetaError::ns(
            EEXIST,
            format!("{dst_name:?} already exists: a snapshot makes a new name"),
        ));
    }
    let src_is_dir = state.inode(src)?.kind == Kind::Directory;
    if src_is_dir && namespace::is_within(state, dst_parent, src) {
        return Err(MetaError::ns(
            EINVAL,
            "cannot snapshot a directory into itself",
        ));
    }
    let inos = tree(state, src, max_inodes)?;

    // Checks done. New inode numbers, in the same order.
    let first = state.next_ino;
    let map: BTreeMap<u64, u64> = inos
        .iter()
        .enumerate()
        .map(|(i, old)| (*old, first + i as u64))
        .collect();
    state.next_ino = first + inos.len() as u64;
    let mut copied = Copied::default();
    let mut charged_bytes: i64 = 0;
    let mut links: BTreeMap<u64, u32> = BTreeMap::new();
    for &old in &inos {
        let new = map[&old];
        let Some(mut inode) = state.inodes.get(&old).cloned() else {
            continue;
        };
        inode.ctime = now;
        inode.parent = if old == src {
            dst_parent
        } else {
            map.get(&inode.parent).copied().unwrap_or(dst_parent)
        };
        if inode.kind == Kind::Directory {
            let mut dir = Dir::default();
            if let Some(d) = state.dirs.get(&old) {
                for (name, &(child, _)) in &d.entries {
                    let cookie = state.next_cookie;
                    state.next_cookie += 1;
                    let target = map.get(&child).copied().unwrap_or(child);
                    dir.entries.insert(name.clone(), (target, cookie));
                    dir.by_cookie.insert(cookie, name.clone());
                    *links.entry(target).or_default() += 1;
                }
            }
            state.dirs.insert(new, dir);
        }
        if let Some(layout) = state.layouts.get(&old).cloned() {
            for r in layout.values() {
                chunks::acquire(state, r.id, inode.replication);
                copied.chunk_refs += 1;
            }
            state.layouts.insert(new, layout);
        }
        if let Some(data) = state.inline.get(old).cloned() {
            state.inline.set(new, data);
        }
        charged_bytes += crate::quota::bytes_of(inode.kind, inode.size);
        state.inodes.insert(new, inode);
        if read_only {
            state.read_only.insert(new);
        }
        copied.inodes += 1;
    }
    // A file's link count is its names inside the copy (a hard link to a
    // file outside the tree is not copied).
    for (&new, &n) in &links {
        if let Some(i) = state.inodes.get_mut(&new)
            && i.kind != Kind::Directory
        {
            i.nlink = n;
        }
    }
    let root = map[&src];
    if let Some(i) = state.inodes.get_mut(&root)
        && i.kind != Kind::Directory
    {
        i.nlink = 1;
    }
    namespace::insert_dentry(state, dst_parent, dst_name, root);
    namespace::touch_dir(state, dst_parent, now, i32::from(src_is_dir));
    // The copy counts toward the quotas above it, as if written there.
    let inodes = i64::try_from(copied.inodes).unwrap_or(i64::MAX);
    crate::quota::charge(state, dst_parent, charged_bytes, inodes);
    Ok(copied)
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
