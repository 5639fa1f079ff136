//! BigFS storage node: chunk files on local disk, replication to peers.
//!
//! - [`chunk_store`]: the chunk files over the node's disks (placement by
//!   free space, the chunk -> disk index, bad disks).
//! - [`disk`]: one data directory: its layout, durable writes, figures.
//! - [`marker`]: the `.bigfs-disk` marker that tells a disk from an empty
//!   mount point.
//! - [`service`]: the gRPC `Storage` service (primary and replica puts,
//!   write quorum).
//! - [`replication`]: retries, pushes to peers, failure reports.
//! - [`scrub`]: background re-hashing of stored chunks.
//! - [`quarantine`]: chunks out of service, and the sweep that deletes
//!   unlisted ones after their grace.
//! - [`registration`]: node id, registration with inventory, heartbeats.
//! - [`config`]: the configuration file and its defaults.

pub mod auth;
pub mod chunk_store;
pub mod config;
pub mod disk;
pub mod error;
pub mod http;
pub mod marker;
pub mod metrics;
pub mod quarantine;
pub mod registration;
pub mod replication;
pub mod scrub;
pub mod service;
pub mod uploads;

use std::future::Future;
use std::sync::Arc;

use bigfs_proto::MAX_MESSAGE_SIZE;
use bigfs_proto::pb::storage_server::StorageServer;
use bigfs_proto::tls::Security;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::config::Config;

use crate::chunk_store::{ChunkStore, DiskOptions, DiskWatcher, StoreLimits};
use crate::registration::Registration;
use crate::replication::Replicator;
use crate::service::StorageService;

/// Runs a storage node until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let admin_addr = bigfs_proto::daemon::parse_admin_listen(&config.admin_listen)
        .map_err(anyhow::Error::msg)?;
    let admin = bigfs_proto::daemon::bind_admin(admin_addr).await;
    serve_with_admin(config, listener, admin, shutdown_signal()).await
}

/// Runs a storage node on an already bound listener until `shutdown`
/// completes. Serves at once; registration with the metadata service runs
/// in the background so peers can push while it is pending.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_admin(config, listener, None, shutdown).await
}

/// As [`serve`], plus the admin HTTP server (`/healthz`, `/metrics`) on
/// `admin` when given. Tells systemd it is ready once both listen.
pub async fn serve_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let tls_dir = config.tls_dir.as_deref();
    let security = Security::start_daemon("bigfs-storage", tls_dir, config.insecure)?;
    // Without --node-id, a node with a certificate is the node it names.
    let wanted_id =
        (config.node_id.clone()).or_else(|| security.identity().map(|i| i.name.clone()));
    let admin_access = bigfs_proto::admin_http::Access::new(
        &security,
        config.admin_token().map_err(anyhow::Error::msg)?,
        http::OPEN_PATHS,
    );
    let data_dirs = config.data_dirs();
    let node_id = registration::resolve_node_id(wanted_id.as_deref(), &data_dirs)?;
    auth::check_own_identity(&security, &node_id)?;
    let limits = StoreLimits {
        reserve_bytes: config.reserve_bytes,
        capacity_bytes: config.capacity_bytes,
    };
    let options = DiskOptions {
        node_id: node_id.clone(),
        init_disks: config.init_disks,
    };
    let store = ChunkStore::open_disks(&data_dirs, limits, options).await?;
    for d in store.disk_figures().iter().filter(|d| !d.bad) {
        registration::pin_node_id(&node_id, std::path::Path::new(&d.path))?;
    }
    let metadata = bigfs_proto::metadata_client(&config.metadata)
        .map_err(|e| anyhow::anyhow!("metadata: bad address {:?}: {e}", config.metadata))?;
    let replicator = Replicator::new(node_id.clone(), config.retry.clone(), metadata.clone());
    let receipt_key = replicator.receipt_key();
    let scrubber = scrub::Scrubber {
        store: store.clone(),
        replicator: replicator.clone(),
        bytes_per_sec: config.scrub_bytes_per_sec,
        pause: std::time::Duration::from_millis(config.scrub_pause_ms),
        stats: Default::default(),
    };
    let pending = Arc::new(uploads::PendingUploads::new(
        config.pending_upload_quota_bytes,
    ));
    let collector = uploads::Collector {
        pending: pending.clone(),
        store: store.clone(),
        replicator: replicator.clone(),
        grace: std::time::Duration::from_millis(config.pending_upload_grace_ms),
        interval: std::time::Duration::from_millis(config.pending_upload_sweep_ms),
    };
    let registered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = StorageService::new(
        store.clone(),
        replicator,
        config.max_concurrent_puts,
        pending,
    )
    .answering_inventory_after(registered.clone());
    let gate = service.upload_gate();

    let local = listener.local_addr()?;
    tracing::info!(node = %node_id, listen = %local, advertise = %config.advertise_addr(), "storage node serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_task = admin.map(|l| {
        bigfs_proto::daemon::prometheus();
        let mut rx = stop_rx.clone();
        tokio::spawn(bigfs_proto::admin_http::serve(
            l,
            http::router(store.clone(), node_id.clone()),
            security.clone(),
            admin_access,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    });
    let watcher = DiskWatcher {
        store: store.clone(),
        interval: std::time::Duration::from_millis(config.disk_check_interval_ms),
    };
    let sweeper = quarantine::Sweeper {
        store: store.clone(),
        grace: std::time::Duration::from_millis(config.quarantine_grace_ms),
        interval: std::time::Duration::from_millis(config.quarantine_sweep_ms),
    };
    let registration = Registration {
        node_id,
        advertise: config.advertise_addr(),
        store,
        metadata,
        retry: config.retry.clone(),
        default_heartbeat: config.heartbeat_interval(),
        accept_inventory: config.accept_inventory,
        registered,
        receipt_key,
    };
    let scrub_task = tokio::spawn(scrubber.run(stop_rx.clone()));
    let sweep_task = tokio::spawn(sweeper.run(stop_rx.clone()));
    let watch_task = tokio::spawn(watcher.run(stop_rx.clone()));
    let collect_task = tokio::spawn(collector.run(stop_rx.clone()));
    // A refused registration stops the server: a node whose id or disk is
    // in question must not serve.
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel::<()>();
    let registration_task = tokio::spawn(async move {
        let out = registration.run(stop_rx).await;
        if out.is_err() {
            let _ = refused_tx.send(());
        }
        out
    });
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(()) = refused_rx => {}
        }
    };

    let server = StorageServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    bigfs_proto::daemon::notify_ready();
    let result = security
        .server()?
        // Chunks are megabytes: HTTP/2's default 64 KiB window would make
        // every upload wait on dozens of window updates.
        .initial_stream_window_size(Some(bigfs_proto::STREAM_WINDOW))
        .initial_connection_window_size(Some(bigfs_proto::CONNECTION_WINDOW))
        .max_frame_size(Some(bigfs_proto::MAX_FRAME_SIZE))
        .layer(bigfs_proto::daemon::GrpcMetricsLayer)
        .layer(bigfs_proto::message_limit::MessageLimitLayer::new(
            uploads::request_limit,
        ))
        .layer(gate)
        .layer(security.auth_layer(auth::policy))
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;

    let _ = stop_tx.send(true);
    let registered = registration_task.await;
    let _ = scrub_task.await;
    let _ = sweep_task.await;
    let _ = watch_task.await;
    let _ = collect_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    tracing::info!("storage node stopped");
    if let Ok(Err(refused)) = registered {
        return Err(refused.into());
    }
    result.map_err(|e| anyhow::anyhow!("gRPC server failed: {e}"))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
