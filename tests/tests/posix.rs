//! POSIX semantics through a real FUSE mount, as a conformance suite such as
//! pjdfstest checks them: special files, permissions for other users,
//! timestamps. Linux only; needs /dev/fuse, fusermount3 and root.

#![cfg(target_os = "linux")]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, as_user, deadline};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 1 s on a loaded 2-core machine; the limit is 60 s at least, room
/// for Cluster::start's own 20 s + 30 s waits.
const DEADLINE: Duration = Duration::from_secs(60);

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// `mknod(path, mode, makedev(major, minor))`, panicking on failure.
fn mknod(p: &Path, mode: libc::mode_t, major: u32, minor: u32) {
    let rc = unsafe { libc::mknod(c_path(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_sockets_and_device_nodes_are_created_listed_and_work() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let p = |s: &str| m.path().join(s);

    mknod(&p("fifo"), libc::S_IFIFO | 0o640, 0, 0);
    mknod(&p("chr"), libc::S_IFCHR | 0o600, 1, 2);
    mknod(&p("blk"), libc::S_IFBLK | 0o600, 3, 4);
    let _listener = std::os::unix::net::UnixListener::bind(p("sock")).expect("bind a socket");

    let check = |root: &Path| {
        let md = std::fs::symlink_metadata(root.join("fifo")).unwrap();
        assert!(md.file_type().is_fifo());
        assert_eq!((md.mode() & 0o7777, md.size(), md.nlink()), (0o640, 0, 1));
        let md = std::fs::symlink_metadata(root.join("chr")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!((libc::major(md.rdev()), libc::minor(md.rdev())), (1, 2));
        let md = std::fs::symlink_metadata(root.join("blk")).unwrap();
        assert!(md.file_type().is_block_device());
        assert_eq!((libc::major(md.rdev()), libc::minor(md.rdev())), (3, 4));
        assert!(
            std::fs::symlink_metadata(root.join("sock"))
                .unwrap()
                .file_type()
                .is_socket()
        );
        let mut names: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    t.is_fifo(),
                    t.is_socket(),
                )
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("blk".to_string(), false, false),
                ("chr".to_string(), false, false),
                ("fifo".to_string(), true, false),
                ("sock".to_string(), false, true),
            ]
        );
    };
    check(m.path());
    // Another mount sees the same nodes (they live in the metadata service).
    let m2 = Mount::new(&c, &[]);
    check(m2.path());

    // A FIFO on BigFS is a real pipe: the kernel carries the bytes.
    let fifo = p("fifo");
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        w.write_all(b"through the pipe").unwrap();
    });
    let mut got = String::new();
    std::fs::File::open(p("fifo"))
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through the pipe");

    // Hard links, renames and unlinks treat them like files.
    std::fs::hard_link(p("fifo"), p("fifo2")).unwrap();
    assert_eq!(std::fs::symlink_metadata(p("fifo")).unwrap().nlink(), 2);
    std::fs::rename(p("fifo2"), p("chr")).unwrap();
    assert!(
        std::fs::symlink_metadata(p("chr"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    for n in ["fifo", "chr", "blk", "sock"] {
        std::fs::remove_file(p(n)).unwrap();
    }
    assert_eq!(std::fs::read_dir(m.path()).unwrap().count(), 0);
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

const DENIED: &str = "Permission denied"; // EACCES
const NOT_PERMITTED: &str = "Operation not permitted"; // EPERM

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_meet_unix_permissions_sticky_dirs_and_set_id_rules() {
    let _deadline = deadline(DEADLINE);
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &["allow_other"]);
    let p = |s: &str| m.path().join(s);
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let (alice, bob) = (65534, 65533);

    // A sticky, world-writable directory: everyone creates, only the owner
    // of a file (or of the directory) removes or renames it.
    std::fs::create_dir(p("tmp")).unwrap();
    set_mode(&p("tmp"), 0o1777);
    assert_eq!(as_user(alice, alice, &[&"touch", &p("tmp/a")]), None);
    let err = as_user(bob, bob, &[&"rm", &"-f", &p("tmp/a")]).expect("bob removed alice's file");
    assert!(err.contains(NOT_PERMITTED) || err.contains(DENIED), "{err}");
    let err = as_user(bob, bob, &[&"mv", &p("tmp/a"), &p("tmp/b")]).expect("bob renamed it");
    assert!(err.contains(NOT_PERMITTED) || err.contains(DENIED), "{err}");
    assert_eq!(as_user(alice, alice, &[&"rm", &p("tmp/a")]), None);

    // Search permission on every path component.
    std::fs::create_dir(p("closed")).unwrap();
    std::fs::write(p("closed/f"), b"x").unwrap();
    set_mode(&p("closed/f"), 0o666);
    set_mode(&p("closed"), 0o644);
    let err = as_user(alice, alice, &[&"cat", &p("closed/f")]).expect("read through a 0644 dir");
    assert!(err.contains(DENIED), "{err}");
    set_mode(&p("closed"), 0o755);
    assert_eq!(as_user(alice, alice, &[&"cat", &p("closed/f")]), None);

    // Only the owner changes the mode; only root gives a file away; the
    // owner may change its group to one of its own groups.
    std::fs::write(p("mine"), b"x").unwrap();
    std::os::unix::fs::chown(p("mine"), Some(alice), Some(alice)).unwrap();
    let err = as_user(bob, bob, &[&"chmod", &"600", &p("mine")]).expect("chmod by a stranger");
    assert!(err.contains(NOT_PERMITTED), "{err}");
    let err = as_user(alice, alice, &[&"chown", &bob.to_string(), &p("mine")])
        .expect("chown to another user");
    assert!(err.contains(NOT_PERMITTED), "{err}");
    assert_eq!(as_user(alice, alice, &[&"chmod", &"640", &p("mine")]), None);
    assert_eq!(mode(&p("mine")), 0o640);

    // A non-member setting set-group-ID on a file loses the bit silently.
    std::os::unix::fs::chown(p("mine"), Some(alice), Some(0)).unwrap();
    assert_eq!(
        as_user(alice, alice, &[&"chmod", &"2755", &p("mine")]),
        None
    );
    assert_eq!(mode(&p("mine")), 0o755);

    // A write by someone else clears set-user-ID and set-group-ID.
    std::fs::write(p("suid"), b"x").unwrap();
    set_mode(&p("suid"), 0o6777);
    let append = format!("echo y >> {}", p("suid").display());
    assert_eq!(as_user(alice, alice, &[&"sh", &"-c", &append]), None);
    assert_eq!(mode(&p("suid")), 0o777);

    // Timestamps: anyone who may write sets "now"; only the owner sets a
    // chosen time.
    set_mode(&p("suid"), 0o666);
    assert_eq!(as_user(alice, alice, &[&"touch", &p("suid")]), None);
    let err = as_user(alice, alice, &[&"touch", &"-d", &"2001-01-01", &p("suid")])
        .expect("a stranger set an explicit mtime");
    assert!(err.contains(NOT_PERMITTED), "{err}");
}
