//! The mount at the cluster's limits: a full cluster answers ENOSPC and
//! loses nothing already stored, and space comes back after a delete; a
//! read-only mount answers EROFS to every change and still reads.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline, random_bytes, sha256_file, sha256_hex};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 6 s on a loaded 2-core machine; the limit is 60 s at least, room
/// for Cluster::start's own 20 s + 30 s waits.
const DEADLINE: Duration = Duration::from_secs(60);

const MIB: usize = 1 << 20;

/// 1 MiB chunks; deleted chunks are collected one second after their last
/// reference goes.
const META: &str = r#"
chunk_size = 1048576
[heal]
interval_ms = 200
gc_grace_ms = 1000
gc_release_grace_ms = 500
"#;

/// Each node offers 20 MiB: with three copies the cluster holds 20 MiB.
const STORAGE: &str = "capacity_bytes = 20971520\n";

/// Writes `data` to `path` in 1 MiB writes, then fsyncs and closes it: the
/// first error any step returned.
fn write_and_fsync(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    for piece in data.chunks(MIB) {
        f.write_all(piece)?;
    }
    f.sync_all()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_answers_enospc_keeps_what_it_has_and_recovers_after_rm() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with_storage(3, META, STORAGE).await;
    let m = Mount::new(&c, &[]);
    let keep = random_bytes(8 * MIB, 90);
    write_and_fsync(&m.path().join("keep"), &keep).expect("8 MiB fits");

    let big = random_bytes(40 * MIB, 91);
    let err = write_and_fsync(&m.path().join("big"), &big).expect_err("40 MiB does not fit");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");

    // What was stored before is whole, through this mount and a fresh one.
    assert_eq!(sha256_file(&m.path().join("keep")), sha256_hex(&keep));
    let fresh = Mount::new(&c, &[]);
    assert_eq!(sha256_file(&fresh.path().join("keep")), sha256_hex(&keep));

    // Removing the partial file frees its chunks; new writes fit again.
    std::fs::remove_file(m.path().join("big")).expect("rm on a full cluster");
    let again = random_bytes(8 * MIB, 92);
    let mut last = None;
    for _ in 0..100 {
        match write_and_fsync(&m.path().join("again"), &again) {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(last.is_none(), "space never came back: {last:?}");
    assert_eq!(sha256_file(&fresh.path().join("again")), sha256_hex(&again));
    assert_eq!(sha256_file(&fresh.path().join("keep")), sha256_hex(&keep));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_mount_answers_erofs_to_every_change_and_still_reads() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let rw = Mount::new(&c, &[]);
    std::fs::create_dir(rw.path().join("d")).unwrap();
    std::fs::write(rw.path().join("d/f"), b"read me").unwrap();
    let ro = Mount::new(&c, &["ro"]);
    let p = ro.path();
    assert_eq!(std::fs::read(p.join("d/f")).unwrap(), b"read me");

    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(std::fs::write(p.join("new"), b"x"), "create");
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(p.join("d/f"))
            .map(drop),
        "open for writing",
    );
    erofs(std::fs::create_dir(p.join("nd")), "mkdir");
    erofs(std::fs::remove_file(p.join("d/f")), "unlink");
    erofs(std::fs::rename(p.join("d/f"), p.join("d/g")), "rename");
    erofs(std::os::unix::fs::symlink("d/f", p.join("ln")), "symlink");
    erofs(
        std::fs::set_permissions(
            p.join("d/f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        ),
        "chmod",
    );
    // Nothing changed underneath.
    assert_eq!(std::fs::read(rw.path().join("d/f")).unwrap(), b"read me");
    let names: Vec<_> = std::fs::read_dir(rw.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("d")]);
}
