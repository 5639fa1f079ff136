//! Re-replication planning: which chunks lack copies, where new copies go,
//! and which queued copies may run now. Pure functions over the state and a
//! view of the nodes, so they are tested without a cluster; the worker
//! turns their answers into commands and RPCs.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, RangeBounds};

use bigfs_proto::ChunkId;
use rand::Rng;

use crate::heal::{RepairEntry, RepairStatus};
use crate::placement::{self, Candidate};
use crate::state::{Chunk, ReplicaStatus, State};

/// Whether a node's replicas count, as the repair planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Heartbeating.
    Up,
    /// Silent, but for less than the repair delay after going Down: its
    /// replicas still count (a quick restart costs no copies).
    Away,
    /// Down for longer than the repair delay: its replicas are lost.
    Gone,
}

/// One node as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub presence: Presence,
    pub decommissioned: bool,
    pub free: u64,
}

impl NodeView {
    /// Can serve a copy (a decommissioned node still can).
    pub fn can_source(&self) -> bool {
        self.presence == Presence::Up
    }

    /// Can receive new data.
    pub fn can_target(&self) -> bool {
        self.presence == Presence::Up && !self.decommissioned
    }

    /// Its Available replicas count toward the replication factor.
    fn counts(&self) -> bool {
        !self.decommissioned && self.presence != Presence::Gone
    }
}

pub type Nodes = BTreeMap<String, NodeView>;

/// What one planning pass decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New copies (chunk, target, source), most endangered chunks first.
    pub enqueue: Vec<(ChunkId, String, String)>,
    /// Entries to give up, with why: the target is gone or
    /// decommissioned.
    pub cancel: Vec<(ChunkId, String, &'static str)>,
    /// Entries whose copy is already listed Available on the target (it
    /// landed and was confirmed, e.g. by the node's inventory after a
    /// restart): done.
    pub done: Vec<(ChunkId, String)>,
    /// Entries with nothing left to do: not started and their chunk has
    /// enough good copies again (the node that held them came back), or
    /// their chunk is gone, being collected or no longer referenced.
    pub unqueue: Vec<(ChunkId, String)>,
    /// Replicas to unlist and delete on their node: copies on a
    /// decommissioned node that exist enough times elsewhere, surplus
    /// copies (more good ones than wanted), and Pending designations on
    /// nodes that are gone or decommissioned.
    pub drain: Vec<(ChunkId, String)>,
}

/// Available replicas on Up, non-decommissioned nodes: the copies a reader
/// can count on now.
pub fn good_copies(chunk: &Chunk, nodes: &Nodes) -> usize {
    chunk
        .replicas
        .iter()
        .filter(|(n, s)| {
            **s == ReplicaStatus::Available
                && nodes
                    .get(*n)
                    .is_some_and(|v| v.presence == Presence::Up && !v.decommissioned)
        })
        .count()
}

/// `n` of the chunk's good copies to drop: those on the nodes with the
/// least free space (then by node id, so every pass picks the same).
fn surplus<'a>(chunk: &'a Chunk, nodes: &'a Nodes, n: usize) -> impl Iterator<Item = String> + 'a {
    let mut good: Vec<(u64, &String)> = chunk
        .replicas
        .iter()
        .filter(|(_, s)| **s == ReplicaStatus::Available)
        .filter_map(|(node, _)| {
            let v = nodes.get(node)?;
            (v.presence == Presence::Up && !v.decommissioned).then_some((v.free, node))
        })
        .collect();
    good.sort();
    good.into_iter().take(n).map(|(_, node)| node.clone())
}

/// The best node to copy `chunk` from: an Available replica on a node that
/// is up, `prefer` if it qualifies, else the first.
pub fn pick_source(chunk: &Chunk, nodes: &Nodes, prefer: &str) -> Option<String> {
    let ok = |n: &str| {
        chunk.replicas.get(n) == Some(&ReplicaStatus::Available)
            && nodes.get(n).is_some_and(NodeView::can_source)
    };
    if ok(prefer) {
        return Some(prefer.to_string());
    }
    // Prefer a node staying in service over a draining one.
    let mut c: Vec<&String> = chunk.replicas.keys().filter(|n| ok(n)).collect();
    c.sort_by_key(|n| nodes.get(*n).is_some_and(|v| v.decommissioned));
    c.first().map(|n| n.to_string())
}

/// The slice of the chunk table one background pass looks at: the ids
/// between two bounds. A table of at most `scan_batch` chunks is looked
/// at whole every tick; a larger one in consecutive slices, one per tick,
/// so no tick costs time in proportion to the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub lo: Bound<ChunkId>,
    pub hi: Bound<ChunkId>,
}

impl Window {
    /// The whole table.
    pub const ALL: Window = Window {
        lo: Bound::Unbounded,
        hi: Bound::Unbounded,
    };

    /// The next slice of at most `limit` chunks after `cursor` (from the
    /// start when None), and the cursor the slice after it starts from.
    pub fn next(state: &State, cursor: Option<ChunkId>, limit: usize) -> (Window, Option<ChunkId>) {
        if state.chunks.len() <= limit {
            return (Window::ALL, None);
        }
        let lo = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut slice = state
            .chunks
            .range((lo, Bound::Unbounded))
            .map(|(id, _)| *id);
        let last = slice.by_ref().take(limit).last();
        match (last, slice.next()) {
            // More after this slice: the next one starts after it.
            (Some(last), Some(_)) => (
                Window {
                    lo,
                    hi: Bound::Included(last),
                },
                Some(last),
            ),
            // The slice reaches the end: the next one starts over.
            _ => (
                Window {
                    lo,
                    hi: Bound::Unbounded,
                },
                None,
            ),
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        (self.lo, self.hi).contains(id)
    }

    /// The chunks in the slice, in id order.
    pub fn chunks<'a>(&self, state: &'a State) -> impl Iterator<Item = (&'a ChunkId, &'a Chunk)> {
        state.chunks.range((self.lo, self.hi))
    }
}

/// Plans one pass over the chunks in `window`, and over every chunk with
/// a copy queued. Each chunk wants the highest
/// replication of the files referencing it (`default_wanted` for a chunk
/// whose references are not counted by replication, see
/// [`crate::replication::wanted`]);
/// a Pending replica older than `pending_timeout_ms` with no queue entry
/// gets one (the primary's push to it failed). A target whose copy of a
/// chunk failed less than `failed_hold_ms` ago is picked for that chunk
/// only when no other node can take it.
pub fn plan<R: Rng + ?Sized>(
    state: &State,
    window: Window,
    nodes: &Nodes,
    default_wanted: usize,
    now_ms: u64,
    (pending_timeout_ms, failed_hold_ms): (u64, u64),
    rng: &mut R,
) -> Plan {
    let mut out = Plan::default();
    let mut by_chunk: BTreeMap<ChunkId, Vec<(&String, &RepairEntry)>> = BTreeMap::new();
    // Targets that recently failed for a chunk are avoided for it while
    // another node can take the copy: a copy that keeps failing on one node
    // goes elsewhere, and comes back to it only after `failed_hold_ms`.
    let mut failed: BTreeMap<ChunkId, Vec<&String>> = BTreeMap::new();
    for ((id, target), e) in &state.heal.queue {
        if e.status.is_active() {
            // An entry must match the chunk table, whatever crashed
            // between the commands that keep them in step.
            match settle(state.chunks.get(id), target) {
                Settle::Keep => by_chunk.entry(*id).or_default().push((target, e)),
                Settle::Done => out.done.push((*id, target.clone())),
                // Nothing failed: the entry just has nothing left to do.
                Settle::Drop => out.unqueue.push((*id, target.clone())),
            }
        } else if e.status == RepairStatus::Failed
            && e.done_ms.saturating_add(failed_hold_ms) > now_ms
        {
            failed.entry(*id).or_default().push(target);
        }
    }
    let candidates: Vec<Candidate> = nodes
        .iter()
        .map(|(id, v)| Candidate {
            node_id: id.clone(),
            usable: v.can_target(),
            free: v.free,
        })
        .collect();
    let mut new: Vec<(usize, ChunkId, String, String)> = Vec::new();
    let queued_elsewhere = by_chunk
        .keys()
        .filter(|id| !window.contains(id))
        .filter_map(|id| state.chunks.get_key_value(id));
    for (id, c) in window.chunks(state).chain(queued_elsewhere) {
        // Unreferenced chunks are garbage collection's; a chunk being
        // collected is never copied.
        if c.refcount == 0 || c.replicas.values().any(|s| *s == ReplicaStatus::Deleting) {
            continue;
        }
        let default = u32::try_from(default_wanted).unwrap_or(u32::MAX);
        let wanted = crate::replication::wanted(c, default) as usize;
        let view = |n: &str| {
            nodes.get(n).cloned().unwrap_or(NodeView {
                presence: Presence::Gone,
                decommissioned: false,
                free: 0,
            })
        };
        let good = good_copies(c, nodes);
        let mut counted = 0usize;
        let mut queued: BTreeSet<&str> = BTreeSet::new();
        let mut entries: Vec<&(&String, &RepairEntry)> =
            by_chunk.get(id).into_iter().flatten().collect();
        let mut unqueued: BTreeSet<&str> = BTreeSet::new();
        if good >= wanted {
            // Copies not started yet are not needed any more.
            entries.retain(|(t, e)| {
                let waiting = e.status == RepairStatus::Pending;
                if waiting {
                    out.unqueue.push((*id, (*t).clone()));
                    unqueued.insert(t.as_str());
                }
                !waiting
            });
        }
        for (target, e) in entries {
            let v = view(target);
            if v.presence == Presence::Gone || v.decommissioned {
                out.cancel
                    .push((*id, (*target).clone(), "target gone or decommissioned"));
            } else {
                counted += 1;
                queued.insert(target.as_str());
                if !c.replicas.contains_key(*target) {
                    // Designate the target again, or its copy is refused.
                    new.push((good, *id, (*target).clone(), e.source.clone()));
                }
            }
        }
        let mut decommissioned_copies = Vec::new();
        for (n, s) in &c.replicas {
            let v = view(n);
            match s {
                ReplicaStatus::Available if v.counts() => counted += 1,
                ReplicaStatus::Available if v.decommissioned => {
                    decommissioned_copies.push(n.clone())
                }
                ReplicaStatus::Available | ReplicaStatus::Deleting => {}
                ReplicaStatus::Pending
                    if queued.contains(n.as_str()) || unqueued.contains(n.as_str()) => {}
                ReplicaStatus::Pending if v.presence == Presence::Gone || v.decommissioned => {
                    out.drain.push((*id, n.clone()));
                }
                ReplicaStatus::Pending => {
                    let stale = c.created_ms.saturating_add(pending_timeout_ms) <= now_ms;
                    if stale && good >= wanted {
                        // Its push never landed and no copy is missing.
                        out.drain.push((*id, n.clone()));
                        continue;
                    }
                    counted += 1;
                    if stale
                        && v.can_target()
                        && let Some(src) = pick_source(c, nodes, "")
                    {
                        new.push((good, *id, n.clone(), src));
                    }
                }
            }
        }
        // Copies on a draining node go once enough exist elsewhere.
        if good >= wanted {
            for n in decommissioned_copies {
                out.drain.push((*id, n));
            }
        }
        // More good copies than wanted (a node came back after its copies
        // were made again elsewhere): the copies on the fullest nodes go.
        // Never while a copy of this chunk is queued or still landing.
        let settled = !by_chunk.contains_key(id)
            && !c.replicas.values().any(|s| *s == ReplicaStatus::Pending);
        if settled && good > wanted {
            out.drain
                .extend(surplus(c, nodes, good - wanted).map(|n| (*id, n)));
            continue;
        }
        let missing = wanted.saturating_sub(counted);
        if missing == 0 {
            continue;
        }
        let Some(source) = pick_source(c, nodes, "") else {
            continue; // no readable copy: lost until a node returns
        };
        let mut exclude: BTreeSet<String> = c
            .replicas
            .keys()
            .cloned()
            .chain(queued.iter().map(|s| s.to_string()))
            .collect();
        let recently_failed = failed.get(id).into_iter().flatten().map(|s| s.to_string());
        let mut avoid = exclude.clone();
        avoid.extend(recently_failed);
        let mut targets = placement::choose(&candidates, missing, u64::from(c.len), &avoid, rng);
        if targets.len() < missing {
            // No other node: the failed ones get another try.
            exclude.extend(targets.iter().cloned());
            let more = missing - targets.len();
            targets.extend(placement::choose(
                &candidates,
                more,
                u64::from(c.len),
                &exclude,
                rng,
            ));
        }
        for t in targets {
            new.push((good, *id, t, source.clone()));
        }
    }
    // Most endangered first: one good copy left before two.
    new.sort_by_key(|(good, ..)| *good);
    out.enqueue = new.into_iter().map(|(_, i, t, s)| (i, t, s)).collect();
    out
}

/// What to do with an active queue entry, given its chunk's row.
#[derive(Debug, PartialEq, Eq)]
enum Settle {
    /// Still to copy (the target is designated Pending).
    Keep,
    /// The copy is listed Available on the target already.
    Done,
    /// Nothing to copy any more (the chunk is gone, being collected or
    /// unreferenced).
    Drop,
}

fn settle(chunk: Option<&Chunk>, target: &str) -> Settle {
    let Some(c) = chunk else {
        return Settle::Drop;
    };
    if c.replicas.values().any(|s| *s == ReplicaStatus::Deleting) {
        return Settle::Drop;
    }
    if c.refcount == 0 {
        return Settle::Drop;
    }
    match c.replicas.get(target) {
        Some(ReplicaStatus::Available) => Settle::Done,
        // A designation that went missing is made again by `Enqueue`,
        // which keeps the entry and its attempts.
        Some(ReplicaStatus::Pending) | None => Settle::Keep,
        Some(ReplicaStatus::Deleting) => Settle::Drop,
    }
}

/// A queued copy ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: ChunkId,
    pub target: String,
    pub source: String,
}

/// Which queued entries to start now: due (or all of `only_node`'s when it
/// is given, ignoring their backoff), target up, a source available, most
/// endangered first, within the per-node and total limits given the copies
/// already `running` (keyed by chunk and target; `busy` counts per node).
#[allow(clippy::too_many_arguments)]
pub fn due_jobs(
    state: &State,
    nodes: &Nodes,
    now_ms: u64,
    only_node: Option<&str>,
    running: &BTreeSet<(ChunkId, String)>,
    busy: &mut BTreeMap<String, usize>,
    per_node: usize,
    total: usize,
) -> Vec<Job> {
    let mut cands: Vec<(usize, u64, Job)> = Vec::new();
    for ((id, target), e) in &state.heal.queue {
        if !e.status.is_active() || running.contains(&(*id, target.clone())) {
            continue;
        }
        match only_node {
            Some(n) if n != target && n != e.source => continue,
            Some(_) => {}
            None if e.status == RepairStatus::Pending && e.next_try_ms > now_ms => continue,
            None => {}
        }
        if !nodes.get(target).is_some_and(NodeView::can_target) {
            continue;
        }
        let Some(c) = state.chunks.get(id) else {
            continue;
        };
        let Some(source) = pick_source(c, nodes, &e.source) else {
            continue;
        };
        cands.push((
            good_copies(c, nodes),
            e.next_try_ms,
            Job {
                id: *id,
                target: target.clone(),
                source,
            },
        ));
    }
    cands.sort_by_key(|(good, next, _)| (*good, *next));
    let mut out = Vec::new();
    let mut started = running.len();
    for (_, _, job) in cands {
        if started >= total {
            break;
        }
        let s = busy.get(&job.source).copied().unwrap_or(0);
        let t = busy.get(&job.target).copied().unwrap_or(0);
        if only_node.is_none() && (s >= per_node || t >= per_node) {
            continue;
        }
        *busy.entry(job.source.clone()).or_default() += 1;
        *busy.entry(job.target.clone()).or_default() += 1;
        started += 1;
        out.push(job);
    }
    out
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
