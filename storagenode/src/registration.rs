//! The node's identity and its membership in the cluster: register with the
//! metadata service (sending the chunk inventory), quarantine what it says is
//! not ours, then heartbeat until shutdown. A refused registration (the id is
//! in use by a live node elsewhere, or the inventory lacks most of the
//! node's copies) stops the node: it must not serve until someone looks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bigfs_proto::ChunkId;
use bigfs_proto::MetaClient;
use bigfs_proto::RetryConfig;
use bigfs_proto::pb::{DiskStatus, HeartbeatRequest, RegisterNodeRequest};
use tokio::sync::watch;
use tonic::Code;

use crate::chunk_store::ChunkStore;
use crate::error::{ConfigError, RegistrationError};

/// Name of the file under the data directory that pins the node id.
pub const NODE_ID_FILE: &str = "node_id";

/// Longest node id accepted.
const MAX_NODE_ID_LEN: usize = 128;

/// A chunk file written this close before an inventory scan may belong to a
/// put the metadata service has not heard of yet; a registration reply never
/// quarantines it (filesystem mtimes can be coarse, hence the slack).
const DELETE_GRACE: Duration = Duration::from_secs(2);

/// Checks a node id: printable, no whitespace, not too long.
pub fn validate_node_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
        return Err(ConfigError::invalid(
            "node_id",
            format!("must be 1 to {MAX_NODE_ID_LEN} bytes, got {}", id.len()),
        ));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::invalid(
            "node_id",
            format!("{id:?} contains whitespace or control characters"),
        ));
    }
    // What the metadata service accepts: ids become metric labels.
    bigfs_proto::check_node_id(id).map_err(|e| ConfigError::invalid("node_id", e))?;
    Ok(())
}

/// The node's id: the configured one, else the one pinned in the first
/// data directory that has a `node_id` file, else a fresh `node-<8 hex>`.
/// Writes nothing: [`pin_node_id`] does, once the disks are open.
pub fn resolve_node_id(configured: Option<&str>, data_dirs: &[PathBuf]) -> anyhow::Result<String> {
    let mut pinned = None;
    for dir in data_dirs {
        let path = dir.join(NODE_ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => {
                pinned = Some(s.trim().to_string());
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A disk that cannot be read is found bad when opened; another
            // disk may still hold the id.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the pinned node id")
            }
        }
    }
    let id = match (configured, pinned) {
        (Some(c), Some(p)) if c != p => {
            tracing::warn!(configured = c, pinned = %p, "node id differs from the pinned one; using the configured id");
            c.to_string()
        }
        (Some(c), _) => c.to_string(),
        (None, Some(p)) => p,
        (None, None) => format!("node-{:08x}", rand::random::<u32>()),
    };
    validate_node_id(&id)?;
    Ok(id)
}

/// Pins `id` in `<data_dir>/node_id`, so a restarted node keeps it. Every
/// good disk gets it: any one of them is enough to find it again.
pub fn pin_node_id(id: &str, data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(NODE_ID_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == id) {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Each disk's figures as the heartbeat and the registration carry them.
pub fn disk_status(store: &ChunkStore) -> Vec<DiskStatus> {
    store
        .disk_figures()
        .into_iter()
        .map(|d| DiskStatus {
            path: d.path,
            bad: d.bad,
            reason: d.reason,
            capacity: d.capacity,
            used: d.used,
            chunks: d.chunks,
            io_errors: d.io_errors,
        })
        .collect()
}

/// What the registration loop needs.
pub struct Registration {
    pub node_id: String,
    /// The address peers and clients use to reach this node.
    pub advertise: String,
    pub store: ChunkStore,
    pub metadata: MetaClient,
    pub retry: RetryConfig,
    /// Heartbeat interval used when the metadata service does not give one.
    pub default_heartbeat: Duration,
    /// Ask the metadata service to take the inventory as the truth even if
    /// it lacks most of the node's copies; for the first registration only.
    pub accept_inventory: bool,
    /// Set once a registration is accepted (see `StorageService`).
    pub registered: Arc<AtomicBool>,
    /// Where the receipt key of each accepted registration goes.
    pub receipt_key: Arc<crate::replication::ReceiptKeyHolder>,
}

/// How one registration attempt ended badly.
enum Attempt {
    /// The metadata service refused the registration: stop.
    Refused(String),
    /// Anything else (unreachable, timed out, disk error): retry.
    Failed(String),
}

impl Registration {
    /// Registers, then heartbeats, until `shutdown` turns true or a
    /// registration is refused.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), RegistrationError> {
        loop {
            let Some(interval) = self.register(&mut shutdown).await? else {
                return Ok(());
            };
            tracing::info!(node = %self.node_id, ?interval, "registered with the metadata service");
            self.registered.store(true, Ordering::Release);
            // The operator accepted one inventory, not every later one.
            self.accept_inventory = false;
            if !self
                .heartbeat_until_reregister(interval, &mut shutdown)
                .await
            {
                return Ok(());
            }
            tracing::info!(node = %self.node_id, "registering again");
        }
    }

    /// Registers until the metadata service answers; returns the heartbeat
    /// interval, None on shutdown, or the refusal.
    async fn register(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Duration>, RegistrationError> {
        let mut attempt = 0u32;
        loop {
            if *shutdown.borrow() {
                return Ok(None);
            }
            match self.register_once().await {
                Ok(interval) => return Ok(Some(interval)),
                Err(Attempt::Refused(reason)) => {
                    tracing::error!(node = %self.node_id, "registration refused; not serving: {reason}");
                    return Err(RegistrationError::Refused {
                        node: self.node_id.clone(),
                        reason,
                    });
                }
                Err(Attempt::Failed(e)) => {
                    tracing::warn!(node = %self.node_id, attempt, error = %e, "registration failed; retrying");
                }
            }
            let sleep = self.retry.backoff_jittered(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => return Ok(None),
            }
        }
    }

    async fn register_once(&self) -> Result<Duration, Attempt> {
        let scan_started = SystemTime::now();
        let inventory = self
            .store
            .inventory()
            .await
            .map_err(|e| Attempt::Failed(e.to_string()))?;
        let req = RegisterNodeRequest {
            node_id: self.node_id.clone(),
            address: self.advertise.clone(),
            capacity: self.store.capacity_bytes(),
            used: self.store.used_bytes(),
            chunks: inventory.iter().map(|c| c.to_vec()).collect(),
            accept_inventory: self.accept_inventory,
            disks: disk_status(&self.store),
        };
        let mut md = self.metadata.clone();
        let reply = tokio::time::timeout(self.retry.attempt_timeout(), md.register_node(req))
            .await
            .map_err(|_| {
                Attempt::Failed(format!(
                    "no answer within {} ms",
                    self.retry.attempt_timeout_ms
                ))
            })?
            .map_err(|s| match s.code() {
                Code::FailedPrecondition => Attempt::Refused(s.message().to_string()),
                code => Attempt::Failed(format!("{code:?}: {}", s.message())),
            })?
            .into_inner();

        let cutoff = scan_started - DELETE_GRACE;
        let mut quarantined = 0usize;
        for raw in &reply.delete_chunks {
            let Ok(id) = ChunkId::from_slice(raw) else {
                tracing::warn!(
                    len = raw.len(),
                    "metadata asked to delete a malformed chunk id; ignored"
                );
                continue;
            };
            match self.store.quarantine_unlisted(id, cutoff).await {
                Ok(true) => quarantined += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(chunk = %id.short(), error = %e, "cannot quarantine unlisted chunk")
                }
            }
        }
        if quarantined > 0 {
            metrics::counter!("bigfs_storage_unlisted_quarantined_total")
                .increment(quarantined as u64);
        }
        tracing::info!(
            node = %self.node_id,
            chunks = inventory.len(),
            quarantined,
            "inventory reconciled; chunks not listed for this node quarantined"
        );
        // A new key per registration; a service that sent none (or a bad
        // one) leaves us without: our copies then wait for our inventory.
        let key = bigfs_proto::receipt::key_from_slice(&reply.receipt_key);
        if key.is_none() {
            tracing::warn!(node = %self.node_id, len = reply.receipt_key.len(), "the metadata service gave no receipt key: copies stored for peers stay Pending until this node registers again");
        }
        self.receipt_key.set(key);
        let interval = match reply.heartbeat_interval_ms {
            0 => self.default_heartbeat,
            ms => Duration::from_millis(ms as u64),
        };
        Ok(interval)
    }

    /// Heartbeats every `interval`. Returns true when the metadata service
    /// asks for a new registration or a disk went bad (the new inventory
    /// reports its chunks lost), false on shutdown.
    async fn heartbeat_until_reregister(
        &self,
        interval: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut bad_disks = self.store.bad_disk_changes();
        bad_disks.mark_unchanged();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return false,
                Ok(()) = bad_disks.changed() => {
                    tracing::warn!(node = %self.node_id, "a disk went bad; registering again to report its chunks lost");
                    return true;
                }
            }
            if *shutdown.borrow() {
                return false;
            }
            let req = HeartbeatRequest {
                node_id: self.node_id.clone(),
                capacity: self.store.capacity_bytes(),
                used: self.store.used_bytes(),
                chunk_count: self.store.chunk_count(),
                disks: disk_status(&self.store),
            };
            let mut md = self.metadata.clone();
            match tokio::time::timeout(self.retry.attempt_timeout(), md.heartbeat(req)).await {
                Ok(Ok(reply)) if reply.get_ref().reregister => return true,
                Ok(Ok(_)) => {}
                Ok(Err(s)) => {
                    tracing::warn!(node = %self.node_id, error = %s.message(), "heartbeat failed")
                }
                Err(_) => tracing::warn!(node = %self.node_id, "heartbeat timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_and_pin(configured: Option<&str>, dirs: &[PathBuf]) -> String {
        let id = resolve_node_id(configured, dirs).unwrap();
        for d in dirs {
            pin_node_id(&id, d).unwrap();
        }
        id
    }

    #[test]
    fn generated_node_id_is_pinned_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        let id = resolve_and_pin(None, &dirs);
        assert!(id.starts_with("node-") && id.len() == 13, "{id}");
        assert_eq!(resolve_and_pin(None, &dirs), id);
        let pinned = std::fs::read_to_string(dir.path().join(NODE_ID_FILE)).unwrap();
        assert_eq!(pinned.trim(), id);
    }

    #[test]
    fn configured_node_id_wins_and_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        resolve_and_pin(None, &dirs);
        assert_eq!(resolve_and_pin(Some("n1"), &dirs), "n1");
        assert_eq!(resolve_and_pin(None, &dirs), "n1");
    }

    #[test]
    fn the_id_pinned_on_any_disk_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().join("gone"), dir.path().join("b")];
        pin_node_id("n7", &dirs[1]).unwrap();
        assert_eq!(resolve_node_id(None, &dirs).unwrap(), "n7");
    }

    #[test]
    fn bad_node_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        assert!(resolve_node_id(Some("a b"), &dirs).is_err());
        assert!(resolve_node_id(Some(&"x".repeat(200)), &dirs).is_err());
    }
}
