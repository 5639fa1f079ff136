//! The persisted part of self-healing: the repair queue, the trash (copies a
//! node must still delete), their commands and the one deterministic apply.
//!
//! Planning (what to queue, what to collect) lives in [`crate::repair`],
//! [`crate::gc`] and [`crate::decommission`]; the background loop that
//! talks to storage nodes in [`crate::worker`]. Like every command, these
//! carry their time and choices, so replaying the log rebuilds the queue.

use std::collections::BTreeSet;

use bigfs_proto::{ChunkId, RetryConfig, pb};
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::state::{ReplicaStatus, State};

/// How long Completed and Failed entries stay visible in the queue before
/// they are pruned: long enough for an operator to look, short enough that
/// the queue stays the size of the work.
pub const HISTORY_MS: u64 = 10 * 60 * 1000;

/// Settings of the repair worker and the garbage collector (`[heal]` in the
/// metadata configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealConfig {
    /// Tick of the background worker. Default 1000 ms.
    pub interval_ms: u64,
    /// A node Down this long has its replicas re-created elsewhere; a node
    /// back sooner costs nothing (no copy storm on a quick restart).
    /// Default 30000 ms, so a dead node is healed from ~50 s after its last
    /// heartbeat with the default liveness timeouts.
    pub repair_delay_ms: u64,
    /// Copies in flight per node, as source or target. Default 4.
    pub max_copies_per_node: usize,
    /// Copies in flight in the whole cluster. Default 32.
    pub max_copies: usize,
    /// A Pending replica unconfirmed this long gets a repair entry (the
    /// primary's push failed). Default 30000 ms.
    pub pending_timeout_ms: u64,
    /// Backoff of failed repair entries; `max_retries` failures make an
    /// entry Failed (a new one is planned with another target), and
    /// `attempt_timeout_ms` bounds one peer-to-peer copy.
    pub retry: RetryConfig,
    /// A chunk uploaded but not (yet) committed by a layout is kept this
    /// long after its upload: it must exceed any client write-back delay
    /// between a chunk's upload and its layout commit. Default 600000 ms
    /// (10 min).
    pub gc_grace_ms: u64,
    /// A chunk whose last reference was dropped (file deleted, chunk
    /// overwritten) is collected this long after: enough for a reader
    /// holding the old layout to finish its read, and short, so that
    /// overwrite-heavy work does not fill the disks with dead copies.
    /// Default 30000 ms.
    pub gc_release_grace_ms: u64,
    /// When the Up nodes' free space falls under this percentage of their
    /// capacity, released chunks are collected at once (no grace). Default
    /// 10; 0 turns it off.
    pub gc_urgent_free_percent: u8,
    /// Chunks marked for deletion per tick. Default 2000.
    pub gc_batch: usize,
    /// DeleteChunk calls in flight. Default 32.
    pub gc_parallel: usize,
    /// Every this long, each Up node is asked (HasChunks) whether it still
    /// holds the copies listed for it; a copy whose file is gone is
    /// unlisted and made again elsewhere. At most `audit_batch` copies per
    /// node per pass, continuing where the last pass stopped. Default
    /// 600000 ms (10 min); 0 turns it off.
    pub audit_interval_ms: u64,
    pub audit_batch: usize,
    /// Chunks the repair planner and the collector look at per tick: a
    /// table larger than this is gone through in slices, one per tick,
    /// so a tick costs the same at ten million files as at ten thousand.
    /// Chunks with queued copies are looked at every tick. Default 100000.
    pub scan_batch: usize,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            interval_ms: 1_000,
            repair_delay_ms: 30_000,
            max_copies_per_node: 4,
            max_copies: 32,
            pending_timeout_ms: 30_000,
            retry: RetryConfig {
                max_retries: 8,
                base_delay_ms: 1_000,
                max_delay_ms: 300_000,
                multiplier: 2.0,
                // A 64 MiB chunk read, pushed and fsync'd on a slow disk.
                attempt_timeout_ms: 60_000,
            },
            gc_grace_ms: 600_000,
            gc_release_grace_ms: 30_000,
            gc_urgent_free_percent: 10,
            gc_batch: 2_000,
            gc_parallel: 32,
            audit_interval_ms: 600_000,
            audit_batch: 65_536,
            scan_batch: 100_000,
        }
    }
}

impl HealConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ms == 0 {
            return Err("heal.interval_ms must be > 0".into());
        }
        if self.max_copies_per_node == 0 || self.max_copies == 0 {
            return Err("heal.max_copies_per_node and heal.max_copies must be > 0".into());
        }
        if self.gc_batch == 0 || self.gc_parallel == 0 || self.scan_batch == 0 {
            return Err("heal.gc_batch, heal.gc_parallel and heal.scan_batch must be > 0".into());
        }
        if self.gc_urgent_free_percent > 100 {
            return Err("heal.gc_urgent_free_percent must be at most 100".into());
        }
        if self.audit_batch == 0 {
            return Err("heal.audit_batch must be > 0".into());
        }
        self.retry.validate().map_err(|e| format!("heal.{e}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepairStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
}

impl RepairStatus {
    pub fn to_pb(self) -> pb::RepairStatus {
        match self {
            RepairStatus::Pending => pb::RepairStatus::Pending,
            RepairStatus::InProgress => pb::RepairStatus::InProgress,
            RepairStatus::Completed => pb::RepairStatus::Completed,
            RepairStatus::Failed => pb::RepairStatus::Failed,
        }
    }

    /// Still work to do.
    pub fn is_active(self) -> bool {
        matches!(self, RepairStatus::Pending | RepairStatus::InProgress)
    }
}

/// One queued copy of a chunk to a target node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairEntry {
    pub source: String,
    pub status: RepairStatus,
    pub attempts: u32,
    pub last_error: String,
    pub next_try_ms: u64,
    pub created_ms: u64,
    /// When it became Completed or Failed.
    pub done_ms: u64,
}

/// The persisted healing state, a field of [`State`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealState {
    /// (chunk, target node) -> entry.
    pub queue: crate::state::Table<(ChunkId, String), RepairEntry>,
    /// Copies no longer listed in the chunk table that a node must still
    /// delete (decommission drains, abandoned Pending designations).
    pub trash: BTreeSet<(String, ChunkId)>,
    /// Entries completed since the queue began.
    pub completed_total: u64,
}

impl HealState {
    /// Whether the queue holds work still to do for (chunk, target).
    pub fn is_active(&self, key: &(ChunkId, String)) -> bool {
        self.queue.get(key).is_some_and(|e| e.status.is_active())
    }
}

/// The outcome of one copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairOutcome {
    pub id: ChunkId,
    pub target: String,
    /// None: copied and confirmed.
    pub error: Option<String>,
    /// When to try again after a failure (the worker's backoff).
    pub next_try_ms: u64,
    /// Attempts are spent: the entry becomes Failed.
    pub give_up: bool,
}

/// A healing mutation of the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealCommand {
    /// Queue copies (chunk, target, source); the target is designated as a
    /// Pending replica so its ConfirmReplica is accepted.
    Enqueue {
        items: Vec<(ChunkId, String, String)>,
        now_ms: u64,
    },
    /// Copies started (chunk, target, source).
    Start {
        items: Vec<(ChunkId, String, String)>,
    },
    Finish {
        outcomes: Vec<RepairOutcome>,
        now_ms: u64,
    },
    /// Give up entries (target gone or decommissioned): Failed, and the
    /// target's Pending designation is dropped.
    Cancel {
        items: Vec<(ChunkId, String)>,
        reason: String,
        now_ms: u64,
    },
    /// Phase one of garbage collection: chunks still unreferenced for
    /// `grace_ms` (the release grace; the planner has checked the upload
    /// grace) get their Available replicas marked Deleting. The
    /// refcount check and the marking are this one command, so a dedup hit
    /// or a layout commit either happened before (and the chunk is skipped)
    /// or sees Deleting (and is refused).
    GcMark {
        ids: Vec<ChunkId>,
        now_ms: u64,
        grace_ms: u64,
    },
    /// Phase two: these Deleting replicas are gone from their nodes (or
    /// their node is gone); a chunk left with no replica is removed.
    GcDeleted { items: Vec<(ChunkId, String)> },
    /// Unlist replicas and put them in the trash for their node to delete.
    Drain { items: Vec<(ChunkId, String)> },
    /// Trash entries deleted on their node.
    TrashDone { items: Vec<(String, ChunkId)> },
    /// Decommission a node (or take it back).
    Decommission { node: String, on: bool },
    /// Forget a node (the admin checked it holds nothing); its finished
    /// queue entries go with it.
    RemoveNode { node: String },
    /// Remove active entries whose copy is no longer needed (enough good
    /// copies exist again, e.g. their node came back), with their target's
    /// Pending designation. Not a failure, so not kept as Failed.
    Unqueue { items: Vec<(ChunkId, String)> },
}

fn refcount_zero_past(c: &crate::state::Chunk, now_ms: u64, grace_ms: u64) -> bool {
    c.refcount == 0
        && c.zero_since_ms
            .is_some_and(|z| z.saturating_add(grace_ms) <= now_ms)
}

/// The two grace periods of garbage collection, as one pass applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// Since the chunk's (last) upload.
    pub upload_ms: u64,
    /// Since its refcount reached zero.
    pub release_ms: u64,
}

impl Grace {
    /// The graces now: no release grace when the cluster is nearly full.
    pub fn now(config: &HealConfig, free: u64, capacity: u64) -> Grace {
        let urgent = capacity > 0
            && u128::from(free) * 100
                < u128::from(capacity) * u128::from(config.gc_urgent_free_percent);
        Grace {
            upload_ms: config.gc_grace_ms,
            release_ms: if urgent {
                0
            } else {
                config.gc_release_grace_ms
            },
        }
    }

    /// Unreferenced and past both graces: garbage collection may take it.
    pub fn expired(&self, c: &crate::state::Chunk, now_ms: u64) -> bool {
        refcount_zero_past(c, now_ms, self.release_ms)
            && c.created_ms.saturating_add(self.upload_ms) <= now_ms
    }
}

/// Applies one healing command. Items that no longer fit the state are
/// skipped (the planner saw an older state); only an unknown node in
/// `Decommission` is an error.
pub fn apply(state: &mut State, cmd: &HealCommand) -> Result<(), MetaError> {
    match cmd {
        HealCommand::Enqueue { items, now_ms } => {
            for (id, target, source) in items {
                if !state.nodes.contains_key(target) {
                    continue;
                }
                let Some(c) = state.chunks.get_mut(id) else {
                    continue;
                };
                if c.replicas.values().any(|s| *s == ReplicaStatus::Deleting) {
                    continue;
                }
                match c.replicas.get(target) {
                    Some(ReplicaStatus::Available | ReplicaStatus::Deleting) => continue,
                    Some(ReplicaStatus::Pending) => {}
                    None => {
                        c.replicas.insert(target.clone(), ReplicaStatus::Pending);
                    }
                }
                let key = (*id, target.clone());
                if state.heal.is_active(&key) {
                    continue;
                }
                state.heal.queue.insert(
                    key,
                    RepairEntry {
                        source: source.clone(),
                        status: RepairStatus::Pending,
                        attempts: 0,
                        last_error: String::new(),
                        next_try_ms: *now_ms,
                        created_ms: *now_ms,
                        done_ms: 0,
                    },
                );
            }
        }
        HealCommand::Start { items } => {
            for (id, target, source) in items {
                if let Some(e) = state.heal.queue.get_mut(&(*id, target.clone()))
                    && e.status.is_active()
                {
                    e.status = RepairStatus::InProgress;
                    e.source = source.clone();
                }
            }
        }
        HealCommand::Finish { outcomes, now_ms } => {
            for o in outcomes {
                let key = (o.id, o.target.clone());
                let Some(e) = state.heal.queue.get_mut(&key) else {
                    continue;
                };
                if !e.status.is_active() {
                    continue;
                }
                e.attempts = e.attempts.saturating_add(1);
                match &o.error {
                    None => {
                        e.status = RepairStatus::Completed;
                        e.last_error.clear();
                        e.done_ms = *now_ms;
                        state.heal.completed_total += 1;
                    }
                    Some(err) => {
                        e.last_error = err.clone();
                        if o.give_up {
                            e.status = RepairStatus::Failed;
                            e.done_ms = *now_ms;
                            drop_pending(state, o.id, &o.target);
                        } else {
                            e.status = RepairStatus::Pending;
                            e.next_try_ms = o.next_try_ms;
                        }
                    }
                }
            }
            let horizon = now_ms.saturating_sub(HISTORY_MS);
            crate::state::retain(&mut state.heal.queue, |_, e| {
                e.status.is_active() || e.done_ms >= horizon
            });
        }
        HealCommand::Cancel {
            items,
            reason,
            now_ms,
        } => {
            for (id, target) in items {
                if let Some(e) = state.heal.queue.get_mut(&(*id, target.clone()))
                    && e.status.is_active()
                {
                    e.status = RepairStatus::Failed;
                    e.last_error = reason.clone();
                    e.done_ms = *now_ms;
                }
                drop_pending(state, *id, target);
            }
        }
        HealCommand::GcMark {
            ids,
            now_ms,
            grace_ms,
        } => {
            let mut marked = BTreeSet::new();
            for id in ids {
                let Some(c) = state.chunks.get_mut(id) else {
                    continue;
                };
                if !refcount_zero_past(c, *now_ms, *grace_ms) {
                    continue;
                }
                marked.insert(*id);
                for s in c.replicas.values_mut() {
                    if *s == ReplicaStatus::Available {
                        *s = ReplicaStatus::Deleting;
                    }
                }
                // Only Pending designations older than the grace period
                // left: nobody ever confirmed a copy, an orphan designation.
                if c.replicas.values().all(|s| *s == ReplicaStatus::Pending) {
                    let nodes: Vec<String> = c.replicas.keys().cloned().collect();
                    state.chunks.remove(id);
                    for n in nodes {
                        state.heal.trash.insert((n, *id));
                    }
                }
            }
            crate::state::retain(&mut state.heal.queue, |(c, _), _| !marked.contains(c));
        }
        HealCommand::GcDeleted { items } => {
            for (id, node) in items {
                let Some(c) = state.chunks.get_mut(id) else {
                    continue;
                };
                if c.replicas.get(node) == Some(&ReplicaStatus::Deleting) {
                    c.replicas.remove(node);
                }
                if c.refcount == 0 && c.replicas.is_empty() {
                    state.chunks.remove(id);
                }
            }
        }
        HealCommand::Drain { items } => {
            for (id, node) in items {
                if let Some(c) = state.chunks.get_mut(id)
                    && c.replicas.remove(node).is_some()
                {
                    state.heal.trash.insert((node.clone(), *id));
                    if let Some(e) = state.heal.queue.get_mut(&(*id, node.clone()))
                        && e.status.is_active()
                    {
                        e.status = RepairStatus::Failed;
                        e.last_error = "replica drained".into();
                    }
                }
            }
        }
        HealCommand::TrashDone { items } => {
            for item in items {
                state.heal.trash.remove(item);
            }
        }
        HealCommand::Decommission { node, on } => {
            let Some(n) = state.nodes.get_mut(node) else {
                return Err(MetaError::NotFound(format!(
                    "node {node:?} is not registered"
                )));
            };
            n.decommissioned = *on;
        }
        HealCommand::Unqueue { items } => {
            for (id, target) in items {
                let key = (*id, target.clone());
                if state.heal.is_active(&key) {
                    state.heal.queue.remove(&key);
                    drop_pending(state, *id, target);
                }
            }
        }
        HealCommand::RemoveNode { node } => {
            state.nodes.remove(node);
            state.receipt_keys.remove(node);
            crate::state::retain(&mut state.heal.queue, |(_, target), e| {
                target != node && e.source != *node
            });
        }
    }
    Ok(())
}

/// Drops `node`'s designation of `id` if it is still only Pending.
fn drop_pending(state: &mut State, id: ChunkId, node: &str) {
    if let Some(c) = state.chunks.get_mut(&id)
        && c.replicas.get(node) == Some(&ReplicaStatus::Pending)
    {
        c.replicas.remove(node);
    }
}

/// Queue and garbage-collection counters for the Status reply.
pub fn fill_status(state: &State, r: &mut pb::StatusReply, now_ms: u64, grace: Grace) {
    for e in state.heal.queue.values() {
        match e.status {
            RepairStatus::Pending | RepairStatus::InProgress => r.repair_pending += 1,
            RepairStatus::Failed => r.repair_failed += 1,
            RepairStatus::Completed => {}
        }
    }
    r.repair_completed = state.heal.completed_total;
    for c in state.chunks.values() {
        let deleting = c.replicas.values().any(|s| *s == ReplicaStatus::Deleting);
        if grace.expired(c, now_ms) || deleting {
            r.gc_backlog += 1;
        }
        if c.refcount == 0 || deleting {
            r.gc_pending_bytes += u64::from(c.len) * c.replicas.len() as u64;
        }
    }
    r.gc_trash = state.heal.trash.len() as u64;
}

/// Operations whose failure, reported by the node about itself, means its
/// copy is gone (quarantined): the scrubber's and a corrupt read's.
const SELF_LOSS_OPS: [&str; 2] = ["scrub", "read"];

/// The chunk a failure report says its own node lost, if it says so.
pub fn self_reported_loss(r: &pb::ReportFailureRequest) -> Option<ChunkId> {
    if r.reporter != r.node_id || !SELF_LOSS_OPS.contains(&r.operation.as_str()) {
        return None;
    }
    ChunkId::from_slice(&r.chunk_id).ok()
}

#[cfg(test)]
#[path = "heal_tests.rs"]
mod tests;
