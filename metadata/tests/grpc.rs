//! The Metadata service over real gRPC, in-process, including a restart.

use std::net::SocketAddr;
use std::path::Path;

use bigfs_metadata::Config;
use bigfs_proto::MetaClient;
use bigfs_proto::pb;
use bigfs_proto::{ChunkId, errno, errno_of};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Server {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: MetaClient,
}

async fn start(dir: &Path) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let config = Config {
        data_dir: dir.to_path_buf(),
        listen: addr,
        snapshot_every: 5,
        insecure: true,
        ..Config::default()
    };
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(bigfs_metadata::serve(config, listener, async {
        let _ = rx.await;
    }));
    let client = bigfs_proto::metadata_client(&addr.to_string()).unwrap();
    Server { stop, task, client }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn create(
    c: &mut MetaClient,
    parent: u64,
    name: &str,
    kind: pb::FileKind,
) -> Result<pb::Attr, tonic::Status> {
    let r = c
        .create(pb::CreateRequest {
            parent,
            name: name.into(),
            kind: kind as i32,
            mode: 0o644,
            exclusive: true,
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().attr.unwrap())
}

async fn register_node(c: &mut MetaClient, id: &str) -> pb::RegisterNodeReply {
    c.register_node(pb::RegisterNodeRequest {
        node_id: id.into(),
        address: format!("{id}.local:1"),
        capacity: 1 << 30,
        used: 0,
        chunks: vec![],
        accept_inventory: false,
        disks: vec![],
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn namespace_chunks_and_nodes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path()).await;
    let c = &mut s.client;

    // Namespace, with errno on errors.
    let d = create(c, 1, "d", pb::FileKind::Directory).await.unwrap();
    let f = create(c, d.ino, "f", pb::FileKind::File).await.unwrap();
    assert_eq!(f.replication, 3);
    let e = create(c, d.ino, "f", pb::FileKind::File).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert_eq!(errno_of(&e), errno::EEXIST);
    let e = c
        .rmdir(pb::NameRequest {
            parent: 1,
            name: "d".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(errno_of(&e), errno::ENOTEMPTY);
    let e = create(c, 1, &"x".repeat(300), pb::FileKind::File)
        .await
        .unwrap_err();
    assert_eq!(errno_of(&e), errno::ENAMETOOLONG);
    let got = c
        .resolve_path(pb::ResolvePathRequest {
            path: "/d/f".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().attr.unwrap().ino, f.ino);

    // No node yet: placement is refused.
    let data = b"hello chunk".to_vec();
    let id = ChunkId::of(&data);
    let place = pb::PlaceChunkRequest {
        id: id.to_vec(),
        len: data.len() as u32,
        replication: 0,
        exclude_nodes: vec![],
    };
    let e = c.place_chunk(place.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);

    let mut keys = std::collections::BTreeMap::new();
    for n in ["a", "b", "c"] {
        let r = register_node(c, n).await;
        assert_eq!(r.heartbeat_interval_ms, 2000);
        assert!(r.delete_chunks.is_empty());
        let key = bigfs_proto::receipt::key_from_slice(&r.receipt_key).expect("a receipt key");
        keys.insert(n.to_string(), key);
    }
    let targets = c.place_chunk(place.clone()).await.unwrap().into_inner();
    assert!(!targets.already_stored);
    assert_eq!(targets.targets.len(), 3);
    let primary = targets.targets[0].node_id.clone();

    // Bad ids are refused cleanly.
    let e = c
        .place_chunk(pb::PlaceChunkRequest {
            id: vec![1, 2],
            ..place.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Commit before the chunk exists: the client must upload again.
    let commit = pb::CommitLayoutRequest {
        ino: f.ino,
        chunks: vec![pb::ChunkRef {
            index: 0,
            id: id.to_vec(),
            len: data.len() as u32,
        }],
        size: data.len() as u64,
        mtime: None,
        inline_data: None,
        id: None,
    };
    let e = c.commit_layout(commit.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    let reg = c
        .register_chunk(pb::RegisterChunkRequest {
            confirmed: vec![],
            pending: vec![],
            id: id.to_vec(),
            len: data.len() as u32,
            node_id: primary.clone(),
            replication: 0,
            receipts: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reg.replicas.len(), 2);
    assert!(
        reg.replicas
            .iter()
            .all(|r| r.node_id != primary && r.address.ends_with(".local:1"))
    );
    // Under --insecure nobody is known by certificate: a confirmation is
    // believed only with the node's receipt.
    let second = reg.replicas[0].node_id.clone();
    let confirm = |receipt: Vec<u8>| pb::ConfirmReplicaRequest {
        id: id.to_vec(),
        node_id: second.clone(),
        receipt,
    };
    let e = c.confirm_replica(confirm(vec![])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let wrong_key = bigfs_proto::receipt::sign(&keys[&primary], id, data.len() as u32, &second);
    let e = c.confirm_replica(confirm(wrong_key)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let receipt = bigfs_proto::receipt::sign(&keys[&second], id, data.len() as u32, &second);
    c.confirm_replica(confirm(receipt)).await.unwrap();
    let attr = c
        .commit_layout(commit)
        .await
        .unwrap()
        .into_inner()
        .attr
        .unwrap();
    assert_eq!(attr.size, data.len() as u64);
    assert_eq!(attr.version, 1);

    // Dedup hit.
    assert!(
        c.place_chunk(place.clone())
            .await
            .unwrap()
            .into_inner()
            .already_stored
    );

    let layout = c
        .get_layout(pb::InodeRequest { ino: f.ino })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(layout.chunks.len(), 1);
    assert_eq!(layout.chunks[0].replicas.len(), 2);
    assert_eq!(layout.chunks[0].stored_len, data.len() as u32);

    let st = c.status(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!((st.files, st.directories, st.chunks), (1, 2, 1));
    assert_eq!((st.replicas_available, st.replicas_pending), (2, 1));
    assert_eq!((st.under_replicated, st.lost), (1, 0));
    assert_eq!(st.nodes.len(), 3);
    assert!(st.nodes.iter().all(|n| n.state == pb::NodeState::Up as i32));

    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            node_id: "zz".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(hb.into_inner().reregister);

    s.stop().await;

    // Restart: everything answered is still there.
    let mut s = start(dir.path()).await;
    let c = &mut s.client;
    let got = c
        .resolve_path(pb::ResolvePathRequest {
            path: "/d/f".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().attr.unwrap().size, data.len() as u64);
    // A new leader (this restarted member) has heard from no node yet: it
    // gives every registered node a heartbeat period of grace instead of
    // declaring it Down, so nothing counts as lost meanwhile.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let st = loop {
        let st = c.status(pb::Empty {}).await.unwrap().into_inner();
        if st.nodes.iter().all(|n| n.state == pb::NodeState::Up as i32) {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes not given a grace period after the restart: {:?}",
            st.nodes
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(st.lost, 0);
    let other = ChunkId::of(b"other");
    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            node_id: "a".into(),
            capacity: 1 << 30,
            used: 0,
            chunk_count: 1,
            disks: vec![],
        })
        .await
        .unwrap();
    assert!(!hb.into_inner().reregister);
    let p = c
        .place_chunk(pb::PlaceChunkRequest {
            id: other.to_vec(),
            len: 5,
            replication: 2,
            exclude_nodes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    // Every node is Up (heard, or within its grace), and "a" has told its
    // free space: the chunk gets placed.
    assert!(!p.targets.is_empty(), "no target after the restart");

    // Re-registering "a" with an inventory missing the chunk drops that
    // replica, and an unknown chunk is to be deleted.
    let r = c
        .register_node(pb::RegisterNodeRequest {
            node_id: "a".into(),
            address: "a.local:1".into(),
            capacity: 1 << 30,
            used: 0,
            chunks: vec![other.to_vec()],
            accept_inventory: false,
            disks: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.delete_chunks, vec![other.to_vec()]);
    s.stop().await;
}
