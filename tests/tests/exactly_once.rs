//! Exactly-once mutations across lost replies: the metadata service, with
//! its test fault on, applies and logs each client mutation and then drops
//! the reply (the client sees UNAVAILABLE, as for a broken connection) and
//! retries with the same request id. Every retry must get the first
//! answer: no EEXIST for a create, no ENOENT for a rename or unlink, no
//! second reference for a layout commit.
//!
//! The fault (`BIGFS_TEST_DROP_REPLY`) exists in debug builds only, which
//! is what the tests run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bigfs_client::Client;
use bigfs_proto::pb;
use bigfs_tests::{Cluster, Mount, deadline, random_bytes, read_file, write_file};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 2 s on a loaded 2-core machine; the limit is 60 s at least,
/// room for Cluster::start's own 20 s + 30 s waits.
const DEADLINE: Duration = Duration::from_secs(60);

/// Small chunks, so that a short file has several.
const META: &str = "chunk_size = 65536\n";

/// A cluster whose metadata service drops the reply to every client
/// mutation it applies (each one's retry is answered from the table, and
/// not dropped: it is not applied again).
async fn cluster_dropping_every_reply() -> Cluster {
    let mut c = Cluster::start_with(2, META).await;
    c.set_metadata_env("BIGFS_TEST_DROP_REPLY", "1");
    c.restart_metadata().await;
    c
}

/// How many retries the metadata service answered from its clients table.
fn retries_answered(c: &Cluster) -> usize {
    std::fs::read_to_string(c.log_path("metadata"))
        .unwrap_or_default()
        .matches("retried request answered from the clients table")
        .count()
}

fn rename(parent: u64, name: &str, new_name: &str) -> pb::RenameRequest {
    pb::RenameRequest {
        parent,
        name: name.into(),
        new_parent: parent,
        new_name: new_name.into(),
        noreplace: true,
        exchange: false,
        open_lease_ms: 0,
        id: None,
    }
}

async fn names(client: &Client, dir: u64) -> Vec<String> {
    let mut v: Vec<String> = client
        .readdir_all(dir)
        .await
        .expect("readdir")
        .into_iter()
        .map(|e| e.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mutations_whose_reply_was_lost_succeed_exactly_once() {
    let _deadline = deadline(DEADLINE);
    let c = cluster_dropping_every_reply().await;
    let client = c.client().await;
    let root = client.root();

    let d = client.mkdir(root, "d", 0o755).await.expect("mkdir d");
    let f = client
        .create_file(d.ino, "f", 0o644, true)
        .await
        .expect("exclusive create of f");
    client
        .set_xattr(f.ino, "user.k", b"v".to_vec(), 1)
        .await
        .expect("setxattr with XATTR_CREATE");
    client.link(f.ino, d.ino, "g").await.expect("link g");
    client
        .rename(rename(d.ino, "f", "h"))
        .await
        .expect("rename f -> h");
    client.unlink(d.ino, "g").await.expect("unlink g");
    assert_eq!(names(&client, d.ino).await, ["h"]);
    let h = client.lookup(d.ino, "h").await.expect("lookup h");
    assert_eq!((h.ino, h.nlink), (f.ino, 1), "one name left, same inode");

    // Several layout commits (each chunk, then the size): each counted once.
    let data = random_bytes(200_000, 7);
    write_file(&client, "/d/h", &data).await;
    assert_eq!(read_file(&client, "/d/h").await, data);
    client.unlink(d.ino, "h").await.expect("unlink h");
    client.rmdir(root, "d").await.expect("rmdir d");
    assert!(names(&client, root).await.is_empty());
    let st = c.status().await;
    assert_eq!((st.files, st.directories), (0, 1), "only the root is left");

    // Every mutation above lost its first reply: mkdir, create, setxattr,
    // link, rename, unlink, the create and the commit(s) of write_file,
    // unlink, rmdir: each was answered again from the table.
    let answered = retries_answered(&c);
    assert!(
        answered >= 10,
        "only {answered} retries answered from the table"
    );
}

fn sh(cmd: &str, args: &[&Path]) {
    let out = Command::new(cmd).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_mv_rm_through_a_mount_succeed_when_replies_are_lost() {
    let _deadline = deadline(DEADLINE);
    let c = cluster_dropping_every_reply().await;
    let m = Mount::new(&c, &[]);
    let dir = m.path().join("d");
    let (a, b, f) = (dir.join("a"), dir.join("b"), dir.join("f"));

    sh("mkdir", &[&dir]);
    sh("touch", &[&a]);
    sh("mv", &[&a, &b]);
    std::fs::write(&f, b"hello").expect("write f");
    assert_eq!(std::fs::read(&f).expect("read f"), b"hello");
    sh("rm", &[&b, &f]);
    sh("rmdir", &[&dir]);
    assert_eq!(std::fs::read_dir(m.path()).expect("ls").count(), 0);
    let answered = retries_answered(&c);
    assert!(
        answered >= 6,
        "only {answered} retries answered from the table"
    );
}
