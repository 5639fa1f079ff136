//! Talking to peers and to the metadata service: retries with backoff,
//! pushes of a chunk to a replica, and failure reports.

use std::future::Future;
use std::sync::{Arc, RwLock};

use bigfs_proto::MetaClient;
use bigfs_proto::pb::storage_client::StorageClient;
use bigfs_proto::pb::{PutChunkRequest, ReportFailureRequest};
use bigfs_proto::receipt::{self, ReceiptKey};
use bigfs_proto::{ChunkId, RetryConfig};
use bytes::Bytes;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Whether a failed call is worth repeating: the peer may be back soon.
/// Refusals (bad argument, not found, disk full, corrupt) are final.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::Cancelled
    )
}

/// Runs `call` until it succeeds, a final error comes back, or the retries
/// of `retry` are spent. Each attempt has `retry.attempt_timeout()`.
pub async fn with_retry<T, F, Fut>(
    retry: &RetryConfig,
    what: &str,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut attempt = 0u32;
    loop {
        let result = match tokio::time::timeout(retry.attempt_timeout(), call()).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what}: no answer within {} ms",
                retry.attempt_timeout_ms
            ))),
        };
        match result {
            Ok(v) => return Ok(v),
            Err(status) if attempt < retry.max_retries && is_retryable(&status) => {
                let sleep = retry.backoff_jittered(attempt);
                tracing::debug!(what, attempt, error = %status.message(), ?sleep, "retrying");
                tokio::time::sleep(sleep).await;
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

/// A status and the chain of errors under it: a failed connection's
/// status says only "transport error"; the cause (refused, a certificate
/// naming someone else) is further down.
pub fn describe(status: &Status) -> String {
    let mut out = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

/// A destination of a chunk push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node_id: String,
    pub address: String,
}

/// The receipt key the metadata service gave this node at its last
/// registration (see `bigfs_proto::receipt`): held in memory only, a
/// restart registers again and gets a new one.
#[derive(Debug, Default)]
pub struct ReceiptKeyHolder(RwLock<Option<ReceiptKey>>);

impl ReceiptKeyHolder {
    pub fn set(&self, key: Option<ReceiptKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// This node's receipt for its copy of `id` (`len` bytes); empty
    /// before the first registration (the copy then stays Pending until
    /// the node's inventory confirms it).
    pub fn sign(&self, id: ChunkId, len: u32, node: &str) -> Vec<u8> {
        match *self.0.read().unwrap_or_else(|p| p.into_inner()) {
            Some(key) => receipt::sign(&key, id, len, node),
            None => Vec::new(),
        }
    }
}

/// A copy a peer stored for us, with its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub node_id: String,
    pub receipt: Vec<u8>,
}

/// Pushes chunks to peers and reports failures to the metadata service.
/// Cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    node_id: String,
    retry: RetryConfig,
    metadata: MetaClient,
    peers: Arc<bigfs_proto::StoragePool>,
    receipts: Arc<ReceiptKeyHolder>,
}

impl Replicator {
    pub fn new(node_id: String, retry: RetryConfig, metadata: MetaClient) -> Self {
        Replicator {
            node_id,
            retry,
            metadata,
            peers: Arc::new(bigfs_proto::StoragePool::default()),
            receipts: Arc::default(),
        }
    }

    /// This node's receipt key (set by the registration loop).
    pub fn receipt_key(&self) -> Arc<ReceiptKeyHolder> {
        self.receipts.clone()
    }

    /// This node's receipt for its own copy of `id`.
    pub fn receipt(&self, id: ChunkId, len: u32) -> Vec<u8> {
        self.receipts.sign(id, len, &self.node_id)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }

    pub fn metadata(&self) -> MetaClient {
        self.metadata.clone()
    }

    /// A client for a peer's Storage service, reusing its connection. It
    /// talks only to the node the target names: a server whose certificate
    /// is not `node:<target.node_id>` is refused before anything is sent
    /// (see `bigfs_proto::peer`).
    fn peer(&self, target: &Target) -> Result<StorageClient<Channel>, Status> {
        self.peers
            .get_node(&target.node_id, &target.address)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "peer {} at {:?}: {e}",
                    target.node_id, target.address
                ))
            })
    }

    /// Stores `data` on `target` as a replica (it confirms to metadata
    /// itself), retrying per the retry policy.
    pub async fn push(&self, target: &Target, id: ChunkId, data: &Bytes) -> Result<(), Status> {
        self.push_with(target, id, data, false).await.map(|_| ())
    }

    /// As `push`; with `primary_registers` the target leaves registering
    /// its copy to us (a forward during a client upload). Answers the
    /// target's receipt.
    pub async fn push_with(
        &self,
        target: &Target,
        id: ChunkId,
        data: &Bytes,
        primary_registers: bool,
    ) -> Result<Vec<u8>, Status> {
        let client = self.peer(target)?;
        let what = format!("push to {}", target.node_id);
        with_retry(&self.retry, &what, || {
            let mut client = client.clone();
            let req = PutChunkRequest {
                id: id.to_vec(),
                data: data.clone(),
                is_replica: true,
                forward_to: Vec::new(),
                primary_registers,
            };
            async move { client.put_chunk(req).await.map(|r| r.into_inner().receipt) }
        })
        .await
    }

    /// Pushes to `target`; on final failure reports it to the metadata
    /// service. Answers the target's node id or a description of the failure.
    pub async fn push_or_report(
        &self,
        target: Target,
        id: ChunkId,
        data: Bytes,
    ) -> Result<String, String> {
        self.forward_or_report(target, id, data, false)
            .await
            .map(|s| s.node_id)
    }

    /// `push_with` that reports a final failure to the metadata service.
    /// Answers the stored copy (the target and its receipt) or a
    /// description of the failure.
    pub async fn forward_or_report(
        &self,
        target: Target,
        id: ChunkId,
        data: Bytes,
        primary_registers: bool,
    ) -> Result<Stored, String> {
        match self.push_with(&target, id, &data, primary_registers).await {
            Ok(receipt) => {
                tracing::info!(chunk = %id.short(), node = %target.node_id, "replica stored");
                Ok(Stored {
                    node_id: target.node_id,
                    receipt,
                })
            }
            Err(status) => {
                let error = format!("{:?}: {}", status.code(), describe(&status));
                tracing::warn!(chunk = %id.short(), node = %target.node_id, %error, "replica push failed");
                self.report_failure(&target.node_id, Some(id), "replicate", &error)
                    .await;
                Err(format!("{} ({}): {error}", target.node_id, target.address))
            }
        }
    }

    /// Deletes `id` on `target` (best effort; logged).
    pub async fn delete_on(&self, target: &Target, id: ChunkId) {
        let outcome = match self.peer(target) {
            Ok(mut c) => c
                .delete_chunk(bigfs_proto::pb::DeleteChunkRequest { id: id.to_vec() })
                .await
                .map(|_| ()),
            Err(s) => Err(s),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(chunk = %id.short(), node = %target.node_id, "unwanted forwarded copy deleted")
            }
            Err(s) => {
                tracing::warn!(chunk = %id.short(), node = %target.node_id, error = %s.message(), "deleting an unwanted copy failed")
            }
        }
    }

    /// Tells the metadata service that a node holds a verified copy of
    /// `id`, with its receipt: a forward that finished after the chunk was
    /// registered, or this node's own copy.
    pub async fn confirm(&self, stored: &Stored, id: ChunkId) -> Result<(), Status> {
        let req = bigfs_proto::pb::ConfirmReplicaRequest {
            id: id.to_vec(),
            node_id: stored.node_id.clone(),
            receipt: stored.receipt.clone(),
        };
        with_retry(&self.retry, "confirm replica", || {
            let mut md = self.metadata.clone();
            let req = req.clone();
            async move { md.confirm_replica(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Tells the metadata service that `node` failed `operation`. Best
    /// effort: a report that cannot be delivered is logged.
    pub async fn report_failure(
        &self,
        node: &str,
        chunk: Option<ChunkId>,
        operation: &str,
        error: &str,
    ) {
        let req = ReportFailureRequest {
            node_id: node.to_string(),
            chunk_id: chunk.map(|c| c.to_vec()).unwrap_or_default(),
            operation: operation.to_string(),
            error: error.to_string(),
            reporter: self.node_id.clone(),
        };
        let result = with_retry(&self.retry, "report failure", || {
            let mut md = self.metadata.clone();
            let req = req.clone();
            async move { md.report_failure(req).await }
        })
        .await;
        if let Err(status) = result {
            tracing::warn!(node, operation, error = %status.message(), "cannot deliver failure report");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            base_delay_ms: 1,
            max_delay_ms: 2,
            multiplier: 2.0,
            attempt_timeout_ms: 50,
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let got = with_retry(&quick(), "t", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(Status::unavailable("down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 2);
    }

    #[tokio::test]
    async fn final_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let err = with_retry(&quick(), "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Status::invalid_argument("bad")) }
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn hung_attempts_time_out_and_retries_run_out() {
        let calls = AtomicU32::new(0);
        let err = with_retry(&quick(), "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), Status>>()
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
