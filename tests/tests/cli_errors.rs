//! A failed `bigfs` command names the path the user typed and the errno's
//! usual words, as `ls` or `cp` would (`bigfs: /x/f: No such file or
//! directory`), never an inode number or an RPC name.

use std::time::Duration;

use bigfs_tests::{Cluster, random_bytes, write_file};

/// Runs `bigfs args` and checks it fails with exit code 1 and exactly
/// `stderr` (one line).
fn fails_with(c: &Cluster, args: &[&str], stderr: &str) {
    exits_with(c, args, 1, stderr);
}

fn exits_with(c: &Cluster, args: &[&str], code: i32, stderr: &str) {
    let out = c.cli(args);
    let got = String::from_utf8_lossy(&out.stderr);
    assert_eq!(got, format!("{stderr}\n"), "bigfs {args:?}");
    assert_eq!(out.status.code(), Some(code), "bigfs {args:?}: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_errors_name_the_typed_path_and_the_errno() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    let c = Cluster::start(1).await;
    let client = c.client().await;
    write_file(&client, "/f", &random_bytes(1000, 1)).await;
    c.cli_ok(&["mkdir", "/d"]);
    c.cli_ok(&["mkdir", "-p", "/e/d"]);
    c.cli_ok(&["mkdir", "/e/f"]);
    c.cli_ok(&["mkdir", "-p", "/full/d/sub"]);
    write_file(&client, "/e/d/inner", b"x").await;
    let local = c.dir.path().join("local");
    std::fs::write(&local, b"local").expect("write local file");
    let local = local.to_str().expect("utf-8 path");
    let missing_local = c.dir.path().join("nothing-here");
    let missing_local = missing_local.to_str().expect("utf-8 path");
    let local_dir = c.dir.path().to_str().expect("utf-8 path");

    let enoent = "No such file or directory";
    fails_with(
        &c,
        &["put", local, "/x/f"],
        &format!("bigfs: /x/f: {enoent}"),
    );
    fails_with(
        &c,
        &["put", missing_local, "/y"],
        &format!("bigfs: {missing_local}: {enoent}"),
    );
    fails_with(
        &c,
        &["put", local_dir, "/y"],
        &format!("bigfs: {local_dir}: Is a directory"),
    );
    fails_with(&c, &["put", local, "/f/x"], "bigfs: /f/x: Not a directory");
    fails_with(
        &c,
        &["get", "/missing", local],
        &format!("bigfs: /missing: {enoent}"),
    );
    fails_with(&c, &["cat", "/x/y"], &format!("bigfs: /x/y: {enoent}"));
    fails_with(&c, &["cat", "/d"], "bigfs: /d: Is a directory");
    fails_with(
        &c,
        &["ls", "/missing"],
        &format!("bigfs: /missing: {enoent}"),
    );
    fails_with(&c, &["ls", "-l", "/f/x"], "bigfs: /f/x: Not a directory");
    fails_with(
        &c,
        &["stat", "/d/missing"],
        &format!("bigfs: /d/missing: {enoent}"),
    );
    fails_with(
        &c,
        &["rm", "/missing"],
        &format!("bigfs: /missing: {enoent}"),
    );
    fails_with(&c, &["rm", "/d"], "bigfs: /d: Is a directory (use -r)");
    fails_with(&c, &["mkdir", "/d"], "bigfs: /d: File exists");
    fails_with(&c, &["mkdir", "/x/y"], &format!("bigfs: /x/y: {enoent}"));
    fails_with(
        &c,
        &["mkdir", "-p", "/f/sub"],
        "bigfs: /f/sub: Not a directory",
    );
    fails_with(
        &c,
        &["mv", "/missing", "/z"],
        &format!("bigfs: /missing: {enoent}"),
    );
    fails_with(&c, &["mv", "/f", "/x/f"], &format!("bigfs: /x/f: {enoent}"));
    // /full/d lands on /e/d, which holds a file.
    fails_with(
        &c,
        &["mv", "/full/d", "/e"],
        "bigfs: /e/d: Directory not empty",
    );
    fails_with(&c, &["mv", "/d", "/f"], "bigfs: /f: Not a directory");
    // /f lands on /e/f, a directory.
    fails_with(&c, &["mv", "/f", "/e"], "bigfs: /e/f: Is a directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relative_cluster_path_is_bad_usage() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(60));
    let c = Cluster::start(0).await;
    let absolute = "cluster paths are absolute (start with /)";
    exits_with(&c, &["ls", "rel"], 2, &format!("bigfs: rel: {absolute}"));
    exits_with(
        &c,
        &["mv", "/a", "b/c"],
        2,
        &format!("bigfs: b/c: {absolute}"),
    );
}
