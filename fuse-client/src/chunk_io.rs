//! Chunk transfers: fetch with hash check and failover across replicas,
//! upload with placement, failover and backoff. Failures are reported to the
//! metadata service and counted in [`TransferMetrics`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bigfs_proto::pb::storage_client::StorageClient;
use bigfs_proto::{ChunkId, RetryConfig, errno, pb};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::chunk_cache::ChunkCache;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::layout::Replica;
use crate::meta::Meta;
use crate::meta_wait::MetaWait;
use crate::metrics::TransferMetrics;

type FetchFuture = Shared<BoxFuture<'static, Result<Bytes>>>;

pub struct ChunkIo {
    pub meta: Meta,
    pub cache: ChunkCache,
    pub metrics: TransferMetrics,
    retry: RetryConfig,
    pool: bigfs_proto::StoragePool,
    transfers: Semaphore,
    /// Nodes that failed recently, until when they are tried last.
    penalty: Mutex<HashMap<String, Instant>>,
    penalty_for: Duration,
    /// Fetches under way, so concurrent readers of one chunk share one fetch.
    fetching: Mutex<HashMap<ChunkId, FetchFuture>>,
    client_name: String,
    /// Files whose chunk index 0 holds at most this many bytes keep them in
    /// the metadata service instead of a chunk (0: never); the service
    /// says how many in its `Export` answer.
    inline_max: AtomicU32,
    /// Until when inline commits are not tried, after the service refused
    /// one (its inline budget is full, or the file wants more copies).
    inline_paused_until: Mutex<Option<Instant>>,
}

/// How long a refused inline commit stops this client from trying more.
const INLINE_PAUSE: Duration = Duration::from_secs(60);

impl ChunkIo {
    pub fn new(cfg: &ClientConfig) -> Result<Self> {
        Ok(ChunkIo {
            meta: Meta::confined(&cfg.metadata, &cfg.subdir, cfg.retry.clone(), cfg.meta_wait)?,
            cache: ChunkCache::new(cfg.cache_bytes),
            metrics: TransferMetrics::default(),
            retry: cfg.retry.clone(),
            pool: bigfs_proto::StoragePool::default(),
            transfers: Semaphore::new(cfg.parallel_transfers),
            penalty: Mutex::new(HashMap::new()),
            penalty_for: Duration::from_millis(cfg.node_penalty_ms),
            fetching: Mutex::new(HashMap::new()),
            client_name: cfg.client_name.clone(),
            inline_max: AtomicU32::new(0),
            inline_paused_until: Mutex::new(None),
        })
    }

    /// The largest chunk 0 kept inline (0: none).
    pub fn inline_max(&self) -> u64 {
        let paused = self
            .inline_paused_until
            .lock()
            .is_ok_and(|p| p.is_some_and(|until| Instant::now() < until));
        if paused {
            return 0;
        }
        u64::from(self.inline_max.load(Ordering::Relaxed))
    }

    /// The service refused to keep a file's bytes inline: store chunks for
    /// a while instead of being refused at every small file.
    pub fn pause_inline(&self) {
        if let Ok(mut p) = self.inline_paused_until.lock() {
            *p = Some(Instant::now() + INLINE_PAUSE);
        }
    }

    pub fn set_inline_max(&self, bytes: u32) {
        self.inline_max.store(bytes, Ordering::Relaxed);
    }

    fn storage(&self, address: &str) -> Result<StorageClient<Channel>> {
        self.pool.get(address).map_err(|e| ClientError::Connect {
            addr: address.into(),
            message: e.to_string(),
        })
    }

    /// Asks a node that served corrupt bytes to read the chunk with its
    /// own check, so it quarantines the copy and reports it for repair.
    async fn node_checks(mut node: StorageClient<Channel>, id: ChunkId) {
        let req = pb::GetChunkRequest {
            id: id.to_vec(),
            offset: 0,
            len: 0,
            caller_verifies: false,
        };
        if let Ok(resp) = node.get_chunk(req).await
            && !id.matches(&resp.into_inner().data)
        {
            tracing::error!(chunk = %id.short(), "node served corrupt bytes even after its own check");
        }
    }

    fn penalized(&self, node: &str) -> bool {
        let now = Instant::now();
        self.penalty
            .lock()
            .map(|p| p.get(node).is_some_and(|until| *until > now))
            .unwrap_or(false)
    }

    /// Counts, penalizes and reports a failed attempt on `node`.
    fn node_failed(&self, node: &str, chunk: &ChunkId, op: &str, error: &str) {
        self.metrics.record_node_failure(node);
        if let Ok(mut p) = self.penalty.lock() {
            p.insert(node.to_string(), Instant::now() + self.penalty_for);
        }
        let meta = self.meta.clone();
        let req = pb::ReportFailureRequest {
            node_id: node.to_string(),
            chunk_id: chunk.to_vec(),
            operation: op.to_string(),
            error: error.to_string(),
            reporter: self.client_name.clone(),
        };
        // Reporting is advice to the metadata service; never wait for it,
        // and do not keep retrying through a metadata outage (the mount's
        // meta_wait is for calls an application waits on).
        tokio::spawn(async move {
            let _ = meta
                .call_waiting("report failure", MetaWait::Retries, |mut c| {
                    let r = req.clone();
                    async move { c.report_failure(r).await }
                })
                .await;
        });
    }

    /// The verified bytes of chunk `id` (the whole stored chunk), from the
    /// cache or from the best replica.
    pub async fn fetch(self: &Arc<Self>, id: ChunkId, replicas: &[Replica]) -> Result<Bytes> {
        if let Some(d) = self.cache.get(&id) {
            self.metrics.cache_hit();
            return Ok(d);
        }
        self.metrics.cache_miss();
        let fut = {
            let mut fetching = self
                .fetching
                .lock()
                .map_err(|_| ClientError::Invalid("poisoned".into()))?;
            match fetching.get(&id) {
                Some(f) => f.clone(),
                None => {
                    let me = Arc::clone(self);
                    let replicas = replicas.to_vec();
                    let f = async move { me.fetch_uncached(id, replicas).await }
                        .boxed()
                        .shared();
                    fetching.insert(id, f.clone());
                    f
                }
            }
        };
        let out = fut.await;
        if let Ok(mut f) = self.fetching.lock() {
            f.remove(&id);
        }
        out
    }

    /// Starts fetching `id` into the cache without waiting (read-ahead).
    pub fn prefetch(self: &Arc<Self>, id: ChunkId, replicas: Vec<Replica>) {
        if self.cache.contains(&id) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _ = me.fetch(id, &replicas).await;
        });
    }

    async fn fetch_uncached(self: Arc<Self>, id: ChunkId, replicas: Vec<Replica>) -> Result<Bytes> {
        if replicas.is_empty() {
            self.metrics.record_op(0, false);
            return Err(ClientError::unavailable(
                &id,
                0,
                "no available replica is known".into(),
            ));
        }
        let _permit = self
            .transfers
            .acquire()
            .await
            .map_err(|_| ClientError::Invalid("closed".into()))?;
        // Healthy nodes first. Among them, start at a place the chunk id
        // picks, so the reads of a file spread over every replica holder.
        let mut order: Vec<&Replica> = replicas
            .iter()
            .filter(|r| !self.penalized(&r.node_id))
            .collect();
        if !order.is_empty() {
            let start = usize::from(id.0[0]) % order.len();
            order.rotate_left(start);
        }
        order.extend(replicas.iter().filter(|r| self.penalized(&r.node_id)));
        let n = order.len() as u32;
        let mut last_error = String::new();
        for attempt in 0..=self.retry.max_retries {
            let r = order[(attempt % n) as usize];
            let outcome = match self.storage(&r.address) {
                Ok(mut c) => {
                    let req = pb::GetChunkRequest {
                        id: id.to_vec(),
                        offset: 0,
                        len: 0,
                        caller_verifies: true,
                    };
                    match tokio::time::timeout(self.retry.attempt_timeout(), c.get_chunk(req)).await
                    {
                        Ok(Ok(resp)) => {
                            let data = resp.into_inner().data;
                            if id.matches(&data) {
                                Ok(data)
                            } else {
                                // The node did not hash it; asking again
                                // with its own check quarantines the copy
                                // and reports it to the metadata service.
                                tokio::spawn(Self::node_checks(c, id));
                                Err("hash mismatch: replica returned corrupt bytes".to_string())
                            }
                        }
                        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                        Err(_) => Err("timeout".to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(data) => {
                    let attempts = attempt + 1;
                    if attempts > 1 {
                        tracing::info!(chunk = %id.short(), node = %r.node_id, attempt = attempts, "read ok after failover");
                    }
                    self.metrics.record_op(attempts, true);
                    self.metrics.add_read(data.len() as u64);
                    self.cache.insert(id, data.clone());
                    return Ok(data);
                }
                Err(e) => {
                    tracing::warn!(chunk = %id.short(), node = %r.node_id, attempt = attempt + 1, error = %e, "read try failed");
                    self.node_failed(&r.node_id, &id, "read", &e);
                    last_error = format!("node {}: {e}", r.node_id);
                    // Fail over at once to a replica not yet tried this
                    // round; back off once every replica has failed.
                    if (attempt + 1) % n == 0 && attempt < self.retry.max_retries {
                        tokio::time::sleep(self.retry.backoff_jittered(attempt / n)).await;
                    }
                }
            }
        }
        self.metrics.record_op(self.retry.max_retries + 1, false);
        Err(ClientError::unavailable(
            &id,
            self.retry.max_retries + 1,
            last_error,
        ))
    }

    /// Stores `data` as a chunk on the cluster (or finds it already stored)
    /// and returns its id. Answers once the write quorum is durable.
    pub async fn upload(self: &Arc<Self>, data: Arc<Vec<u8>>, replication: u32) -> Result<ChunkId> {
        let id = ChunkId::of(&data);
        let _permit = self
            .transfers
            .acquire()
            .await
            .map_err(|_| ClientError::Invalid("closed".into()))?;
        let mut exclude: Vec<String> = Vec::new();
        let mut attempts: u32 = 0;
        let mut last_error = String::new();
        let mut last_errno = errno::EIO;
        while attempts <= self.retry.max_retries {
            let req = pb::PlaceChunkRequest {
                id: id.to_vec(),
                len: data.len() as u32,
                replication,
                exclude_nodes: exclude.clone(),
            };
            let placed = self
                .meta
                .call("place chunk", |mut c| {
                    let r = req.clone();
                    async move { c.place_chunk(r).await }
                })
                .await;
            let placed = match placed {
                Ok(p) => p,
                Err(e) => {
                    attempts += 1;
                    last_errno = e.errno();
                    last_error = e.to_string();
                    // Excluded nodes may be all there is: give them another go.
                    exclude.clear();
                    tokio::time::sleep(self.retry.backoff_jittered(attempts - 1)).await;
                    continue;
                }
            };
            if placed.already_stored {
                self.metrics.dedup_hit();
                self.metrics.record_op(attempts + 1, true);
                return Ok(id);
            }
            let copies = if replication == 0 {
                placed.targets.len()
            } else {
                replication as usize
            };
            for (i, target) in placed.targets.iter().enumerate().take(2) {
                attempts += 1;
                // The primary forwards to the other targets while it writes.
                let forward_to: Vec<pb::ReplicaLocation> = placed
                    .targets
                    .iter()
                    .enumerate()
                    .filter(|(j, t)| *j != i && !exclude.contains(&t.node_id))
                    .map(|(_, t)| t.clone())
                    .take(copies.saturating_sub(1))
                    .collect();
                let req = pb::PutChunkRequest {
                    id: id.to_vec(),
                    data: bigfs_proto::shared_bytes(&data),
                    is_replica: false,
                    forward_to,
                    primary_registers: false,
                };
                let outcome = match self.storage(&target.address) {
                    Ok(mut c) => {
                        match tokio::time::timeout(self.retry.attempt_timeout(), c.put_chunk(req))
                            .await
                        {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(s)) => {
                                Err((s.code(), format!("{:?}: {}", s.code(), s.message())))
                            }
                            Err(_) => Err((tonic::Code::DeadlineExceeded, "timeout".to_string())),
                        }
                    }
                    Err(e) => Err((tonic::Code::Unavailable, e.to_string())),
                };
                match outcome {
                    Ok(()) => {
                        if attempts > 1 {
                            tracing::info!(chunk = %id.short(), node = %target.node_id, attempt = attempts, "write ok after failover");
                        }
                        self.metrics.record_op(attempts, true);
                        self.metrics.add_written(data.len() as u64);
                        return Ok(id);
                    }
                    Err((code, e)) => {
                        tracing::warn!(chunk = %id.short(), node = %target.node_id, attempt = attempts, error = %e, "write try failed");
                        self.node_failed(&target.node_id, &id, "write", &e);
                        last_errno = if code == tonic::Code::ResourceExhausted {
                            errno::ENOSPC
                        } else {
                            errno::EIO
                        };
                        last_error = format!("node {}: {e}", target.node_id);
                        exclude.push(target.node_id.clone());
                        if attempts > self.retry.max_retries {
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(self.retry.backoff_jittered(attempts.saturating_sub(1))).await;
        }
        self.metrics.record_op(attempts, false);
        Err(ClientError::UploadFailed {
            chunk: id.short(),
            attempts,
            last_error,
            errno: last_errno,
        })
    }
}
