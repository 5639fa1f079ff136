//! `bigfs admin fsck`: finds a chunk file deleted behind the cluster's back,
//! and `--repair` drops the dead replica record and copies the chunk again.

use std::time::Duration;

use bigfs_tests::{Cluster, deadline, random_bytes, write_file};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 1 s on a loaded 2-core machine; the limit is 60 s at least, room
/// for Cluster::start's own 20 s + 30 s waits.
const DEADLINE: Duration = Duration::from_secs(60);

fn fsck(c: &Cluster, repair: bool) -> (bool, serde_json::Value) {
    let mut args = vec!["--json", "admin", "fsck"];
    if repair {
        args.push("--repair");
    }
    let out = c.cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "fsck output is not JSON ({e}): {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn kinds(v: &serde_json::Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsck_finds_a_chunk_deleted_behind_the_clusters_back_and_repair_fixes_it() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let client = c.client().await;
    write_file(&client, "/a", &random_bytes(1 << 20, 7)).await;
    // The write was answered at the quorum of 2: let the third copy land.
    c.wait_for(Duration::from_secs(30), "the third copy", || c.healed())
        .await;

    let (ok, v) = fsck(&c, false);
    assert!(ok, "a fresh cluster has problems: {v}");
    assert_eq!(v["files"], 1);
    assert_eq!(v["replicas_checked"], 3);

    let files = c.chunk_files(0);
    assert_eq!(files.len(), 1, "node-1 holds the one chunk");
    std::fs::remove_file(&files[0]).expect("delete chunk file");

    let (ok, v) = fsck(&c, false);
    assert!(!ok, "fsck passed with a replica gone: {v}");
    let k = kinds(&v);
    assert!(k.contains(&"missing-replica".to_string()), "{v}");
    assert!(k.contains(&"under-replicated".to_string()), "{v}");
    let missing =
        &v["problems"].as_array().unwrap()[k.iter().position(|x| x == "missing-replica").unwrap()];
    assert_eq!(missing["node"], "node-1");
    assert_eq!(missing["paths"][0], "/a");

    let (ok, v) = fsck(&c, true);
    assert!(ok, "repair left problems: {v}");
    assert_eq!(v["repaired"], 2, "{v}");

    let (ok, v) = fsck(&c, false);
    assert!(ok && kinds(&v).is_empty(), "problems after repair: {v}");
    assert_eq!(
        c.chunk_files(0).len(),
        1,
        "the chunk was copied back to node-1"
    );
}
