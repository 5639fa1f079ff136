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
    out
}
