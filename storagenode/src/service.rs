//! The gRPC `Storage` service: chunk uploads (primary and replica), reads,
//! presence checks, deletes and peer-to-peer copies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bigfs_proto::ChunkId;
use bigfs_proto::pb::storage_server::Storage;
use bigfs_proto::pb::{
    DeleteChunkReply, DeleteChunkRequest, Empty, GetChunkReply, GetChunkRequest, HasChunksReply,
    HasChunksRequest, PutChunkReply, PutChunkRequest, Receipt, RegisterChunkRequest,
    ReplicateChunkRequest,
};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::{Request, Response, Status};

use crate::chunk_store::{Check, ChunkStore, PutOutcome};
use crate::error::StoreError;
use crate::replication::{Replicator, Stored, Target, describe, with_retry};
use crate::uploads::{GatePermit, PendingUploads, UploadGateLayer};

/// Copies that make a write durable enough to answer the client. Two
/// survive the loss of any one node; more are left to background pushes and
/// the repair queue.
/// Most replicas a client may ask a primary to forward to.
const MAX_FORWARDS: usize = 8;

const WRITE_QUORUM: usize = 2;

/// The Storage service of one node. Cheap to clone.
#[derive(Clone)]
pub struct StorageService {
    store: ChunkStore,
    replicator: Replicator,
    /// Bounds the chunks held in memory by puts and copies in flight.
    put_permits: Arc<Semaphore>,
    /// Stored uploads not yet listed by the metadata service.
    pending: Arc<PendingUploads>,
    /// True once the metadata service has accepted this process's
    /// inventory. Until then `HasChunks` answers Unavailable: the replica
    /// audit reads "absent" as "lost", and a process that started on the
    /// wrong (say, unmounted) disk must not have its empty answers believed
    /// while the metadata service still counts the previous process live.
    registered: Arc<AtomicBool>,
}

impl StorageService {
    pub fn new(
        store: ChunkStore,
        replicator: Replicator,
        max_concurrent_puts: usize,
        pending: Arc<PendingUploads>,
    ) -> Self {
        StorageService {
            store,
            replicator,
            put_permits: Arc::new(Semaphore::new(max_concurrent_puts.max(1))),
            pending,
            registered: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Makes `HasChunks` wait for `registered` (see the field); the
    /// registration loop sets it once the inventory is accepted.
    pub fn answering_inventory_after(mut self, registered: Arc<AtomicBool>) -> Self {
        self.registered = registered;
        self
    }

    /// The gate that takes this service's upload permit before a
    /// `PutChunk` body is read.
    pub fn upload_gate(&self) -> UploadGateLayer {
        UploadGateLayer::new(self.put_permits.clone())
    }

    fn node_id(&self) -> &str {
        self.replicator.node_id()
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.put_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the node is shutting down"))
    }

    /// Stores a chunk, turning a store error into a status; a new file
    /// counts as pending until the metadata service lists it.
    async fn store_chunk(&self, id: ChunkId, data: &Bytes) -> Result<PutOutcome, Status> {
        if data.is_empty() {
            return Err(Status::invalid_argument(format!("chunk {id} has no data")));
        }
        let outcome = self.store.put(id, data.clone()).await.map_err(|e| {
            tracing::warn!(chunk = %id.short(), error = %e, "put refused");
            Status::from(e)
        })?;
        if outcome == PutOutcome::Stored {
            self.pending.add(id, data.len() as u64);
        }
        Ok(outcome)
    }

    /// Reads a chunk (verified unless the caller checks it); a corrupt one
    /// is reported to metadata.
    async fn read(
        &self,
        id: ChunkId,
        offset: u64,
        len: u64,
        check: Check,
    ) -> Result<crate::chunk_store::ChunkRead, Status> {
        match self.store.read(id, offset, len, check).await {
            Ok(r) => Ok(r),
            Err(e @ StoreError::Corrupt(_)) => {
                let msg = e.to_string();
                let replicator = self.replicator.clone();
                tokio::spawn(async move {
                    let node = replicator.node_id().to_string();
                    replicator
                        .report_failure(&node, Some(id), "read", &msg)
                        .await;
                });
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A push from a primary: store, confirm (unless the primary registers
    /// this copy itself), answer.
    async fn put_replica(
        &self,
        id: ChunkId,
        data: Bytes,
        primary_registers: bool,
        _permit: OwnedSemaphorePermit,
    ) -> Result<PutChunkReply, Status> {
        let outcome = self.store_chunk(id, &data).await?;
        // A chunk is at most MAX_CHUNK_SIZE, which fits u32.
        let receipt = self.replicator.receipt(id, data.len() as u32);
        if primary_registers {
            tracing::debug!(chunk = %id.short(), "replica stored; the primary registers it");
            return Ok(PutChunkReply {
                copies: 1,
                nodes: vec![self.node_id().to_string()],
                receipt,
            });
        }
        // Our own confirmation carries our receipt too: under --insecure
        // the metadata service cannot tell who calls, and believes only it.
        let stored = Stored {
            node_id: self.node_id().to_string(),
            receipt: receipt.clone(),
        };
        let confirmed = self.replicator.confirm(&stored, id).await;
        if let Err(s) = confirmed {
            // The metadata service does not want this copy (the chunk is
            // unknown or being collected): a file written just now for it
            // goes, rather than stay on disk unlisted until a restart.
            let refused = matches!(
                s.code(),
                tonic::Code::FailedPrecondition | tonic::Code::NotFound
            );
            if refused && outcome == PutOutcome::Stored {
                match self.store.delete(id).await {
                    Ok(_) => tracing::info!(chunk = %id.short(), "unwanted copy removed"),
                    Err(e) => {
                        tracing::warn!(chunk = %id.short(), error = %e, "cannot remove an unwanted copy")
                    }
                }
            }
            return Err(Status::unavailable(format!(
                "chunk {id} stored but not confirmed: {}",
                s.message()
            )));
        }
        self.pending.settle(id);
        tracing::debug!(chunk = %id.short(), "replica stored and confirmed");
        Ok(PutChunkReply {
            copies: 1,
            nodes: vec![self.node_id().to_string()],
            receipt,
        })
    }

    /// A client upload: store, register, push to the designated replicas,
    /// answer once the write quorum is durable.
    async fn put_primary(
        &self,
        id: ChunkId,
        data: Bytes,
        forward_to: Vec<Target>,
        permit: OwnedSemaphorePermit,
    ) -> Result<PutChunkReply, Status> {
        // Forwards run while our own copy is written: the copies are made in
        // parallel, and each is registered only once it is durable.
        let (ftx, mut frx) = mpsc::unbounded_channel();
        let forwarded: Vec<String> = forward_to.iter().map(|t| t.node_id.clone()).collect();
        let addresses: Vec<Target> = forward_to.clone();
        if !forward_to.is_empty() {
            let replicator = self.replicator.clone();
            let data = data.clone();
            tokio::spawn(async move {
                let mut pushes: FuturesUnordered<_> = forward_to
                    .into_iter()
                    .map(|t| replicator.forward_or_report(t, id, data.clone(), true))
                    .collect();
                while let Some(result) = pushes.next().await {
                    let _ = ftx.send(result);
                }
            });
        } else {
            drop(ftx);
        }
        self.store_chunk(id, &data).await?;
        let quorum_wanted = WRITE_QUORUM.min(1 + forwarded.len());
        let mut confirmed = Vec::new();
        let mut failed_forwards = Vec::new();
        while 1 + confirmed.len() < quorum_wanted {
            match frx.recv().await {
                Some(Ok(node)) => confirmed.push(node),
                Some(Err(f)) => failed_forwards.push(f),
                None => break,
            }
        }
        // Forwards that already ended, good or bad, are settled now too.
        while let Ok(r) = frx.try_recv() {
            match r {
                Ok(node) => confirmed.push(node),
                Err(f) => failed_forwards.push(f),
            }
        }
        let settled = confirmed.len() + failed_forwards.len();
        let receipts: Vec<Receipt> = confirmed
            .iter()
            .map(|s: &Stored| Receipt {
                node_id: s.node_id.clone(),
                mac: s.receipt.clone(),
            })
            .collect();
        let confirmed: Vec<String> = confirmed.into_iter().map(|s| s.node_id).collect();
        let in_flight: Vec<String> = forwarded
            .iter()
            .filter(|n| !confirmed.contains(n))
            .cloned()
            .collect();
        let in_flight = if settled == forwarded.len() {
            Vec::new()
        } else {
            in_flight
        };

        let req = RegisterChunkRequest {
            id: id.to_vec(),
            len: data.len() as u32,
            node_id: self.node_id().to_string(),
            replication: 0,
            confirmed: confirmed.clone(),
            pending: in_flight.clone(),
            receipts,
        };
        let reply = with_retry(self.replicator.retry(), "register chunk", || {
            let mut md = self.replicator.metadata();
            let req = req.clone();
            async move { md.register_chunk(req).await }
        })
        .await
        .map_err(|s| {
            tracing::warn!(chunk = %id.short(), error = %s.message(), "register chunk failed");
            Status::unavailable(format!(
                "chunk {id} stored but not registered: {}",
                s.message()
            ))
        })?
        .into_inner();
        self.pending.settle(id);

        let me = self.node_id().to_string();
        // Late forwards: confirm each copy as it lands (it was designated
        // Pending just now), or leave the failure to the repair queue.
        if !in_flight.is_empty() {
            let replicator = self.replicator.clone();
            tokio::spawn(async move {
                while let Some(r) = frx.recv().await {
                    let Ok(stored) = r else { continue };
                    let Err(s) = replicator.confirm(&stored, id).await else {
                        continue;
                    };
                    let node = stored.node_id;
                    tracing::warn!(chunk = %id.short(), node = %node, error = %s.message(), "confirming a forwarded copy failed");
                    // The metadata service no longer wants a copy there (the
                    // node went down or is being decommissioned): remove it
                    // rather than leave an unlisted file behind.
                    if matches!(
                        s.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::NotFound
                    ) && let Some(t) = addresses.iter().find(|t| t.node_id == node)
                    {
                        replicator.delete_on(t, id).await;
                    }
                }
            });
        }
        let mut targets: Vec<Target> = reply
            .replicas
            .into_iter()
            .filter(|r| {
                r.node_id != me
                    && !r.address.is_empty()
                    && !confirmed.contains(&r.node_id)
                    && !in_flight.contains(&r.node_id)
            })
            .map(|r| Target {
                node_id: r.node_id,
                address: r.address,
            })
            .collect();
        targets.dedup_by(|a, b| a.node_id == b.node_id);

        let mut durable = vec![me];
        durable.extend(confirmed.iter().cloned());
        let quorum = WRITE_QUORUM.min(durable.len() + targets.len() + in_flight.len());
        if quorum < WRITE_QUORUM {
            tracing::warn!(chunk = %id.short(), "no replica designated; the chunk has a single copy");
        }
        if durable.len() >= quorum || targets.is_empty() {
            if durable.len() < quorum {
                return Err(Status::unavailable(format!(
                    "chunk {id}: write quorum of {quorum} copies not reached; forwards failed: {}",
                    failed_forwards.join("; ")
                )));
            }
            tracing::debug!(chunk = %id.short(), copies = durable.len(), "chunk stored at quorum");
            return Ok(PutChunkReply {
                copies: durable.len() as u32,
                nodes: durable,
                receipt: Vec::new(),
            });
        }

        // Pushes run in one background task that outlives this request; it
        // keeps the permit (and so the chunk's memory) until the last push.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let replicator = self.replicator.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut pushes: FuturesUnordered<_> = targets
                .into_iter()
                .map(|t| replicator.push_or_report(t, id, data.clone()))
                .collect();
            while let Some(result) = pushes.next().await {
                // The receiver leaves once the quorum is met; later results
                // are only logged (done by push_or_report).
                let _ = tx.send(result);
            }
        });

        let mut failures = failed_forwards;
        while durable.len() < quorum {
            match rx.recv().await {
                Some(Ok(node)) => durable.push(node),
                Some(Err(failure)) => failures.push(failure),
                None => break,
            }
        }
        if durable.len() < quorum {
            tracing::warn!(chunk = %id.short(), failures = failures.len(), "write quorum not reached");
            return Err(Status::unavailable(format!(
                "chunk {id}: write quorum of {quorum} copies not reached; replica pushes failed: {}",
                failures.join("; ")
            )));
        }
        tracing::info!(chunk = %id.short(), copies = durable.len(), "chunk stored at quorum");
        Ok(PutChunkReply {
            copies: durable.len() as u32,
            nodes: durable,
            receipt: Vec::new(),
        })
    }
}

fn parse_id(bytes: &[u8]) -> Result<ChunkId, Status> {
    Ok(ChunkId::from_slice(bytes)?)
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn put_chunk(
        &self,
        request: Request<PutChunkRequest>,
    ) -> Result<Response<PutChunkReply>, Status> {
        // The gate took the permit before the body was read; a call that
        // did not pass the gate (an in-process caller) takes one here.
        let permit = match GatePermit::take(&request) {
            Some(p) => p,
            None => self.permit().await?,
        };
        let req = request.into_inner();
        let id = parse_id(&req.id)?;
        let data = req.data;
        let len = data.len() as u64;
        self.pending.admit(len)?;
        let kind = if req.is_replica { "replica" } else { "primary" };
        let reply = if req.is_replica {
            self.put_replica(id, data, req.primary_registers, permit)
                .await?
        } else {
            let forward_to = req
                .forward_to
                .into_iter()
                .filter(|r| r.node_id != self.node_id() && !r.address.is_empty())
                .take(MAX_FORWARDS)
                .map(|r| Target {
                    node_id: r.node_id,
                    address: r.address,
                })
                .collect();
            self.put_primary(id, data, forward_to, permit).await?
        };
        crate::metrics::chunk_bytes("put", kind, len);
        Ok(Response::new(reply))
    }

    async fn get_chunk(
        &self,
        request: Request<GetChunkRequest>,
    ) -> Result<Response<GetChunkReply>, Status> {
        let req = request.into_inner();
        let id = parse_id(&req.id)?;
        let check = if req.caller_verifies {
            Check::CallerVerifies
        } else {
            Check::Verify
        };
        let read = self.read(id, req.offset, req.len, check).await?;
        crate::metrics::chunk_bytes("get", "client", read.data.len() as u64);
        Ok(Response::new(GetChunkReply {
            data: read.data.into(),
            // A stored chunk is at most MAX_CHUNK_SIZE, which fits u32.
            stored_len: read.stored_len.min(u32::MAX as u64) as u32,
        }))
    }

    async fn has_chunks(
        &self,
        request: Request<HasChunksRequest>,
    ) -> Result<Response<HasChunksReply>, Status> {
        if !self.registered.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "this node has not registered with the metadata service yet: its inventory is unconfirmed",
            ));
        }
        let ids = request
            .into_inner()
            .ids
            .iter()
            .map(|b| parse_id(b))
            .collect::<Result<Vec<_>, _>>()?;
        let present = self.store.has(ids).await?;
        Ok(Response::new(HasChunksReply { present }))
    }

    async fn delete_chunk(
        &self,
        request: Request<DeleteChunkRequest>,
    ) -> Result<Response<DeleteChunkReply>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        let existed = self.store.delete(id).await?;
        tracing::info!(chunk = %id.short(), existed, "chunk deleted");
        Ok(Response::new(DeleteChunkReply { existed }))
    }

    async fn replicate_chunk(
        &self,
        request: Request<ReplicateChunkRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let id = parse_id(&req.id)?;
        if req.target_address.is_empty() || req.target_node_id.is_empty() {
            return Err(Status::invalid_argument(
                "target_node_id and target_address are required",
            ));
        }
        let _permit = self.permit().await?;
        let data = Bytes::from(self.read(id, 0, 0, Check::Verify).await?.data);
        let target = Target {
            node_id: req.target_node_id,
            address: req.target_address,
        };
        self.replicator
            .push(&target, id, &data)
            .await
            .map_err(|s| {
                let error = describe(&s);
                tracing::warn!(chunk = %id.short(), node = %target.node_id, %error, "copy failed");
                Status::new(
                    s.code(),
                    format!(
                        "copy of chunk {id} to {} at {} failed: {error}",
                        target.node_id, target.address
                    ),
                )
            })?;
        tracing::info!(chunk = %id.short(), node = %target.node_id, "chunk copied");
        Ok(Response::new(Empty {}))
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
