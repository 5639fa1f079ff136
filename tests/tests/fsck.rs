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

/// A write returns once 2 of 3 copies are durable; fsck counts the third,
/// still being pushed, as missing. Waits until every copy is made.
async fn all_copies_made(c: &Cluster) {
    c.wait_for(Duration::from_secs(30), "every copy made", || c.healed())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsck_finds_a_chunk_deleted_behind_the_clusters_back_and_repair_fixes_it() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let client = c.client().await;
    write_file(&client, "/a", &random_bytes(1 << 20, 7)).await;
    all_copies_made(&c).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_of_deleted_files_in_their_grace_period_are_pending_gc_not_problems() {
    let _deadline = deadline(DEADLINE);
    // An hour of grace: the chunks stay unreferenced for the whole test.
    let c = Cluster::start_with(
        3,
        "trash_retention_ms = 0\n[heal]\ngc_grace_ms = 3600000\ngc_release_grace_ms = 3600000\n",
    )
    .await;
    let client = c.client().await;
    // 5 MiB: two chunks of 4 MiB and 1 MiB.
    write_file(&client, "/gone", &random_bytes(5 << 20, 8)).await;
    write_file(&client, "/kept", &random_bytes(1 << 20, 9)).await;
    client.unlink(client.root(), "gone").await.expect("unlink");
    all_copies_made(&c).await;

    let (ok, v) = fsck(&c, false);
    assert!(ok, "fsck failed on chunks waiting for GC: {v}");
    assert_eq!(kinds(&v), Vec::<String>::new(), "{v}");
    assert_eq!(v["pending_gc"], 2, "{v}");
    assert_eq!(v["pending_gc_bytes"], 5 << 20, "{v}");
    let pending = v["pending_gc_chunks"]
        .as_array()
        .expect("pending_gc_chunks");
    assert_eq!(pending.len(), 2, "{v}");
    for p in pending {
        assert_eq!(p["deleting"], false, "{v}");
        let left = p["grace_left_ms"].as_u64().expect("grace_left_ms");
        assert!(left > 3_000_000 && left <= 3_600_000, "{v}");
    }

    let out = c.cli(&["admin", "fsck"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("no problems found"), "{text}");
    assert!(
        text.contains("pending GC: 2 unreferenced chunks (5.0 MiB)"),
        "{text}"
    );
}
