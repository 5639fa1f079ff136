//! Administration of the self-healing machinery (the `Admin` service of the
//! metadata server): what `bigfs admin ...` runs and prints.

use bigfs_proto::ChunkId;
use bigfs_proto::leader::AdminClient;
use bigfs_proto::pb;

use crate::error::{ClientError, Result};

/// The lower-case name of a node state, as the CLI and pages print it.
pub fn node_state(state: i32) -> &'static str {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Up) => "up",
        Ok(pb::NodeState::Suspect) => "suspect",
        Ok(pb::NodeState::Down) => "down",
        Ok(pb::NodeState::Decommissioned) => "decommissioned",
        _ => "unknown",
    }
}

fn repair_status(s: i32) -> &'static str {
    match pb::RepairStatus::try_from(s) {
        Ok(pb::RepairStatus::Pending) => "pending",
        Ok(pb::RepairStatus::InProgress) => "in-progress",
        Ok(pb::RepairStatus::Completed) => "completed",
        Ok(pb::RepairStatus::Failed) => "failed",
        _ => "unknown",
    }
}

/// A connection to the Admin service of the metadata members in `addrs`
/// ("a,b,c" or one address); calls go to the leader.
pub struct AdminConn {
    client: AdminClient,
}

fn rpc_error(what: &str, s: tonic::Status) -> ClientError {
    ClientError::Invalid(format!("{what}: {:?}: {}", s.code(), s.message()))
}

impl AdminConn {
    pub fn new(addrs: &str) -> Result<Self> {
        let client =
            bigfs_proto::leader::admin_client(addrs).map_err(|e| ClientError::Connect {
                addr: addrs.into(),
                message: e.to_string(),
            })?;
        Ok(AdminConn { client })
    }

    pub async fn nodes(&mut self) -> Result<pb::StatusReply> {
        let r = self.client.nodes(pb::Empty {}).await;
        Ok(r.map_err(|s| rpc_error("nodes", s))?.into_inner())
    }

    pub async fn queue(&mut self, node: &str, all: bool, limit: u32) -> Result<pb::QueueReply> {
        let req = pb::QueueRequest {
            node_id: node.to_string(),
            all,
            limit,
        };
        let r = self.client.queue(req).await;
        Ok(r.map_err(|s| rpc_error("queue", s))?.into_inner())
    }

    pub async fn recover(&mut self, node: &str) -> Result<pb::RecoverReply> {
        let req = pb::NodeRequest {
            node_id: node.to_string(),
        };
        let r = self.client.recover(req).await;
        Ok(r.map_err(|s| rpc_error("recover", s))?.into_inner())
    }

    pub async fn decommission(
        &mut self,
        node: &str,
        cancel: bool,
    ) -> Result<pb::DecommissionReply> {
        let req = pb::DecommissionRequest {
            node_id: node.to_string(),
            cancel,
        };
        let r = self.client.decommission(req).await;
        Ok(r.map_err(|s| rpc_error("decommission", s))?.into_inner())
    }

    /// A page of the files whose path starts with `prefix`, with the health
    /// of their replicas (`limit` 0: the server's default page).
    pub async fn files(&mut self, prefix: &str, offset: u64, limit: u32) -> Result<pb::FilesReply> {
        let req = pb::FilesRequest {
            prefix: prefix.to_string(),
            offset,
            limit,
        };
        let r = self.client.files(req).await;
        Ok(r.map_err(|s| rpc_error("files", s))?.into_inner())
    }

    /// Forgets a stopped node that holds nothing any more.
    pub async fn remove_node(&mut self, node: &str) -> Result<()> {
        let req = pb::NodeRequest {
            node_id: node.to_string(),
        };
        let r = self.client.remove_node(req).await;
        r.map_err(|s| rpc_error("remove node", s))?;
        Ok(())
    }

    /// The metadata group as the member reached sees it.
    pub async fn meta_status(&mut self) -> Result<pb::MetaStatusReply> {
        let r = self.client.meta_status(pb::Empty {}).await;
        Ok(r.map_err(|s| rpc_error("meta status", s))?.into_inner())
    }

    /// Adds metadata member `id` at `address` (on the leader).
    pub async fn meta_add(&mut self, id: u64, address: &str) -> Result<pb::MetaStatusReply> {
        let req = pb::MetaMemberRequest {
            id,
            address: address.to_string(),
        };
        let r = self.client.meta_add(req).await;
        Ok(r.map_err(|s| rpc_error("meta add", s))?.into_inner())
    }

    /// Removes metadata member `id` (on the leader).
    pub async fn meta_remove(&mut self, id: u64) -> Result<pb::MetaStatusReply> {
        let req = pb::MetaMemberRequest {
            id,
            address: String::new(),
        };
        let r = self.client.meta_remove(req).await;
        Ok(r.map_err(|s| rpc_error("meta remove", s))?.into_inner())
    }
}

/// `admin meta status` as text or JSON.
pub fn render_meta(s: &pb::MetaStatusReply, json: bool) -> String {
    if json {
        let members: Vec<serde_json::Value> = s
            .members
            .iter()
            .map(|m| {
                serde_json::json!({"id": m.id, "address": m.address, "voter": m.voter,
                    "matched": m.has_matched.then_some(m.matched),
                    "lag": m.has_matched.then_some(m.lag)})
            })
            .collect();
        return serde_json::json!({
            "member": s.id, "state": s.state, "leader": (s.leader != 0).then_some(s.leader),
            "leader_address": s.leader_address, "term": s.term,
            "last_log_index": s.last_log_index, "commit_index": s.commit_index,
            "applied_index": s.applied_index, "snapshot_index": s.snapshot_index,
            "proposals_per_sec": s.proposals_per_sec, "members": members,
        })
        .to_string()
            + "\n";
    }
    let leader = if s.leader == 0 {
        "none".to_string()
    } else {
        format!("{} ({})", s.leader, s.leader_address)
    };
    let mut out = format!(
        "member {}: {}; leader {leader}; term {}\n\
         log {} committed {} applied {} snapshot {}; {:.1} proposals/s\n\
         {:>4}  {:<24} {:<8} {:>10} {:>8}\n",
        s.id,
        s.state,
        s.term,
        s.last_log_index,
        s.commit_index,
        s.applied_index,
        s.snapshot_index,
        s.proposals_per_sec,
        "ID",
        "ADDRESS",
        "ROLE",
        "MATCHED",
        "LAG"
    );
    for m in &s.members {
        let (matched, lag) = if m.has_matched {
            (m.matched.to_string(), m.lag.to_string())
        } else {
            ("-".into(), "-".into())
        };
        out += &format!(
            "{:>4}  {:<24} {:<8} {:>10} {:>8}\n",
            m.id,
            m.address,
            if m.voter { "voter" } else { "learner" },
            matched,
            lag
        );
    }
    out
}

/// `admin nodes` as text or JSON.
pub fn render_nodes(s: &pb::StatusReply, json: bool) -> String {
    if json {
        let nodes: Vec<serde_json::Value> = s
            .nodes
            .iter()
            .map(|n| {
                let disks: Vec<serde_json::Value> = n
                    .disks
                    .iter()
                    .map(|d| {
                        serde_json::json!({"path": d.path, "state": disk_state(d),
                        "reason": d.reason, "capacity": d.capacity, "used": d.used,
                        "chunks": d.chunks, "io_errors": d.io_errors})
                    })
                    .collect();
                serde_json::json!({"node_id": n.node_id, "address": n.address,
                "state": node_state(n.state), "capacity": n.capacity, "used": n.used,
                "chunks": n.chunk_count, "last_heartbeat_ms_ago": n.last_heartbeat_ms_ago,
                "failures": n.failures, "disks": disks})
            })
            .collect();
        return serde_json::json!({"nodes": nodes, "under_replicated": s.under_replicated,
            "lost": s.lost, "repair_pending": s.repair_pending, "repair_failed": s.repair_failed,
            "repair_completed": s.repair_completed, "gc_backlog": s.gc_backlog,
            "gc_pending_bytes": s.gc_pending_bytes, "gc_trash": s.gc_trash})
        .to_string();
    }
    let mut out = format!(
        "{:<16} {:<22} {:<15} {:>8} {:>12} {:>9}\n",
        "NODE", "ADDRESS", "STATE", "CHUNKS", "HEARTBEAT", "FAILURES"
    );
    for n in &s.nodes {
        let hb = if n.last_heartbeat_ms_ago == u64::MAX {
            "never".to_string()
        } else {
            format!("{} ms ago", n.last_heartbeat_ms_ago)
        };
        out.push_str(&format!(
            "{:<16} {:<22} {:<15} {:>8} {:>12} {:>9}\n",
            n.node_id,
            n.address,
            node_state(n.state),
            n.chunk_count,
            hb,
            n.failures
        ));
        for d in &n.disks {
            let reason = if d.bad {
                format!("  {}", d.reason)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  disk {:<32} {:<4} {:>8} chunks {:>10} / {:<10} {} I/O errors{}\n",
                d.path,
                disk_state(d),
                d.chunks,
                human(d.used),
                human(d.capacity),
                d.io_errors,
                reason
            ));
        }
    }
    out.push_str(&healing_line(s));
    out
}

fn disk_state(d: &pb::DiskStatus) -> &'static str {
    if d.bad { "bad" } else { "ok" }
}

/// One line of healing counters (also printed by `bigfs status`).
pub fn healing_line(s: &pb::StatusReply) -> String {
    format!(
        "healing: {} under-replicated, {} lost, repair queue {} ({} failed, {} completed), \
         gc backlog {} chunks ({} to free), trash {}\n",
        s.under_replicated,
        s.lost,
        s.repair_pending,
        s.repair_failed,
        s.repair_completed,
        s.gc_backlog,
        human(s.gc_pending_bytes),
        s.gc_trash
    )
}

/// `admin queue` as text or JSON.
pub fn render_queue(q: &pb::QueueReply, json: bool) -> String {
    let chunk = |b: &[u8]| ChunkId::from_slice(b).map_or_else(|_| hex::encode(b), |c| c.to_hex());
    if json {
        let entries: Vec<serde_json::Value> = q
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({"chunk": chunk(&e.chunk_id), "target": e.target,
                "source": e.source, "status": repair_status(e.status), "attempts": e.attempts,
                "last_error": e.last_error, "next_try_ms": e.next_try_ms,
                "created_ms": e.created_ms})
            })
            .collect();
        return serde_json::json!({"pending": q.pending, "in_progress": q.in_progress,
            "completed": q.completed, "failed": q.failed, "entries": entries})
        .to_string();
    }
    let mut out = format!(
        "queue: {} pending, {} in progress, {} completed, {} failed\n",
        q.pending, q.in_progress, q.completed, q.failed
    );
    if !q.entries.is_empty() {
        out.push_str(&format!(
            "{:<18} {:<14} {:<14} {:<12} {:>8}  LAST ERROR\n",
            "CHUNK", "TARGET", "SOURCE", "STATUS", "ATTEMPTS"
        ));
    }
    for e in &q.entries {
        let c = chunk(&e.chunk_id);
        out.push_str(&format!(
            "{:<18} {:<14} {:<14} {:<12} {:>8}  {}\n",
            &c[..c.len().min(16)],
            e.target,
            e.source,
            repair_status(e.status),
            e.attempts,
            e.last_error
        ));
    }
    out
}

/// `admin files` as text or JSON (the JSON of the admin page's `/files`).
pub fn render_files(page: &pb::FilesReply, json: bool) -> String {
    if json {
        let files: Vec<serde_json::Value> = page
            .files
            .iter()
            .map(|f| {
                serde_json::json!({"path": f.path, "ino": f.ino, "size": f.size,
                "chunks": f.chunks, "replication": f.replication,
                "healthy_chunks": f.healthy_chunks,
                "under_replicated_chunks": f.under_replicated_chunks,
                "lost_chunks": f.lost_chunks, "status": f.status,
                "wanted": f.wanted, "copies": f.copies})
            })
            .collect();
        return format!(
            "{}\n",
            serde_json::json!({"total": page.total, "offset": page.offset,
                "limit": page.limit, "files": files})
        );
    }
    let mut out = format!(
        "{:<16} {:>10} {:>6} {:>7} {:>7} {:>6} {:>5}  PATH\n",
        "STATUS", "SIZE", "COPIES", "CHUNKS", "HEALTHY", "UNDER", "LOST"
    );
    for f in &page.files {
        // Actual copies (the fewest of any chunk) against the wanted count.
        let copies = format!("{}/{}", f.copies, f.wanted);
        out.push_str(&format!(
            "{:<16} {:>10} {:>6} {:>7} {:>7} {:>6} {:>5}  {}\n",
            f.status,
            human(f.size),
            copies,
            f.chunks,
            f.healthy_chunks,
            f.under_replicated_chunks,
            f.lost_chunks,
            f.path
        ));
    }
    let shown = page.files.len() as u64;
    if shown == 0 {
        out.push_str(&format!("no files of {} shown\n", page.total));
    } else {
        let first = page.offset + 1;
        let last = page.offset + shown;
        out.push_str(&format!("files {first}-{last} of {}", page.total));
        if last < page.total {
            out.push_str(&format!("; next page: --offset {last}"));
        }
        out.push('\n');
    }
    out
}

/// Bytes in binary units for people ("1.5 MiB").
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
