//! Oversize and malformed requests to the running metadata service and
//! storage node are refused with the right code, the daemons survive, and
//! a file written before reads back unchanged.

use std::time::Duration;

use bigfs_proto::pb;
use bigfs_tests::{Cluster, deadline, random_bytes, read_file, write_file};
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("request should have been refused");
    (s.code(), s.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_requests_are_refused_and_the_daemons_survive() {
    let _deadline = deadline(Duration::from_secs(240));
    let c = Cluster::start(1).await;
    let client = c.client().await;
    let data = random_bytes(3 << 20, 11);
    write_file(&client, "/before", &data).await;
    let mut md = bigfs_proto::metadata_client(&c.meta_addr).unwrap();

    // A 2 MiB namespace request: past MAX_REQUEST_SIZE.
    let (code_, msg) = code(
        md.lookup(pb::LookupRequest {
            parent: 1,
            name: "x".repeat(2 << 20),
        })
        .await,
    );
    assert_eq!(code_, Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("MAX_REQUEST_SIZE"), "{msg}");

    // A packed KeepInodes list past MAX_KEEP_INODES (it fits the message).
    let (code_, msg) = code(
        md.keep_inodes(pb::KeepInodesRequest {
            inos: vec![1; bigfs_proto::MAX_KEEP_INODES + 1],
            lease_ms: 1,
        })
        .await,
    );
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("MAX_KEEP_INODES"), "{msg}");

    // ReadDir with limit u32::MAX on a directory larger than a page.
    let dir = client.mkdir(1, "big", 0o755).await.unwrap().ino;
    let page = 10_000usize;
    let names: Vec<usize> = (0..page + 20).collect();
    for batch in names.chunks(64) {
        let mut tasks = tokio::task::JoinSet::new();
        for &n in batch {
            let client = client.clone();
            tasks.spawn(async move { client.mkdir(dir, &format!("d{n}"), 0o755).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().expect("mkdir");
        }
    }
    let reply = md
        .read_dir(pb::ReadDirRequest {
            ino: dir,
            offset: 0,
            limit: u32::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.entries.len(), page);
    assert!(!reply.eof);

    // Xattrs past MAX_XATTRS_PER_INODE.
    let ino = client.resolve("/before").await.unwrap().ino;
    let mut refused = None;
    for n in 0..1100 {
        let r = md
            .set_xattr(pb::SetXattrRequest {
                ino,
                name: format!("user.x{n}"),
                value: vec![],
                flags: 0,
                id: None,
            })
            .await;
        if let Err(s) = r {
            refused = Some((n, s));
            break;
        }
    }
    let (n, s) = refused.expect("xattrs were never refused");
    assert_eq!(n, 1024);
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert!(
        s.message().contains("MAX_XATTRS_PER_INODE"),
        "{}",
        s.message()
    );

    // A node id with a newline and a quote.
    let (code_, msg) = code(
        md.register_node(pb::RegisterNodeRequest {
            node_id: "evil\"}\nbigfs_fake 1".into(),
            address: "127.0.0.1:1".into(),
            capacity: 1 << 40,
            ..Default::default()
        })
        .await,
    );
    // Over TLS this test calls as admin:tests, which may not register a
    // node at all; the node id check itself is unit-tested in validate.rs.
    assert!(
        matches!(code_, Code::InvalidArgument | Code::PermissionDenied),
        "{code_:?}: {msg}"
    );

    // ReportFailure: a long operation is refused, a long error is cut.
    let node = c.nodes[0].id.clone();
    let (code_, msg) = code(
        md.report_failure(pb::ReportFailureRequest {
            node_id: node.clone(),
            operation: "o".repeat(1000),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code_, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("MAX_FAILURE_OPERATION_LEN"), "{msg}");
    md.report_failure(pb::ReportFailureRequest {
        node_id: node.clone(),
        operation: "read\nfake".into(),
        error: "e".repeat(500_000),
        reporter: "bounds-test".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, failures) = c.admin_get(&c.meta_admin_addr, "/failures").unwrap();
    assert!(failures.len() < 100_000, "{} bytes", failures.len());
    let (_, metrics) = c.admin_get(&c.meta_admin_addr, "/metrics").unwrap();
    assert!(!metrics.lines().any(|l| l.starts_with("fake")), "{metrics}");

    // Storage: a non-chunk call past MAX_REQUEST_SIZE, a chunk past the
    // chunk limit.
    let mut st = bigfs_proto::storage_client(&c.nodes[0].addr).unwrap();
    let (code_, msg) = code(
        st.get_chunk(pb::GetChunkRequest {
            id: vec![0; 2 << 20],
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code_, Code::ResourceExhausted, "{msg}");
    // The node answers as soon as the length prefix is read; the client,
    // still sending, may see the stream reset instead of the status.
    let r = st
        .put_chunk(pb::PutChunkRequest {
            id: vec![0; 32],
            data: vec![0; bigfs_proto::MAX_MESSAGE_SIZE + 1].into(),
            ..Default::default()
        })
        .await;
    assert!(r.is_err(), "an oversize chunk was accepted");

    // Both daemons still serve, and the file is unchanged.
    assert!(c.metadata_running());
    assert!(c.node_running(0));
    c.wait_nodes_up(1).await;
    assert_eq!(read_file(&client, "/before").await, data);
}
