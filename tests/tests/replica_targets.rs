//! `ReplicateChunk` pushes a chunk only to the registered node it names:
//! the pushing node checks that the server it reaches holds the
//! certificate `node:<target_node_id>`, so an address where nothing BigFS
//! listens, a TLS server with another role's valid certificate, or a real
//! node under another node's id gets nothing, and a real node gets its copy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bigfs_proto::pb::storage_client::StorageClient;
use bigfs_proto::pb::{HasChunksRequest, ReplicateChunkRequest};
use bigfs_proto::tls::TlsMaterial;
use bigfs_proto::{ChunkId, MAX_MESSAGE_SIZE, channel_with};
use bigfs_tests::{Cluster, certs, deadline, free_port, random_bytes, write_file};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;
use tonic::transport::Channel;

/// Time limit (see `bigfs_tests::deadline`): three refused pushes each
/// spend the retry policy (~4 s), plus a cluster start.
const DEADLINE: Duration = Duration::from_secs(120);

/// A TLS server presenting a valid certificate of the cluster CA, counting
/// what reaches it.
struct Squatter {
    addr: String,
    connections: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

async fn squatter(tls_dir: &Path) -> Squatter {
    let (chain, key) = TlsMaterial::load(tls_dir)
        .and_then(|m| m.cert_and_key())
        .expect("squatter's certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let s = Squatter {
        addr: listener.local_addr().expect("addr").to_string(),
        connections: Arc::default(),
        handshakes: Arc::default(),
        bytes: Arc::default(),
    };
    let (connections, handshakes, bytes) =
        (s.connections.clone(), s.handshakes.clone(), s.bytes.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, handshakes, bytes) =
                (acceptor.clone(), handshakes.clone(), bytes.clone());
            tokio::spawn(async move {
                // A TLS 1.3 server finishes its handshake only once the
                // client accepted its certificate.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                handshakes.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    bytes.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    s
}

fn copy(id: ChunkId, node_id: &str, address: &str) -> ReplicateChunkRequest {
    ReplicateChunkRequest {
        id: id.to_vec(),
        target_node_id: node_id.to_string(),
        target_address: address.to_string(),
    }
}

async fn holds(c: &Cluster, i: usize, id: ChunkId) -> bool {
    let mut s = bigfs_proto::storage_client(&c.nodes[i].addr).expect("client");
    s.has_chunks(HasChunksRequest {
        ids: vec![id.to_vec()],
    })
    .await
    .expect("HasChunks")
    .into_inner()
    .present
    .first()
    .copied()
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_chunk_to_an_unregistered_address_is_refused() {
    let _deadline = deadline(DEADLINE);
    // One copy per chunk: the repair worker leaves the other nodes alone.
    let c = Cluster::start_with(3, "replication = 1").await;
    let client = c.client().await;
    write_file(&client, "/one", &random_bytes(200_000, 11)).await;
    let (src, file) = (0..3)
        .find_map(|i| c.chunk_files(i).first().map(|f| (i, f.clone())))
        .expect("the chunk on some node");
    let id = ChunkId::from_hex(&file.file_name().unwrap().to_string_lossy()).expect("chunk id");
    let target = (src + 1) % 3;
    let bystander = (src + 2) % 3;
    let target_id = c.nodes[target].id.clone();
    assert!(!holds(&c, target, id).await);

    // ReplicateChunk is the metadata service's to call: call as meta:.
    c.issue("meta:replica-test", "meta-caller");
    let mut source: StorageClient<Channel> = StorageClient::new(
        channel_with(
            &c.nodes[src].addr,
            Some(certs::client_tls(&c.tls_dir("meta-caller"))),
        )
        .expect("channel"),
    )
    .max_decoding_message_size(MAX_MESSAGE_SIZE);

    // (a) Nothing listens at the address.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let e = source
        .replicate_chunk(copy(id, &target_id, &nowhere))
        .await
        .expect_err("a push to an address where nothing listens");
    assert!(
        e.message().contains(&nowhere) && e.message().contains("refused"),
        "{e:?}"
    );

    // (b) A TLS server with a valid client: certificate of the same CA,
    // claiming to be the target: refused at the handshake, before any
    // request byte.
    c.issue("client:squatter", "squatter");
    let sq = squatter(&c.tls_dir("squatter")).await;
    let e = source
        .replicate_chunk(copy(id, &target_id, &sq.addr))
        .await
        .expect_err("a push to a client: certificate holder");
    assert!(
        e.message()
            .contains(&format!("names client:squatter, not node:{target_id}")),
        "{e:?}"
    );
    assert!(sq.connections.load(Ordering::SeqCst) > 0, "never dialled");
    assert_eq!(
        sq.handshakes.load(Ordering::SeqCst),
        0,
        "handshake finished"
    );
    assert_eq!(
        sq.bytes.load(Ordering::SeqCst),
        0,
        "data reached the squatter"
    );

    // (c) A real node, but not the one named.
    let e = source
        .replicate_chunk(copy(id, &target_id, &c.nodes[bystander].addr))
        .await
        .expect_err("a push to another node's address");
    let bystander_id = &c.nodes[bystander].id;
    assert!(
        e.message()
            .contains(&format!("names node:{bystander_id}, not node:{target_id}")),
        "{e:?}"
    );
    assert!(!holds(&c, bystander, id).await, "the bystander got a copy");
    assert!(!holds(&c, target, id).await);

    // The registered node at its own address gets its copy.
    source
        .replicate_chunk(copy(id, &target_id, &c.nodes[target].addr))
        .await
        .expect("a push to the registered node");
    assert!(holds(&c, target, id).await, "the target has no copy");
}
