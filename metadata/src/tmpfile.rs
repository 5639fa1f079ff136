//! Files made by `open(dir, O_TMPFILE)`: a regular file with no name that
//! `linkat` may name later.
//!
//! Such a file starts as an orphan (see `orphans`): nlink 0, kept by the
//! lease of the mount that made it and freed at its last close or when the
//! lease ends, exactly like a file unlinked while open. It belongs to the
//! directory it was made in (its `parent`), which decides its group (a
//! set-group-ID directory), its replication and its quota realm; like any
//! file with no name it counts toward no quota until it has one.
//!
//! Made without `O_EXCL` it is also linkable: a Link gives it its first
//! name, after which it is an ordinary file (no orphan, counted by its
//! quotas) and cannot be named from nothing again. Every other file with
//! no name (unlinked while open, trashed) refuses a Link with ENOENT, as
//! Linux does.

use bigfs_proto::errno::{EINVAL, ENOENT};

use crate::error::MetaError;
use crate::namespace::{self, NewInode};
use crate::quota;
use crate::state::{State, Time};

/// Makes the file `req` describes (its name is ignored) as an orphan kept
/// `open_lease_ms`, linkable or not; answers its inode.
pub(crate) fn create(
    state: &mut State,
    req: &NewInode<'_>,
    (linkable, open_lease_ms): (bool, u64),
    now: Time,
) -> Result<u64, MetaError> {
    if open_lease_ms == 0 {
        return Err(MetaError::ns(
            EINVAL,
            "a file with no name needs an open lease to live",
        ));
    }
    crate::snapshot::check_writable(state, req.parent)?;
    namespace::dir(state, req.parent)?;
    let mut inode = namespace::new_inode(state, req, now)?;
    inode.nlink = 0;
    // Refused where a create would be, though it counts once it has a name.
    quota::check(state, req.parent, 0, 1)?;
    let ino = state.next_ino;
    state.next_ino += 1;
    state.inodes.insert(ino, inode);
    state
        .orphans
        .insert(ino, now.as_ms().saturating_add(open_lease_ms));
    if linkable {
        state.tmpfiles.insert(ino);
    }
    Ok(ino)
}

/// Whether linking `ino` into `new_parent` gives it its first name (a
/// linkable tmpfile). A file with no name that is not one is refused
/// (ENOENT), and so is a first name past a quota of `new_parent`.
pub(crate) fn check_link(state: &State, ino: u64, new_parent: u64) -> Result<bool, MetaError> {
    let inode = state.inode(ino)?;
    if inode.nlink > 0 {
        return Ok(false);
    }
    if !state.tmpfiles.contains(&ino) {
        return Err(MetaError::ns(
            ENOENT,
            format!("inode {ino} has no name left: it cannot be linked"),
        ));
    }
    let bytes = quota::bytes_of(inode.kind, inode.size);
    quota::check(state, new_parent, bytes.unsigned_abs(), 1)?;
    Ok(true)
}

/// Makes tmpfile `ino`, just linked into `new_parent`, an ordinary file.
pub(crate) fn named(state: &mut State, ino: u64, new_parent: u64) {
    state.tmpfiles.remove(&ino);
    state.orphans.remove(&ino);
    if let Some(i) = state.inodes.get(&ino) {
        let bytes = quota::bytes_of(i.kind, i.size);
        quota::charge(state, new_parent, bytes, 1);
    }
}

#[cfg(test)]
#[path = "tmpfile_tests.rs"]
mod tests;
