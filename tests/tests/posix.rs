//! POSIX semantics through a real FUSE mount, as a conformance suite such as
//! pjdfstest checks them: special files, permissions for other users,
//! timestamps. Linux only; needs /dev/fuse, fusermount3 and root.

#![cfg(target_os = "linux")]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use bigfs_tests::{Cluster, Mount};

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
