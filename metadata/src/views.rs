//! Read-only views of the cluster for the admin HTTP server: nodes, files
//! with their replica health, the chunks waiting for repair, the garbage
//! collection backlog. Pure functions of the state and liveness, so they are
//! tested without a server.

use std::collections::BTreeMap;
use std::time::Instant;

use bigfs_proto::pb::{self, NodeState};
use bigfs_proto::{ChunkId, ROOT_INO};
use serde::Serialize;

use crate::config::Config;
use crate::liveness::Liveness;
use crate::state::{Kind, ReplicaStatus, State};

pub fn state_name(state: i32) -> &'static str {
    match NodeState::try_from(state) {
        Ok(NodeState::Up) => "up",
        Ok(NodeState::Suspect) => "suspect",
        Ok(NodeState::Down) => "down",
        Ok(NodeState::Decommissioned) => "decommissioned",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node_id: String,
    pub address: String,
    /// up, suspect, down or decommissioned.
    pub state: &'static str,
    pub capacity: u64,
    pub used: u64,
    /// `None` if never heard from since the metadata service started.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// Replicas the chunk table lists on the node.
    pub chunk_count: u64,
    /// Failure reports received about the node.
    pub failures: u64,
    /// The node's data directories as it last reported them.
    pub disks: Vec<DiskView>,
}

/// One data directory of a node (soft state from its heartbeats).
#[derive(Debug, Clone, Serialize)]
pub struct DiskView {
    pub path: String,
    /// ok or bad.
    pub state: &'static str,
    /// Why it is bad; empty when ok.
    pub reason: String,
    pub capacity: u64,
    pub used: u64,
    pub chunks: u64,
    pub io_errors: u64,
}

pub fn disk_view(d: &pb::DiskStatus) -> DiskView {
    DiskView {
        path: d.path.clone(),
        state: if d.bad { "bad" } else { "ok" },
        reason: d.reason.clone(),
        capacity: d.capacity,
        used: d.used,
        chunks: d.chunks,
        io_errors: d.io_errors,
    }
}

pub fn nodes(status: &pb::StatusReply) -> Vec<NodeView> {
    status
        .nodes
        .iter()
        .map(|n| NodeView {
            node_id: n.node_id.clone(),
            address: n.address.clone(),
            state: state_name(n.state),
            capacity: n.capacity,
            used: n.used,
            last_heartbeat_ms_ago: (n.last_heartbeat_ms_ago != u64::MAX)
                .then_some(n.last_heartbeat_ms_ago),
            chunk_count: n.chunk_count,
            failures: n.failures,
            disks: n.disks.iter().map(disk_view).collect(),
        })
        .collect()
}

/// Every path naming a file, depth first from the root, sorted by name.
pub fn file_paths(state: &State) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), ROOT_INO)];
    while let Some((prefix, dir)) = stack.pop() {
        let Some(d) = state.dirs.get(&dir) else {
            continue;
        };
        // Reverse so the stack pops names in order.
        for (name, &(ino, _)) in d.entries.iter().rev() {
            let path = format!("{prefix}/{name}");
            match state.inodes.get(&ino).map(|i| i.kind) {
                Some(Kind::Directory) => stack.push((path, ino)),
                Some(Kind::File) => out.push((path, ino)),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Available replicas of `id` on nodes that are up.
fn available_up(state: &State, live: &Liveness, id: &ChunkId, now: Instant) -> usize {
    state.chunks.get(id).map_or(0, |c| {
        c.replicas
            .iter()
            .filter(|(n, s)| {
                **s == ReplicaStatus::Available
                    && live.state(
                        n,
                        state.nodes.get(*n).is_some_and(|x| x.decommissioned),
                        now,
                    ) == NodeState::Up
            })
            .count()
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    pub path: String,
    pub ino: u64,
    pub size: u64,
    pub chunks: u64,
    /// The file's own setting.
    pub replication: u32,
    /// Copies its chunks want: its replication, or more for a chunk another
    /// file with a higher count shares (the highest over its chunks).
    pub wanted: u32,
    /// Fewest Available copies on Up nodes of any of its chunks (0 for a
    /// file with no chunk): the actual count to hold against `wanted`.
    pub copies: u32,
    /// Chunks with their wanted Available copies on Up nodes.
    pub healthy_chunks: u64,
    /// Chunks with fewer copies, but at least one.
    pub under_replicated_chunks: u64,
    /// Chunks with no Available copy on an Up node: unreadable now.
    pub lost_chunks: u64,
    /// healthy, under_replicated or lost (the worst of its chunks).
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilesPage {
    /// Files matching the prefix.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub files: Vec<FileView>,
}

/// Default and largest page of files: a page of 1000 stays well under a
/// megabyte of JSON; a script pages with `offset`.
const FILES_DEFAULT_LIMIT: usize = 1000;
const FILES_MAX_LIMIT: usize = 10_000;

/// The page size for a request of `requested` files (None: the default).
pub fn files_limit(requested: Option<usize>) -> usize {
    requested
        .unwrap_or(FILES_DEFAULT_LIMIT)
        .min(FILES_MAX_LIMIT)
}

/// A page of files under `prefix` with their replica health.
pub fn files(
    state: &State,
    live: &Liveness,
    prefix: &str,
    offset: usize,
    limit: usize,
) -> FilesPage {
    let now = Instant::now();
    let all: Vec<(String, u64)> = file_paths(state)
        .into_iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .collect();
    let files = all
        .iter()
        .skip(offset)
        .take(limit)
        .filter_map(|(path, ino)| {
            let inode = state.inodes.get(ino)?;
            let mut v = FileView {
                path: path.clone(),
                ino: *ino,
                size: inode.size,
                chunks: 0,
                replication: inode.replication,
                wanted: inode.replication,
                copies: 0,
                healthy_chunks: 0,
                under_replicated_chunks: 0,
                lost_chunks: 0,
                status: "healthy",
            };
            let mut fewest: Option<usize> = None;
            for r in state.layouts.get(ino).into_iter().flat_map(|l| l.values()) {
                v.chunks += 1;
                let wanted = state.chunks.get(&r.id).map_or(inode.replication, |c| {
                    crate::replication::wanted(c, inode.replication)
                });
                v.wanted = v.wanted.max(wanted);
                let wanted = wanted as usize;
                let up = available_up(state, live, &r.id, now);
                fewest = Some(fewest.map_or(up, |f| f.min(up)));
                match up {
                    0 => v.lost_chunks += 1,
                    n if n < wanted => v.under_replicated_chunks += 1,
                    _ => v.healthy_chunks += 1,
                }
            }
            v.copies = u32::try_from(fewest.unwrap_or(0)).unwrap_or(u32::MAX);
            v.status = if v.lost_chunks > 0 {
                "lost"
            } else if v.under_replicated_chunks > 0 {
                "under_replicated"
            } else {
                "healthy"
            };
            Some(v)
        })
        .collect();
    FilesPage {
        total: all.len(),
        offset,
        limit,
        files,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaView {
    pub node_id: String,
    /// pending, available or deleting.
    pub status: &'static str,
    /// The node's liveness state.
    pub node_state: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueEntry {
    pub chunk: String,
    pub len: u32,
    pub refcount: u64,
    pub wanted: u32,
    pub available_up: u32,
    /// lost (no copy to repair from) or under_replicated.
    pub reason: &'static str,
    pub replicas: Vec<ReplicaView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    /// Where the list comes from. A scan of the chunk table for referenced
    /// chunks with fewer Available copies on Up nodes than wanted: exactly
    /// the work a repair worker has to do.
    pub source: &'static str,
    pub length: usize,
    pub lost: usize,
    /// The first `limit` entries, lost chunks first.
    pub entries: Vec<QueueEntry>,
    /// Entries of the persisted repair queue still to run (pending,
    /// in progress, failed), the first `limit` of them.
    pub repairs: Vec<RepairView>,
    /// How many such entries there are.
    pub repairs_length: usize,
}

/// One entry of the persisted repair queue.
#[derive(Debug, Clone, Serialize)]
pub struct RepairView {
    pub chunk: String,
    pub target: String,
    pub source: String,
    pub status: &'static str,
    pub attempts: u32,
    pub last_error: String,
    pub next_try_ms: u64,
}

/// The chunks that need new copies, worst first.
pub fn replication_queue(
    state: &State,
    live: &Liveness,
    config: &Config,
    limit: usize,
) -> QueueView {
    let now = Instant::now();
    let node_state = |n: &str| {
        let decom = state.nodes.get(n).is_some_and(|x| x.decommissioned);
        live.state(n, decom, now)
    };
    let mut entries = Vec::new();
    for (id, c) in &state.chunks {
        if c.refcount == 0 {
            continue;
        }
        let up = available_up(state, live, id, now) as u32;
        let wanted = crate::replication::wanted(c, config.replication);
        if up >= wanted {
            continue;
        }
        entries.push(QueueEntry {
            chunk: id.to_hex(),
            len: c.len,
            refcount: c.refcount,
            wanted,
            available_up: up,
            reason: if up == 0 { "lost" } else { "under_replicated" },
            replicas: c
                .replicas
                .iter()
                .map(|(n, s)| ReplicaView {
                    node_id: n.clone(),
                    status: match s {
                        ReplicaStatus::Pending => "pending",
                        ReplicaStatus::Available => "available",
                        ReplicaStatus::Deleting => "deleting",
                    },
                    node_state: state_name(node_state(n) as i32),
                })
                .collect(),
        });
    }
    entries.sort_by_key(|e| e.available_up);
    let lost = entries.iter().filter(|e| e.available_up == 0).count();
    let length = entries.len();
    entries.truncate(limit);
    let open: Vec<_> = state
        .heal
        .queue
        .iter()
        .filter(|(_, e)| e.status != crate::heal::RepairStatus::Completed)
        .collect();
    let repairs_length = open.len();
    let repairs = open
        .into_iter()
        .take(limit)
        .map(|((id, target), e)| RepairView {
            chunk: id.to_hex(),
            target: target.clone(),
            source: e.source.clone(),
            status: match e.status {
                crate::heal::RepairStatus::Pending => "pending",
                crate::heal::RepairStatus::InProgress => "in_progress",
                crate::heal::RepairStatus::Completed => "completed",
                crate::heal::RepairStatus::Failed => "failed",
            },
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            next_try_ms: e.next_try_ms,
        })
        .collect();
    QueueView {
        source: "repair queue and chunk-table scan",
        length,
        lost,
        entries,
        repairs,
        repairs_length,
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GcBacklog {
    /// Chunks no layout references, waiting for garbage collection.
    pub unreferenced_chunks: u64,
    pub unreferenced_bytes: u64,
    /// Replicas marked for deletion, not yet confirmed deleted.
    pub deleting_replicas: u64,
}

pub fn gc_backlog(state: &State) -> GcBacklog {
    let mut g = GcBacklog::default();
    for c in state.chunks.values() {
        if c.refcount == 0 {
            g.unreferenced_chunks += 1;
            g.unreferenced_bytes += u64::from(c.len);
        }
        g.deleting_replicas += c
            .replicas
            .values()
            .filter(|s| **s == ReplicaStatus::Deleting)
            .count() as u64;
    }
    g
}

/// Gauges computed at scrape time, in Prometheus text format.
pub fn gauges(status: &pb::StatusReply, gc: &GcBacklog, queue_length: usize) -> String {
    use bigfs_proto::daemon::push_gauge;
    let mut out = String::new();
    let mut by_state: BTreeMap<&str, u64> = ["up", "suspect", "down", "decommissioned"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for n in &status.nodes {
        *by_state.entry(state_name(n.state)).or_default() += 1;
    }
    for (s, count) in &by_state {
        push_gauge(
            &mut out,
            "bigfs_nodes",
            "Storage nodes by liveness state.",
            &[("state", s)],
            *count as f64,
        );
    }
    for n in &status.nodes {
        let id = n.node_id.as_str();
        push_gauge(
            &mut out,
            "bigfs_node_up",
            "1 if the node is up, else 0.",
            &[("node", id)],
            f64::from(u8::from(n.state == NodeState::Up as i32)),
        );
        push_gauge(
            &mut out,
            "bigfs_node_capacity_bytes",
            "Bytes the node offers.",
            &[("node", id)],
            n.capacity as f64,
        );
        push_gauge(
            &mut out,
            "bigfs_node_used_bytes",
            "Bytes the node has used.",
            &[("node", id)],
            n.used as f64,
        );
        push_gauge(
            &mut out,
            "bigfs_node_replicas",
            "Replicas the chunk table lists on the node.",
            &[("node", id)],
            n.chunk_count as f64,
        );
    }
    let plain = [
        ("bigfs_files", "Files in the namespace.", status.files),
        (
            "bigfs_directories",
            "Directories in the namespace.",
            status.directories,
        ),
        ("bigfs_chunks", "Chunks in the chunk table.", status.chunks),
        (
            "bigfs_chunk_bytes",
            "Bytes of all chunks, one copy each.",
            status.chunk_bytes,
        ),
        (
            "bigfs_inline_files",
            "Small files whose bytes the metadata keeps (no chunk).",
            status.inline_files,
        ),
        (
            "bigfs_inline_bytes",
            "Bytes kept inline in the metadata, on every member.",
            status.inline_bytes,
        ),
        (
            "bigfs_under_replicated_chunks",
            "Referenced chunks with fewer Available copies on Up nodes than wanted.",
            status.under_replicated,
        ),
        (
            "bigfs_lost_chunks",
            "Referenced chunks with no Available copy on an Up node.",
            status.lost,
        ),
        (
            "bigfs_replication_queue_length",
            "Chunks waiting for a new copy.",
            queue_length as u64,
        ),
        (
            "bigfs_gc_backlog_chunks",
            "Unreferenced chunks waiting for garbage collection.",
            gc.unreferenced_chunks,
        ),
        (
            "bigfs_gc_backlog_bytes",
            "Bytes of unreferenced chunks waiting for garbage collection.",
            gc.unreferenced_bytes,
        ),
        (
            "bigfs_gc_deleting_replicas",
            "Replicas marked for deletion, not yet gone.",
            gc.deleting_replicas,
        ),
    ];
    for (name, help, v) in plain {
        push_gauge(&mut out, name, help, &[], v as f64);
    }
    for (s, v) in [
        ("available", status.replicas_available),
        ("pending", status.replicas_pending),
        ("deleting", status.replicas_deleting),
    ] {
        push_gauge(
            &mut out,
            "bigfs_replicas",
            "Replicas in the chunk table by status.",
            &[("status", s)],
            v as f64,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Chunk, ChunkRef, Command, Time, apply};
    use std::time::Duration;

    fn state_with_file() -> (State, ChunkId) {
        let mut s = State::new();
        for cmd in [
            Command::create_for_test(ROOT_INO, "d", Kind::Directory, Time::default()),
            Command::create_for_test(ROOT_INO + 1, "f", Kind::File, Time::default()),
        ] {
            apply(&mut s, &cmd).unwrap();
        }
        let id = ChunkId::of(b"x");
        s.add_test_nodes(&["a", "b"], 100);
        s.chunks.insert(
            id,
            Chunk {
                len: 1,
                refcount: 1,
                zero_since_ms: None,
                created_ms: 0,
                replicas: [
                    ("a".to_string(), ReplicaStatus::Available),
                    ("b".to_string(), ReplicaStatus::Available),
                ]
                .into_iter()
                .collect(),
                wants: Default::default(),
            },
        );
        s.layouts
            .entry(ROOT_INO + 2)
            .or_default()
            .insert(0, ChunkRef { id, len: 1 });
        (s, id)
    }

    #[test]
    fn files_show_paths_and_replica_health() {
        let (s, _) = state_with_file();
        let mut live = Liveness::new(Duration::from_secs(6), Duration::from_secs(20));
        let now = Instant::now();
        live.heard("a", 100, 1, 1, now);
        live.heard("b", 100, 1, 1, now);
        let page = files(&s, &live, "/", 0, 10);
        assert_eq!(page.total, 1);
        assert_eq!(page.files[0].path, "/d/f");
        assert_eq!(page.files[0].status, "healthy");

        // Node b never heard from by a fresh liveness: one copy left.
        let mut live = Liveness::new(Duration::from_secs(6), Duration::from_secs(20));
        live.heard("a", 100, 1, 1, now);
        let page = files(&s, &live, "", 0, 10);
        assert_eq!(page.files[0].status, "under_replicated");
        let cfg = Config {
            replication: 2,
            ..Config::default()
        };
        let q = replication_queue(&s, &live, &cfg, 10);
        assert_eq!(q.length, 1);
        assert_eq!(q.entries[0].reason, "under_replicated");
        assert_eq!(q.entries[0].replicas[1].node_state, "down");

        let live = Liveness::new(Duration::from_secs(6), Duration::from_secs(20));
        assert_eq!(files(&s, &live, "", 0, 10).files[0].status, "lost");
        assert_eq!(replication_queue(&s, &live, &cfg, 10).lost, 1);
        assert!(files(&s, &live, "/other", 0, 10).files.is_empty());
    }

    #[test]
    fn gc_backlog_counts_unreferenced_chunks() {
        let (mut s, id) = state_with_file();
        assert_eq!(gc_backlog(&s).unreferenced_chunks, 0);
        s.chunks.get_mut(&id).unwrap().refcount = 0;
        let g = gc_backlog(&s);
        assert_eq!((g.unreferenced_chunks, g.unreferenced_bytes), (1, 1));
    }
}
