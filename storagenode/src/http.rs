//! The storage node's admin HTTP server on `admin_listen`: `/healthz`
//! (`ok` while the data directory is usable; open to anyone) and
//! Prometheus `/metrics` (an admin certificate or the admin token; see
//! `bigfs_proto::admin_http`).

use std::path::Path;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use bigfs_proto::ChunkId;

use crate::chunk_store::ChunkStore;

/// Paths anyone may read (see `bigfs_proto::admin_http`): the health
/// probe, for systemd and load balancers.
pub const OPEN_PATHS: &[&str] = &["/healthz"];

#[derive(Clone)]
struct Admin {
    store: ChunkStore,
    node_id: String,
}

pub fn router(store: ChunkStore, node_id: String) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(Admin { store, node_id })
}

async fn healthz(State(a): State<Admin>) -> Response {
    // The node cannot serve without its chunk directory (<data_dir>/chunks).
    let probe = a.store.chunk_path(&ChunkId([0; 32]));
    let chunks_dir = probe.parent().and_then(Path::parent).map(Path::to_path_buf);
    match chunks_dir {
        Some(d) if tokio::fs::metadata(&d).await.is_ok_and(|m| m.is_dir()) => {
            format!("ok {}\n", a.node_id).into_response()
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "chunk directory is missing\n",
        )
            .into_response(),
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    bigfs_proto::daemon::metrics_response(&crate::metrics::gauges(&a.store, &a.node_id))
}
