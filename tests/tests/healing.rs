//! Self-healing end to end (issue 4): real metadata and storage processes,
//! nodes killed with SIGKILL, bytes flipped on disk, files deleted by the
//! thousand; every file is checked byte for byte by hash.
//!
//! Chunks are 64 KiB and the healing timers short so each test runs in
//! seconds on two cores.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bigfs_client::Client;
use bigfs_proto::{ChunkId, pb};
use bigfs_tests::{Cluster, deadline, random_bytes, read_file, sha256_hex, write_file};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 33 s on a loaded 2-core machine; the limit is ~5x that.
const DEADLINE: Duration = Duration::from_secs(180);

/// Metadata settings: 64 KiB chunks, a 200 ms healing tick, repairs 0.5 s
/// after a node is Down, garbage collected 1 s after the last reference (3 s
/// after the upload for chunks never committed). No trash: deleted files
/// are collected at once.
const HEAL: &str = r#"
chunk_size = 65536
trash_retention_ms = 0
[heal]
interval_ms = 200
repair_delay_ms = 500
pending_timeout_ms = 3000
gc_grace_ms = 3000
gc_release_grace_ms = 1000
[heal.retry]
max_retries = 6
base_delay_ms = 200
max_delay_ms = 2000
multiplier = 2.0
attempt_timeout_ms = 10000
"#;

/// Files written: path and SHA-256 of the content.
type Files = Vec<(String, String)>;

async fn write_files(client: &Client, prefix: &str, n: usize, size: usize, seed: u64) -> Files {
    let mut out = Vec::new();
    for i in 0..n {
        let data = random_bytes(size + i * 1000, seed * 10_000 + i as u64);
        let path = format!("/{prefix}{i}");
        write_file(client, &path, &data).await;
        out.push((path, sha256_hex(&data)));
    }
    out
}

/// Reads every file with a fresh client (no cache) and compares hashes.
async fn verify(c: &Cluster, files: &Files) {
    let client = c.client().await;
    for (path, hash) in files {
        let got = read_file(&client, path).await;
        assert_eq!(&sha256_hex(&got), hash, "content of {path}");
    }
}

/// The chunks of `path` with their Available replicas, as GetLayout lists
/// them (on any node, Up or not).
async fn layout(c: &Cluster, path: &str) -> Vec<pb::ChunkLocation> {
    let mut m = bigfs_proto::metadata_client(&c.meta_addr).unwrap();
    let attr = m
        .resolve_path(pb::ResolvePathRequest { path: path.into() })
        .await
        .unwrap()
        .into_inner()
        .attr
        .unwrap();
    m.get_layout(pb::InodeRequest { ino: attr.ino })
        .await
        .unwrap()
        .into_inner()
        .chunks
}

fn location_id(l: &pb::ChunkLocation) -> ChunkId {
    ChunkId::from_slice(&l.chunk.as_ref().unwrap().id).unwrap()
}

async fn chunk_ids(c: &Cluster, path: &str) -> Vec<ChunkId> {
    layout(c, path).await.iter().map(location_id).collect()
}

/// Every chunk of `files` has the replication factor's count of Available
/// copies on Up nodes in the chunk table, and each of those copies is a
/// file on that node's disk.
async fn fully_replicated(c: &Cluster, files: &Files) -> bool {
    let s = c.status().await;
    let up: BTreeSet<&str> = s
        .nodes
        .iter()
        .filter(|n| n.state == pb::NodeState::Up as i32)
        .map(|n| n.node_id.as_str())
        .collect();
    for (path, _) in files {
        for l in layout(c, path).await {
            let id = location_id(&l);
            let copies: Vec<usize> = l
                .replicas
                .iter()
                .filter(|r| up.contains(r.node_id.as_str()))
                .filter_map(|r| c.nodes.iter().position(|n| n.id == r.node_id))
                .filter(|&i| chunk_path(c, i, &id).exists())
                .collect();
            if copies.len() < s.default_replication as usize {
                return false;
            }
        }
    }
    true
}

fn chunk_path(c: &Cluster, node: usize, id: &ChunkId) -> PathBuf {
    let hex = id.to_hex();
    c.nodes[node]
        .data_dir
        .join("chunks")
        .join(&hex[..2])
        .join(hex)
}

/// Nodes (indices) whose disk holds `id`.
fn on_disk(c: &Cluster, id: &ChunkId) -> Vec<usize> {
    (0..c.nodes.len())
        .filter(|&i| chunk_path(c, i, id).exists())
        .collect()
}

async fn remove(client: &Client, path: &str) {
    let (parent, name) = client.parent_of(path).await.expect("parent");
    client.unlink(parent, &name).await.expect("unlink");
}

/// The whole repair queue (`bigfs admin queue --all`), by (chunk, target).
fn repair_queue(c: &Cluster) -> BTreeMap<(String, String), serde_json::Value> {
    let q: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["--json", "admin", "queue", "--all"])).unwrap();
    q["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let key = (e["chunk"].as_str().unwrap(), e["target"].as_str().unwrap());
            ((key.0.to_string(), key.1.to_string()), e.clone())
        })
        .collect()
}

/// The queue after a metadata restart holds every entry from before it.
/// A finished entry (completed or failed) cannot change any more: it is the
/// same in every field. An active one may have moved on meanwhile (the
/// worker ran between the snapshot and the kill, and runs after the
/// restart), but it is the same entry (same creation time), not one planned
/// anew, and it has not lost attempts.
fn assert_queue_survived(
    before: &BTreeMap<(String, String), serde_json::Value>,
    after: &BTreeMap<(String, String), serde_json::Value>,
) {
    let finished = |e: &serde_json::Value| e["status"] == "completed" || e["status"] == "failed";
    assert!(
        before.values().any(finished),
        "no finished entry to compare: {before:?}"
    );
    for (key, b) in before {
        let a = after
            .get(key)
            .unwrap_or_else(|| panic!("entry {key:?} lost in the restart: {b}"));
        if finished(b) {
            assert_eq!(a, b, "finished entry {key:?} changed in the restart");
        } else {
            assert_eq!(
                a["created_ms"], b["created_ms"],
                "{key:?} planned anew: {a}"
            );
            assert!(
                a["attempts"].as_u64() >= b["attempts"].as_u64(),
                "{key:?} lost attempts: {b} then {a}"
            );
        }
    }
}

/// Writes and reads files until stopped: the cluster must keep serving
/// while it heals. Answers what it wrote.
fn background_io(
    c: &Cluster,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Files> {
    let meta = c.meta_addr.clone();
    tokio::spawn(async move {
        let client = Client::connect(bigfs_client::ClientConfig {
            metadata: meta,
            ..Default::default()
        })
        .await
        .expect("client");
        let mut files = Files::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let data = random_bytes(150_000, 77_000 + i);
            let path = format!("/{prefix}{i}");
            write_file(&client, &path, &data).await;
            let back = read_file(&client, &path).await;
            assert!(back == data, "{path} read back during healing");
            files.push((path, sha256_hex(&data)));
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        files
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_is_healed_back_to_three_copies_while_io_goes_on_and_across_a_metadata_restart()
 {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start_with(4, HEAL).await;
    let client = c.client().await;
    let mut files = write_files(&client, "f", 24, 200_000, 1).await;
    c.wait_for(Duration::from_secs(30), "initial replication", || {
        c.healed()
    })
    .await;
    let held = c.chunk_files(0).len();
    assert!(held > 0, "node-1 holds chunks");

    let stop = Arc::new(AtomicBool::new(false));
    let io = background_io(&c, "during", stop.clone());
    let killed = Instant::now();
    c.kill_node(0);
    // Let repairs start, then restart the metadata server in the middle.
    c.wait_for(Duration::from_secs(20), "repairs under way", || async {
        c.status().await.repair_completed > 0
    })
    .await;
    let before = repair_queue(&c);
    c.restart_metadata().await;
    assert_queue_survived(&before, &repair_queue(&c));
    c.wait_for(Duration::from_secs(90), "healed after the kill", || {
        c.healed()
    })
    .await;
    eprintln!(
        "healed {held} chunks of the killed node in {:?}",
        killed.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    files.extend(io.await.expect("background io"));
    let s = c.status().await;
    assert_eq!(s.lost, 0);
    assert!(s.repair_completed > 0);
    verify(&c, &files).await;

    // The killed node comes back with copies that were made again
    // elsewhere meanwhile: the surplus goes, from the table and the disks.
    c.start_node(0);
    let mut live = BTreeSet::new();
    for (path, _) in &files {
        live.extend(chunk_ids(&c, path).await);
    }
    c.wait_for(
        Duration::from_secs(60),
        "three copies of every chunk, no more",
        || async { c.healed().await && live.iter().all(|id| on_disk(&c, id).len() == 3) },
    )
    .await;
    verify(&c, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_during_writes_and_deletes_catches_up_and_resurrects_nothing() {
    let _deadline = deadline(DEADLINE);
    // A long repair delay: the stopped node is not replaced, it must catch up.
    let cfg = HEAL.replace("repair_delay_ms = 500", "repair_delay_ms = 600000");
    let mut c = Cluster::start_with(3, &cfg).await;
    let client = c.client().await;
    let old = write_files(&client, "old", 10, 150_000, 2).await;
    c.wait_for(Duration::from_secs(30), "initial replication", || {
        c.healed()
    })
    .await;
    let mut deleted_ids = BTreeSet::new();
    for (p, _) in &old[..5] {
        deleted_ids.extend(chunk_ids(&c, p).await);
    }
    assert!(deleted_ids.iter().all(|id| on_disk(&c, id).contains(&2)));

    c.kill_node(2);
    c.wait_node_down(2).await;
    let new = write_files(&client, "new", 10, 150_000, 3).await;
    for (p, _) in &old[..5] {
        remove(&client, p).await;
    }
    // Collected on the live nodes; node-3 still has its copies.
    c.wait_for(
        Duration::from_secs(30),
        "deleted chunks gone from live nodes",
        || async {
            deleted_ids
                .iter()
                .all(|id| on_disk(&c, id).iter().all(|&n| n == 2))
        },
    )
    .await;

    c.start_node(2);
    c.wait_for(Duration::from_secs(60), "node-3 caught up", || async {
        let s = c.status().await;
        c.healed().await && s.gc_backlog == 0
    })
    .await;
    for id in &deleted_ids {
        assert!(
            on_disk(&c, id).is_empty(),
            "chunk {id} of a deleted file came back"
        );
    }
    // Its queue entries (copies of the new files) ran and completed.
    let q: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["--json", "admin", "queue", "--all", "--node", "node-3"]))
            .unwrap();
    let entries = q["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "copies to node-3 were queued: {q}");
    assert!(
        entries.iter().all(|e| e["status"] == "completed"),
        "all completed: {q}"
    );
    let rec: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["--json", "admin", "recover", "node-3"])).unwrap();
    assert_eq!(rec["failed"], 0, "{rec}");
    for (p, _) in &old[..5] {
        assert!(client.resolve(p).await.is_err(), "{p} is deleted");
    }
    let mut live: Files = old[5..].to_vec();
    live.extend(new);
    verify(&c, &live).await;
    // Every live chunk is on all three nodes.
    for (p, _) in &live {
        for id in chunk_ids(&c, p).await {
            assert_eq!(on_disk(&c, &id).len(), 3, "{p}: chunk {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_killed_one_after_the_other_lose_no_file() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start_with(5, HEAL).await;
    let client = c.client().await;
    let files = write_files(&client, "f", 16, 200_000, 4).await;
    c.wait_for(Duration::from_secs(30), "initial replication", || async {
        c.healed().await && fully_replicated(&c, &files).await
    })
    .await;
    for killed in [0, 1] {
        let held = c.chunk_files(killed).len() as u64;
        assert!(held > 0, "{} holds chunks", c.nodes[killed].id);
        let completed = c.status().await.repair_completed;
        c.kill_node(killed);
        // Until it is Down its copies still count: "healed" would hold at once.
        c.wait_node_down(killed).await;
        c.wait_for(
            Duration::from_secs(60),
            "every chunk copied again on the nodes still up",
            || async { c.healed().await && fully_replicated(&c, &files).await },
        )
        .await;
        // Each chunk the killed node held needed one new copy at least.
        let made = c.status().await.repair_completed - completed;
        assert!(
            made >= held,
            "{made} copies made for the {held} chunks of {}",
            c.nodes[killed].id
        );
    }
    verify(&c, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrubbing_finds_every_flipped_byte_and_repairs_it() {
    let _deadline = deadline(DEADLINE);
    let storage = "scrub_bytes_per_sec = 50000000\nscrub_pause_ms = 300\n";
    let c = Cluster::start_with_storage(4, HEAL, storage).await;
    let client = c.client().await;
    let files = write_files(&client, "f", 12, 200_000, 5).await;
    c.wait_for(Duration::from_secs(30), "initial replication", || {
        c.healed()
    })
    .await;
    // Flip a byte in 3 chunk files per node, never two copies of one chunk.
    let mut seen = BTreeSet::new();
    let mut flipped = Vec::new();
    for node in 0..4 {
        for path in c.chunk_files(node) {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if flipped.iter().filter(|(n, _)| *n == node).count() == 3 {
                break;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x5a;
            std::fs::write(&path, &bytes).unwrap();
            flipped.push((node, name));
        }
    }
    assert_eq!(flipped.len(), 12);
    c.wait_for(
        Duration::from_secs(60),
        "every corruption quarantined and repaired",
        || async {
            let quarantined = flipped.iter().all(|(node, name)| {
                std::fs::read_dir(c.nodes[*node].data_dir.join("quarantine"))
                    .map(|d| {
                        d.flatten()
                            .any(|e| e.file_name().to_string_lossy().starts_with(name.as_str()))
                    })
                    .unwrap_or(false)
            });
            quarantined && c.healed().await
        },
    )
    .await;
    // No chunk file on any disk is corrupt now.
    for node in 0..4 {
        for path in c.chunk_files(node) {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let id = ChunkId::from_hex(&name).unwrap();
            assert!(
                id.matches(&std::fs::read(&path).unwrap()),
                "{}",
                path.display()
            );
        }
    }
    verify(&c, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_deleted_files_and_orphan_uploads_are_collected_and_live_chunks_kept() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start_with(3, HEAL).await;
    let client = c.client().await;
    let live = write_files(&client, "live", 10, 150_000, 6).await;

    // 1000 small files, 8 writers at a time.
    let mut doomed = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (w..1000).step_by(8) {
                let data = random_bytes(1000 + i as usize, 500_000 + i);
                let path = format!("/d{i}");
                write_file(&client, &path, &data).await;
                out.push((path, ChunkId::of(&data)));
            }
            out
        });
    }
    while let Some(r) = tasks.join_next().await {
        doomed.extend(r.expect("writer"));
    }
    assert_eq!(doomed.len(), 1000);
    assert!(
        !on_disk(&c, &doomed[0].1).is_empty(),
        "small file = one chunk"
    );

    // A client that dies between upload and commit: chunks stored on a
    // node, never referenced by a layout.
    let mut orphans = Vec::new();
    let mut s = bigfs_proto::storage_client(&c.nodes[0].addr).unwrap();
    for i in 0..5 {
        let data = random_bytes(30_000, 900_000 + i);
        let id = ChunkId::of(&data);
        s.put_chunk(pb::PutChunkRequest {
            id: id.to_vec(),
            data: data.into(),
            is_replica: false,
            ..Default::default()
        })
        .await
        .expect("orphan upload");
        orphans.push(id);
    }
    let mut live_ids = BTreeSet::new();
    for (p, _) in &live {
        live_ids.extend(chunk_ids(&c, p).await);
    }

    let started = Instant::now();
    for (p, _) in &doomed {
        remove(&client, p).await;
    }
    // Restart the metadata server while collection is under way.
    c.wait_for(Duration::from_secs(30), "collection under way", || async {
        let s = c.status().await;
        s.gc_backlog > 0 || s.replicas_deleting > 0
    })
    .await;
    c.restart_metadata().await;
    c.wait_for(
        Duration::from_secs(90),
        "every deleted and orphan chunk gone",
        || async {
            doomed
                .iter()
                .map(|(_, id)| id)
                .chain(orphans.iter())
                .all(|id| on_disk(&c, id).is_empty())
        },
    )
    .await;
    eprintln!("1000 files collected in {:?}", started.elapsed());
    c.wait_for(Duration::from_secs(30), "gc backlog empty", || async {
        let s = c.status().await;
        s.gc_backlog == 0 && s.replicas_deleting == 0
    })
    .await;
    assert_eq!(c.status().await.chunks, live_ids.len() as u64);
    for id in &live_ids {
        assert_eq!(on_disk(&c, id).len(), 3, "live chunk {id} untouched");
    }
    verify(&c, &live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decommissioned_node_is_drained_under_load_and_every_file_reads_back() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start_with(4, HEAL).await;
    let client = c.client().await;
    let mut files = write_files(&client, "f", 20, 200_000, 7).await;
    c.wait_for(Duration::from_secs(30), "initial replication", || {
        c.healed()
    })
    .await;
    assert!(!c.chunk_files(1).is_empty());

    let stop = Arc::new(AtomicBool::new(false));
    let io = background_io(&c, "during", stop.clone());
    let out = c.cli_ok(&["admin", "decommission", "node-2"]);
    assert!(out.contains("decommissioned"), "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    files.extend(io.await.expect("background io"));

    c.wait_for(Duration::from_secs(60), "node-2 drained", || async {
        let r: serde_json::Value =
            serde_json::from_str(&c.cli_ok(&["--json", "admin", "decommission", "node-2"]))
                .unwrap();
        r["replicas_left"] == 0 && r["trash_left"] == 0 && c.chunk_files(1).is_empty()
    })
    .await;
    c.wait_for(Duration::from_secs(30), "healed on the other nodes", || {
        c.healed()
    })
    .await;
    let nodes = c.cli_ok(&["admin", "nodes"]);
    assert!(nodes.contains("decommissioned"), "{nodes}");
    verify(&c, &files).await;
    // New data never lands on it.
    write_files(&client, "after", 3, 100_000, 8).await;
    assert!(c.chunk_files(1).is_empty());

    // Drained, it can be forgotten, but only once it is stopped.
    let out = c.cli(&["admin", "remove-node", "node-2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still running"), "{err}");
    c.kill_node(1);
    c.wait_for(Duration::from_secs(30), "node-2 removed", || async {
        c.cli(&["admin", "remove-node", "node-2"]).status.success()
    })
    .await;
    let nodes: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["--json", "admin", "nodes"])).unwrap();
    let ids: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{nodes}");
    assert!(!ids.contains(&"node-2"), "{nodes}");
    verify(&c, &files).await;
}

/// A copy deleted behind the cluster's back (no restart, no fsck) is
/// noticed by the replica audit and made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_file_deleted_on_a_running_node_is_noticed_and_copied_again() {
    let _deadline = deadline(DEADLINE);
    let config = "chunk_size = 65536\n[heal]\ninterval_ms = 200\naudit_interval_ms = 500\n";
    let c = Cluster::start_with(4, config).await;
    let client = c.client().await;
    let files = write_files(&client, "a", 3, 300_000, 7).await;
    c.wait_for(Duration::from_secs(30), "initial replication", || {
        c.healed()
    })
    .await;
    let ids = chunk_ids(&c, "/a1").await;
    let id = ids[ids.len() / 2];
    let holders = on_disk(&c, &id);
    assert_eq!(holders.len(), 3);
    std::fs::remove_file(chunk_path(&c, holders[0], &id)).unwrap();
    c.wait_for(
        Duration::from_secs(30),
        "the lost copy made again",
        || async {
            let now = on_disk(&c, &id);
            now.len() == 3 && c.healed().await
        },
    )
    .await;
    verify(&c, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_table_larger_than_the_scan_batch_is_healed_and_collected_slice_by_slice() {
    let _deadline = deadline(DEADLINE);
    // 7 chunks per tick out of about 40: every pass sees a sixth of the
    // table, so healing and collection only finish if the slices move on.
    let cfg = HEAL.replace("[heal]\n", "[heal]\nscan_batch = 7\n");
    let mut c = Cluster::start_with(4, &cfg).await;
    let client = c.client().await;
    let files = write_files(&client, "f", 10, 250_000, 7).await;
    let mut ids = BTreeSet::new();
    for (p, _) in &files {
        ids.extend(chunk_ids(&c, p).await);
    }
    assert!(ids.len() > 5 * 7, "{} chunks: several slices", ids.len());
    c.wait_for(Duration::from_secs(30), "initial replication", || async {
        c.healed().await && fully_replicated(&c, &files).await
    })
    .await;
    c.kill_node(0);
    c.wait_node_down(0).await;
    c.wait_for(
        Duration::from_secs(60),
        "every chunk copied again on the nodes still up",
        || async { c.healed().await && fully_replicated(&c, &files).await },
    )
    .await;
    for id in &ids {
        let copies = on_disk(&c, id);
        assert!(copies.len() >= 3, "chunk {id} on {copies:?}");
    }
    verify(&c, &files).await;
    for (p, _) in &files {
        remove(&client, p).await;
    }
    c.wait_for(
        Duration::from_secs(60),
        "every chunk of the deleted files gone from the nodes still up",
        || async { ids.iter().all(|id| on_disk(&c, id).iter().all(|&n| n == 0)) },
    )
    .await;
    assert_eq!(c.status().await.chunks, 0);
}
