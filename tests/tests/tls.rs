//! Mutual TLS and roles, with real processes: who is refused at the
//! handshake, which role may call which RPC, a node acting only as itself,
//! revocation (of callers by servers, and of servers by callers), and
//! daemons refusing to start without TLS material.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bigfs_proto::pb::{self, admin_client::AdminClient, metadata_client::MetadataClient};
use bigfs_proto::pb::{ops_client::OpsClient, storage_client::StorageClient};
use bigfs_proto::{ChunkId, channel_with};
use bigfs_tests::{Cluster, TrackedChild, bin, certs, deadline, free_port};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const DEADLINE: Duration = Duration::from_secs(120);

fn meta_as(c: &Cluster, tls: Option<ClientTlsConfig>) -> MetadataClient<Channel> {
    MetadataClient::new(channel_with(&c.meta_addr, tls).expect("channel"))
}

fn storage_as(addr: &str, tls: Option<ClientTlsConfig>) -> StorageClient<Channel> {
    StorageClient::new(channel_with(addr, tls).expect("channel"))
}

/// The TLS setting of process `name`'s directory in the cluster.
fn identity(c: &Cluster, name: &str) -> Option<ClientTlsConfig> {
    Some(certs::client_tls(&c.tls_dir(name)))
}

fn ca_pem(c: &Cluster) -> String {
    std::fs::read_to_string(c.ca_dir().join("ca.pem")).expect("ca.pem")
}

fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) {
    match r {
        Err(s) if s.code() == Code::PermissionDenied => {}
        other => panic!("{what}: expected PermissionDenied, got {other:?}"),
    }
}

fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) {
    assert!(r.is_err(), "{what}: expected a refusal, got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_cluster_certificate_are_refused_on_every_port() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(1).await;
    let node = c.nodes[0].addr.clone();
    let trust_only = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem(&c)));

    // A certificate from another CA, presented to a client that trusts the
    // cluster's servers.
    let other = tempfile::tempdir().expect("tempdir");
    bigfs_proto::certs::init_ca(&other.path().join("ca"), "other").expect("other CA");
    certs::issue_into(
        &other.path().join("ca"),
        "admin:mallory",
        &other.path().join("m"),
    );
    std::fs::write(other.path().join("m/ca.pem"), ca_pem(&c)).expect("trust the cluster");
    let foreign = Some(certs::client_tls(&other.path().join("m")));

    for (who, tls) in [
        ("plaintext", None),
        ("no client certificate", Some(trust_only)),
        ("another CA's certificate", foreign),
    ] {
        refused(
            &format!("{who}: metadata Status"),
            meta_as(&c, tls.clone()).status(pb::Empty {}).await,
        );
        refused(
            &format!("{who}: storage HasChunks"),
            storage_as(&node, tls)
                .has_chunks(pb::HasChunksRequest { ids: vec![] })
                .await,
        );
    }
    // The cluster's own admin certificate (the test process's) passes.
    c.status().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_acts_only_for_its_own_node() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(2).await;
    let as_node1 = identity(&c, "node-1");
    let mut m = meta_as(&c, as_node1.clone());

    // Its own heartbeat passes: the certificate itself is good.
    m.heartbeat(pb::HeartbeatRequest {
        node_id: "node-1".into(),
        ..Default::default()
    })
    .await
    .expect("node-1 heartbeats as itself");

    denied(
        "register as node-2",
        m.register_node(pb::RegisterNodeRequest {
            node_id: "node-2".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await,
    );
    denied(
        "heartbeat as node-2",
        m.heartbeat(pb::HeartbeatRequest {
            node_id: "node-2".into(),
            ..Default::default()
        })
        .await,
    );
    let id = ChunkId::of(b"never stored on node-1");
    denied(
        "confirm node-2's replica",
        m.confirm_replica(pb::ConfirmReplicaRequest {
            id: id.to_vec(),
            node_id: "node-2".into(),
            ..Default::default()
        })
        .await,
    );
    denied(
        "register a chunk as node-2",
        m.register_chunk(pb::RegisterChunkRequest {
            id: id.to_vec(),
            node_id: "node-2".into(),
            len: 1,
            ..Default::default()
        })
        .await,
    );
    denied(
        "report node-2's copy lost as node-2",
        m.report_failure(pb::ReportFailureRequest {
            node_id: "node-2".into(),
            chunk_id: id.to_vec(),
            operation: "scrub".into(),
            reporter: "node-2".into(),
            ..Default::default()
        })
        .await,
    );
    denied(
        "namespace Lookup",
        m.lookup(pb::LookupRequest {
            parent: bigfs_proto::ROOT_INO,
            name: "x".into(),
        })
        .await,
    );
    let ch = channel_with(&c.meta_addr, as_node1.clone()).expect("channel");
    denied(
        "Admin Nodes",
        AdminClient::new(ch.clone()).nodes(pb::Empty {}).await,
    );
    denied(
        "Ops Fsck",
        OpsClient::new(ch).fsck(pb::FsckRequest::default()).await,
    );
    // On a peer: data moves, but deletions and copy orders are the
    // metadata service's alone.
    let mut peer = storage_as(&c.nodes[1].addr, as_node1);
    peer.has_chunks(pb::HasChunksRequest { ids: vec![] })
        .await
        .expect("a node may ask a peer what it holds");
    denied(
        "DeleteChunk on a peer",
        peer.delete_chunk(pb::DeleteChunkRequest { id: id.to_vec() })
            .await,
    );
    denied(
        "ReplicateChunk on a peer",
        peer.replicate_chunk(pb::ReplicateChunkRequest {
            id: id.to_vec(),
            target_node_id: "node-1".into(),
            target_address: "127.0.0.1:1".into(),
        })
        .await,
    );
    // Both nodes are still up and listed at their own addresses.
    let s = c.status().await;
    for n in &c.nodes {
        assert!(
            s.nodes
                .iter()
                .any(|x| x.node_id == n.id && x.address == n.addr),
            "{} lost its registration: {s:?}",
            n.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_call_node_or_admin_rpcs() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(1).await;
    c.issue("client:alice", "alice");
    let alice = identity(&c, "alice");
    let mut m = meta_as(&c, alice.clone());
    m.create(pb::CreateRequest {
        parent: bigfs_proto::ROOT_INO,
        name: "alices-file".into(),
        kind: pb::FileKind::File as i32,
        mode: 0o644,
        ..Default::default()
    })
    .await
    .expect("a client uses the namespace");

    denied(
        "RegisterNode",
        m.register_node(pb::RegisterNodeRequest {
            node_id: "node-1".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await,
    );
    denied(
        "Heartbeat",
        m.heartbeat(pb::HeartbeatRequest {
            node_id: "node-1".into(),
            ..Default::default()
        })
        .await,
    );
    denied(
        "ConfirmReplica",
        m.confirm_replica(pb::ConfirmReplicaRequest {
            id: ChunkId::of(b"x").to_vec(),
            node_id: "node-1".into(),
            ..Default::default()
        })
        .await,
    );
    denied(
        "a client reporting a node's own loss",
        m.report_failure(pb::ReportFailureRequest {
            node_id: "node-1".into(),
            chunk_id: ChunkId::of(b"x").to_vec(),
            operation: "scrub".into(),
            reporter: "node-1".into(),
            ..Default::default()
        })
        .await,
    );
    let ch = channel_with(&c.meta_addr, alice.clone()).expect("channel");
    denied(
        "Admin Decommission",
        AdminClient::new(ch.clone())
            .decommission(pb::DecommissionRequest {
                node_id: "node-1".into(),
                ..Default::default()
            })
            .await,
    );
    denied(
        "Ops Fsck",
        OpsClient::new(ch).fsck(pb::FsckRequest::default()).await,
    );
    denied(
        "DeleteChunk",
        storage_as(&c.nodes[0].addr, alice)
            .delete_chunk(pb::DeleteChunkRequest {
                id: ChunkId::of(b"x").to_vec(),
            })
            .await,
    );
    assert_eq!(
        c.cli_ok(&["ls", "/"]).trim(),
        "alices-file",
        "the CLI's admin certificate still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_once_the_daemon_restarts() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(0).await;
    c.issue("client:bob", "bob");
    let bob = identity(&c, "bob");
    meta_as(&c, bob.clone())
        .status(pb::Empty {})
        .await
        .expect("bob before revocation");

    let ca = c.ca_dir().display().to_string();
    let out = c.cli_ok(&["admin", "cert", "revoke", "--ca", &ca, "client:bob"]);
    assert!(out.contains("1 serial"), "{out}");
    let list = c.cli_ok(&["admin", "cert", "list", "--ca", &ca]);
    assert!(
        list.lines()
            .any(|l| l.contains("client:bob") && l.contains("revoked")),
        "{list}"
    );
    std::fs::copy(
        c.ca_dir().join("revoked.txt"),
        c.tls_dir("meta").join("revoked.txt"),
    )
    .expect("install revoked.txt");
    c.restart_metadata().await;

    let err = meta_as(&c, bob)
        .status(pb::Empty {})
        .await
        .expect_err("bob after revocation");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{err:?}");
    c.status().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_refuse_servers_whose_certificates_they_hold_revoked() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(1).await;
    let client = c.client().await;
    bigfs_tests::write_file(&client, "/f", b"held by node-1 alone").await;
    let ca = c.ca_dir().display().to_string();
    let install = || {
        std::fs::copy(
            c.ca_dir().join("revoked.txt"),
            c.tls_dir("cli").join("revoked.txt"),
        )
        .expect("install revoked.txt");
    };
    let failing = |args: &[&str]| {
        let out = c.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "bigfs {args:?} passed: {stderr}");
        stderr
    };

    // The storage node's certificate is revoked in the CLI's TLS directory
    // (the node itself runs on, unaware): the CLI still talks to the
    // metadata service, but refuses the node at the handshake.
    c.cli_ok(&["admin", "cert", "revoke", "--ca", &ca, "node:node-1"]);
    install();
    c.cli_ok(&["status"]);
    let err = failing(&["cat", "/f"]);
    assert!(
        err.contains("node:node-1") && err.contains("is revoked"),
        "{err}"
    );

    // The metadata service's too: every call fails, naming it.
    c.cli_ok(&["admin", "cert", "revoke", "--ca", &ca, "meta:meta"]);
    install();
    let err = failing(&["status"]);
    assert!(
        err.contains("meta:meta") && err.contains("is revoked"),
        "{err}"
    );

    // The cluster is fine: only this caller refuses them.
    c.status().await;
    assert_eq!(
        bigfs_tests::read_file(&client, "/f").await,
        b"held by node-1 alone"
    );
}

/// Runs `binary args` to its end; its exit code and stderr.
fn run(binary: &str, args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(bin(binary))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("BIGFS_TLS_DIR")
        .env_remove("BIGFS_INSECURE")
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn daemons_without_tls_material_or_insecure_refuse_to_start() {
    let _deadline = deadline(DEADLINE);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let mnt = mnt.display().to_string();
    for (binary, args) in [
        (
            "bigfs-metadata",
            vec![
                "--data-dir",
                "meta",
                "--listen",
                &listen,
                "--admin-listen",
                "",
            ],
        ),
        (
            "bigfs-storage",
            vec![
                "--data-dir",
                "node",
                "--listen",
                &listen,
                "--admin-listen",
                "",
            ],
        ),
        (
            "bigfs-mount",
            vec![&mnt, "--metadata", &listen, "--foreground"],
        ),
        ("bigfs", vec!["--metadata", &listen, "status"]),
    ] {
        let (code, stderr) = run(binary, &args, d);
        assert!(
            code.is_some_and(|c| c != 0),
            "{binary} started without TLS: {stderr}"
        );
        assert!(
            stderr.contains("--tls-dir") && stderr.contains("--insecure"),
            "{binary} does not say what to pass: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_daemon_warns_at_start_and_serves_plaintext() {
    let _deadline = deadline(DEADLINE);
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("metadata.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let _meta = TrackedChild::spawn(
        Command::new(bin("bigfs-metadata"))
            .args(["--listen", &listen, "--admin-listen", "", "--insecure"])
            .arg("--data-dir")
            .arg(dir.path().join("meta"))
            .env("RUST_LOG", "info")
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file),
    );
    let mut ok = false;
    for _ in 0..100 {
        let (code, _) = run(
            "bigfs",
            &["--insecure", "--metadata", &listen, "status"],
            dir.path(),
        );
        if code == Some(0) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "an --insecure CLI cannot reach an --insecure daemon");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("WARN") && text.contains("--insecure"),
        "no warning at start: {text}"
    );
}
