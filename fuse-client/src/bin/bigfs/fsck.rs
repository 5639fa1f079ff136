//! `bigfs admin fsck`, on the metadata service's Ops service: it walks the
//! namespace and the chunk table, checks every listed replica with its
//! node, and with `--repair` fixes what it can.

use crate::output::outln;
use anyhow::Context;
use bigfs_proto::pb::{self, FsckProblemKind};

fn kind_name(k: i32) -> &'static str {
    match FsckProblemKind::try_from(k) {
        Ok(FsckProblemKind::MissingChunk) => "missing-chunk",
        Ok(FsckProblemKind::MissingReplica) => "missing-replica",
        Ok(FsckProblemKind::RefcountDrift) => "refcount-drift",
        Ok(FsckProblemKind::OrphanChunk) => "orphan-chunk",
        Ok(FsckProblemKind::UnderReplicated) => "under-replicated",
        Ok(FsckProblemKind::NodeUnreachable) => "node-unreachable",
        Ok(FsckProblemKind::OrphanLayout) => "orphan-layout",
        _ => "unknown",
    }
}

pub async fn run(
    metadata: &str,
    repair: bool,
    probe_timeout_ms: u32,
    json: bool,
) -> anyhow::Result<()> {
    let mut ops = bigfs_proto::leader::ops_client(metadata)
        .with_context(|| format!("bad metadata address {metadata:?}"))?;
    let r = ops
        .fsck(pb::FsckRequest {
            repair,
            probe_timeout_ms,
        })
        .await
        .map_err(|s| anyhow::anyhow!("fsck failed: {}", s.message()))?
        .into_inner();
    if json {
        print_json(&r);
    } else {
        print_text(&r);
    }
    let remaining = r.problems.iter().filter(|p| !p.repaired).count();
    if remaining > 0 {
        anyhow::bail!("{remaining} problems remain");
    }
    Ok(())
}

fn print_text(r: &pb::FsckReply) {
    outln!(
        "checked {} files, {} chunks, {} replicas",
        r.files,
        r.chunks,
        r.replicas_checked
    );
    for p in &r.problems {
        let mut line = format!("{:<17}", kind_name(p.kind));
        if !p.chunk_id.is_empty() {
            line.push_str(&format!(
                " chunk {}",
                &p.chunk_id[..p.chunk_id.len().min(12)]
            ));
        }
        if !p.node_id.is_empty() {
            line.push_str(&format!(" node {}", p.node_id));
        }
        line.push_str(&format!(": {}", p.detail));
        if !p.paths.is_empty() {
            line.push_str(&format!(" [{}]", p.paths.join(", ")));
        }
        if !p.repair.is_empty() {
            let verdict = if p.repaired {
                "repaired"
            } else {
                "not repaired"
            };
            line.push_str(&format!(" -> {verdict}: {}", p.repair));
        }
        outln!("{line}");
    }
    if r.problems.is_empty() {
        outln!("no problems found");
    } else {
        outln!("{} problems, {} repaired", r.problems.len(), r.repaired);
    }
    if r.pending_gc > 0 {
        outln!(
            "pending GC: {} unreferenced chunks ({}), deleted by garbage collection \
             after their grace period (not a problem)",
            r.pending_gc,
            bigfs_client::admin::human(r.pending_gc_bytes)
        );
    }
}

fn print_json(r: &pb::FsckReply) {
    let problems: Vec<serde_json::Value> = r
        .problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "kind": kind_name(p.kind),
                "chunk": p.chunk_id,
                "node": p.node_id,
                "paths": p.paths,
                "detail": p.detail,
                "repaired": p.repaired,
                "repair": p.repair,
            })
        })
        .collect();
    let pending: Vec<serde_json::Value> = r
        .pending_gc_chunks
        .iter()
        .map(|c| {
            serde_json::json!({
                "chunk": c.chunk_id,
                "len": c.len,
                "grace_left_ms": c.grace_left_ms,
                "deleting": c.deleting,
            })
        })
        .collect();
    let v = serde_json::json!({
        "files": r.files,
        "chunks": r.chunks,
        "replicas_checked": r.replicas_checked,
        "repaired": r.repaired,
        "problems": problems,
        "pending_gc": r.pending_gc,
        "pending_gc_bytes": r.pending_gc_bytes,
        "pending_gc_chunks": pending,
    });
    outln!("{v}");
}
