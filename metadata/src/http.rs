//! The admin HTTP server on `admin_listen`: the status page, JSON views
//! for scripts, a live probe of every node, and Prometheus `/metrics`.
//!
//! | path                  | answer                                             |
//! |-----------------------|----------------------------------------------------|
//! | `/`                   | status page (HTML; refreshes itself from `/summary`) |
//! | `/summary`            | everything the status page shows (JSON)            |
//! | `/healthz`            | `ok` when the state can be read                     |
//! | `/metrics`            | Prometheus text                                     |
//! | `/nodes`              | nodes: state, capacity, usage, last heartbeat       |
//! | `/nodes/check`        | a HasChunks probe of every node, with latency       |
//! | `/files`              | files with size, chunks, replica health (`?prefix=&offset=&limit=`) |
//! | `/replication-queue`  | chunks needing a new copy, worst first (`?limit=`)  |
//! | `/failures`           | recent failure reports, newest first (`?limit=`)    |

use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bigfs_proto::pb;
use serde::{Deserialize, Serialize};

use crate::MetadataService;
use crate::failures::FailureReport;
use crate::views::{self, FilesPage, GcBacklog, NodeView, QueueView};

/// Longest a node may take to answer the `/nodes/check` probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries of the replication queue and failure reports shown by default.
const LIST_DEFAULT_LIMIT: usize = 100;
/// Failure reports on the status page.
const PAGE_FAILURES: usize = 20;

const STATUS_PAGE: &str = include_str!("status_page.html");

/// Paths anyone may read (see `bigfs_proto::admin_http`): the health probe
/// and the status page's static HTML, which holds no cluster data (it
/// fetches `/summary`, which needs an admin certificate or the token).
pub const OPEN_PATHS: &[&str] = &["/healthz", "/"];

pub fn router(svc: MetadataService) -> Router {
    Router::new()
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/summary", get(summary))
        .route("/nodes", get(nodes))
        .route("/nodes/check", get(nodes_check))
        .route("/files", get(files))
        .route("/replication-queue", get(replication_queue))
        .route("/failures", get(failures))
        .with_state(svc)
}

fn internal(e: tonic::Status) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()).into_response()
}

async fn healthz(State(svc): State<MetadataService>) -> Response {
    match svc.inspect(|_, _, _, _| ()).await {
        Ok(()) => "ok\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", e.message()),
        )
            .into_response(),
    }
}

async fn metrics(State(svc): State<MetadataService>) -> Response {
    let gauges = svc
        .inspect(|st, live, config, _| {
            let status = crate::status::status(st, live, config);
            let queue = views::replication_queue(st, live, config, 0);
            views::gauges(&status, &views::gc_backlog(st), queue.length)
        })
        .await;
    let group = crate::raft::members::gauges(&svc.consensus().meta_status());
    match gauges {
        Ok(g) => bigfs_proto::daemon::metrics_response(&(g + &group)),
        Err(e) => internal(e),
    }
}

async fn nodes(State(svc): State<MetadataService>) -> Response {
    match svc
        .inspect(|st, live, config, _| views::nodes(&crate::status::status(st, live, config)))
        .await
    {
        Ok(n) => Json(n).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Serialize)]
struct ProbeResult {
    node_id: String,
    address: String,
    /// The heartbeat-based state, for comparison.
    state: &'static str,
    /// Whether the node answered a HasChunks call within the timeout.
    reachable: bool,
    latency_ms: f64,
    error: Option<String>,
}

async fn probe(node: NodeView) -> ProbeResult {
    let start = Instant::now();
    let outcome = async {
        let mut c = bigfs_proto::storage_client(&node.address).map_err(|e| e.to_string())?;
        tokio::time::timeout(
            PROBE_TIMEOUT,
            c.has_chunks(pb::HasChunksRequest { ids: vec![] }),
        )
        .await
        .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
    .await;
    ProbeResult {
        reachable: outcome.is_ok(),
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        error: outcome.err(),
        node_id: node.node_id,
        address: node.address,
        state: node.state,
    }
}

async fn nodes_check(State(svc): State<MetadataService>) -> Response {
    let list = match svc
        .inspect(|st, live, config, _| views::nodes(&crate::status::status(st, live, config)))
        .await
    {
        Ok(n) => n,
        Err(e) => return internal(e),
    };
    let mut set = tokio::task::JoinSet::new();
    for n in list {
        set.spawn(probe(n));
    }
    let mut out: Vec<ProbeResult> = set.join_all().await;
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    for p in out.iter().filter(|p| !p.reachable) {
        tracing::warn!(node = %p.node_id, error = ?p.error, "node check failed");
    }
    Json(out).into_response()
}

#[derive(Debug, Deserialize)]
struct FilesQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn files(State(svc): State<MetadataService>, Query(q): Query<FilesQuery>) -> Response {
    let limit = views::files_limit(q.limit);
    match svc
        .inspect(move |st, live, _, _| views::files(st, live, &q.prefix, q.offset, limit))
        .await
    {
        Ok(p) => Json::<FilesPage>(p).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn replication_queue(
    State(svc): State<MetadataService>,
    Query(q): Query<LimitQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(LIST_DEFAULT_LIMIT);
    match svc
        .inspect(move |st, live, config, _| views::replication_queue(st, live, config, limit))
        .await
    {
        Ok(v) => Json::<QueueView>(v).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Serialize)]
struct FailuresView {
    total: u64,
    recent: Vec<FailureReport>,
}

async fn failures(State(svc): State<MetadataService>, Query(q): Query<LimitQuery>) -> Response {
    let limit = q.limit.unwrap_or(LIST_DEFAULT_LIMIT);
    match svc
        .inspect(move |_, _, _, f| FailuresView {
            total: f.total(),
            recent: f.newest(limit),
        })
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    now_ms: u64,
    files: u64,
    directories: u64,
    chunks: u64,
    chunk_bytes: u64,
    replication: u32,
    replicas_available: u64,
    replicas_pending: u64,
    replicas_deleting: u64,
    under_replicated: u64,
    lost: u64,
    queue: QueueView,
    gc: GcBacklog,
    nodes: Vec<NodeView>,
    failures_total: u64,
    failures: Vec<FailureReport>,
    group: Group,
}

/// The metadata group as this member sees it (for the status page).
#[derive(Debug, Serialize)]
struct Group {
    member: u64,
    state: String,
    leader: u64,
    leader_address: String,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    proposals_per_sec: f64,
    members: Vec<GroupMember>,
}

#[derive(Debug, Serialize)]
struct GroupMember {
    id: u64,
    address: String,
    voter: bool,
    lag: Option<u64>,
}

impl Group {
    fn of(s: bigfs_proto::pb::MetaStatusReply) -> Self {
        Group {
            member: s.id,
            state: s.state,
            leader: s.leader,
            leader_address: s.leader_address,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            proposals_per_sec: s.proposals_per_sec,
            members: s
                .members
                .into_iter()
                .map(|m| GroupMember {
                    id: m.id,
                    address: m.address,
                    voter: m.voter,
                    lag: m.has_matched.then_some(m.lag),
                })
                .collect(),
        }
    }
}

async fn summary(State(svc): State<MetadataService>) -> Response {
    let group = Group::of(svc.consensus().meta_status());
    match svc
        .inspect(|st, live, config, f| {
            let s = crate::status::status(st, live, config);
            Summary {
                now_ms: bigfs_proto::now_ms(),
                files: s.files,
                directories: s.directories,
                chunks: s.chunks,
                chunk_bytes: s.chunk_bytes,
                replication: s.default_replication,
                replicas_available: s.replicas_available,
                replicas_pending: s.replicas_pending,
                replicas_deleting: s.replicas_deleting,
                under_replicated: s.under_replicated,
                lost: s.lost,
                queue: views::replication_queue(st, live, config, 10),
                gc: views::gc_backlog(st),
                nodes: views::nodes(&s),
                failures_total: f.total(),
                failures: f.newest(PAGE_FAILURES),
                group,
            }
        })
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}
