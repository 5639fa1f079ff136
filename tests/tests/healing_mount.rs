//! Self-healing seen through the FUSE mount: applications keep reading and
//! writing plain files while a storage node dies and the cluster heals.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline, random_bytes, sha256_file, sha256_hex};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 23 s on a loaded 2-core machine; the limit is 5x that.
const DEADLINE: Duration = Duration::from_secs(120);

/// Small chunks (many per file) and quick repair, so healing fits a test;
/// no trash, so deleted files are collected at once.
const HEAL: &str = r#"
chunk_size = 65536
trash_retention_ms = 0
[heal]
interval_ms = 200
repair_delay_ms = 500
pending_timeout_ms = 3000
gc_grace_ms = 3000
gc_release_grace_ms = 1000
"#;

fn write_through(dir: &Path, name: &str, size: usize, seed: u64) -> (String, String) {
    let data = random_bytes(size, seed);
    let path = dir.join(name);
    std::fs::write(&path, &data).expect("write through the mount");
    (path.display().to_string(), sha256_hex(&data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_mounted_io_is_healed_and_every_file_reads_back() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start_with(4, HEAL).await;
    let m = Mount::new(&c, &[]);
    let dir = m.path().to_path_buf();
    let mut files: Vec<(String, String)> = (0..12)
        .map(|i| {
            write_through(
                &dir,
                &format!("before{i}"),
                700_000 + i * 999,
                40 + i as u64,
            )
        })
        .collect();
    c.wait_for(Duration::from_secs(30), "initial replication", || {
        c.healed()
    })
    .await;

    // Reads and writes go on through the mount while node-1 dies.
    let stop = Arc::new(AtomicBool::new(false));
    let io_stop = stop.clone();
    let io_dir = dir.clone();
    let io_files = files.clone();
    let io = tokio::task::spawn_blocking(move || {
        let mut written = Vec::new();
        let mut round = 0u64;
        while !io_stop.load(Ordering::SeqCst) {
            for (path, sum) in &io_files {
                assert_eq!(
                    &sha256_file(Path::new(path)),
                    sum,
                    "{path} during the failure"
                );
            }
            written.push(write_through(
                &io_dir,
                &format!("during{round}"),
                300_000,
                900 + round,
            ));
            round += 1;
        }
        written
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.kill_node(0);
    c.wait_for(Duration::from_secs(60), "healed without node-1", || async {
        let s = c.status().await;
        let up = s
            .nodes
            .iter()
            .filter(|n| n.state == bigfs_proto::pb::NodeState::Up as i32)
            .count();
        up == 3 && c.healed().await
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    files.extend(io.await.expect("mounted io"));

    // Every chunk has 3 copies on the 3 live nodes' disks.
    let live_files: usize = (1..4).map(|i| c.chunk_files(i).len()).sum();
    assert!(live_files >= 3 * c.status().await.chunks as usize);
    // A fresh mount (empty caches) reads every byte back.
    drop(m);
    let fresh = Mount::new(&c, &[]);
    for (path, sum) in &files {
        let name = Path::new(path).file_name().expect("name");
        assert_eq!(
            &sha256_file(&fresh.path().join(name)),
            sum,
            "{path} after healing"
        );
    }
}
