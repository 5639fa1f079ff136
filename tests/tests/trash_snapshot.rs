//! The trash (`trash_retention_ms`, `bigfs trash ls|restore|purge`) and
//! snapshots (`bigfs snapshot SRC DST`) through a real mount: deleted and
//! overwritten files come back byte for byte, their chunks are freed only
//! when purged or expired, and a snapshot shares chunks with its source
//! while writes to either side stay on that side.

#![cfg(target_os = "linux")]

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline, random_bytes};

/// Time limit of each test (see `bigfs_tests::deadline`): each takes
/// 5-15 s on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// How long a condition may take to come true (GC, expiry).
const WAIT: Duration = Duration::from_secs(40);

/// 64 KiB chunks (multi-chunk files stay small), a 200 ms healing tick and
/// garbage collection 0.5 s after the last reference goes.
const FAST_GC: &str = r#"
chunk_size = 65536
replication = 2
[heal]
interval_ms = 200
gc_grace_ms = 3000
gc_release_grace_ms = 500
"#;

const CHUNK: usize = 65536;

fn json(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = c.cli_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn trash(c: &Cluster) -> Vec<serde_json::Value> {
    json(c, &["trash", "ls"])["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Chunks in the table (referenced, or not yet collected).
async fn chunks(c: &Cluster) -> u64 {
    c.status().await.chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_and_overwritten_files_are_listed_restored_and_purged() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(2, FAST_GC).await;
    let m = Mount::new(&c, &[]);
    let p = |n: &str| m.path().join(n);
    std::fs::create_dir(p("docs")).unwrap();
    let report = random_bytes(3 * CHUNK + 123, 1);
    write(&p("docs/report"), &report);
    let old_conf = random_bytes(2 * CHUNK, 2);
    write(&p("conf"), &old_conf);
    let new_conf = random_bytes(CHUNK / 2, 3);
    write(&p("conf.new"), &new_conf);
    let stored = chunks(&c).await;
    assert_eq!(stored, 4 + 2 + 1, "every chunk is distinct");

    // Delete, then the trash lists it with its path and size.
    std::fs::remove_file(p("docs/report")).unwrap();
    // Overwrite by rename: the replaced file goes to the trash too.
    std::fs::rename(p("conf.new"), p("conf")).unwrap();
    let listed = trash(&c);
    let mut paths: Vec<(&str, u64)> = listed
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["size"].as_u64().unwrap()))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("/conf", old_conf.len() as u64),
            ("/docs/report", report.len() as u64)
        ]
    );
    let e = &listed[0];
    let retention = e["expires_ms"].as_u64().unwrap() - e["deleted_ms"].as_u64().unwrap();
    assert_eq!(retention, 24 * 3600 * 1000, "the default retention");
    let text = c.cli_ok(&["trash", "ls"]);
    assert!(
        text.contains("/docs/report") && text.contains("UTC"),
        "{text}"
    );

    // Nothing is collected while the files are in the trash.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(chunks(&c).await, stored, "trashed chunks are kept");

    // Restore both: the report where it was (its directory removed in
    // the meantime is recreated); the old conf refused while /conf is
    // taken, then restored once the name is free.
    std::fs::remove_dir(p("docs")).unwrap();
    c.cli_ok(&["trash", "restore", "/docs/report"]);
    assert!(read(&p("docs/report")) == report, "restored bytes differ");
    let taken = c.cli(&["trash", "restore", "/conf"]);
    assert!(!taken.status.success(), "restore over an existing file");
    let why = String::from_utf8_lossy(&taken.stderr);
    assert!(why.contains("exists"), "{why}");
    std::fs::rename(p("conf"), p("conf.current")).unwrap();
    c.cli_ok(&["trash", "restore", "/conf"]);
    assert!(read(&p("conf")) == old_conf, "restored conf differs");
    assert!(read(&p("conf.current")) == new_conf);
    assert!(trash(&c).is_empty());
    let missing = c.cli(&["trash", "restore", "/nothing"]);
    assert!(!missing.status.success());

    // Delete again and purge: the chunks are collected.
    std::fs::remove_file(p("docs/report")).unwrap();
    std::fs::remove_file(p("conf")).unwrap();
    assert_eq!(trash(&c).len(), 2);
    let purged = json(&c, &["trash", "purge", "/conf"]);
    assert_eq!(purged["purged"], 1, "{purged}");
    assert_eq!(trash(&c).len(), 1);
    let purged = json(&c, &["trash", "purge"]);
    assert_eq!(purged["purged"], 1, "{purged}");
    c.wait_for(WAIT, "purged chunks collected", || async {
        chunks(&c).await == 1
    })
    .await;
    assert!(read(&p("conf.current")) == new_conf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_mount_shows_the_trash_read_only_and_a_client_mount_does_not() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(1, FAST_GC).await;
    let admin = Mount::as_admin(&c, "ops", &[]);
    let user = Mount::new(&c, &[]);
    let data = random_bytes(2 * CHUNK + 7, 21);
    write(&user.path().join("gone"), &data);
    std::fs::remove_file(user.path().join("gone")).unwrap();
    let ino = trash(&c)[0]["ino"].as_u64().unwrap();

    let view = admin.path().join(".trash");
    let names: Vec<String> = std::fs::read_dir(&view)
        .expect("read .trash")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let name = format!("{ino}-gone");
    assert_eq!(names, std::slice::from_ref(&name));
    assert!(
        read(&view.join(&name)) == data,
        "trashed bytes through .trash"
    );
    let erofs = std::fs::OpenOptions::new()
        .write(true)
        .open(view.join(&name))
        .unwrap_err();
    assert_eq!(erofs.raw_os_error(), Some(libc::EROFS));
    // Not listed in the root, so walking the tree never enters it.
    let root: Vec<String> = std::fs::read_dir(admin.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!root.contains(&".trash".to_string()), "{root:?}");
    // A client certificate gets no view.
    assert!(!user.path().join(".trash").exists());
    // Restored, it leaves the view.
    c.cli_ok(&["trash", "restore", "/gone"]);
    assert!(read(&user.path().join("gone")) == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trashed_files_expire_after_the_retention_and_zero_turns_the_trash_off() {
    let _deadline = deadline(DEADLINE);
    let short = Cluster::start_with(1, &format!("trash_retention_ms = 2000\n{FAST_GC}")).await;
    let off = Cluster::start_with(1, &format!("trash_retention_ms = 0\n{FAST_GC}")).await;
    for c in [&short, &off] {
        let m = Mount::new(c, &[]);
        write(&m.path().join("f"), &random_bytes(2 * CHUNK, 7));
        assert_eq!(chunks(c).await, 2);
        std::fs::remove_file(m.path().join("f")).unwrap();
    }
    assert!(trash(&off).is_empty(), "retention 0: no trash");
    off.wait_for(WAIT, "chunks freed at once", || async {
        chunks(&off).await == 0
    })
    .await;

    assert_eq!(trash(&short).len(), 1);
    short
        .wait_for(
            WAIT,
            "the trashed file expires and is collected",
            || async { trash(&short).is_empty() && chunks(&short).await == 0 },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_shares_chunks_and_each_side_keeps_its_own_writes() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(2, &format!("trash_retention_ms = 0\n{FAST_GC}")).await;
    let m = Mount::new(&c, &[]);
    let p = |n: &str| m.path().join(n);
    std::fs::create_dir_all(p("src/sub")).unwrap();
    let a = random_bytes(4 * CHUNK, 11);
    let b = random_bytes(3 * CHUNK + 100, 12);
    let d = random_bytes(2 * CHUNK, 13);
    write(&p("src/a"), &a);
    write(&p("src/sub/b"), &b);
    write(&p("src/sub/d"), &d);
    std::os::unix::fs::symlink("a", p("src/link")).unwrap();
    let before = chunks(&c).await;
    assert_eq!(before, 4 + 4 + 2);

    let out = json(&c, &["snapshot", "/src", "/snap"]);
    assert_eq!(out["inodes"], 6, "{out}");
    assert_eq!(out["chunk_refs"], 10, "{out}");
    assert_eq!(chunks(&c).await, before, "no chunk copied");
    assert!(read(&p("snap/a")) == a);
    assert!(read(&p("snap/sub/b")) == b);
    assert_eq!(std::fs::read_link(p("snap/link")).unwrap(), Path::new("a"));

    // Writes on the source: a partial overwrite inside a chunk, an append.
    let mut a2 = a.clone();
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(p("src/a"))
            .unwrap();
        f.seek(SeekFrom::Start(CHUNK as u64 + 10)).unwrap();
        f.write_all(b"source side").unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"tail").unwrap();
    }
    a2[CHUNK + 10..CHUNK + 21].copy_from_slice(b"source side");
    a2.extend_from_slice(b"tail");
    // Truncate on the snapshot side, unlink on both sides.
    std::fs::OpenOptions::new()
        .write(true)
        .open(p("snap/sub/b"))
        .unwrap()
        .set_len(CHUNK as u64 + 5)
        .unwrap();
    std::fs::remove_file(p("src/sub/d")).unwrap();
    std::fs::remove_file(p("snap/link")).unwrap();
    // A write on the snapshot side, in the first chunk of a.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(p("snap/a"))
            .unwrap();
        f.write_all(b"snapshot side").unwrap();
    }
    let mut a_snap = a.clone();
    a_snap[..13].copy_from_slice(b"snapshot side");

    assert!(read(&p("src/a")) == a2, "source a");
    assert!(read(&p("snap/a")) == a_snap, "snapshot a");
    assert!(
        read(&p("src/sub/b")) == b,
        "source b untouched by the truncate"
    );
    assert!(
        read(&p("snap/sub/b")) == b[..CHUNK + 5],
        "snapshot b truncated"
    );
    assert!(read(&p("snap/sub/d")) == d, "snapshot keeps d");
    assert!(!p("src/sub/d").exists());
    assert!(p("src/link").exists() && !p("snap/link").exists());

    // Deleting the whole source leaves the snapshot readable after GC.
    std::fs::remove_dir_all(p("src")).unwrap();
    // Only the snapshot's chunks stay: a (4, one rewritten), b (2, the
    // truncated one still the shared chunk), d (2).
    c.wait_for(WAIT, "the source's own chunks collected", || async {
        chunks(&c).await == 4 + 2 + 2
    })
    .await;
    // A second mount: an empty chunk cache, so the bytes come from the
    // storage nodes.
    let fresh = Mount::new(&c, &[]);
    let q = |n: &str| fresh.path().join(n);
    assert!(read(&q("snap/a")) == a_snap, "snapshot a after GC");
    assert!(read(&q("snap/sub/b")) == b[..CHUNK + 5]);
    assert!(read(&q("snap/sub/d")) == d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_snapshot_refuses_changes_and_a_too_large_tree_is_refused() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(1, &format!("snapshot_max_inodes = 3\n{FAST_GC}")).await;
    let m = Mount::new(&c, &[]);
    let p = |n: &str| m.path().join(n);
    std::fs::create_dir(p("d")).unwrap();
    write(&p("d/f"), b"frozen");
    c.cli_ok(&["snapshot", "--read-only", "/d", "/ro"]);
    assert_eq!(read(&p("ro/f")), b"frozen");
    let erofs = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(
        erofs(std::fs::write(p("ro/f"), b"x")),
        Some(libc::EROFS),
        "write"
    );
    assert_eq!(
        erofs(std::fs::write(p("ro/new"), b"x")),
        Some(libc::EROFS),
        "create"
    );
    assert_eq!(
        erofs(std::fs::rename(p("ro/f"), p("ro/g"))),
        Some(libc::EROFS),
        "rename"
    );
    assert_eq!(read(&p("ro/f")), b"frozen");
    // The source stays writable; rm -r drops the read-only snapshot.
    write(&p("d/f"), b"changed");
    assert_eq!(read(&p("ro/f")), b"frozen");
    std::fs::remove_dir_all(p("ro")).unwrap();

    // Past snapshot_max_inodes: refused, nothing made.
    write(&p("d/g"), b"g");
    write(&p("d/h"), b"h");
    let out = c.cli(&["snapshot", "/d", "/big"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("snapshot_max_inodes"), "{why}");
    assert!(!p("big").exists());
}
