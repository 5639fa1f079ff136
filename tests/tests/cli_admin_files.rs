//! `bigfs admin files [PREFIX]`: the files with the health of their
//! replicas, the same view (and JSON) as the admin page's `/files`.

use std::time::Duration;

use bigfs_tests::{Cluster, random_bytes, write_file};

fn files_json(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "admin", "files"];
    all.extend_from_slice(args);
    let out = c.cli_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn paths(v: &serde_json::Value) -> Vec<&str> {
    v["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_files_lists_files_under_a_prefix_with_replica_health() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    let mut c = Cluster::start(3).await;
    let client = c.client().await;
    for dir in ["alpha", "beta"] {
        client
            .mkdir(client.root(), dir, 0o755)
            .await
            .expect("mkdir");
    }
    write_file(&client, "/alpha/one", &random_bytes(1 << 20, 1)).await;
    // 5 MiB: two chunks.
    write_file(&client, "/alpha/two", &random_bytes(5 << 20, 2)).await;
    write_file(&client, "/beta/three", b"three").await;
    c.wait_for(Duration::from_secs(30), "every copy made", || c.healed())
        .await;

    let alpha = files_json(&c, &["/alpha"]);
    assert_eq!(alpha["total"], 2, "{alpha}");
    assert_eq!(paths(&alpha), ["/alpha/one", "/alpha/two"]);
    assert_eq!(alpha["files"][1]["chunks"], 2, "{alpha}");
    assert_eq!(alpha["files"][1]["size"], 5 << 20, "{alpha}");
    for f in alpha["files"].as_array().expect("files") {
        assert_eq!(f["status"], "healthy", "{alpha}");
        assert_eq!(f["healthy_chunks"], f["chunks"], "{alpha}");
    }
    let (code, body) = c
        .admin_get(&c.meta_admin_addr, "/files?prefix=/alpha")
        .expect("GET /files");
    assert_eq!(code, 200, "{body}");
    let http: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(alpha, http, "the CLI and /files disagree");

    let beta = c.cli_ok(&["admin", "files", "/beta"]);
    assert!(beta.contains("/beta/three"), "{beta}");
    assert!(!beta.contains("/alpha"), "{beta}");
    assert!(beta.contains("healthy"), "{beta}");
    assert!(beta.ends_with("files 1-1 of 1\n"), "{beta}");

    let first = c.cli_ok(&["admin", "files", "--limit", "2"]);
    assert!(
        first.ends_with("files 1-2 of 3; next page: --offset 2\n"),
        "{first}"
    );
    let rest = files_json(&c, &["--offset", "2", "--limit", "2"]);
    assert_eq!(rest["total"], 3, "{rest}");
    assert_eq!(paths(&rest), ["/beta/three"]);

    // A node down: every chunk has one copy fewer than it wants.
    c.kill_node(2);
    c.wait_for(
        Duration::from_secs(20),
        "/alpha files under-replicated",
        || async {
            let v = files_json(&c, &["/alpha"]);
            v["files"]
                .as_array()
                .expect("files")
                .iter()
                .all(|f| f["status"] == "under_replicated")
        },
    )
    .await;
}
