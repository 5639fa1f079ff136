//! Small files kept inline: the bytes of a file's chunk index 0 held in the
//! replicated metadata instead of in a chunk on storage nodes (Lustre's
//! Data-on-MDT).
//!
//! A create, write and close of a small file then costs metadata commands
//! only (one commit instead of a placement, a put that three nodes each
//! fdatasync, a registration and a commit), and a cold read of it is
//! answered by the layout call the open makes anyway. The bytes are as
//! durable as the namespace: every metadata member holds them.
//!
//! Index 0 is either inline or a chunk reference, never both: committing a
//! chunk at index 0 drops the inline bytes, committing inline bytes drops
//! the chunk. Other indices are chunks as always, so a file that outgrows
//! the inline limit turns into an ordinary one at its next commit of index
//! 0 (the client uploads the grown chunk 0).
//!
//! The total is bounded (`inline_total_max_bytes`, carried by each command
//! so every member decides alike): past it, and for files wanting more
//! copies than there are metadata members, commits are refused with
//! FAILED_PRECONDITION and the client stores a chunk instead.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::chunks;
use crate::error::MetaError;
use bigfs_proto::ChunkId;

use crate::state::{State, Time};

/// Largest inline file the service accepts, whatever its configuration:
/// a commit must stay a small request (see `limits`).
pub const MAX_INLINE_BYTES: u32 = 64 * 1024;

/// Inline bytes by inode, and their total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inline {
    files: BTreeMap<u64, Bytes>,
    bytes: u64,
}

impl Inline {
    /// The inline bytes of `ino`, if it has any.
    pub fn get(&self, ino: u64) -> Option<&Bytes> {
        self.files.get(&ino)
    }

    /// Bytes held inline over all files.
    pub fn total_bytes(&self) -> u64 {
        self.bytes
    }

    /// Files with inline bytes.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn set(&mut self, ino: u64, data: Bytes) {
        self.remove(ino);
        if data.is_empty() {
            return;
        }
        self.bytes += data.len() as u64;
        self.files.insert(ino, data);
    }

    pub(crate) fn remove(&mut self, ino: u64) {
        if let Some(old) = self.files.remove(&ino) {
            self.bytes -= old.len() as u64;
        }
    }

    /// Cuts `ino`'s bytes to the first `size` (a truncate).
    pub(crate) fn truncate(&mut self, ino: u64, size: u64) {
        if let Some(d) = self.files.get(&ino)
            && (d.len() as u64) > size
        {
            let kept = d.slice(..size as usize);
            self.set(ino, kept);
        }
    }
}

/// A commit of chunk references (none at index 0) plus index 0's bytes.
pub struct InlineCommit<'a> {
    pub ino: u64,
    pub chunks: &'a [(u64, ChunkId, u32)],
    pub data: &'a Bytes,
    pub size: u64,
    pub mtime: Time,
    /// The most inline bytes the whole state may hold after this commit.
    pub budget: u64,
    /// The copies inline bytes get (one per metadata member).
    pub max_replication: u32,
}

/// Applies an [`InlineCommit`]: the chunk references as `CommitLayout`
/// does, then index 0's bytes replace whatever index 0 held.
pub(crate) fn commit(state: &mut State, c: &InlineCommit<'_>, now: Time) -> Result<(), MetaError> {
    if c.chunks.iter().any(|(index, _, _)| *index == 0) {
        return Err(MetaError::InvalidArgument(
            "an inline commit names a chunk at index 0 too".into(),
        ));
    }
    let inode = state.inode(c.ino)?;
    let len = c.data.len() as u64;
    if len > 0 && inode.replication > c.max_replication {
        return Err(MetaError::FailedPrecondition(format!(
            "the file wants {} copies, inline data gets {}: store a chunk",
            inode.replication, c.max_replication
        )));
    }
    if len > u64::from(MAX_INLINE_BYTES.min(inode.chunk_size)) {
        return Err(MetaError::FailedPrecondition(format!(
            "{len} inline bytes exceed the inline limit: store a chunk"
        )));
    }
    let after =
        state.inline.total_bytes() + len - state.inline.get(c.ino).map_or(0, |d| d.len() as u64);
    if len > 0 && after > c.budget {
        return Err(MetaError::FailedPrecondition(format!(
            "inline data is at its limit ({} bytes held): store a chunk",
            state.inline.total_bytes()
        )));
    }
    // Every check of the layout commit runs before anything changes.
    chunks::commit_layout(state, c.ino, c.chunks, c.size.max(len), c.mtime, now)?;
    let replication = state.inodes.get(&c.ino).map_or(0, |i| i.replication);
    if let Some(old) = state.layouts.get_mut(&c.ino).and_then(|l| l.remove(&0)) {
        chunks::release(state, old.id, replication, now.as_ms());
    }
    state.inline.set(c.ino, c.data.clone());
    chunks::refresh_allocated(state, c.ino);
    Ok(())
}

#[cfg(test)]
#[path = "inline_tests.rs"]
mod tests;
