//! The storage node's admin HTTP server on `admin_listen`: `/healthz`
//! (`ok` while a disk is usable; open to anyone) and
//! Prometheus `/metrics` (an admin certificate or the admin token; see
//! `bigfs_proto::admin_http`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

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
    // The node serves while at least one disk is usable; a disk unmounted
    // since the last periodic check is found now.
    a.store.check_disks().await;
    if a.store.good_disks() > 0 {
        return format!("ok {}\n", a.node_id).into_response();
    }
    (StatusCode::SERVICE_UNAVAILABLE, "every disk is bad\n").into_response()
}

async fn metrics(State(a): State<Admin>) -> Response {
    bigfs_proto::daemon::metrics_response(&crate::metrics::gauges(&a.store, &a.node_id))
}
