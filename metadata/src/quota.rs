//! Directory quotas: limits on the bytes and inodes of a directory's tree,
//! with usage kept up to date incrementally as the namespace changes.
//!
//! - **Usage** of a quota directory: `bytes` is the sum of the sizes of the
//!   regular files below it, `inodes` the number of files, directories and
//!   other entries below it (not the directory itself). A hard-linked file
//!   counts once. An unlinked file still open somewhere stops counting when
//!   its last name goes.
//! - **Incremental**: every command that adds, removes or resizes an inode
//!   walks up from its directory (directories know their parent) and
//!   charges each quota directory on the way: work proportional to the
//!   depth, never to the tree. Only setting a new quota scans its tree once,
//!   to start the count.
//! - **Nesting**: a change counts toward every quota directory above it.
//! - **Limits** are checked before a change that grows usage (a create, a
//!   layout commit or truncate that makes a file longer): past a limit the
//!   command is refused with EDQUOT and nothing changes. Shrinking is never
//!   refused; a limit set below the current usage refuses growth only.
//! - **Borders** (CephFS semantics): `rename` and `link` between
//!   directories under different sets of quota directories are refused with
//!   EXDEV. `mv` then copies and deletes, which counts correctly on both
//!   sides; `ln` fails. Within one set of quota directories, renames move
//!   nothing between counts.

use std::collections::BTreeSet;

use bigfs_proto::ROOT_INO;
use bigfs_proto::errno::{EDQUOT, ENOTDIR, EXDEV};
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::state::{Kind, State};

/// One quota directory: its limits (0: none) and its usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub max_bytes: u64,
    pub max_inodes: u64,
    pub bytes: u64,
    pub inodes: u64,
}

/// The quota directories at or above directory `dir`, nearest first.
pub fn above(state: &State, dir: u64) -> Vec<u64> {
    let mut out = Vec::new();
    if state.quotas.is_empty() {
        return out;
    }
    let mut d = dir;
    // The depth is bounded by the number of inodes; guard against a cycle.
    for _ in 0..=state.inodes.len() {
        if state.quotas.contains_key(&d) {
            out.push(d);
        }
        if d == ROOT_INO {
            break;
        }
        match state.inodes.get(&d) {
            Some(i) => d = i.parent,
            None => break,
        }
    }
    out
}

/// Refuses (EDQUOT) adding `bytes` and `inodes` below directory `dir` if a
/// quota directory at or above it would pass its limit.
pub(crate) fn check(state: &State, dir: u64, bytes: u64, inodes: u64) -> Result<(), MetaError> {
    for q in above(state, dir) {
        let Some(quota) = state.quotas.get(&q) else {
            continue;
        };
        if bytes > 0 && quota.max_bytes > 0 && quota.bytes.saturating_add(bytes) > quota.max_bytes {
            return Err(MetaError::ns(
                EDQUOT,
                format!(
                    "quota of directory {q}: {} of {} bytes used, {bytes} more refused",
                    quota.bytes, quota.max_bytes
                ),
            ));
        }
        if inodes > 0
            && quota.max_inodes > 0
            && quota.inodes.saturating_add(inodes) > quota.max_inodes
        {
            return Err(MetaError::ns(
                EDQUOT,
                format!(
                    "quota of directory {q}: {} of {} inodes used",
                    quota.inodes, quota.max_inodes
                ),
            ));
        }
    }
    Ok(())
}

/// Adds `bytes` and `inodes` (negative: removes) to every quota directory
/// at or above directory `dir`.
pub(crate) fn charge(state: &mut State, dir: u64, bytes: i64, inodes: i64) {
    if bytes == 0 && inodes == 0 {
        return;
    }
    for q in above(state, dir) {
        if let Some(quota) = state.quotas.get_mut(&q) {
            quota.bytes = quota.bytes.saturating_add_signed(bytes);
            quota.inodes = quota.inodes.saturating_add_signed(inodes);
        }
    }
}

/// Refuses (EXDEV) moving or linking an entry from directory `from` into
/// directory `to` when they lie under different quota directories.
pub(crate) fn same_realm(state: &State, from: u64, to: u64) -> Result<(), MetaError> {
    if from == to || state.quotas.is_empty() {
        return Ok(());
    }
    if above(state, from) != above(state, to) {
        return Err(MetaError::ns(
            EXDEV,
            format!(
                "directories {from} and {to} are under different quotas: \
                 copy and delete instead"
            ),
        ));
    }
    Ok(())
}

/// The byte count of an inode: its size for a regular file, else 0.
pub(crate) fn bytes_of(kind: Kind, size: u64) -> i64 {
    if kind == Kind::File {
        i64::try_from(size).unwrap_or(i64::MAX)
    } else {
        0
    }
}

/// The usage of `dir`'s tree, counted by walking it (a new quota's start).
fn scan(state: &State, dir: u64) -> (u64, u64) {
    let mut seen = BTreeSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut todo = vec![dir];
    while let Some(d) = todo.pop() {
        let Some(entries) = state.dirs.get(&d) else {
            continue;
        };
        for &(ino, _) in entries.entries.values() {
            if !seen.insert(ino) {
                continue;
            }
            let Some(i) = state.inodes.get(&ino) else {
                continue;
            };
            inodes += 1;
            bytes = bytes.saturating_add(bytes_of(i.kind, i.size) as u64);
            if i.kind == Kind::Directory {
                todo.push(ino);
            }
        }
    }
    (bytes, inodes)
}

/// What a `SetQuota` command does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaChange {
    /// Set the limits given (`Some(0)` removes that limit); a directory
    /// without a quota gets one, its usage counted once.
    Limits {
        max_bytes: Option<u64>,
        max_inodes: Option<u64>,
    },
    /// Remove the quota.
    Clear,
}

/// Applies a quota change to directory `ino`.
pub(crate) fn set(state: &mut State, ino: u64, change: &QuotaChange) -> Result<(), MetaError> {
    if state.inode(ino)?.kind != Kind::Directory {
        return Err(MetaError::ns(
            ENOTDIR,
            format!("inode {ino} is not a directory: quotas are set on directories"),
        ));
    }
    match change {
        QuotaChange::Clear => {
            state.quotas.remove(&ino);
        }
        QuotaChange::Limits {
            max_bytes,
            max_inodes,
        } => {
            if !state.quotas.contains_key(&ino) {
                let (bytes, inodes) = scan(state, ino);
                state.quotas.insert(
                    ino,
                    Quota {
                        bytes,
                        inodes,
                        ..Quota::default()
                    },
                );
            }
            if let Some(q) = state.quotas.get_mut(&ino) {
                if let Some(b) = max_bytes {
                    q.max_bytes = *b;
                }
                if let Some(i) = max_inodes {
                    q.max_inodes = *i;
                }
            }
        }
    }
    Ok(())
}

/// The path of directory `ino` below directory `top` ("/" for `top`
/// itself; None if `ino` is not below `top`).
pub fn dir_path(state: &State, ino: u64, top: u64) -> Option<String> {
    let mut names = Vec::new();
    let mut d = ino;
    for _ in 0..=state.inodes.len() {
        if d == top {
            names.reverse();
            return Some(format!("/{}", names.join("/")));
        }
        if d == ROOT_INO {
            return None;
        }
        let parent = state.inodes.get(&d)?.parent;
        let name = state
            .dirs
            .get(&parent)?
            .entries
            .iter()
            .find(|(_, (i, _))| *i == d)
            .map(|(n, _)| n.clone())?;
        names.push(name);
        d = parent;
    }
    None
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
