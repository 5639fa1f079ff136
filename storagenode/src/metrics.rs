//! The storage node's metrics. Counters are recorded where the work happens;
//! gauges about the disk are computed when `/metrics` is scraped. Request
//! counts and latencies per gRPC method come from
//! `bigfs_proto::daemon::GrpcMetricsLayer`.

use bigfs_proto::daemon::push_gauge;

use crate::chunk_store::ChunkStore;

/// Bytes moved by a chunk operation: `op` is put or get, `kind` primary
/// (a client upload), replica (a push from a peer) or client (a read).
pub fn chunk_bytes(op: &'static str, kind: &'static str, bytes: u64) {
    metrics::counter!("bigfs_storage_chunk_ops_total", "op" => op, "kind" => kind).increment(1);
    metrics::counter!("bigfs_storage_chunk_bytes_total", "op" => op, "kind" => kind)
        .increment(bytes);
}

/// Gauges of the chunk store, in Prometheus text format.
pub fn gauges(store: &ChunkStore, node_id: &str) -> String {
    let mut out = String::new();
    let labels = [("node", node_id)];
    push_gauge(
        &mut out,
        "bigfs_storage_used_bytes",
        "Bytes of chunk files on this node, quarantined unlisted ones included.",
        &labels,
        store.used_bytes() as f64,
    );
    push_gauge(
        &mut out,
        "bigfs_storage_capacity_bytes",
        "Bytes this node offers.",
        &labels,
        store.capacity_bytes() as f64,
    );
    push_gauge(
        &mut out,
        "bigfs_storage_chunks",
        "Chunk files on this node.",
        &labels,
        store.chunk_count() as f64,
    );
    let (bytes, files) = store.unlisted();
    push_gauge(
        &mut out,
        "bigfs_storage_unlisted_quarantined_bytes",
        "Bytes of chunks not listed for this node, quarantined until deleted.",
        &labels,
        bytes as f64,
    );
    push_gauge(
        &mut out,
        "bigfs_storage_unlisted_quarantined_chunks",
        "Chunks not listed for this node, quarantined until deleted.",
        &labels,
        files as f64,
    );
    disk_gauges(&mut out, store, node_id);
    out
}

/// One sample per data directory (label `disk`, its path) of each figure.
fn disk_gauges(out: &mut String, store: &ChunkStore, node_id: &str) {
    for d in store.disk_figures() {
        let labels = [("node", node_id), ("disk", d.path.as_str())];
        let state = if d.bad { "bad" } else { "ok" };
        for (name, help, value) in [
            (
                "bigfs_storage_disk_capacity_bytes",
                "Bytes this disk offers (0 when bad).",
                d.capacity,
            ),
            (
                "bigfs_storage_disk_used_bytes",
                "Bytes of chunk files on this disk.",
                d.used,
            ),
            (
                "bigfs_storage_disk_chunks",
                "Chunk files on this disk.",
                d.chunks,
            ),
            (
                "bigfs_storage_disk_io_errors",
                "I/O errors on this disk since the node started.",
                d.io_errors,
            ),
            (
                "bigfs_storage_disk_bad",
                "1 when the disk is marked bad (failed, missing, replaced) and no longer used.",
                u64::from(d.bad),
            ),
        ] {
            push_gauge(out, name, help, &labels, value as f64);
        }
        push_gauge(
            out,
            "bigfs_storage_disk_state",
            "1 for the disk's state (ok or bad).",
            &[
                ("node", node_id),
                ("disk", d.path.as_str()),
                ("state", state),
            ],
            1.0,
        );
    }
}
