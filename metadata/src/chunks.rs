//! The chunk table: reference counts, replicas, layout commits, and the
//! reconciliation of a node's inventory with what the table lists for it.

use std::collections::{BTreeMap, BTreeSet};

use bigfs_proto::ChunkId;

use crate::error::MetaError;
use crate::namespace::MAX_FILE_SIZE;
use crate::state::{Chunk, ChunkRef, Node, ReplicaStatus, State, Time};

/// One reference less, by a file of replication `replication`; a chunk
/// reaching zero starts its grace period.
pub(crate) fn release(state: &mut State, id: ChunkId, replication: u32, now_ms: u64) {
    if let Some(c) = state.chunks.get_mut(&id) {
        c.refcount = c.refcount.saturating_sub(1);
        crate::replication::unwant(c, replication);
        if c.refcount == 0 {
            c.zero_since_ms = Some(now_ms);
        }
    }
}

/// One reference more, by a file of replication `replication`.
pub(crate) fn acquire(state: &mut State, id: ChunkId, replication: u32) {
    if let Some(c) = state.chunks.get_mut(&id) {
        c.refcount = c.refcount.saturating_add(1);
        *c.wants.entry(replication).or_default() += 1;
        c.zero_since_ms = None;
    }
}

/// Whether a PlaceChunk for this chunk is a dedup hit (nothing to upload):
/// garbage collection has not started on it (no Deleting replica) and an
/// Available replica sits on a node that is up.
pub fn is_dedup_hit(chunk: &Chunk, is_up: impl Fn(&str) -> bool) -> bool {
    let deleting = chunk
        .replicas
        .values()
        .any(|s| *s == ReplicaStatus::Deleting);
    !deleting
        && chunk
            .replicas
            .iter()
            .any(|(n, s)| *s == ReplicaStatus::Available && is_up(n))
}

/// Why `chunk` cannot be referenced by a layout, if it cannot.
pub fn unusable_reason(state: &State, id: &ChunkId, len: u32) -> Option<String> {
    let Some(c) = state.chunks.get(id) else {
        return Some(format!("chunk {id} is not registered; upload it again"));
    };
    if c.replicas.values().any(|s| *s == ReplicaStatus::Deleting) {
        return Some(format!("chunk {id} is being deleted; upload it again"));
    }
    if !c.replicas.values().any(|s| *s == ReplicaStatus::Available) {
        return Some(format!(
            "chunk {id} has no available replica; upload it again"
        ));
    }
    if len > c.len {
        return Some(format!(
            "chunk {id} is {} bytes stored, the layout uses {len}",
            c.len
        ));
    }
    None
}

pub(crate) fn commit_layout(
    state: &mut State,
    ino: u64,
    refs: &[(u64, ChunkId, u32)],
    size: u64,
    mtime: Time,
    now: Time,
) -> Result<(), MetaError> {
    crate::snapshot::check_writable(state, ino)?;
    let inode = state.inode(ino)?;
    crate::namespace::holds_data(inode.kind, ino)?;
    if size > MAX_FILE_SIZE {
        return Err(MetaError::InvalidArgument(format!(
            "size {size} exceeds {MAX_FILE_SIZE}"
        )));
    }
    let chunk_size = u64::from(inode.chunk_size.max(1));
    let replication = inode.replication;
    // Later entries for the same index win.
    let mut new: BTreeMap<u64, ChunkRef> = BTreeMap::new();
    for &(index, id, len) in refs {
        if u64::from(len) > chunk_size {
            return Err(MetaError::InvalidArgument(format!(
                "chunk {id} at index {index}: {len} bytes exceed the file's chunk size {chunk_size}"
            )));
        }
        let end = index
            .checked_mul(chunk_size)
            .and_then(|s| s.checked_add(u64::from(len)));
        if end.is_none_or(|e| e > MAX_FILE_SIZE) {
            return Err(MetaError::InvalidArgument(format!(
                "chunk index {index} is beyond the largest file size"
            )));
        }
        if let Some(why) = unusable_reason(state, &id, len) {
            return Err(MetaError::FailedPrecondition(why));
        }
        new.insert(index, ChunkRef { id, len });
    }

    // A longer file counts toward its quotas (an unlinked one no more).
    let (old_size, counted, dir) = (inode.size, inode.nlink > 0, inode.parent);
    let grows = size.saturating_sub(old_size);
    if counted {
        crate::quota::check(state, dir, grows, 0)?;
    }

    // Checks done. Take the new references before dropping the old ones so a
    // chunk replaced by itself never passes through zero.
    for r in new.values() {
        acquire(state, r.id, replication);
    }
    // A chunk at index 0 replaces the bytes kept inline there.
    if new.contains_key(&0) {
        state.inline.remove(ino);
    }
    let layout = state.layouts.entry(ino).or_default();
    let mut replaced = Vec::new();
    for (index, r) in new {
        if let Some(old) = layout.insert(index, r) {
            replaced.push(old.id);
        }
    }
    for id in replaced {
        release(state, id, replication, now.as_ms());
    }
    refresh_allocated(state, ino);
    if counted {
        crate::quota::charge(state, dir, i64::try_from(grows).unwrap_or(i64::MAX), 0);
    }
    if let Some(inode) = state.inodes.get_mut(&ino) {
        inode.size = inode.size.max(size);
        inode.mtime = mtime;
        inode.ctime = now;
        inode.version += 1;
    }
    Ok(())
}

/// Recomputes the bytes of data `ino` holds: its layout's chunk references
/// and its inline bytes.
pub(crate) fn refresh_allocated(state: &mut State, ino: u64) {
    let chunks: u64 = state
        .layouts
        .get(&ino)
        .map_or(0, |l| l.values().map(|r| u64::from(r.len)).sum());
    let bytes = chunks + state.inline.get(ino).map_or(0, |d| d.len() as u64);
    if let Some(i) = state.inodes.get_mut(&ino) {
        i.allocated = bytes;
    }
}

pub(crate) fn register_chunk(
    state: &mut State,
    id: ChunkId,
    len: u32,
    (node, confirmed): (&str, &[String]),
    designated: &[String],
    now_ms: u64,
) -> Result<(), MetaError> {
    if !state.nodes.contains_key(node) {
        return Err(MetaError::FailedPrecondition(format!(
            "node {node:?} is not registered"
        )));
    }
    if let Some(n) = confirmed.iter().find(|n| !state.nodes.contains_key(*n)) {
        return Err(MetaError::FailedPrecondition(format!(
            "confirmed node {n:?} is not registered"
        )));
    }
    if let Some(c) = state.chunks.get(&id) {
        if c.len != len {
            return Err(MetaError::InvalidArgument(format!(
                "chunk {id} is registered with {} bytes, not {len}",
                c.len
            )));
        }
        if c.replicas.get(node) == Some(&ReplicaStatus::Deleting) {
            return Err(MetaError::FailedPrecondition(format!(
                "chunk {id} is being deleted on node {node:?}; retry later"
            )));
        }
    }
    let c = state.chunks.entry(id).or_insert_with(|| Chunk {
        len,
        refcount: 0,
        zero_since_ms: Some(now_ms),
        created_ms: now_ms,
        replicas: BTreeMap::new(),
        wants: BTreeMap::new(),
    });
    // A fresh upload of an unreferenced chunk restarts its (upload) grace
    // period: a client is about to commit it.
    if c.refcount == 0 {
        c.zero_since_ms = Some(now_ms);
        c.created_ms = now_ms;
    }
    c.replicas
        .insert(node.to_string(), ReplicaStatus::Available);
    for n in confirmed {
        // A copy being deleted stays so: its removal is already under way.
        if c.replicas.get(n) != Some(&ReplicaStatus::Deleting) {
            c.replicas.insert(n.clone(), ReplicaStatus::Available);
        }
    }
    for d in designated {
        c.replicas
            .entry(d.clone())
            .or_insert(ReplicaStatus::Pending);
    }
    Ok(())
}

/// A node says it holds a verified, durable copy of `id`. A designated
/// (Pending) copy becomes Available. So does a copy nobody designated any
/// more (its designation was cancelled or lost while the copy was in
/// flight): a verified copy of a live chunk is worth keeping, and surplus
/// copies are trimmed by repair planning. Refused while the chunk is being
/// collected, or when the copy is in the node's trash (a deletion may be
/// under way): the node then deletes its copy.
pub(crate) fn confirm_replica(state: &mut State, id: ChunkId, node: &str) -> Result<(), MetaError> {
    if !state.nodes.contains_key(node) {
        return Err(MetaError::FailedPrecondition(format!(
            "node {node:?} is not registered"
        )));
    }
    let in_trash = state.heal.trash.contains(&(node.to_string(), id));
    let Some(c) = state.chunks.get_mut(&id) else {
        return Err(MetaError::NotFound(format!("chunk {id} is not registered")));
    };
    if c.replicas.values().any(|s| *s == ReplicaStatus::Deleting) {
        return Err(MetaError::FailedPrecondition(format!(
            "chunk {id} is being deleted"
        )));
    }
    match c.replicas.get_mut(node) {
        Some(s) => {
            *s = ReplicaStatus::Available;
            Ok(())
        }
        None if in_trash => Err(MetaError::FailedPrecondition(format!(
            "the copy of chunk {id} on node {node:?} is being deleted"
        ))),
        None => {
            c.replicas
                .insert(node.to_string(), ReplicaStatus::Available);
            Ok(())
        }
    }
}

pub(crate) fn remove_replica(state: &mut State, id: ChunkId, node: &str) {
    if let Some(c) = state.chunks.get_mut(&id) {
        c.replicas.remove(node);
    }
}

pub(crate) fn register_node(
    state: &mut State,
    node_id: &str,
    address: &str,
    capacity: u64,
    lost: &[ChunkId],
    confirmed: &[ChunkId],
) {
    let decommissioned = state.nodes.get(node_id).is_some_and(|n| n.decommissioned);
    state.nodes.insert(
        node_id.to_string(),
        Node {
            address: address.to_string(),
            capacity,
            decommissioned,
        },
    );
    for id in lost {
        remove_replica(state, *id, node_id);
    }
    for id in confirmed {
        if let Some(s) = state
            .chunks
            .get_mut(id)
            .and_then(|c| c.replicas.get_mut(node_id))
            && *s == ReplicaStatus::Pending
        {
            *s = ReplicaStatus::Available;
        }
    }
}

/// How a node's inventory differs from the chunk table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Listed for the node, absent from its inventory: drop the replica.
    pub lost: Vec<ChunkId>,
    /// Listed Pending and present: now Available.
    pub confirmed: Vec<ChunkId>,
    /// Present but not listed (or listed Deleting): the node deletes them.
    pub delete: Vec<ChunkId>,
    /// Available replicas the table lists for the node.
    pub listed_available: usize,
    /// Of those, how many the inventory lacks (part of `lost`).
    pub lost_available: usize,
}

/// Compares `inventory` with what the table lists for `node`.
pub fn reconcile(state: &State, node: &str, inventory: &[ChunkId]) -> Reconciliation {
    let have: BTreeSet<ChunkId> = inventory.iter().copied().collect();
    let mut out = Reconciliation::default();
    for (id, c) in &state.chunks {
        // A Pending designation absent from the inventory is a copy that
        // has not landed yet (the push or repair copy is still to come),
        // not a lost one: dropping it here left its repair entry copying
        // to a node that then refused the confirmation, for ever.
        let status = c.replicas.get(node);
        let available = status == Some(&ReplicaStatus::Available);
        out.listed_available += usize::from(available);
        let listed = status.is_some_and(|s| *s != ReplicaStatus::Pending);
        if listed && !have.contains(id) {
            out.lost.push(*id);
            out.lost_available += usize::from(available);
        }
    }
    for id in &have {
        match state.chunks.get(id).and_then(|c| c.replicas.get(node)) {
            Some(ReplicaStatus::Pending) => out.confirmed.push(*id),
            Some(ReplicaStatus::Available) => {}
            Some(ReplicaStatus::Deleting) | None => out.delete.push(*id),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, apply};

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn with_nodes() -> State {
        let mut s = State::new();
        for n in ["a", "b", "c"] {
            apply(
                &mut s,
                &Command::RegisterNode {
                    node_id: n.into(),
                    address: format!("{n}:1"),
                    capacity: 100,
                    lost: vec![],
                    confirmed: vec![],
                },
            )
            .unwrap();
        }
        s
    }

    fn register(s: &mut State, c: ChunkId, node: &str, designated: &[&str]) {
        apply(
            s,
            &Command::RegisterChunk {
                confirmed: vec![],
                id: c,
                len: 10,
                node: node.into(),
                designated: designated.iter().map(|d| d.to_string()).collect(),
                now_ms: 5,
            },
        )
        .unwrap();
    }

    #[test]
    fn register_marks_primary_available_and_designated_pending() {
        let mut s = with_nodes();
        register(&mut s, id(1), "a", &["b"]);
        let c = &s.chunks[&id(1)];
        assert_eq!(c.refcount, 0);
        assert_eq!(c.zero_since_ms, Some(5));
        assert_eq!(c.replicas["a"], ReplicaStatus::Available);
        assert_eq!(c.replicas["b"], ReplicaStatus::Pending);
    }

    #[test]
    fn dedup_needs_an_available_replica_on_an_up_node_and_no_deleting() {
        let mut s = with_nodes();
        register(&mut s, id(1), "a", &["b"]);
        let up_all = |_: &str| true;
        assert!(is_dedup_hit(&s.chunks[&id(1)], up_all));
        // Only the Pending replica is on an up node.
        assert!(!is_dedup_hit(&s.chunks[&id(1)], |n: &str| n == "b"));
        s.chunks
            .get_mut(&id(1))
            .unwrap()
            .replicas
            .insert("c".into(), ReplicaStatus::Deleting);
        assert!(!is_dedup_hit(&s.chunks[&id(1)], up_all));
    }

    #[test]
    fn confirm_replica_rules() {
        let mut s = with_nodes();
        register(&mut s, id(1), "a", &["b"]);
        let confirm = |s: &mut State, c, n: &str| {
            apply(
                s,
                &Command::ConfirmReplica {
                    id: c,
                    node: n.into(),
                },
            )
        };
        assert!(matches!(
            confirm(&mut s, id(9), "b"),
            Err(MetaError::NotFound(_))
        ));
        assert!(matches!(
            confirm(&mut s, id(1), "zz"),
            Err(MetaError::FailedPrecondition(_))
        ));
        confirm(&mut s, id(1), "b").unwrap();
        confirm(&mut s, id(1), "b").unwrap();
        assert_eq!(s.chunks[&id(1)].replicas["b"], ReplicaStatus::Available);
    }

    #[test]
    fn a_verified_copy_whose_designation_was_dropped_is_kept_unless_collected_or_trashed() {
        let mut s = with_nodes();
        register(&mut s, id(1), "a", &[]);
        let confirm = |s: &mut State, n: &str| {
            apply(
                s,
                &Command::ConfirmReplica {
                    id: id(1),
                    node: n.into(),
                },
            )
        };
        // Nobody designated c (any more): its verified copy is listed.
        confirm(&mut s, "c").unwrap();
        assert_eq!(s.chunks[&id(1)].replicas["c"], ReplicaStatus::Available);
        // A copy in b's trash is not taken back.
        s.heal.trash.insert(("b".into(), id(1)));
        assert!(matches!(
            confirm(&mut s, "b"),
            Err(MetaError::FailedPrecondition(_))
        ));
        assert!(!s.chunks[&id(1)].replicas.contains_key("b"));
        // Nor a copy of a chunk being collected.
        s.heal.trash.clear();
        s.chunks
            .get_mut(&id(1))
            .unwrap()
            .replicas
            .insert("a".into(), ReplicaStatus::Deleting);
        assert!(matches!(
            confirm(&mut s, "b"),
            Err(MetaError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn a_node_restart_keeps_the_pending_designations_its_inventory_lacks() {
        // The root cause of repairs that never finished: a node that
        // re-registered before a queued copy reached it lost its Pending
        // designation, and every later copy was refused.
        let mut s = with_nodes();
        register(&mut s, id(1), "a", &["b"]);
        let r = reconcile(&s, "b", &[]);
        assert!(r.lost.is_empty(), "a copy still to come is not lost");
        apply(
            &mut s,
            &Command::RegisterNode {
                node_id: "b".into(),
                address: "b:1".into(),
                capacity: 100,
                lost: r.lost,
                confirmed: r.confirmed,
            },
        )
        .unwrap();
        assert_eq!(s.chunks[&id(1)].replicas["b"], ReplicaStatus::Pending);
    }

    #[test]
    fn register_from_unknown_node_or_with_other_len_is_refused() {
        let mut s = with_nodes();
        let cmd = Command::RegisterChunk {
            confirmed: vec![],
            id: id(1),
            len: 10,
            node: "zz".into(),
            designated: vec![],
            now_ms: 0,
        };
        assert!(apply(&mut s, &cmd).is_err());
        register(&mut s, id(1), "a", &[]);
        let cmd = Command::RegisterChunk {
            confirmed: vec![],
            id: id(1),
            len: 11,
            node: "b".into(),
            designated: vec![],
            now_ms: 0,
        };
        assert!(matches!(
            apply(&mut s, &cmd),
            Err(MetaError::InvalidArgument(_))
        ));
    }

    #[test]
    fn inventory_reconciliation_drops_confirms_and_deletes() {
        let mut s = with_nodes();
        register(&mut s, id(1), "a", &["b"]); // b pending, present -> confirmed
        register(&mut s, id(2), "b", &[]); // b available, missing -> lost
        register(&mut s, id(3), "a", &[]); // not listed on b -> delete
        s.chunks.get_mut(&id(1)).unwrap();
        let r = reconcile(&s, "b", &[id(1), id(3), id(4)]);
        assert_eq!(r.lost, vec![id(2)]);
        assert_eq!((r.listed_available, r.lost_available), (1, 1));
        assert_eq!(r.confirmed, vec![id(1)]);
        assert_eq!(r.delete, vec![id(3), id(4)]);

        // A Deleting replica that is present is deleted, not trusted.
        s.chunks
            .get_mut(&id(2))
            .unwrap()
            .replicas
            .insert("b".into(), ReplicaStatus::Deleting);
        let r2 = reconcile(&s, "b", &[id(2)]);
        assert_eq!(r2.delete, vec![id(2)]);

        apply(
            &mut s,
            &Command::RegisterNode {
                node_id: "b".into(),
                address: "b:2".into(),
                capacity: 7,
                lost: r.lost,
                confirmed: r.confirmed,
            },
        )
        .unwrap();
        assert!(!s.chunks[&id(2)].replicas.contains_key("b"));
        assert_eq!(s.chunks[&id(1)].replicas["b"], ReplicaStatus::Available);
        assert_eq!(s.nodes["b"].address, "b:2");
    }
}
