//! The BigFS metadata service: the namespace, the chunk table, node
//! liveness and placement, persisted as a command log plus snapshots.
//!
//! Start it with [`run`] (binds `config.listen`, stops on SIGINT/SIGTERM) or,
//! in tests, with [`serve`] on an already bound listener and your own
//! shutdown future.

pub mod acl;
pub mod admin;
pub mod auth;
pub mod chunks;
pub mod clients;
pub mod config;
pub mod error;
pub mod exports;
pub mod failures;
#[cfg(debug_assertions)]
pub mod fault;
pub mod fsck;
pub mod gc;
pub mod heal;
pub mod http;
pub mod inline;
pub mod limits;
pub mod liveness;
pub mod lock_service;
pub mod locks;
pub mod machine;
pub mod namespace;
pub mod orphans;
pub mod placement;
pub mod quota;
pub mod raft;
pub mod receipts;
pub mod registration;
pub mod repair;
pub mod replication;
pub mod service;
pub mod snapshot;
pub mod snapshots_service;
pub mod state;
pub mod status;
pub mod store;
pub mod tmpfile;
pub mod trash;
pub mod validate;
pub mod views;
pub mod worker;
pub mod xattr;

use std::future::Future;

use anyhow::Context;
use bigfs_proto::message_limit::MessageLimitLayer;
use bigfs_proto::pb::admin_server::AdminServer;
use bigfs_proto::pb::metadata_server::MetadataServer;
use bigfs_proto::pb::ops_server::OpsServer;
use bigfs_proto::pb::snapshots_server::SnapshotsServer;
use bigfs_proto::tls::Security;
use bigfs_proto::{MAX_MESSAGE_SIZE, MAX_REQUEST_SIZE};
use tokio::net::TcpListener;

pub use config::Config;
pub use error::MetaError;
pub use service::MetadataService;

/// How often leases of open-but-unlinked files and trash retentions are
/// checked. Leases last a minute and retention a day by default, so a few
/// seconds of lateness matter little (it never frees anything early).
const ORPHAN_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Validates `config`, creates the data directory and starts this member
/// (its Raft log and state machine); `listen` is the address it serves on.
pub async fn open_service(
    config: Config,
    listen: std::net::SocketAddr,
) -> anyhow::Result<MetadataService> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    // The address the other members reach this one at: its entry in
    // `peers`, else the address it listens on.
    let peers = raft::parse_peers(&config.peers).map_err(anyhow::Error::msg)?;
    let my_addr = peers
        .get(&config.node_id)
        .cloned()
        .unwrap_or_else(|| listen.to_string());
    let dir = config.data_dir.display().to_string();
    MetadataService::open(config, my_addr)
        .await
        .with_context(|| format!("opening the metadata store in {dir}"))
}

/// Serves the Metadata service on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_admin(config, listener, None, shutdown).await
}

/// As [`serve`], plus the admin HTTP server (status page, `/metrics`, ...)
/// on `admin` when given. Tells systemd it is ready once both listen.
pub async fn serve_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls_dir = config.tls_dir.as_deref();
    let security = Security::start_daemon("bigfs-metadata", tls_dir, config.insecure)?;
    auth::check_own_identity(&security)?;
    let admin_access = bigfs_proto::admin_http::Access::new(
        &security,
        config.admin_token().map_err(anyhow::Error::msg)?,
        http::OPEN_PATHS,
    );
    let addr = listener.local_addr()?;
    let svc = open_service(config, addr).await?;
    tracing::info!(%addr, member = svc.consensus().id, "metadata service listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_task = admin.map(|l| {
        bigfs_proto::daemon::prometheus();
        let mut rx = stop_rx.clone();
        tokio::spawn(bigfs_proto::admin_http::serve(
            l,
            http::router(svc.clone()),
            security.clone(),
            admin_access,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    });
    bigfs_proto::daemon::notify_ready();
    let expiry = svc.clone();
    let orphan_task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(ORPHAN_CHECK_INTERVAL).await;
            if let Err(e) = expiry.expire_orphans().await {
                tracing::warn!(error = %e, "expiring open-file leases failed");
            }
            if let Err(e) = expiry.expire_trash().await {
                tracing::warn!(error = %e, "expiring trashed files failed");
            }
        }
    });
    let lock_expiry = tokio::spawn(lock_service::run_expiry(svc.clone()));
    let leadership = tokio::spawn(watch_leadership(svc.clone()));
    let reload = tokio::spawn(reload_exports_on_sighup(svc.clone()));
    let worker = worker::Worker::new(svc.clone());
    let admin = admin::AdminService::new(svc.clone(), worker.clone());
    let worker_task = tokio::spawn(worker.run(stop_rx.clone()));
    let result = security
        .server()?
        .layer(bigfs_proto::daemon::GrpcMetricsLayer)
        .layer(MessageLimitLayer::new(limits::request_limit))
        .layer(security.auth_layer(auth::policy))
        .add_service(
            MetadataServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            AdminServer::new(admin)
                .max_decoding_message_size(MAX_REQUEST_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(lock_service::LockService::new(svc.clone()).server())
        .add_service(
            SnapshotsServer::new(svc.clone())
                .max_decoding_message_size(MAX_REQUEST_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(raft::network::RaftService::new(svc.consensus().raft.clone()).server())
        .add_service(
            OpsServer::new(svc.clone())
                .max_decoding_message_size(MAX_REQUEST_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    let _ = stop_tx.send(true);
    let _ = worker_task.await;
    if let Some(t) = http_task {
        let _ = t.await;
    }
    orphan_task.abort();
    lock_expiry.abort();
    leadership.abort();
    reload.abort();
    if let Err(e) = svc.consensus().raft.shutdown().await {
        tracing::warn!(error = %e, "Raft did not shut down cleanly");
    }
    result?;
    tracing::info!("metadata service stopped");
    Ok(())
}

/// Re-reads the exports file at each SIGHUP (`systemctl reload`).
async fn reload_exports_on_sighup(svc: MetadataService) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: the exports file is read at start only");
        return;
    };
    while hup.recv().await.is_some() {
        match svc.reload_exports() {
            Ok(n) => tracing::info!(entries = n, "exports file reloaded"),
            Err(e) => tracing::error!(error = %e, "exports file not reloaded; the old rules stay"),
        }
    }
}

/// Logs leadership changes, and gives the storage nodes a grace period
/// when this member becomes leader: liveness is the leader's soft state, and
/// a new leader has heard from nobody yet.
async fn watch_leadership(svc: MetadataService) {
    let mut rx = svc.consensus().raft.metrics();
    let mut leading = false;
    loop {
        if let Err(fatal) = &rx.borrow().running_state {
            // openraft stops for good on a storage error (a log write that
            // failed): exit, so the service manager restarts this member
            // from its intact log, instead of answering "no leader" forever.
            tracing::error!(error = %fatal, "Raft stopped; exiting so that this member is restarted");
            std::process::exit(70);
        }
        let (now_leading, term, leader) = {
            let m = rx.borrow_and_update();
            (
                m.state == openraft::ServerState::Leader,
                m.current_term,
                m.current_leader,
            )
        };
        if now_leading != leading {
            leading = now_leading;
            metrics::gauge!("bigfs_metadata_is_leader").set(if leading { 1.0 } else { 0.0 });
            if leading {
                tracing::info!(term, "this member is now the metadata leader");
                svc.grant_liveness_grace();
            } else {
                tracing::info!(term, leader = ?leader, "this member follows");
            }
        }
        metrics::gauge!("bigfs_metadata_raft_term").set(term as f64);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Binds `config.listen` and `config.admin_listen` and serves until SIGINT
/// or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let admin_addr = bigfs_proto::daemon::parse_admin_listen(&config.admin_listen)
        .map_err(anyhow::Error::msg)?;
    let admin = bigfs_proto::daemon::bind_admin(admin_addr).await;
    serve_with_admin(config, listener, admin, shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}
