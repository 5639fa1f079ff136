//! Service tests: real Storage servers on loopback ports and a fake
//! Metadata service that records what the nodes tell it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigfs_proto::pb::metadata_server::{Metadata, MetadataServer};
use bigfs_proto::pb::storage_client::StorageClient;
use bigfs_proto::pb::*;
use bigfs_proto::{ChunkId, RetryConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::Config;

/// What the fake metadata service was told, and what it designates.
#[derive(Default)]
struct Recorded {
    /// Replicas RegisterChunk designates.
    designate: Vec<ReplicaLocation>,
    registered_chunks: Vec<(ChunkId, String)>,
    confirmed: Vec<(ChunkId, String)>,
    failures: Vec<ReportFailureRequest>,
    registered_nodes: Vec<RegisterNodeRequest>,
    /// Chunks RegisterNode tells the node to delete.
    delete_on_register: Vec<Vec<u8>>,
}

#[derive(Clone, Default)]
struct FakeMetadata(Arc<Mutex<Recorded>>);

impl FakeMetadata {
    fn state(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.0.lock().unwrap()
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl Metadata for FakeMetadata {
    async fn set_xattr(
        &self,
        _: Request<bigfs_proto::pb::SetXattrRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn get_xattr(
        &self,
        _: Request<bigfs_proto::pb::XattrNameRequest>,
    ) -> Result<Response<bigfs_proto::pb::XattrValueReply>, Status> {
        unimplemented()
    }
    async fn list_xattr(
        &self,
        _: Request<InodeRequest>,
    ) -> Result<Response<bigfs_proto::pb::XattrListReply>, Status> {
        unimplemented()
    }
    async fn remove_xattr(
        &self,
        _: Request<bigfs_proto::pb::XattrNameRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn keep_inodes(
        &self,
        _: Request<bigfs_proto::pb::KeepInodesRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn release_inode(&self, _: Request<InodeRequest>) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn record_access(
        &self,
        _: Request<bigfs_proto::pb::RecordAccessRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn sync(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn set_replication(
        &self,
        _: Request<bigfs_proto::pb::SetReplicationRequest>,
    ) -> Result<Response<bigfs_proto::pb::SetReplicationReply>, Status> {
        unimplemented()
    }
    async fn set_quota(
        &self,
        _: Request<bigfs_proto::pb::SetQuotaRequest>,
    ) -> Result<Response<bigfs_proto::pb::QuotaReply>, Status> {
        unimplemented()
    }
    async fn get_quota(
        &self,
        _: Request<bigfs_proto::pb::QuotaRequest>,
    ) -> Result<Response<bigfs_proto::pb::QuotaReply>, Status> {
        unimplemented()
    }
    async fn list_quotas(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<bigfs_proto::pb::QuotaListReply>, Status> {
        unimplemented()
    }
    async fn lookup(&self, _: Request<LookupRequest>) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn resolve_path(
        &self,
        _: Request<ResolvePathRequest>,
    ) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn get_attr(&self, _: Request<InodeRequest>) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn set_attr(&self, _: Request<SetAttrRequest>) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn create(&self, _: Request<CreateRequest>) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn tmp_file(
        &self,
        _: Request<bigfs_proto::pb::TmpFileRequest>,
    ) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn link(&self, _: Request<LinkRequest>) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn unlink(&self, _: Request<NameRequest>) -> Result<Response<DirsReply>, Status> {
        unimplemented()
    }
    async fn rmdir(&self, _: Request<NameRequest>) -> Result<Response<DirsReply>, Status> {
        unimplemented()
    }
    async fn rename(&self, _: Request<RenameRequest>) -> Result<Response<DirsReply>, Status> {
        unimplemented()
    }
    async fn read_dir(&self, _: Request<ReadDirRequest>) -> Result<Response<ReadDirReply>, Status> {
        unimplemented()
    }
    async fn get_layout(&self, _: Request<InodeRequest>) -> Result<Response<LayoutReply>, Status> {
        unimplemented()
    }
    async fn commit_layout(
        &self,
        _: Request<CommitLayoutRequest>,
    ) -> Result<Response<AttrReply>, Status> {
        unimplemented()
    }
    async fn place_chunk(
        &self,
        _: Request<PlaceChunkRequest>,
    ) -> Result<Response<PlaceChunkReply>, Status> {
        unimplemented()
    }
    async fn register_chunk(
        &self,
        request: Request<RegisterChunkRequest>,
    ) -> Result<Response<RegisterChunkReply>, Status> {
        let req = request.into_inner();
        let id = ChunkId::from_slice(&req.id)?;
        let mut state = self.state();
        state.registered_chunks.push((id, req.node_id));
        Ok(Response::new(RegisterChunkReply {
            replicas: state.designate.clone(),
        }))
    }
    async fn confirm_replica(
        &self,
        request: Request<ConfirmReplicaRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let id = ChunkId::from_slice(&req.id)?;
        self.state().confirmed.push((id, req.node_id));
        Ok(Response::new(Empty {}))
    }
    async fn report_failure(
        &self,
        request: Request<ReportFailureRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.state().failures.push(request.into_inner());
        Ok(Response::new(Empty {}))
    }
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeReply>, Status> {
        let mut state = self.state();
        state.registered_nodes.push(request.into_inner());
        Ok(Response::new(RegisterNodeReply {
            delete_chunks: std::mem::take(&mut state.delete_on_register),
            heartbeat_interval_ms: 50,
            receipt_key: vec![7; 32],
        }))
    }
    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Ok(Response::new(HeartbeatReply { reregister: false }))
    }
    async fn status(&self, _: Request<Empty>) -> Result<Response<StatusReply>, Status> {
        unimplemented()
    }
    async fn export(&self, _: Request<Empty>) -> Result<Response<ExportReply>, Status> {
        unimplemented()
    }
}

/// A running server; dropping it stops the server.
struct Running {
    addr: String,
    _stop: oneshot::Sender<()>,
    dir: Option<tempfile::TempDir>,
}

async fn start_metadata(fake: FakeMetadata) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(MetadataServer::new(fake))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        addr,
        _stop: stop,
        dir: None,
    }
}

fn quick_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        base_delay_ms: 10,
        max_delay_ms: 50,
        multiplier: 2.0,
        attempt_timeout_ms: 3_000,
    }
}

async fn start_node(node_id: &str, metadata: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Config {
        listen: addr.clone(),
        metadata: metadata.to_string(),
        data_dir: dir.path().to_path_buf(),
        node_id: Some(node_id.to_string()),
        reserve_bytes: 0,
        retry: quick_retry(),
        insecure: true,
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = crate::serve(config, listener, shutdown).await {
            panic!("node failed: {e}");
        }
    });
    Running {
        addr,
        _stop: stop,
        dir: Some(dir),
    }
}

fn client(addr: &str) -> StorageClient<Channel> {
    bigfs_proto::storage_client(addr).unwrap()
}

fn replica(node_id: &str, address: &str) -> ReplicaLocation {
    ReplicaLocation {
        node_id: node_id.into(),
        address: address.into(),
        status: ReplicaStatus::Pending as i32,
    }
}

fn upload(data: &[u8]) -> PutChunkRequest {
    PutChunkRequest {
        id: ChunkId::of(data).to_vec(),
        data: data.to_vec().into(),
        is_replica: false,
        ..Default::default()
    }
}

fn chunk_file(node: &Running, id: &ChunkId) -> std::path::PathBuf {
    let hex = id.to_hex();
    node.dir
        .as_ref()
        .unwrap()
        .path()
        .join("chunks")
        .join(&hex[..2])
        .join(hex)
}

/// Waits until `cond` holds, for at most 5 s.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test]
async fn primary_put_registers_pushes_to_the_designated_replica_and_answers_two_copies() {
    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    let a = start_node("a", &md.addr).await;
    let b = start_node("b", &md.addr).await;
    fake.state().designate = vec![replica("b", &b.addr)];

    let data = b"some chunk bytes".repeat(1000);
    let id = ChunkId::of(&data);
    let reply = client(&a.addr)
        .put_chunk(upload(&data))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.copies, 2);
    assert_eq!(reply.nodes, vec!["a".to_string(), "b".to_string()]);

    {
        let state = fake.state();
        assert_eq!(state.registered_chunks, vec![(id, "a".to_string())]);
        assert_eq!(state.confirmed, vec![(id, "b".to_string())]);
        assert!(state.failures.is_empty());
    }
    assert!(chunk_file(&a, &id).is_file());
    assert!(chunk_file(&b, &id).is_file());
    let got = client(&b.addr)
        .get_chunk(GetChunkRequest {
            id: id.to_vec(),
            offset: 5,
            len: 10,
            caller_verifies: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, data[5..15]);
    assert_eq!(got.stored_len as usize, data.len());

    // Both nodes registered in the background with their inventories.
    assert!(eventually(|| fake.state().registered_nodes.len() >= 2).await);
}

#[tokio::test]
async fn put_with_a_bad_hash_is_refused_and_nothing_is_registered() {
    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    let a = start_node("a", &md.addr).await;

    let mut req = upload(b"real bytes");
    req.data = b"other bytes".to_vec().into();
    let err = client(&a.addr).put_chunk(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    let id = ChunkId::from_slice(&req.id).unwrap();
    assert!(!chunk_file(&a, &id).exists());
    assert!(fake.state().registered_chunks.is_empty());

    let bad_id = PutChunkRequest {
        id: vec![1, 2, 3],
        data: b"x".to_vec().into(),
        is_replica: false,
        ..Default::default()
    };
    let err = client(&a.addr).put_chunk(bad_id).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn failed_push_to_the_only_replica_is_unavailable_and_reported() {
    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    let a = start_node("a", &md.addr).await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    fake.state().designate = vec![replica("dead", &dead)];

    let data = b"lonely".repeat(100);
    let id = ChunkId::of(&data);
    let err = client(&a.addr).put_chunk(upload(&data)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("dead"), "{}", err.message());

    let state = fake.state();
    assert_eq!(state.registered_chunks, vec![(id, "a".to_string())]);
    assert_eq!(state.failures.len(), 1);
    let f = &state.failures[0];
    assert_eq!(f.node_id, "dead");
    assert_eq!(f.chunk_id, id.to_vec());
    assert_eq!(f.operation, "replicate");
    assert_eq!(f.reporter, "a");
}

#[tokio::test]
async fn quorum_is_met_by_one_good_replica_when_another_is_dead() {
    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    let a = start_node("a", &md.addr).await;
    let b = start_node("b", &md.addr).await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    fake.state().designate = vec![replica("dead", &dead), replica("b", &b.addr)];

    let data = b"quorum".repeat(100);
    let reply = client(&a.addr)
        .put_chunk(upload(&data))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.copies, 2);
    assert_eq!(reply.nodes, vec!["a".to_string(), "b".to_string()]);
    // The dead push finishes in the background and is reported.
    assert!(eventually(|| fake.state().failures.iter().any(|f| f.node_id == "dead")).await);
}

#[tokio::test]
async fn replicate_chunk_copies_to_the_target_and_missing_chunks_are_not_found() {
    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    let a = start_node("a", &md.addr).await;
    let b = start_node("b", &md.addr).await;

    let data = b"copy me".repeat(100);
    let id = ChunkId::of(&data);
    client(&a.addr).put_chunk(upload(&data)).await.unwrap();
    let copy = |id: ChunkId| ReplicateChunkRequest {
        id: id.to_vec(),
        target_node_id: "b".into(),
        target_address: b.addr.clone(),
    };
    client(&a.addr).replicate_chunk(copy(id)).await.unwrap();
    assert!(chunk_file(&b, &id).is_file());
    assert!(fake.state().confirmed.contains(&(id, "b".to_string())));

    let err = client(&a.addr)
        .replicate_chunk(copy(ChunkId::of(b"absent")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let present = client(&b.addr)
        .has_chunks(HasChunksRequest {
            ids: vec![id.to_vec(), ChunkId::of(b"absent").to_vec()],
        })
        .await
        .unwrap()
        .into_inner()
        .present;
    assert_eq!(present, vec![true, false]);
    let deleted = client(&b.addr)
        .delete_chunk(DeleteChunkRequest { id: id.to_vec() })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.existed);
}

#[tokio::test]
async fn corrupt_chunk_read_is_data_loss_and_reported() {
    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    let a = start_node("a", &md.addr).await;

    let data = b"will rot".repeat(100);
    let id = ChunkId::of(&data);
    client(&a.addr).put_chunk(upload(&data)).await.unwrap();
    std::fs::write(chunk_file(&a, &id), b"rotten").unwrap();
    // A caller that checks the bytes itself gets them unhashed.
    let got = client(&a.addr)
        .get_chunk(GetChunkRequest {
            id: id.to_vec(),
            offset: 0,
            len: 0,
            caller_verifies: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data.as_ref(), b"rotten");
    assert!(chunk_file(&a, &id).exists());
    let err = client(&a.addr)
        .get_chunk(GetChunkRequest {
            id: id.to_vec(),
            offset: 0,
            len: 0,
            caller_verifies: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    assert!(!chunk_file(&a, &id).exists());
    assert!(
        eventually(|| fake
            .state()
            .failures
            .iter()
            .any(|f| f.operation == "read" && f.node_id == "a"))
        .await
    );
}

#[tokio::test]
async fn registration_sends_the_inventory_and_deletes_unlisted_chunks() {
    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    // A chunk left on disk from an earlier life, old enough to be deleted.
    let dir = tempfile::tempdir().unwrap();
    let data = b"stale".to_vec();
    let id = ChunkId::of(&data);
    {
        let store = crate::chunk_store::ChunkStore::open(
            dir.path(),
            crate::chunk_store::StoreLimits {
                reserve_bytes: 0,
                capacity_bytes: 0,
            },
        )
        .await
        .unwrap();
        store.put(id, bytes::Bytes::from(data)).await.unwrap();
        let path = store.chunk_path(&id);
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    fake.state().delete_on_register = vec![id.to_vec()];

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config {
        listen: listener.local_addr().unwrap().to_string(),
        metadata: md.addr.clone(),
        data_dir: dir.path().to_path_buf(),
        reserve_bytes: 0,
        retry: quick_retry(),
        insecure: true,
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let node = tokio::spawn(crate::serve(config, listener, async {
        let _ = stopped.await;
    }));

    assert!(eventually(|| !fake.state().registered_nodes.is_empty()).await);
    let reg = fake.state().registered_nodes[0].clone();
    assert!(reg.node_id.starts_with("node-"));
    assert_eq!(reg.chunks, vec![id.to_vec()]);
    let hex = id.to_hex();
    let path = dir.path().join("chunks").join(&hex[..2]).join(&hex);
    assert!(eventually(|| !path.exists()).await);

    let _ = stop.send(());
    node.await.unwrap().unwrap();
    let pinned = std::fs::read_to_string(dir.path().join("node_id")).unwrap();
    assert_eq!(pinned.trim(), reg.node_id);
}

#[tokio::test]
async fn has_chunks_is_unavailable_until_the_inventory_is_accepted() {
    // The replica audit reads "absent" as "lost": a process whose
    // registration has not been accepted (it may be on the wrong disk) must
    // not answer it.
    let unreachable = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let a = start_node("a", &unreachable).await;
    let probe = HasChunksRequest {
        ids: vec![ChunkId::of(b"x").to_vec()],
    };
    let err = loop {
        match client(&a.addr).has_chunks(probe.clone()).await {
            Err(e) if e.code() == Code::Unavailable && e.message().contains("tcp connect") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("not registered"), "{err}");

    let fake = FakeMetadata::default();
    let md = start_metadata(fake.clone()).await;
    let b = start_node("b", &md.addr).await;
    // Registered, it answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let present = loop {
        match client(&b.addr).has_chunks(probe.clone()).await {
            Ok(r) => break r.into_inner().present,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "b never answered: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!fake.state().registered_nodes.is_empty());
    assert_eq!(present, vec![false]);
}
