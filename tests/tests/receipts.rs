//! Replica receipts, with real processes over mutual TLS: a copy becomes
//! Available only on evidence from the node that holds it. A caller holding
//! one node's certificate cannot make copies on other nodes Available by
//! naming them in `RegisterChunk.confirmed` or by `ConfirmReplica`, while
//! the cluster's own writes (forwards registered by the primary, pushes
//! after registration, a node restarted with a new key) still end with
//! every copy Available.

use std::time::Duration;

use bigfs_proto::pb::{self, metadata_client::MetadataClient};
use bigfs_proto::{ChunkId, channel_with};
use bigfs_tests::{Cluster, certs, deadline, random_bytes, read_file, write_file};
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(90);

/// Counter of confirmations refused for want of a valid receipt.
const REJECTED: &str = "bigfs_metadata_receipts_rejected_total";

fn meta_as_node(c: &Cluster, node: &str) -> MetadataClient<Channel> {
    let tls = Some(certs::client_tls(&c.tls_dir(node)));
    MetadataClient::new(channel_with(&c.meta_addr, tls).expect("channel"))
}

/// The cluster's metadata service as the test's admin identity.
fn meta(c: &Cluster) -> bigfs_proto::MetaClient {
    bigfs_proto::metadata_client(&c.meta_addr).expect("client")
}

async fn layout(c: &Cluster, path: &str) -> pb::LayoutReply {
    let mut m = meta(c);
    let ino = m
        .resolve_path(pb::ResolvePathRequest { path: path.into() })
        .await
        .expect("resolve")
        .into_inner()
        .attr
        .expect("attr")
        .ino;
    m.get_layout(pb::InodeRequest { ino })
        .await
        .expect("layout")
        .into_inner()
}

/// The nodes holding an Available copy of each chunk of `path`.
async fn available(c: &Cluster, path: &str) -> Vec<Vec<String>> {
    layout(c, path)
        .await
        .chunks
        .iter()
        .map(|ch| {
            let mut nodes: Vec<String> = ch
                .replicas
                .iter()
                .filter(|r| r.status == pb::ReplicaStatus::Available as i32)
                .map(|r| r.node_id.clone())
                .collect();
            nodes.sort();
            nodes
        })
        .collect()
}

/// Writes `len` bytes to `path` through the client library, waits until
/// every chunk has all three copies Available, and reads it back.
async fn write_and_check(c: &Cluster, path: &str, len: usize, seed: u64) {
    let client = c.client().await;
    let data = random_bytes(len, seed);
    write_file(&client, path, &data).await;
    let all = vec!["node-1", "node-2", "node-3"];
    c.wait_for(
        Duration::from_secs(10),
        &format!("every copy of {path} Available"),
        || async {
            let a = available(c, path).await;
            !a.is_empty() && a.iter().all(|nodes| *nodes == all)
        },
    )
    .await;
    assert_eq!(c.status().await.replicas_pending, 0);
    assert!(read_file(&client, path).await == data, "{path} reads back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_end_with_every_copy_available_also_after_a_node_restarts() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(3).await;
    // Three chunks of 4 MiB and a tail: forwards registered by the
    // primary with their receipts, and copies confirmed by their nodes.
    write_and_check(&c, "/before", 13 << 20, 1).await;
    assert_eq!(
        c.metric(&c.meta_admin_addr, REJECTED, &[]),
        0.0,
        "a real node's receipt was rejected; see {}",
        c.log_path("metadata")
    );

    // A restarted node registers again and gets a new key: its receipts
    // under the new key verify.
    c.kill_node(1);
    c.start_node(1);
    c.wait_for(Duration::from_secs(20), "node-2 registered again", || {
        let log = c.log_path("node-2");
        async move {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("registered with the metadata service")
                .count()
                >= 2
        }
    })
    .await;
    write_and_check(&c, "/after", 9 << 20, 2).await;
    assert_eq!(c.metric(&c.meta_admin_addr, REJECTED, &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_cannot_make_copies_on_other_nodes_available() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let mut m = meta(&c);
    let file = m
        .create(pb::CreateRequest {
            parent: bigfs_proto::ROOT_INO,
            name: "forged".into(),
            kind: pb::FileKind::File as i32,
            mode: 0o644,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .attr
        .expect("attr");
    // A chunk no node stores: only node-1's word says it exists anywhere.
    let data = b"a chunk that no node ever stored".to_vec();
    let id = ChunkId::of(&data);
    let len = data.len() as u32;

    // node-1's certificate registers the chunk as its own, naming node-2
    // (no receipt) and node-3 (a receipt made up under another key) as
    // holding confirmed copies.
    let made_up = bigfs_proto::receipt::sign(
        &bigfs_proto::receipt::new_key().expect("key"),
        id,
        len,
        "node-3",
    );
    let mut as_node1 = meta_as_node(&c, "node-1");
    as_node1
        .register_chunk(pb::RegisterChunkRequest {
            id: id.to_vec(),
            len,
            node_id: "node-1".into(),
            confirmed: vec!["node-2".into(), "node-3".into()],
            receipts: vec![pb::Receipt {
                node_id: "node-3".into(),
                mac: made_up.clone(),
            }],
            ..Default::default()
        })
        .await
        .expect("node-1 registers its own copy");
    m.commit_layout(pb::CommitLayoutRequest {
        ino: file.ino,
        chunks: vec![pb::ChunkRef {
            index: 0,
            id: id.to_vec(),
            len,
        }],
        size: len as u64,
        ..Default::default()
    })
    .await
    .expect("commit");
    assert_eq!(
        available(&c, "/forged").await,
        vec![vec!["node-1".to_string()]],
        "only node-1's own copy may be Available"
    );
    assert_eq!(c.metric(&c.meta_admin_addr, REJECTED, &[]), 2.0);

    // ConfirmReplica for node-2's copy: refused without a receipt, with
    // the made-up one for node-3, and with 32 bytes of zeros.
    for (what, receipt) in [
        ("no receipt", vec![]),
        ("another node's made-up receipt", made_up.clone()),
        ("zeros", vec![0u8; 32]),
    ] {
        let e = as_node1
            .confirm_replica(pb::ConfirmReplicaRequest {
                id: id.to_vec(),
                node_id: "node-2".into(),
                receipt,
            })
            .await
            .expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(e.message().contains("receipt"), "{what}: {}", e.message());
    }
    assert_eq!(c.metric(&c.meta_admin_addr, REJECTED, &[]), 5.0);

    // The copies are still not Available, now and after a moment (nothing
    // else vouches for them), and the service counts the chunk short.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        available(&c, "/forged").await,
        vec![vec!["node-1".to_string()]]
    );
    let s = c.status().await;
    assert!(s.replicas_pending >= 2, "{s:?}");
    assert!(s.under_replicated >= 1, "{s:?}");
}
