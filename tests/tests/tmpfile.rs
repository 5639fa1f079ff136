//! `open(dir, O_TMPFILE)` through a real mount: a file with no name that
//! `linkat` can name (by `/proc/self/fd` or `AT_EMPTY_PATH`), that cannot
//! be named when made with `O_EXCL`, that leaves nothing behind (no inode,
//! no chunks) when closed unnamed, and that a read-only mount refuses.

use std::ffi::CString;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline, random_bytes, sha256_file, sha256_hex};

/// 1 MiB chunks, so the files below span four; released chunks collected
/// within a few seconds of their upload (the upload grace covers the
/// write-back between a chunk's upload and its layout commit).
const META: &str = "chunk_size = 1048576\nreplication = 2\ntrash_retention_ms = 0\n\
                    [heal]\ninterval_ms = 200\ngc_grace_ms = 3000\ngc_release_grace_ms = 500\n";
/// Past three chunk boundaries, and not a multiple of any write size.
const LEN: usize = (3 << 20) + 123_457;

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

/// `open(dir, O_TMPFILE | O_RDWR | extra, 0600)`.
fn open_tmpfile(dir: &Path, extra: i32) -> std::io::Result<File> {
    let dir = c_path(dir);
    // SAFETY: a plain syscall on a NUL-terminated path we own.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | extra, 0o600) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A syscall's 0 or -1 (errno) as a result.
fn os_result(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, to, AT_SYMLINK_FOLLOW)`:
/// how an unprivileged process names its tmpfile.
fn link_by_proc(f: &File, to: &Path) -> std::io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("no NUL");
    let to = c_path(to);
    // SAFETY: a plain syscall on NUL-terminated paths we own.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    os_result(r)
}

/// `linkat(fd, "", AT_FDCWD, to, AT_EMPTY_PATH)` (needs
/// CAP_DAC_READ_SEARCH: the tests run as root).
fn link_empty_path(f: &File, to: &Path) -> std::io::Result<()> {
    let to = c_path(to);
    // SAFETY: a plain syscall on a descriptor `f` keeps open and a path we own.
    let r = unsafe {
        libc::linkat(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    os_result(r)
}

/// Inodes in use as `statfs` reports them.
fn inodes_used(p: &Path) -> u64 {
    let p = c_path(p);
    // SAFETY: statvfs fills the zeroed struct we pass.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut s) }, 0, "statvfs");
    s.f_files - s.f_ffree
}

/// Writes `data` in uneven pieces (so writes straddle chunk boundaries).
fn write_uneven(f: &mut File, data: &[u8]) {
    for piece in data.chunks(300_001) {
        f.write_all(piece).unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tmpfile_is_nameless_until_linked_and_leaves_nothing_when_closed() {
    let _deadline = deadline(Duration::from_secs(90));
    let c = Cluster::start_with(2, META).await;
    let m = Mount::new(&c, &[]);
    let dir = m.path().join("d");
    std::fs::create_dir(&dir).unwrap();

    // Made, written across chunk boundaries and read back with no name.
    let data = random_bytes(LEN, 12);
    let mut f = open_tmpfile(&dir, 0).expect("O_TMPFILE is supported");
    write_uneven(&mut f, &data);
    let md = f.metadata().unwrap();
    assert_eq!(md.nlink(), 0, "no name");
    assert_eq!(md.len(), LEN as u64);
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert!(md.is_file());
    let mut back = vec![0u8; LEN];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(back == data, "read back before any name");
    assert!(names(&dir).is_empty(), "the listing does not show it");

    // Named through /proc/self/fd; the bytes survive the close and read
    // the same through a fresh mount.
    link_by_proc(&f, &dir.join("kept")).expect("linkat via /proc/self/fd");
    assert_eq!(f.metadata().unwrap().nlink(), 1);
    drop(f);
    assert_eq!(names(&dir), ["kept"]);

    // Named with AT_EMPTY_PATH, after a rewrite in the middle.
    let mut g = open_tmpfile(&dir, 0).unwrap();
    let other = random_bytes(LEN, 13);
    write_uneven(&mut g, &other);
    g.seek(SeekFrom::Start(1 << 20)).unwrap();
    g.write_all(b"middle").unwrap();
    link_empty_path(&g, &dir.join("kept2")).expect("linkat AT_EMPTY_PATH");
    drop(g);
    let mut other = other;
    other[1 << 20..(1 << 20) + 6].copy_from_slice(b"middle");

    let fresh = Mount::new(&c, &[]);
    let d2 = fresh.path().join("d");
    assert_eq!(names(&d2), ["kept", "kept2"]);
    assert_eq!(sha256_file(&d2.join("kept")), sha256_hex(&data));
    assert_eq!(sha256_file(&d2.join("kept2")), sha256_hex(&other));
    assert_eq!(std::fs::metadata(d2.join("kept")).unwrap().nlink(), 1);

    // With O_EXCL the file can never get a name.
    let x = open_tmpfile(&dir, libc::O_EXCL).expect("O_TMPFILE | O_EXCL opens");
    let e = link_by_proc(&x, &dir.join("never")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    drop(x);
    assert_eq!(names(&dir), ["kept", "kept2"]);

    // Closed unnamed: its inode goes, and its chunks are collected.
    // (Chunks the rewrite above replaced are collected first.)
    c.wait_for(
        Duration::from_secs(20),
        "no unreferenced chunks",
        || async { c.status().await.gc_pending_bytes == 0 },
    )
    .await;
    let before = c.status().await;
    let used_before = inodes_used(m.path());
    let disk = |c: &Cluster| c.chunk_files(0).len() + c.chunk_files(1).len();
    let disk_before = disk(&c);
    let mut t = open_tmpfile(&dir, 0).unwrap();
    write_uneven(&mut t, &random_bytes(LEN, 14));
    t.sync_all().unwrap();
    let during = c.status().await;
    assert_eq!(during.files, before.files + 1, "an inode while open");
    assert_eq!(during.chunks, before.chunks + 4, "four chunks stored");
    assert_eq!(inodes_used(m.path()), used_before + 1);
    drop(t);
    c.wait_for(
        Duration::from_secs(20),
        "the tmpfile's chunks collected",
        || async {
            let s = c.status().await;
            s.files == before.files && s.chunks == before.chunks && disk(&c) == disk_before
        },
    )
    .await;
    assert_eq!(inodes_used(m.path()), used_before);
    assert_eq!(names(&dir), ["kept", "kept2"]);

    // A read-only mount refuses.
    let ro = Mount::new(&c, &["ro"]);
    let e = open_tmpfile(&ro.path().join("d"), 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    drop(ro);
    drop(fresh);
    drop(m);
}
