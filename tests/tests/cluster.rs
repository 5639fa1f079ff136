//! The cluster core end to end: real metadata and storage processes on
//! loopback ports, the `bigfs` CLI and the client library.

use std::time::Duration;

use bigfs_proto::{ChunkId, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, pb};
use bigfs_tests::{
    Cluster, deadline, random_bytes, read_file, sha256_file, sha256_hex, write_file,
};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 18 s on a loaded 2-core machine; the limit is 5x that.
const DEADLINE: Duration = Duration::from_secs(90);

const CHUNK: usize = DEFAULT_CHUNK_SIZE as usize;

fn replica_nodes(stat_json: &str) -> Vec<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(stat_json).expect("stat json");
    v["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| {
            c["replicas"]
                .as_array()
                .expect("replicas")
                .iter()
                .map(|r| r.as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_mib_file_put_and_got_back_is_identical_with_three_distinct_replicas() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let src = c.dir.path().join("big.bin");
    std::fs::write(&src, random_bytes(200 << 20, 1)).unwrap();
    c.cli_ok(&["put", src.to_str().unwrap(), "/big.bin"]);
    let dst = c.dir.path().join("big.out");
    c.cli_ok(&["get", "/big.bin", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));

    // Replicas become Available on three distinct nodes (the put answers at
    // quorum; the third copy follows in the background).
    c.wait_for(Duration::from_secs(30), "3 replicas per chunk", || async {
        let stat = c.cli_ok(&["--json", "stat", "/big.bin"]);
        let chunks = replica_nodes(&stat);
        chunks.len() == 50
            && chunks.iter().all(|r| {
                let mut d = r.clone();
                d.sort();
                d.dedup();
                d.len() == 3
            })
    })
    .await;
    let s = c.status().await;
    assert_eq!(s.replicas_pending, 0);
    assert_eq!(s.under_replicated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_sizes_round_trip_exactly() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    for (i, len) in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17]
        .into_iter()
        .enumerate()
    {
        let data = random_bytes(len, 100 + i as u64);
        let src = c.dir.path().join(format!("f{i}"));
        std::fs::write(&src, &data).unwrap();
        let remote = format!("/f{i}");
        c.cli_ok(&["put", src.to_str().unwrap(), &remote]);
        let dst = c.dir.path().join(format!("f{i}.out"));
        c.cli_ok(&["get", &remote, dst.to_str().unwrap()]);
        let got = std::fs::read(&dst).unwrap();
        assert_eq!(got.len(), len, "size of {len}-byte file");
        assert!(got == data, "content of {len}-byte file");
        let stat: serde_json::Value =
            serde_json::from_str(&c.cli_ok(&["--json", "stat", &remote])).unwrap();
        assert_eq!(stat["size"].as_u64(), Some(len as u64));
        assert_eq!(
            stat["chunks"].as_array().unwrap().len(),
            len.div_ceil(CHUNK)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_at_an_offset_changes_only_those_bytes() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let client = c.client().await;
    let mut data = random_bytes(3 * CHUNK + 1000, 7);
    write_file(&client, "/f", &data).await;

    // Overwrite across a chunk boundary, from a fresh handle.
    let patch = random_bytes(10_000, 8);
    let at = CHUNK - 5_000;
    let h = client
        .open(client.resolve("/f").await.unwrap().ino)
        .await
        .unwrap();
    h.write(at as u64, &patch).await.unwrap();
    // The writer sees its own unflushed bytes.
    assert_eq!(h.read(at as u64, patch.len()).await.unwrap(), patch);
    h.flush().await.unwrap();
    data[at..at + patch.len()].copy_from_slice(&patch);

    // Extend past the end with a gap that reads as zeros.
    let tail = b"tail";
    let tail_at = data.len() + 5;
    h.write(tail_at as u64, tail).await.unwrap();
    h.flush().await.unwrap();
    data.resize(tail_at, 0);
    data.extend_from_slice(tail);

    let got = read_file(&client, "/f").await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "file differs after offset writes");

    // Truncate down into the middle of a chunk, then grow again: the cut
    // bytes read back as zeros.
    let h = client
        .open(client.resolve("/f").await.unwrap().ino)
        .await
        .unwrap();
    h.truncate(CHUNK as u64 + 10).await.unwrap();
    h.truncate(CHUNK as u64 + 20).await.unwrap();
    let got = read_file(&client, "/f").await;
    let mut want = data[..CHUNK + 10].to_vec();
    want.resize(CHUNK + 20, 0);
    assert!(got == want, "truncate shrink then grow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_content_put_twice_is_stored_once() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let src = c.dir.path().join("dup");
    std::fs::write(&src, random_bytes(5 * CHUNK + 3, 9)).unwrap();
    c.cli_ok(&["put", src.to_str().unwrap(), "/a"]);
    let before = c.status().await.chunks;
    assert_eq!(before, 6);
    c.cli_ok(&["put", src.to_str().unwrap(), "/b"]);
    c.cli_ok(&["mkdir", "/d"]);
    c.cli_ok(&["put", src.to_str().unwrap(), "/d"]);
    assert_eq!(
        c.status().await.chunks,
        before,
        "no new chunk for identical content"
    );
    let disk: usize = (0..3).map(|i| c.chunk_files(i).len()).sum();
    assert!(
        disk <= 18,
        "at most 3 copies of 6 chunks on disk, found {disk}"
    );
    let out = c.dir.path().join("dup.out");
    c.cli_ok(&["get", "/d/dup", out.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_storage_node_killed_every_file_reads_back_and_puts_still_work() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(3).await;
    let client = c.client().await;
    let mut files = Vec::new();
    for i in 0..4 {
        let data = random_bytes(2 * CHUNK + i * 1000 + 1, 20 + i as u64);
        let path = format!("/k{i}");
        write_file(&client, &path, &data).await;
        files.push((path, sha256_hex(&data)));
    }
    // Let the third copies land so any node can die.
    c.wait_for(Duration::from_secs(30), "full replication", || async {
        let s = c.status().await;
        s.replicas_pending == 0 && s.under_replicated == 0
    })
    .await;
    c.kill_node(0);
    let fresh = c.client().await; // no cache
    for (path, sum) in &files {
        assert_eq!(
            &sha256_hex(&read_file(&fresh, path).await),
            sum,
            "{path} after a node died"
        );
    }
    let data = random_bytes(3 * CHUNK, 30);
    write_file(&fresh, "/after", &data).await;
    let reader = c.client().await;
    assert_eq!(
        sha256_hex(&read_file(&reader, "/after").await),
        sha256_hex(&data)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metadata_server_killed_and_restarted_keeps_every_answered_mutation() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(3).await;
    let client = c.client().await;
    c.cli_ok(&["mkdir", "-p", "/x/y"]);
    let data = random_bytes(CHUNK + 123, 40);
    write_file(&client, "/x/y/file", &data).await;
    c.cli_ok(&["mv", "/x/y/file", "/x/renamed"]);
    for i in 0..50 {
        client
            .create_file(1, &format!("n{i}"), 0o600, true)
            .await
            .unwrap();
    }
    client.unlink(1, "n7").await.unwrap();

    c.kill_metadata();
    c.restart_metadata().await;
    c.wait_nodes_up(3).await;

    let client = c.client().await;
    assert_eq!(
        sha256_hex(&read_file(&client, "/x/renamed").await),
        sha256_hex(&data)
    );
    assert!(client.resolve("/x/y/file").await.is_err());
    let names: Vec<String> = client
        .readdir_all(1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for i in 0..50 {
        assert_eq!(names.contains(&format!("n{i}")), i != 7, "n{i}");
    }
    // It keeps serving writes after the restart.
    write_file(&client, "/x/new", b"after restart").await;
    assert_eq!(read_file(&client, "/x/new").await, b"after restart");
}

/// Waits for the copies of `id` on all three nodes, then flips a byte in
/// the copies on `nodes`.
async fn corrupt_copies(c: &Cluster, id: ChunkId, nodes: std::ops::Range<usize>) {
    c.wait_for(Duration::from_secs(30), "3 copies on disk", || async {
        (0..3).all(|i| c.chunk_files(i).iter().any(|p| p.ends_with(id.to_hex())))
    })
    .await;
    for i in nodes {
        let p = c
            .chunk_files(i)
            .into_iter()
            .find(|p| p.ends_with(id.to_hex()))
            .unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_chunk_file_is_detected_and_served_from_another_replica() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let client = c.client().await;
    let data = random_bytes(CHUNK / 2, 50);
    write_file(&client, "/c", &data).await;
    // Flip a byte in two of the three copies.
    corrupt_copies(&c, ChunkId::of(&data), 0..2).await;
    for _ in 0..3 {
        let fresh = c.client().await;
        assert!(
            read_file(&fresh, "/c").await == data,
            "read returned corrupt bytes"
        );
    }
}

/// Nodes serve client reads without hashing (the client checks every
/// byte); a copy the client finds corrupt is still quarantined, because the
/// client then asks that node to read it with its own check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_copies_a_client_finds_are_quarantined_and_the_read_fails() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let client = c.client().await;
    let data = random_bytes(CHUNK / 2, 51);
    write_file(&client, "/rotten", &data).await;
    let id = ChunkId::of(&data);
    corrupt_copies(&c, id, 0..3).await;
    let fresh = c.client().await;
    let attr = fresh.resolve("/rotten").await.unwrap();
    let h = fresh.open_attr(&attr).unwrap();
    let err = h.read(0, CHUNK).await.expect_err("every copy is corrupt");
    assert!(err.to_string().contains("no replica could serve"), "{err}");
    c.wait_for(
        Duration::from_secs(30),
        "every corrupt copy quarantined",
        || async {
            (0..3).all(|i| {
                let in_quarantine = std::fs::read_dir(c.nodes[i].data_dir.join("quarantine"))
                    .map(|d| {
                        d.flatten()
                            .any(|f| f.file_name().to_string_lossy().starts_with(&id.to_hex()))
                    })
                    .unwrap_or(false);
                in_quarantine && !c.chunk_files(i).iter().any(|p| p.ends_with(id.to_hex()))
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_status_and_servers_keep_serving() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let mut node = bigfs_proto::storage_client(&c.nodes[0].addr).unwrap();
    let mut meta = bigfs_proto::metadata_client(&c.meta_addr).unwrap();

    // A chunk whose bytes do not match its id: refused, nothing registered.
    let data = b"some bytes".to_vec();
    let wrong = ChunkId::of(b"other bytes");
    let err = node
        .put_chunk(pb::PutChunkRequest {
            id: wrong.to_vec(),
            data: data.clone().into(),
            is_replica: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().to_lowercase().contains("hash") || err.message().contains("match"),
        "{err:?}"
    );
    assert_eq!(c.status().await.chunks, 0);
    assert!(c.chunk_files(0).is_empty());

    // Ids of the wrong length, unknown ids.
    let err = node
        .get_chunk(pb::GetChunkRequest {
            id: vec![1, 2, 3],
            offset: 0,
            len: 0,
            caller_verifies: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = node
        .get_chunk(pb::GetChunkRequest {
            id: ChunkId::of(b"nope").to_vec(),
            offset: 0,
            len: 0,
            caller_verifies: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // An oversize chunk.
    let big = vec![0u8; MAX_CHUNK_SIZE as usize + 1];
    let err = node
        .put_chunk(pb::PutChunkRequest {
            id: ChunkId::of(&big).to_vec(),
            data: big.into(),
            is_replica: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );

    // Bad names.
    for (name, code) in [
        ("", tonic::Code::InvalidArgument),
        ("..", tonic::Code::InvalidArgument),
        ("a/b", tonic::Code::InvalidArgument),
        (&"n".repeat(256)[..], tonic::Code::InvalidArgument),
    ] {
        let err = meta
            .create(pb::CreateRequest {
                parent: 1,
                name: name.to_string(),
                kind: pb::FileKind::File as i32,
                mode: 0o644,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "name {name:?}: {err:?}");
    }
    let err = meta
        .create(pb::CreateRequest {
            parent: 1,
            name: "n".repeat(256),
            kind: 1,
            mode: 0o644,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        bigfs_proto::errno_of(&err),
        bigfs_proto::errno::ENAMETOOLONG
    );

    // Missing inodes.
    let err = meta
        .get_attr(pb::InodeRequest { ino: 999_999 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = meta
        .create(pb::CreateRequest {
            parent: 999_999,
            name: "x".into(),
            kind: 1,
            mode: 0o644,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = meta
        .get_layout(pb::InodeRequest { ino: 424_242 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A layout commit naming a chunk nobody stored is refused.
    let f = meta
        .create(pb::CreateRequest {
            parent: 1,
            name: "f".into(),
            kind: 1,
            mode: 0o644,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attr
        .unwrap();
    let err = meta
        .commit_layout(pb::CommitLayoutRequest {
            ino: f.ino,
            chunks: vec![pb::ChunkRef {
                index: 0,
                id: ChunkId::of(b"ghost").to_vec(),
                len: 5,
            }],
            size: 5,
            mtime: None,
            inline_data: None,
            id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // The CLI says what went wrong and exits non-zero.
    let out = c.cli(&["get", "/does-not-exist", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());

    // Everyone still serves.
    let client = c.client().await;
    write_file(&client, "/ok", b"still fine").await;
    assert_eq!(read_file(&client, "/ok").await, b"still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_lists_moves_and_removes() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let src = c.dir.path().join("s");
    std::fs::write(&src, b"hello").unwrap();
    c.cli_ok(&["mkdir", "-p", "/a/b"]);
    c.cli_ok(&["put", src.to_str().unwrap(), "/a/b/s"]);
    assert_eq!(c.cli_ok(&["ls", "/a/b"]).trim(), "s");
    c.cli_ok(&["mv", "/a/b/s", "/a/t"]);
    assert_eq!(c.cli_ok(&["cat", "/a/t"]), "hello");
    let out = c.cli(&["rm", "/a"]);
    assert_eq!(out.status.code(), Some(1), "rm of a directory needs -r");
    c.cli_ok(&["rm", "-r", "/a"]);
    assert_eq!(c.cli_ok(&["ls", "/"]).trim(), "");
    let status = c.cli_ok(&["status"]);
    assert!(
        status.contains("node-1") && status.contains("up"),
        "{status}"
    );
    let out = std::process::Command::new(bigfs_tests::bin("bigfs"))
        .args([
            "--insecure",
            "--metadata",
            &format!("127.0.0.1:{}", bigfs_tests::free_port()),
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "unreachable metadata exits 3");
}
