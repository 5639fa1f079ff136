//! Registrations that must not cost data (issue 11), with real processes: a
//! second process claiming a live node's id is refused and exits; a node
//! back with an empty disk is refused until the operator accepts its
//! inventory; chunks the table does not list go to a quarantine and are
//! deleted only after a grace period.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bigfs_proto::{ChunkId, pb};
use bigfs_tests::{Cluster, deadline, random_bytes, read_file, sha256_hex, write_file};

/// Time limit of each test here (see `bigfs_tests::deadline`): each runs in
/// about 10-20 s on a loaded 2-core machine; the limit is ~6x that.
const DEADLINE: Duration = Duration::from_secs(120);

/// 64 KiB chunks (a 1 MiB file is 16 chunks, over the refusal minimum of
/// 8 copies), repairs soon after a node is Down, and the replica audit
/// every 100 ms: a node process whose registration is not accepted yet
/// (say, started on an unmounted disk) must not have its empty answers
/// taken as lost copies (a CI failure of stop 16).
const META: &str = r#"
chunk_size = 65536
[heal]
interval_ms = 200
repair_delay_ms = 500
pending_timeout_ms = 3000
audit_interval_ms = 100
"#;

/// Bytes of the file written: 16 chunks of 64 KiB.
const FILE_LEN: usize = 1 << 20;
const CHUNKS: u64 = 16;

/// A 3-node cluster holding one 1 MiB file on every node; answers the
/// file's SHA-256.
async fn cluster_with_a_file() -> (Cluster, String) {
    let c = Cluster::start_with(3, META).await;
    let data = random_bytes(FILE_LEN, 11);
    write_file(&*c.client().await, "/f", &data).await;
    c.wait_for(Duration::from_secs(30), "every copy made", || c.healed())
        .await;
    (c, sha256_hex(&data))
}

fn refused(c: &Cluster, reason: &str) -> f64 {
    c.metric(
        &c.meta_admin_addr,
        "bigfs_metadata_registrations_refused_total",
        &[("reason", reason)],
    )
}

/// Waits for node process `i` to stop with a failure, as a refused node
/// must instead of serving; answers its log.
async fn wait_stopped(c: &mut Cluster, i: usize) -> String {
    let exit = c.wait_node_exit(i, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(c.log_path(&c.nodes[i].name)).unwrap_or_default();
    assert!(
        exit.is_some_and(|s| !s.success()),
        "{} must stop instead of serving ({exit:?}); its log:\n{log}",
        c.nodes[i].name
    );
    log
}

/// (id, address, chunk count) of every node the status lists.
async fn node_table(c: &Cluster) -> Vec<(String, String, u64)> {
    let mut v: Vec<_> = c
        .status()
        .await
        .nodes
        .into_iter()
        .map(|n| (n.node_id, n.address, n.chunk_count))
        .collect();
    v.sort();
    v
}

fn node_info(s: &pb::StatusReply, id: &str) -> pb::NodeInfo {
    s.nodes
        .iter()
        .find(|n| n.node_id == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not in the status"))
}

fn sorted(mut v: Vec<PathBuf>) -> Vec<PathBuf> {
    v.sort();
    v
}

/// Copies a directory tree (a cloned machine's disk).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_with_a_live_nodes_id_is_refused_and_changes_nothing() {
    let _deadline = deadline(DEADLINE);
    let (mut c, hash) = cluster_with_a_file().await;
    let table = node_table(&c).await;
    let files = sorted(c.chunk_files(0));
    assert_eq!(files.len() as u64, CHUNKS);

    // A cloned machine: node-1's disk, node-1's id, another address.
    let clone_dir = c.nodes[0].data_dir.with_file_name("node-1-clone");
    copy_tree(&c.nodes[0].data_dir, &clone_dir);
    let clone = c.add_node_as("node-1-clone", "node-1");
    let log = wait_stopped(&mut c, clone).await;
    assert!(
        log.contains(&format!(
            "node id node-1 is in use by a live node at {}",
            c.nodes[0].addr
        )),
        "the clone says why: {log}"
    );
    assert!(refused(&c, "id_in_use") >= 1.0);

    // The live node keeps its address, its copies and its files.
    assert_eq!(node_table(&c).await, table);
    let s = c.status().await;
    assert_eq!(node_info(&s, "node-1").state, pb::NodeState::Up as i32);
    assert_eq!(sorted(c.chunk_files(0)), files);
    let got = read_file(&*c.client().await, "/f").await;
    assert_eq!(sha256_hex(&got), hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_with_an_empty_disk_is_refused_until_its_inventory_is_accepted() {
    let _deadline = deadline(DEADLINE);
    let (mut c, hash) = cluster_with_a_file().await;

    // The data disk did not mount: the node starts on an empty directory.
    c.kill_node(0);
    let disk = c.nodes[0].data_dir.clone();
    let unmounted = disk.with_file_name("node-1.unmounted");
    std::fs::rename(&disk, &unmounted).expect("move the data dir away");
    c.start_node(0);
    let log = wait_stopped(&mut c, 0).await;
    assert!(
        log.contains(&format!(
            "node node-1 lists {CHUNKS} copies but reported only 0"
        )) && log.contains("--accept-inventory"),
        "the node says why and what to do: {log}"
    );
    assert!(refused(&c, "inventory_loss") >= 1.0);

    // Nothing was unlisted and nothing is lost.
    let s = c.status().await;
    assert_eq!(node_info(&s, "node-1").chunk_count, CHUNKS);
    assert_eq!(s.lost, 0);
    let got = read_file(&*c.client().await, "/f").await;
    assert_eq!(sha256_hex(&got), hash);
    let kept = std::fs::read_dir(unmounted.join("chunks")).expect("old disk");
    assert!(kept.count() > 0, "the old disk is untouched");

    // The disk is gone for good: the operator accepts the empty inventory,
    // and healing puts the copies back on the node.
    c.start_node_with(0, &["--accept-inventory"]);
    c.wait_nodes_up(3).await;
    c.wait_for(Duration::from_secs(60), "node-1 healed", || async {
        c.healed().await && c.chunk_files(0).len() as u64 == CHUNKS
    })
    .await;
    let s = c.status().await;
    assert_eq!(node_info(&s, "node-1").chunk_count, CHUNKS);
    let got = read_file(&*c.client().await, "/f").await;
    assert_eq!(sha256_hex(&got), hash);
}

/// Storage settings: unlisted chunks kept 3 s, swept every 200 ms.
const QUARANTINE: &str = "quarantine_grace_ms = 3000\nquarantine_sweep_ms = 200\n";
const GRACE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unlisted_chunk_is_quarantined_then_deleted_after_the_grace() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start_with_storage(1, "", QUARANTINE).await;
    let admin = c.nodes[0].admin_addr.clone();

    // A chunk file the chunk table does not list, written long ago.
    let data = random_bytes(10_000, 3);
    let id = ChunkId::of(&data);
    let hex = id.to_hex();
    let path = c.nodes[0]
        .data_dir
        .join("chunks")
        .join(&hex[..2])
        .join(&hex);
    std::fs::create_dir_all(path.parent().expect("fan-out dir")).expect("mkdir");
    std::fs::write(&path, &data).expect("plant the chunk");
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(old))
        .expect("backdate");

    // The node registers again with it in its inventory.
    c.kill_node(0);
    c.start_node(0);
    let unlisted = c.nodes[0].data_dir.join("quarantine/unlisted");
    let in_quarantine = || -> Vec<PathBuf> {
        std::fs::read_dir(&unlisted)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&hex))
            })
            .collect()
    };
    c.wait_for(Duration::from_secs(30), "the chunk quarantined", || async {
        !path.exists() && !in_quarantine().is_empty()
    })
    .await;
    let quarantined_at = Instant::now();
    let q = in_quarantine();
    assert_eq!(std::fs::read(&q[0]).expect("quarantined copy"), data);
    let labels = [("node", "node-1")];
    assert_eq!(
        c.metric(&admin, "bigfs_storage_unlisted_quarantined_bytes", &labels),
        data.len() as f64
    );
    assert!(
        c.metric(&admin, "bigfs_storage_used_bytes", &labels) >= data.len() as f64,
        "quarantined bytes still count as used"
    );
    assert_eq!(c.metric(&admin, "bigfs_storage_chunks", &labels), 0.0);

    // Kept for its grace, then deleted by the sweep.
    tokio::time::sleep(GRACE / 2).await;
    assert!(!in_quarantine().is_empty(), "deleted before its grace");
    c.wait_for(GRACE * 4, "the quarantined chunk deleted", || async {
        in_quarantine().is_empty()
    })
    .await;
    assert!(quarantined_at.elapsed() >= GRACE / 2);
    assert_eq!(
        c.metric(&admin, "bigfs_storage_unlisted_quarantined_bytes", &labels),
        0.0
    );
}
