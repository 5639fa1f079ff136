//! Several disks per storage node (issue 12), with real processes: a node
//! with two data directories spreads its chunks over both; when one disk
//! fails (EIO from a `bigfs-lossyfs` disk) or is missing at start (its
//! `.bigfs-disk` marker gone: an unmounted disk), the node marks it bad,
//! the metadata service unlists the copies it held and heals them
//! elsewhere, and the node keeps serving from its other disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bigfs_proto::{ChunkId, pb};
use bigfs_tests::power::LossyDisk;
use bigfs_tests::{
    Cluster, deadline, metric_sum, parse_prometheus, random_bytes, read_file, sha256_hex,
    write_file,
};

/// Time limit of each test (see `bigfs_tests::deadline`): each runs in
/// about 10 s on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// 64 KiB chunks, two copies, repairs soon. The replica audit stays at its
/// default (10 min): the loss must come from the node's own report. The
/// inventory-loss guard is strict (any loss of 2 copies or more refuses),
/// so a registration lacking a bad disk's copies passes only because the
/// node declares the disk bad.
const META: &str = r#"
chunk_size = 65536
replication = 2
[heal]
interval_ms = 200
repair_delay_ms = 500
pending_timeout_ms = 3000
[registration]
inventory_loss_fraction = 0.0
inventory_loss_min = 2
"#;

/// Disks are checked every 200 ms.
const STORAGE: &str = "disk_check_interval_ms = 200\n";

const FILES: u64 = 12;

/// Chunk files under one data directory.
fn chunks_under(dir: &Path) -> Vec<ChunkId> {
    let mut out = Vec::new();
    let Ok(fanout) = std::fs::read_dir(dir.join("chunks")) else {
        return out;
    };
    for d in fanout.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            if let Some(id) = f
                .file_name()
                .to_str()
                .and_then(|n| ChunkId::from_hex(n).ok())
            {
                out.push(id);
            }
        }
    }
    out
}

/// Two plain nodes and node-3 with its own data directory plus `second`;
/// FILES files of 3-4 chunks written. Answers each path and SHA-256.
async fn cluster_with_two_disk_node(second: &Path) -> (Cluster, Vec<(String, String)>) {
    let mut c = Cluster::start_with_storage(2, META, STORAGE).await;
    let d2 = second.display().to_string();
    c.add_node_with("node-3", &["--data-dir", &d2]);
    c.wait_nodes_up(3).await;
    let client = c.client().await;
    let mut files = Vec::new();
    for i in 0..FILES {
        let data = random_bytes(200_000 + 7_000 * i as usize, 4_000 + i);
        let path = format!("/f{i}");
        write_file(&client, &path, &data).await;
        files.push((path, sha256_hex(&data)));
    }
    (c, files)
}

/// Node `i`'s metrics; empty while it is not listening yet.
fn node_metrics(c: &Cluster, i: usize) -> Vec<(String, f64)> {
    match c.admin_get(&c.nodes[i].admin_addr, "/metrics") {
        Ok((200, body)) => parse_prometheus(&body).expect("prometheus text"),
        _ => Vec::new(),
    }
}

fn node_info(s: &pb::StatusReply, id: &str) -> pb::NodeInfo {
    s.nodes
        .iter()
        .find(|n| n.node_id == id)
        .cloned()
        .expect("node listed")
}

/// Waits until disk `disk` of node `i` is reported bad by the node's
/// metrics, the metadata status and `bigfs admin nodes`.
async fn wait_disk_bad(c: &Cluster, i: usize, disk: &Path) {
    let disk = disk.display().to_string();
    c.wait_for(Duration::from_secs(20), "the disk marked bad", || async {
        let m = node_metrics(c, i);
        metric_sum(&m, "bigfs_storage_disk_bad", &[("disk", &disk)]) == 1.0
    })
    .await;
    let id = c.nodes[i].id.clone();
    c.wait_for(
        Duration::from_secs(10),
        "the bad disk in the status",
        || async {
            let n = node_info(&c.status().await, &id);
            n.disks.iter().any(|d| d.path == disk && d.bad) && n.disks.iter().any(|d| !d.bad)
        },
    )
    .await;
    let out = c.cli_ok(&["admin", "nodes"]);
    let row = out
        .lines()
        .find(|l| l.contains("disk") && l.contains(&disk))
        .unwrap_or_else(|| panic!("no row for {disk} in:\n{out}"));
    assert!(row.contains(" bad "), "{row}");
}

/// Waits until healing is done and the metadata lists on node `i` exactly
/// the copies its good disk `good` holds; then checks every file.
async fn wait_healed_and_check(c: &Cluster, i: usize, good: &Path, files: &[(String, String)]) {
    let id = c.nodes[i].id.clone();
    c.wait_for(
        Duration::from_secs(30),
        "healed, listing only the good disk",
        || async {
            let s = c.status().await;
            let listed = node_info(&s, &id).chunk_count;
            s.under_replicated == 0
                && s.lost == 0
                && s.repair_pending == 0
                && s.replicas_pending == 0
                && listed == chunks_under(good).len() as u64
        },
    )
    .await;
    let client = c.client().await;
    for (path, sha) in files {
        assert_eq!(&sha256_hex(&read_file(&client, path).await), sha, "{path}");
    }
}

/// The node still serves a chunk of its good disk itself.
async fn served_by(c: &Cluster, i: usize, id: ChunkId) {
    let mut node = bigfs_proto::storage_client(&c.nodes[i].addr).unwrap();
    let r = node
        .get_chunk(pb::GetChunkRequest {
            id: id.to_vec(),
            ..Default::default()
        })
        .await
        .expect("the good disk serves")
        .into_inner();
    assert_eq!(ChunkId::of(&r.data), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_failing_with_eio_is_marked_bad_healed_elsewhere_and_the_node_keeps_serving() {
    let _deadline = deadline(DEADLINE);
    let lossy = LossyDisk::mount();
    let second = lossy.path().join("d2");
    let (c, files) = cluster_with_two_disk_node(&second).await;
    let first = c.nodes[2].data_dir.clone();
    let (on_first, on_second) = (chunks_under(&first), chunks_under(&second));
    assert!(
        !on_first.is_empty() && !on_second.is_empty(),
        "chunks spread over both disks: {} and {}",
        on_first.len(),
        on_second.len()
    );
    assert!(
        second.join(".bigfs-disk").is_file(),
        "marker written at first use"
    );

    lossy.fail();
    wait_disk_bad(&c, 2, &second).await;
    wait_healed_and_check(&c, 2, &first, &files).await;
    served_by(&c, 2, on_first[0]).await;
    assert!(c.node_running(2), "the node keeps running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_missing_at_start_is_marked_bad_not_refused_nor_initialised() {
    let _deadline = deadline(DEADLINE);
    let scratch = tempfile::Builder::new()
        .prefix("bigfs-test-disks-")
        .tempdir()
        .unwrap();
    let second = scratch.path().join("d2");
    let (mut c, files) = cluster_with_two_disk_node(&second).await;
    let first = c.nodes[2].data_dir.clone();
    let on_second = chunks_under(&second);
    assert!(!chunks_under(&first).is_empty() && !on_second.is_empty());

    // The disk does not mount: its mount point is an empty directory.
    c.kill_node(2);
    let unmounted: PathBuf = scratch.path().join("d2.real");
    std::fs::rename(&second, &unmounted).unwrap();
    std::fs::create_dir(&second).unwrap();
    let d2 = second.display().to_string();
    c.start_node_with(2, &["--data-dir", &d2]);

    wait_disk_bad(&c, 2, &second).await;
    wait_healed_and_check(&c, 2, &first, &files).await;
    assert!(c.node_running(2), "the registration was not refused");
    assert_eq!(
        std::fs::read_dir(&second).unwrap().count(),
        0,
        "the empty mount point was not initialised"
    );
    assert_eq!(chunks_under(&unmounted).len(), on_second.len());
    served_by(&c, 2, chunks_under(&first)[0]).await;

    // The operator says it is a new disk: it is initialised and used.
    c.kill_node(2);
    c.start_node_with(2, &["--data-dir", &d2, "--init-disks"]);
    c.wait_for(Duration::from_secs(20), "the new disk ok", || async {
        let n = node_info(&c.status().await, "node-3");
        n.state == pb::NodeState::Up as i32 && n.disks.len() == 2 && n.disks.iter().all(|d| !d.bad)
    })
    .await;
    assert!(second.join(".bigfs-disk").is_file());
}
