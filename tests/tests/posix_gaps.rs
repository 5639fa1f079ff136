//! POSIX behaviour found missing by tests from outside the project, pinned
//! through a real mount: `st_blocks` of a file being written, `fstat` on a
//! directory replaced while open, fallocate's punch hole and zero range,
//! renameat2's whiteout flag, access times (relatime, noatime,
//! strictatime), and the mount's kernel flags and source.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline, random_bytes};

/// Small chunks, so a sparse file spans several.
const META: &str = "chunk_size = 262144\nreplication = 2\n";
const CHUNK: u64 = 262_144;

fn fallocate(f: &File, mode: i32, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: a plain syscall on a descriptor `f` keeps open.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_holes_open_directories_and_whiteouts() {
    let _deadline = deadline(Duration::from_secs(180));
    let c = Cluster::start_with(2, META).await;
    let m = Mount::new(&c, &[]);
    let root = m.path();

    // st_blocks counts what is (or will be) stored, not the size: two 4 KiB
    // writes far apart in a sparse file, before and after the flush.
    let sparse = root.join("sparse");
    let mut f = File::create(&sparse).unwrap();
    for at in [4 * CHUNK, 12 * CHUNK] {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
    }
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), 12 * CHUNK + 4096);
    assert_eq!(
        md.blocks() * 512,
        8192,
        "buffered: 8 KiB written, not the size"
    );
    drop(f);
    let md = std::fs::metadata(&sparse).unwrap();
    assert_eq!(md.blocks() * 512, 8192, "committed: 8 KiB stored");
    let grown = root.join("grown");
    File::create(&grown).unwrap().set_len(10 << 20).unwrap();
    assert_eq!(
        std::fs::metadata(&grown).unwrap().blocks(),
        0,
        "truncated up: a hole"
    );

    // A directory renamed over while open: fstat keeps working, nlink 0.
    std::fs::create_dir(root.join("a")).unwrap();
    std::fs::create_dir(root.join("b")).unwrap();
    let dir = File::open(root.join("a")).unwrap();
    let before = dir.metadata().unwrap();
    std::fs::rename(root.join("b"), root.join("a")).unwrap();
    std::thread::sleep(Duration::from_millis(500)); // past the attr TTL
    let after = dir
        .metadata()
        .expect("fstat on a directory replaced while open");
    assert!(after.is_dir());
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.nlink(), 0);
    assert_eq!(after.mode(), before.mode());
    drop(dir);
    // Removed while open, too.
    std::fs::create_dir(root.join("c")).unwrap();
    let dir = File::open(root.join("c")).unwrap();
    std::fs::remove_dir(root.join("c")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dir.metadata().expect("fstat after rmdir").nlink(), 0);
    drop(dir);

    // fallocate: punch a hole across a chunk border and a whole chunk, zero
    // a range, and extend with zero range; collapse is refused.
    let data = random_bytes(4 * CHUNK as usize, 11);
    let path = root.join("holes");
    std::fs::write(&path, &data).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let (p0, p1) = (CHUNK / 2, 2 * CHUNK + 100);
    fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        p0,
        p1 - p0,
    )
    .unwrap();
    let (z0, z1) = (3 * CHUNK + 5, 3 * CHUNK + 9000);
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, z0, z1 - z0).unwrap();
    let end = 5 * CHUNK;
    fallocate(
        &f,
        libc::FALLOC_FL_ZERO_RANGE,
        4 * CHUNK - 10,
        end - (4 * CHUNK - 10),
    )
    .unwrap();
    let e = fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, CHUNK).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
    drop(f);
    let mut want = data.clone();
    want[p0 as usize..p1 as usize].fill(0);
    want[z0 as usize..z1 as usize].fill(0);
    want[4 * CHUNK as usize - 10..].fill(0);
    want.resize(end as usize, 0);
    // A second mount: no page cache shared with the writer.
    let m2 = Mount::new(&c, &[]);
    let mut got = Vec::new();
    File::open(m2.path().join("holes"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got.len(), want.len(), "size after zero range past the end");
    assert!(
        got == want,
        "punched and zeroed ranges read as zeros, the rest is intact"
    );

    // renameat2: RENAME_WHITEOUT alone is refused with EINVAL (not ENOSYS
    // or EOPNOTSUPP, which tools read as "no renameat2 at all"), and
    // RENAME_NOREPLACE works.
    std::fs::write(root.join("w1"), b"1").unwrap();
    std::fs::write(root.join("w2"), b"2").unwrap();
    let rename2 =
        |a: &str, b: &str, flags: u32| bigfs_tests::renameat2(&root.join(a), &root.join(b), flags);
    assert_eq!(
        rename2("w1", "w3", libc::RENAME_WHITEOUT),
        Err(libc::EINVAL)
    );
    assert_eq!(
        rename2("w1", "w2", libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    assert_eq!(rename2("w1", "w3", libc::RENAME_NOREPLACE), Ok(()));
    drop(m2);
    drop(m);
}

fn atime(p: &Path) -> i64 {
    let md = std::fs::metadata(p).unwrap();
    md.atime() * 1_000_000_000 + md.atime_nsec()
}

fn read_all(p: &Path) {
    let mut v = Vec::new();
    File::open(p).unwrap().read_to_end(&mut v).unwrap();
}

/// Waits past the mount's atime batch (1 s) and the test attr TTL (0.2 s).
fn settle() {
    std::thread::sleep(Duration::from_millis(1800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_update_access_times_as_the_mount_flags_say() {
    let _deadline = deadline(Duration::from_secs(180));
    let c = Cluster::start_with(2, META).await;
    let rel = Mount::new(&c, &[]);
    let no = Mount::new(&c, &["noatime"]);
    let strict = Mount::new(&c, &["strictatime"]);
    let f = rel.path().join("f");
    std::fs::write(&f, b"hello").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let written = atime(&f);

    // noatime: a read changes nothing.
    read_all(&no.path().join("f"));
    settle();
    assert_eq!(atime(&f), written, "noatime");

    // relatime (the default): the first read after the write updates it,
    // a second one does not.
    read_all(&f);
    settle();
    let first = atime(&f);
    assert!(
        first > written,
        "relatime: read after a write updates atime"
    );
    let ctime = std::fs::metadata(&f).unwrap().ctime();
    read_all(&f);
    settle();
    assert_eq!(atime(&f), first, "relatime: a second read does not");
    assert_eq!(
        std::fs::metadata(&f).unwrap().ctime(),
        ctime,
        "an access is no change"
    );

    // strictatime: every read (open) updates it.
    std::thread::sleep(Duration::from_millis(1100));
    read_all(&strict.path().join("f"));
    settle();
    assert!(atime(&f) > first, "strictatime updates on every read");
    drop((rel, no, strict));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mount_is_fuse_bigfs_from_its_members_and_honours_kernel_flags() {
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(2, META).await;
    // mount(8) passes -v (and -s) on to its helper.
    let m = Mount::new(&c, &["-v", "-s", "noexec,nosuid,nodev,made_up_option"]);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let dir = m.path().canonicalize().unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(dir.to_str().unwrap()))
        .expect("the mount in /proc/mounts");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        fields[0], c.meta_addr,
        "source: the metadata members ({line})"
    );
    assert_eq!(fields[2], "fuse.bigfs", "type ({line})");
    for flag in ["noexec", "nosuid", "nodev"] {
        assert!(fields[3].split(',').any(|o| o == flag), "{flag} in {line}");
    }
    let script = m.path().join("run.sh");
    std::fs::write(&script, b"#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e = std::process::Command::new(&script).status().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "noexec: {e}");
    let log = std::fs::read_to_string(m.log_path()).unwrap();
    assert!(
        log.contains("made_up_option"),
        "-s reports the unknown option: {log}"
    );
    drop(m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subdir_mount_sees_only_its_subtree() {
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(2, META).await;
    let full = Mount::new(&c, &[]);
    std::fs::create_dir_all(full.path().join("proj/src")).unwrap();
    std::fs::write(full.path().join("proj/src/main.c"), b"int main;").unwrap();
    std::fs::write(full.path().join("secret"), b"outside").unwrap();

    let sub = Mount::new(&c, &["subdir=/proj"]);
    let names: Vec<String> = std::fs::read_dir(sub.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["src"], "the root is /proj");
    assert_eq!(
        std::fs::read(sub.path().join("src/main.c")).unwrap(),
        b"int main;"
    );
    // `..` stops at the mount's root, as at any root.
    assert!(std::fs::metadata(sub.path().join("src/../../secret")).is_err());
    std::fs::write(sub.path().join("new"), b"made in the subdir").unwrap();
    assert_eq!(
        std::fs::read(full.path().join("proj/new")).unwrap(),
        b"made in the subdir"
    );
    // A subdir that does not exist refuses the mount, saying why.
    let e = match Mount::as_client(&c, "nosuch", &["subdir=/nope"]) {
        Ok(_) => panic!("mounted a missing subdir"),
        Err(e) => e,
    };
    assert!(e.contains("/nope does not exist"), "{e}");
    drop((sub, full));
}
