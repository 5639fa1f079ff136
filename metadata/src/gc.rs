//! Garbage collection planning, two phases.
//!
//! 1. [`mark_candidates`]: chunks unreferenced for longer than their grace
//!    (see [`Grace`]: deleted or overwritten data goes after seconds,
//!    uploads never committed after minutes).
//!    The worker marks them with one `GcMark` command, which re-checks the
//!    refcount, so a commit or dedup hit that won the race keeps its chunk.
//! 2. [`deletions`]: Deleting replicas (and trash) on nodes that are up are
//!    deleted there; "not found" counts as deleted. Replicas on nodes gone
//!    for good are just unlisted: a node that returns deletes every chunk
//!    the table does not list when it registers.
//!
//! Pending replicas are never marked: a push may still be landing.

use bigfs_proto::ChunkId;

use crate::heal::Grace;
use crate::repair::{Nodes, Presence, Window};
use crate::state::{ReplicaStatus, State};

/// Chunks in `window` to mark Deleting now (at most `batch`).
pub fn mark_candidates(
    state: &State,
    window: Window,
    now_ms: u64,
    grace: Grace,
    batch: usize,
) -> Vec<ChunkId> {
    window
        .chunks(state)
        .filter(|(_, c)| {
            grace.expired(c, now_ms)
                && (c.replicas.values().any(|s| *s == ReplicaStatus::Available)
                    || c.replicas.values().all(|s| *s == ReplicaStatus::Pending))
        })
        .map(|(id, _)| *id)
        .take(batch)
        .collect()
}

/// One copy to delete on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: ChunkId,
    pub node: String,
    /// From the trash (done with `TrashDone`) rather than a Deleting
    /// replica (done with `GcDeleted`).
    pub trash: bool,
}

/// What phase two does this pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Delete on the node (it is up).
    pub delete: Vec<Deletion>,
    /// Deleting replicas on nodes gone for good: unlist them.
    pub forget: Vec<(ChunkId, String)>,
    /// Trash entries to drop without a call: the node is gone (its
    /// registration will clean up) or lists the chunk again.
    pub drop_trash: Vec<(String, ChunkId)>,
}

/// Plans up to `limit` deletions of the Deleting replicas in `window`
/// and of the trash.
pub fn deletions(state: &State, window: Window, nodes: &Nodes, limit: usize) -> Sweep {
    let mut out = Sweep::default();
    let presence = |n: &str| nodes.get(n).map_or(Presence::Gone, |v| v.presence);
    for (id, c) in window.chunks(state) {
        for (n, s) in &c.replicas {
            if *s != ReplicaStatus::Deleting {
                continue;
            }
            match presence(n) {
                Presence::Up if out.delete.len() < limit => out.delete.push(Deletion {
                    id: *id,
                    node: n.clone(),
                    trash: false,
                }),
                Presence::Gone => out.forget.push((*id, n.clone())),
                _ => {}
            }
        }
    }
    for (n, id) in &state.heal.trash {
        let listed = state
            .chunks
            .get(id)
            .is_some_and(|c| c.replicas.contains_key(n));
        match presence(n) {
            _ if listed => out.drop_trash.push((n.clone(), *id)),
            Presence::Gone => out.drop_trash.push((n.clone(), *id)),
            Presence::Up if out.delete.len() < limit => out.delete.push(Deletion {
                id: *id,
                node: n.clone(),
                trash: true,
            }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
