//! Bounds on uploads: how big a request may be and when its body is read
//! (only once an upload permit is held), and how many bytes of stored
//! chunks may wait for the metadata service to list them.
//!
//! - [`request_limit`]: `PutChunk` takes a maximal chunk plus headers,
//!   `HasChunks` a probe batch, everything else `MAX_REQUEST_SIZE`.
//! - [`UploadGateLayer`]: takes the upload permit before tonic reads and
//!   decodes a `PutChunk` body, and hands it to the handler in the
//!   request's extensions.
//! - [`PendingUploads`]: chunks stored but not yet registered or confirmed.
//!   New uploads are refused with RESOURCE_EXHAUSTED past
//!   `pending_upload_quota_bytes`; [`Collector`] settles each after
//!   `pending_upload_grace_ms` by confirming it with the metadata service,
//!   and quarantines the copies it does not want.
//!
//! The table is in memory: after a restart, registration's inventory
//! reconciliation quarantines what the metadata service does not list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bigfs_proto::message_limit::Limit;
use bigfs_proto::{ChunkId, MAX_MESSAGE_SIZE, MAX_REQUEST_SIZE};
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;

use crate::chunk_store::ChunkStore;
use crate::replication::{Replicator, Stored};

const PUT_CHUNK: &str = "/bigfs.Storage/PutChunk";

/// The request limit of each Storage RPC, by path.
pub fn request_limit(path: &str) -> Option<Limit> {
    Some(match path {
        // One maximal chunk plus its id and forward list.
        PUT_CHUNK => Limit {
            bytes: MAX_MESSAGE_SIZE,
            name: "MAX_MESSAGE_SIZE",
        },
        // fsck probes 65,536 ids (34 bytes each on the wire) per call.
        "/bigfs.Storage/HasChunks" => Limit {
            bytes: 4 * MAX_REQUEST_SIZE,
            name: "4 x MAX_REQUEST_SIZE",
        },
        _ => Limit {
            bytes: MAX_REQUEST_SIZE,
            name: "MAX_REQUEST_SIZE",
        },
    })
}

/// An upload permit taken by [`UploadGateLayer`], for the handler to take.
#[derive(Clone)]
pub struct GatePermit(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl GatePermit {
    /// The permit the gate took for `request`, if it went through the gate.
    pub fn take<T>(request: &tonic::Request<T>) -> Option<OwnedSemaphorePermit> {
        let slot = request.extensions().get::<GatePermit>()?;
        slot.0.lock().ok()?.take()
    }
}

/// Makes `PutChunk` wait for an upload permit before its body is read.
#[derive(Clone)]
pub struct UploadGateLayer {
    permits: Arc<Semaphore>,
}

impl UploadGateLayer {
    pub fn new(permits: Arc<Semaphore>) -> Self {
        UploadGateLayer { permits }
    }
}

impl<S> tower::Layer<S> for UploadGateLayer {
    type Service = UploadGate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        UploadGate {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct UploadGate<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> tower::Service<http::Request<B>> for UploadGate<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The service polled ready is the one to call; a clone takes its
        // place for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if req.uri().path() != PUT_CHUNK {
            return Box::pin(inner.call(req));
        }
        let permits = self.permits.clone();
        Box::pin(async move {
            // A closed semaphore means shutdown: the handler then asks for
            // its own permit and answers UNAVAILABLE.
            if let Ok(p) = permits.acquire_owned().await {
                req.extensions_mut()
                    .insert(GatePermit(Arc::new(Mutex::new(Some(p)))));
            }
            inner.call(req).await
        })
    }
}

/// Chunks stored by uploads and not yet known to be listed by the
/// metadata service, and the bytes they hold.
pub struct PendingUploads {
    quota: u64,
    inner: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    bytes: u64,
    chunks: HashMap<ChunkId, (u64, Instant)>,
}

impl PendingUploads {
    pub fn new(quota_bytes: u64) -> Self {
        PendingUploads {
            quota: quota_bytes,
            inner: Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses an upload of `len` bytes once the pending bytes would pass
    /// the quota. Uploads in flight may pass it by at most
    /// `max_concurrent_puts` chunks.
    pub fn admit(&self, len: u64) -> Result<(), Status> {
        let bytes = self.lock().bytes;
        if bytes.saturating_add(len) > self.quota {
            metrics::counter!("bigfs_storage_uploads_refused_total", "reason" => "pending_quota")
                .increment(1);
            return Err(Status::resource_exhausted(format!(
                "{bytes} bytes of uploads await registration; pending_upload_quota_bytes is {}",
                self.quota
            )));
        }
        Ok(())
    }

    /// Counts a newly stored chunk as pending.
    pub fn add(&self, id: ChunkId, len: u64) {
        let mut p = self.lock();
        if p.chunks.insert(id, (len, Instant::now())).is_none() {
            p.bytes += len;
        }
        metrics::gauge!("bigfs_storage_pending_upload_bytes").set(p.bytes as f64);
    }

    /// The chunk is listed (registered or confirmed): no longer pending.
    pub fn settle(&self, id: ChunkId) {
        let mut p = self.lock();
        if let Some((len, _)) = p.chunks.remove(&id) {
            p.bytes -= len;
        }
        metrics::gauge!("bigfs_storage_pending_upload_bytes").set(p.bytes as f64);
    }

    /// Pending chunks stored `grace` ago or longer, with their lengths.
    fn expired(&self, grace: Duration) -> Vec<(ChunkId, u64)> {
        let now = Instant::now();
        let p = self.lock();
        p.chunks
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= grace)
            .map(|(id, (len, _))| (*id, *len))
            .collect()
    }

    /// Bytes pending now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// Settles uploads pending longer than `grace`: a copy the metadata
/// service confirms is kept, one it refuses is quarantined as unlisted.
pub struct Collector {
    pub pending: Arc<PendingUploads>,
    pub store: ChunkStore,
    pub replicator: Replicator,
    pub grace: Duration,
    pub interval: Duration,
}

impl Collector {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.sweep().await;
        }
    }

    async fn sweep(&self) {
        for (id, len) in self.pending.expired(self.grace) {
            // A chunk is at most MAX_CHUNK_SIZE, which fits u32.
            let own = Stored {
                node_id: self.replicator.node_id().to_string(),
                receipt: self.replicator.receipt(id, len as u32),
            };
            match self.replicator.confirm(&own, id).await {
                Ok(()) => {
                    tracing::info!(chunk = %id.short(), "pending upload confirmed after its grace");
                    self.pending.settle(id);
                }
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::NotFound | tonic::Code::FailedPrecondition
                    ) =>
                {
                    match self.store.quarantine_unlisted(id, SystemTime::now()).await {
                        Ok(_) => {
                            metrics::counter!("bigfs_storage_pending_uploads_collected_total")
                                .increment(1);
                            tracing::warn!(chunk = %id.short(), reason = %s.message(), "upload never registered; quarantined");
                            self.pending.settle(id);
                        }
                        Err(e) => {
                            tracing::warn!(chunk = %id.short(), error = %e, "cannot quarantine an unregistered upload")
                        }
                    }
                }
                Err(s) => {
                    tracing::debug!(chunk = %id.short(), error = %s.message(), "pending upload not settled; retrying next sweep")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_past_the_pending_quota_are_refused_naming_the_key() {
        let p = PendingUploads::new(100);
        p.admit(100).unwrap();
        p.add(ChunkId::of(b"a"), 60);
        p.add(ChunkId::of(b"a"), 60); // counted once
        assert_eq!(p.bytes(), 60);
        let err = p.admit(41).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("pending_upload_quota_bytes"));
        p.settle(ChunkId::of(b"a"));
        assert_eq!(p.bytes(), 0);
        p.admit(100).unwrap();
    }

    #[test]
    fn only_chunks_past_their_grace_expire() {
        let p = PendingUploads::new(100);
        p.add(ChunkId::of(b"a"), 1);
        assert!(p.expired(Duration::from_secs(60)).is_empty());
        assert_eq!(p.expired(Duration::ZERO), vec![(ChunkId::of(b"a"), 1)]);
    }

    #[test]
    fn put_chunk_takes_a_chunk_and_other_calls_a_small_request() {
        assert_eq!(request_limit(PUT_CHUNK).unwrap().bytes, MAX_MESSAGE_SIZE);
        assert_eq!(
            request_limit("/bigfs.Storage/DeleteChunk").unwrap().bytes,
            MAX_REQUEST_SIZE
        );
    }
}
