//! Prometheus `/metrics` (and `/healthz`) for a process using the client
//! library, such as the `bigfs-mount` daemon: the [`TransferMetrics`]
//! counters rendered as text at scrape time.
//!
//! The mount starts it with one call once its client is connected:
//! `tokio::spawn(bigfs_client::metrics_http::serve(listener, client, security, access, shutdown))`.
//!
//! [`TransferMetrics`]: crate::metrics::TransferMetrics

use std::fmt::Write;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Client;
use crate::metrics::MetricsSnapshot;

/// The snapshot in Prometheus text format.
pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    one(
        "bigfs_client_chunk_ops_total",
        "counter",
        "Chunk transfers finished (after retries).",
        s.ops as f64,
    );
    one(
        "bigfs_client_chunk_ops_failed_total",
        "counter",
        "Chunk transfers that failed after every retry.",
        s.failed_ops as f64,
    );
    one(
        "bigfs_client_first_try_success_ratio",
        "gauge",
        "Share of transfers that worked on the first attempt.",
        s.first_try_success_rate,
    );
    one(
        "bigfs_client_mean_attempts",
        "gauge",
        "Mean attempts per transfer (1 = no retries).",
        s.mean_attempts,
    );
    one(
        "bigfs_client_failovers_total",
        "counter",
        "Attempts that failed on one node and moved to another.",
        s.failovers as f64,
    );
    one(
        "bigfs_client_bytes_read_total",
        "counter",
        "Bytes read from storage nodes.",
        s.bytes_read as f64,
    );
    one(
        "bigfs_client_bytes_written_total",
        "counter",
        "Bytes written to storage nodes.",
        s.bytes_written as f64,
    );
    one(
        "bigfs_client_cache_hits_total",
        "counter",
        "Chunk reads served by the local chunk cache.",
        s.cache_hits as f64,
    );
    one(
        "bigfs_client_cache_misses_total",
        "counter",
        "Chunk reads that went to a storage node.",
        s.cache_misses as f64,
    );
    let lookups = s.cache_hits + s.cache_misses;
    let ratio = if lookups == 0 {
        0.0
    } else {
        s.cache_hits as f64 / lookups as f64
    };
    one(
        "bigfs_client_cache_hit_ratio",
        "gauge",
        "Cache hits over cache lookups since start.",
        ratio,
    );
    one(
        "bigfs_client_dedup_hits_total",
        "counter",
        "Chunk uploads skipped because the cluster already had them.",
        s.dedup_hits as f64,
    );
    one(
        "bigfs_client_meta_waits_total",
        "counter",
        "Metadata calls that waited for the service (a restart, no leader).",
        s.meta_waits.waits as f64,
    );
    one(
        "bigfs_client_meta_wait_seconds_total",
        "counter",
        "Seconds metadata calls spent waiting for the service.",
        s.meta_waits.wait_seconds,
    );
    one(
        "bigfs_client_meta_wait_gave_up_total",
        "counter",
        "Metadata calls that failed (EIO) when meta_wait ran out.",
        s.meta_waits.gave_up as f64,
    );
    let _ = writeln!(
        out,
        "# HELP bigfs_client_node_failures_total Failed attempts by storage node."
    );
    let _ = writeln!(out, "# TYPE bigfs_client_node_failures_total counter");
    for (node, n) in &s.worst_nodes {
        let node = node.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "bigfs_client_node_failures_total{{node=\"{node}\"}} {n}"
        );
    }
    out
}

pub fn router(client: Arc<Client>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let client = client.clone();
                async move {
                    (
                        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        render(&client.metrics()),
                    )
                        .into_response()
                }
            }),
        )
}

/// Paths anyone may read: the health probe. `/metrics` needs an admin
/// certificate or the token (see `bigfs_proto::admin_http`).
pub const OPEN_PATHS: &[&str] = &["/healthz"];

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`: HTTPS
/// with the mount's certificate unless `security` is insecure.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Arc<Client>,
    security: bigfs_proto::tls::Security,
    access: bigfs_proto::admin_http::Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    bigfs_proto::admin_http::serve(listener, router(client), security, access, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::TransferMetrics;

    #[test]
    fn snapshot_renders_as_prometheus_text() {
        let m = TransferMetrics::default();
        m.record_op(1, true);
        m.cache_hit();
        m.cache_miss();
        m.cache_miss();
        m.add_read(10);
        m.record_node_failure("node-\"2\"");
        let text = render(&m.snapshot());
        assert!(
            text.contains("bigfs_client_bytes_read_total 10\n"),
            "{text}"
        );
        assert!(
            text.contains("bigfs_client_cache_hit_ratio 0.333"),
            "{text}"
        );
        assert!(text.contains("node=\"node-\\\"2\\\"\"} 1"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
