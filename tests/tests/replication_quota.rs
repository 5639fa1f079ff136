//! Replication per directory and per file (`bigfs setrepl`/`getrepl`, the
//! `user.bigfs.replication` attribute through a mount) and directory
//! quotas (`bigfs quota`, EDQUOT and `df` through a mount), end to end.
//!
//! 64 KiB chunks and a 200 ms healing tick keep each test to seconds.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline, random_bytes, write_file};

/// Time limit of each test here: each runs in well under 15 s on a loaded
/// 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// 64 KiB chunks, a 200 ms healing tick, surplus and released copies
/// collected within about a second.
const FAST_HEAL: &str = r#"
chunk_size = 65536
[heal]
interval_ms = 200
gc_grace_ms = 3000
gc_release_grace_ms = 1000
"#;

/// `bigfs --json getrepl PATH`.
fn getrepl(c: &Cluster, path: &str) -> serde_json::Value {
    let out = c.cli_ok(&["--json", "getrepl", path]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Whether every chunk of `path` has exactly `n` Available copies.
fn copies_are(c: &Cluster, path: &str, n: u64) -> bool {
    let v = getrepl(c, path);
    v["copies_min"] == n && v["copies_max"] == n
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("run a tool")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setrepl_recursive_is_inherited_heals_up_and_lowering_trims() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(4, FAST_HEAL).await;
    let client = c.client().await;
    client
        .mkdir(client.root(), "d", 0o755)
        .await
        .expect("mkdir");
    // Three chunks, written at the default of 3 copies.
    write_file(&client, "/d/old", &random_bytes(150_000, 1)).await;
    c.wait_for(Duration::from_secs(20), "3 copies", || async {
        copies_are(&c, "/d/old", 3)
    })
    .await;

    let out = c.cli_ok(&["setrepl", "-r", "4", "/d"]);
    assert!(out.contains("2 changed"), "{out}");
    // New files inherit the directory's count.
    write_file(&client, "/d/new", &random_bytes(70_000, 2)).await;
    assert_eq!(getrepl(&c, "/d/new")["replication"], 4);
    assert_eq!(getrepl(&c, "/d")["replication"], 4);
    // Raising heals up, on a 4-node cluster.
    for f in ["/d/old", "/d/new"] {
        c.wait_for(
            Duration::from_secs(30),
            &format!("4 copies of {f}"),
            || async { copies_are(&c, f, 4) },
        )
        .await;
    }
    c.wait_for(Duration::from_secs(20), "healed", || c.healed())
        .await;
    let s = c.status().await;
    // 150,000 and 70,000 bytes in 64 KiB chunks: 3 + 2 chunks.
    assert_eq!(s.copies_wanted, 4 * 5, "4 copies of 5 chunks wanted");
    assert_eq!(s.copies_good, 4 * 5);
    let status = c.cli_ok(&["status"]);
    assert!(status.contains("copies: 20 of 20 wanted"), "{status}");
    // `admin files` (and /files) show wanted next to actual.
    let files = c.cli_ok(&["admin", "files", "/d"]);
    assert!(files.contains("COPIES") && files.contains("4/4"), "{files}");
    let (code, body) = c
        .admin_get(&c.meta_admin_addr, "/files?prefix=/d/old")
        .expect("GET /files");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["files"][0]["wanted"], 4, "{v}");
    assert_eq!(v["files"][0]["copies"], 4, "{v}");

    // Lowering trims the surplus copies.
    c.cli_ok(&["setrepl", "1", "/d/old"]);
    c.wait_for(
        Duration::from_secs(30),
        "/d/old trimmed to 1 copy",
        || async { copies_are(&c, "/d/old", 1) },
    )
    .await;
    assert!(
        copies_are(&c, "/d/new", 4),
        "the other file keeps its copies"
    );

    // Bounds.
    for bad in ["0", "10"] {
        let o = c.cli(&["setrepl", bad, "/d"]);
        assert_eq!(o.status.code(), Some(2), "setrepl {bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("1 to 9"), "{}", stderr(&o));
    }
    let o = c.cli(&["setrepl", "2", "/nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_attribute_reads_and_sets_through_a_mount() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(3, FAST_HEAL).await;
    let m = Mount::new(&c, &[]);
    let dir = m.path().join("x");
    std::fs::create_dir(&dir).expect("mkdir");
    let attr = "user.bigfs.replication";
    let get = |p: &Path| {
        let o = run(Command::new("getfattr")
            .args(["--only-values", "-n", attr])
            .arg(p));
        assert!(
            o.status.success(),
            "getfattr {}: {}",
            p.display(),
            stderr(&o)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // Not set: the cluster default.
    assert_eq!(get(&dir), "3");
    let o = run(Command::new("setfattr")
        .args(["-n", attr, "-v", "1"])
        .arg(&dir));
    assert!(o.status.success(), "setfattr: {}", stderr(&o));
    assert_eq!(get(&dir), "1");
    // A new file inherits it; reading it works on a just-created file.
    let f = dir.join("f");
    std::fs::write(&f, random_bytes(100_000, 3)).expect("write");
    assert_eq!(get(&f), "1");
    c.wait_for(Duration::from_secs(30), "1 copy", || async {
        copies_are(&c, "/x/f", 1)
    })
    .await;
    let o = run(Command::new("setfattr")
        .args(["-n", attr, "-v", "2"])
        .arg(&f));
    assert!(o.status.success(), "setfattr: {}", stderr(&o));
    assert_eq!(getrepl(&c, "/x/f")["replication"], 2);
    c.wait_for(Duration::from_secs(30), "healed up to 2 copies", || async {
        copies_are(&c, "/x/f", 2)
    })
    .await;
    // Bad values are refused; the attribute is not listed.
    for bad in ["0", "10", "many"] {
        let o = run(Command::new("setfattr")
            .args(["-n", attr, "-v", bad])
            .arg(&f));
        assert!(!o.status.success(), "setfattr -v {bad} accepted");
    }
    let o = run(Command::new("getfattr").arg("-d").arg(&f));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("bigfs"),
        "listed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// `df -B1 --output=size,avail,itotal PATH` as numbers.
fn df(path: &Path) -> (u64, u64, u64) {
    let o = run(Command::new("df")
        .args(["-B1", "--output=size,avail,itotal"])
        .arg(path));
    assert!(o.status.success(), "df: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("df output: {text}")))
        .collect();
    (nums[0], nums[1], nums[2])
}

fn quota_json(c: &Cluster, path: &str) -> serde_json::Value {
    let out = c.cli_ok(&["--json", "quota", "get", path]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_refuse_with_edquot_show_in_df_and_count_deletes_and_renames() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(2, FAST_HEAL).await;
    let m = Mount::new(&c, &[]);
    let q = m.path().join("q");
    let other = m.path().join("other");
    std::fs::create_dir(&q).expect("mkdir q");
    std::fs::create_dir(&other).expect("mkdir other");
    std::fs::write(q.join("seed"), vec![7u8; 1000]).expect("seed");
    let out = c.cli_ok(&["quota", "set", "/q", "--bytes", "1M", "--inodes", "4"]);
    assert!(out.contains("of 1048576"), "{out}");
    // The tree already there is counted when the quota is set.
    let v = quota_json(&c, "/q");
    assert_eq!(
        (v["bytes"].as_u64(), v["inodes"].as_u64()),
        (Some(1000), Some(1)),
        "{v}"
    );

    // df of the quota directory shows the quota as the size.
    let (size, avail, itotal) = df(&q);
    assert_eq!(size, 1 << 20);
    assert!(
        avail <= (1 << 20) - 1000 && avail > 900_000,
        "avail {avail}"
    );
    assert_eq!(itotal, 4);

    // Bytes: a write past the limit fails with EDQUOT, at the latest at
    // fsync (writes are buffered, as on any write-back file system).
    let o = run(Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=32", "conv=fsync"])
        .arg(format!("of={}", q.join("big").display())));
    assert!(
        !o.status.success(),
        "dd of 2 MiB into a 1 MiB quota succeeded"
    );
    assert!(stderr(&o).contains("Disk quota exceeded"), "{}", stderr(&o));
    std::fs::remove_file(q.join("big")).expect("rm big");
    // Within the limit it works.
    std::fs::write(q.join("ok"), vec![1u8; 500_000]).expect("write within the quota");

    // Inodes: seed, ok, d, and one more; the fifth create is refused.
    std::fs::create_dir(q.join("d")).expect("mkdir d");
    std::fs::write(q.join("d/a"), b"a").expect("fourth inode");
    let e = std::fs::write(q.join("d/b"), b"b").expect_err("fifth inode");
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    let v = quota_json(&c, "/q");
    assert_eq!(v["inodes"], 4, "{v}");
    assert_eq!(v["bytes"], 1000 + 500_000 + 1, "{v}");

    // Deletes give room back.
    std::fs::remove_file(q.join("d/a")).expect("rm a");
    std::fs::write(q.join("d/b"), b"bb").expect("room again");
    std::fs::remove_file(q.join("seed")).expect("rm seed");
    let v = quota_json(&c, "/q");
    assert_eq!(
        (v["bytes"].as_u64(), v["inodes"].as_u64()),
        (Some(500_002), Some(3)),
        "{v}"
    );

    // Renames: within the quota nothing moves; across its border rename(2)
    // answers EXDEV and mv copies and deletes, which moves the usage.
    std::fs::rename(q.join("ok"), q.join("d/ok")).expect("rename inside");
    let e = std::fs::rename(q.join("d/ok"), other.join("ok")).expect_err("across");
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{e}");
    let o = run(Command::new("mv").arg(q.join("d/ok")).arg(other.join("ok")));
    assert!(o.status.success(), "mv: {}", stderr(&o));
    assert_eq!(
        std::fs::metadata(other.join("ok")).expect("moved").len(),
        500_000
    );
    let v = quota_json(&c, "/q");
    assert_eq!(
        (v["bytes"].as_u64(), v["inodes"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    let o = run(Command::new("mv").arg(other.join("ok")).arg(q.join("back")));
    assert!(o.status.success(), "mv back: {}", stderr(&o));
    assert_eq!(quota_json(&c, "/q")["bytes"], 500_002);

    // ls, then clear: no limit any more.
    let ls = c.cli_ok(&["quota", "ls"]);
    assert!(ls.contains("/q: bytes 500002 of 1048576"), "{ls}");
    c.cli_ok(&["quota", "clear", "/q"]);
    assert!(c.cli_ok(&["quota", "ls"]).contains("no quotas"));
    std::fs::write(q.join("big"), vec![0u8; 1_200_000]).expect("no limit after clear");
    let (size, _, _) = df(&q);
    assert!(size > 1 << 20, "df still shows the quota: {size}");
    let o = c.cli(&["quota", "set", "/q", "--bytes", "12X"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
