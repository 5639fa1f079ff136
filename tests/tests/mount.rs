//! `bigfs-mount` end to end: a real local cluster mounted with FUSE in a
//! temporary directory, used with ordinary programs (cp, cat, cmp, diff,
//! tar, git, setfattr, df, dd, ...) and std::fs. Linux only; needs
//! /dev/fuse, fusermount3 and root (for drop_caches and chown).

#![cfg(target_os = "linux")]

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bigfs_tests::{
    Cluster, Mount, deadline, drop_caches, is_mounted, random_bytes, renameat2, sha256_file,
};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 74 s on a loaded 2-core machine; the limit is ~4x that.
const DEADLINE: Duration = Duration::from_secs(300);

const MIB: usize = 1 << 20;
const CHUNK: usize = 4 * MIB;

/// Runs a command, asserts it succeeded, returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cmd(prog: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut c = Command::new(prog);
    for a in args {
        c.arg(a);
    }
    c
}

/// `cmp a b` must succeed (every byte equal, same length).
fn assert_cmp(a: &Path, b: &Path) {
    run(&mut cmd("cmp", &[&a, &b]));
}

/// `cat src > dst`.
fn cat_to(src: &Path, dst: &Path) {
    let out = std::fs::File::create(dst).expect("create cat output");
    let st = Command::new("cat")
        .arg(src)
        .stdout(out)
        .status()
        .expect("run cat");
    assert!(st.success(), "cat {} failed: {st}", src.display());
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("no OS error in {e}")),
    }
}

fn local_dir(c: &Cluster, name: &str) -> PathBuf {
    let d = c.dir.path().join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tree of `files` small files (0..6 KiB, some identical, some empty)
/// spread over nested directories, plus a symlink per directory.
fn make_tree(root: &Path, files: usize, seed: u64) {
    let per_dir = 50;
    for i in 0..files {
        let d = root
            .join(format!("d{:02}", (i / per_dir) % 8))
            .join(format!("sub{:03}", i / per_dir));
        if i % per_dir == 0 {
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(format!("f{i:05}.txt"), d.join("link")).unwrap();
        }
        let len = match i % 7 {
            0 => 0,
            1 => 1,
            _ => (i * 37) % 6000,
        };
        let data = if i % 11 == 0 {
            b"same content\n".to_vec()
        } else {
            random_bytes(len, seed + i as u64)
        };
        std::fs::write(d.join(format!("f{i:05}.txt")), data).unwrap();
    }
}

/// Waits until every chunk has all its replicas (nothing pending or under
/// replicated), so killing one node cannot lose the only copy of anything.
async fn wait_full_replication(c: &Cluster) {
    c.wait_for(Duration::from_secs(60), "full replication", || async {
        let s = c.status().await;
        s.replicas_pending == 0 && s.under_replicated == 0 && s.chunks > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_cat_ls_diff_cmp_on_files_from_0_bytes_to_300_mib() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let src = local_dir(&c, "src");
    let out = local_dir(&c, "out");
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 300 * MIB];
    for (i, &len) in sizes.iter().enumerate() {
        let name = format!("f{len}");
        let s = src.join(&name);
        std::fs::write(&s, random_bytes(len, 100 + i as u64)).unwrap();
        let d = m.path().join(&name);
        run(&mut cmd("cp", &[&s, &d]));
        assert_cmp(&s, &d);
        run(&mut cmd("diff", &[&s, &d]));
        cat_to(&d, &out.join(&name));
        assert_cmp(&s, &out.join(&name));
        assert_eq!(std::fs::metadata(&d).unwrap().len(), len as u64, "{name}");
    }
    // `ls -l` shows every file with its size.
    let ls = run(Command::new("ls").arg("-ln").arg(m.path()));
    for &len in &sizes {
        let name = format!("f{len}");
        let line = ls
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing from ls:\n{ls}"));
        assert_eq!(
            line.split_whitespace().nth(4),
            Some(len.to_string().as_str()),
            "{line}"
        );
    }
    // A second, cold mount reads the same bytes from the cluster.
    let m2 = Mount::new(&c, &[]);
    for &len in &sizes {
        let name = format!("f{len}");
        assert_eq!(
            sha256_file(&src.join(&name)),
            sha256_file(&m2.path().join(&name)),
            "{name} read from a second mount"
        );
    }
    // cp back out of the mount.
    let back = out.join("back");
    run(&mut cmd("cp", &[&m2.path().join("f314572800"), &back]));
    assert_cmp(&src.join("f314572800"), &back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_r_of_2000_files_then_diff_r() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let src = c.dir.path().join("tree");
    make_tree(&src, 2000, 7);
    let dst = m.path().join("tree");
    run(&mut cmd("cp", &[&"-a", &src, &dst]));
    run(&mut cmd("diff", &[&"-r", &"--no-dereference", &src, &dst]));
    // Every file is there, seen by a fresh mount too.
    let m2 = Mount::new(&c, &[]);
    let count = run(Command::new("find")
        .arg(m2.path().join("tree"))
        .args(["-type", "f"]))
    .lines()
    .count();
    assert_eq!(count, 2000);
    run(&mut cmd(
        "diff",
        &[&"-r", &"--no-dereference", &src, &m2.path().join("tree")],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_create_and_extract_inside_the_mount() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let src = c.dir.path().join("tree");
    make_tree(&src, 400, 99);
    // A bigger file than a chunk, so the archive spans several chunks.
    std::fs::write(src.join("big.bin"), random_bytes(9 * MIB + 123, 5)).unwrap();
    let tarball = m.path().join("a.tar");
    run(&mut cmd("tar", &[&"-cf", &tarball, &"-C", &src, &"."]));
    let x = m.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run(&mut cmd("tar", &[&"-xf", &tarball, &"-C", &x]));
    run(&mut cmd("diff", &[&"-r", &"--no-dereference", &src, &x]));
    // And the archive itself lists the same content.
    let listed = run(&mut cmd("tar", &[&"-tf", &tarball]));
    assert!(listed.contains("./big.bin"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_init_add_commit_fsck_inside_the_mount() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let repo = m.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| -> String {
        run(Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args([
                "-c",
                "user.name=BigFS Test",
                "-c",
                "user.email=test@bigfs.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", c.dir.path()))
    };
    git(&["init", "-q"]);
    make_tree(&repo.join("src"), 120, 3);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    std::fs::write(repo.join("README"), "hello again\n").unwrap();
    git(&["mv", "src", "lib"]);
    git(&["commit", "-q", "-a", "-m", "second"]);
    git(&["gc", "-q"]);
    git(&["fsck", "--full", "--strict"]);
    assert_eq!(git(&["status", "--porcelain"]), "");
    assert_eq!(git(&["rev-list", "--count", "HEAD"]).trim(), "2");
    assert_eq!(git(&["show", "HEAD:README"]), "hello again\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_overwrite_directories_noreplace_exchange() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let p = |s: &str| m.path().join(s);

    // Rename over an existing file: the target takes the source's content.
    std::fs::write(p("a"), b"aaaa").unwrap();
    std::fs::write(p("b"), b"bbbbbbbb").unwrap();
    run(&mut cmd("mv", &[&p("a"), &p("b")]));
    assert!(!p("a").exists());
    assert_eq!(std::fs::read(p("b")).unwrap(), b"aaaa");

    // Rename of a directory with contents, across directories.
    std::fs::create_dir_all(p("d1/inner")).unwrap();
    std::fs::write(p("d1/inner/f"), b"deep").unwrap();
    std::fs::create_dir(p("other")).unwrap();
    std::fs::rename(p("d1"), p("other/d2")).unwrap();
    assert!(!p("d1").exists());
    assert_eq!(std::fs::read(p("other/d2/inner/f")).unwrap(), b"deep");
    // Over an empty directory: allowed; over a non-empty one: ENOTEMPTY.
    std::fs::create_dir(p("empty")).unwrap();
    std::fs::rename(p("other/d2"), p("empty")).unwrap();
    assert_eq!(std::fs::read(p("empty/inner/f")).unwrap(), b"deep");
    std::fs::create_dir(p("full")).unwrap();
    std::fs::write(p("full/x"), b"x").unwrap();
    assert_eq!(
        errno(std::fs::rename(p("empty"), p("full"))),
        libc::ENOTEMPTY
    );
    // A directory into its own subtree: EINVAL.
    assert_eq!(
        errno(std::fs::rename(p("empty"), p("empty/inner/sub"))),
        libc::EINVAL
    );
    // File over directory and directory over file.
    assert_eq!(errno(std::fs::rename(p("b"), p("full"))), libc::EISDIR);
    assert_eq!(errno(std::fs::rename(p("full"), p("b"))), libc::ENOTDIR);

    // RENAME_NOREPLACE refuses an existing target, works on a new one.
    std::fs::write(p("n1"), b"one").unwrap();
    std::fs::write(p("n2"), b"two").unwrap();
    assert_eq!(
        renameat2(&p("n1"), &p("n2"), libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    assert_eq!(std::fs::read(p("n2")).unwrap(), b"two");
    renameat2(&p("n1"), &p("n3"), libc::RENAME_NOREPLACE).unwrap();
    assert!(!p("n1").exists());
    assert_eq!(std::fs::read(p("n3")).unwrap(), b"one");

    // RENAME_EXCHANGE swaps two files, and a file with a directory.
    renameat2(&p("n2"), &p("n3"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(std::fs::read(p("n2")).unwrap(), b"one");
    assert_eq!(std::fs::read(p("n3")).unwrap(), b"two");
    renameat2(&p("n2"), &p("full"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(std::fs::read(p("full")).unwrap(), b"one");
    assert_eq!(std::fs::read(p("n2/x")).unwrap(), b"x");
    assert_eq!(
        renameat2(&p("n3"), &p("missing"), libc::RENAME_EXCHANGE),
        Err(libc::ENOENT)
    );

    // The same view from a fresh mount (nothing stale in the metadata).
    let m2 = Mount::new(&c, &[]);
    let mut names: Vec<String> = std::fs::read_dir(m2.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "empty", "full", "n2", "n3", "other"]);
    assert_eq!(std::fs::read(m2.path().join("n2/x")).unwrap(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_and_symlinks() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let p = |s: &str| m.path().join(s);
    let data = random_bytes(CHUNK + 999, 11);
    std::fs::write(p("f"), &data).unwrap();
    std::fs::create_dir(p("d")).unwrap();
    run(&mut cmd("ln", &[&p("f"), &p("d/hard")]));
    let a = std::fs::metadata(p("f")).unwrap();
    let b = std::fs::metadata(p("d/hard")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(b.nlink(), 2);
    assert_cmp(&p("f"), &p("d/hard"));
    // A write through one name is seen through the other.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(p("d/hard"))
            .unwrap();
        f.seek(SeekFrom::Start(10)).unwrap();
        f.write_all(b"LINKED").unwrap();
    }
    let mut want = data.clone();
    want[10..16].copy_from_slice(b"LINKED");
    assert_eq!(std::fs::read(p("f")).unwrap(), want);
    // Removing one name leaves the other with nlink 1.
    std::fs::remove_file(p("f")).unwrap();
    let b = std::fs::metadata(p("d/hard")).unwrap();
    assert_eq!(b.nlink(), 1);
    assert_eq!(std::fs::read(p("d/hard")).unwrap(), want);
    // Hard links to directories are refused.
    assert_eq!(errno(std::fs::hard_link(p("d"), p("d2"))), libc::EPERM);

    // Symlinks: readlink, following, dangling, lstat.
    run(&mut cmd("ln", &[&"-s", &"d/hard", &p("sym")]));
    assert_eq!(run(&mut cmd("readlink", &[&p("sym")])).trim_end(), "d/hard");
    assert_eq!(std::fs::read_link(p("sym")).unwrap(), Path::new("d/hard"));
    assert!(
        std::fs::symlink_metadata(p("sym"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(p("sym")).unwrap(), want);
    let long_target = "x/".repeat(1000);
    std::os::unix::fs::symlink(&long_target, p("long")).unwrap();
    assert_eq!(
        std::fs::read_link(p("long")).unwrap(),
        Path::new(&long_target)
    );
    std::os::unix::fs::symlink("nowhere", p("dangling")).unwrap();
    assert_eq!(errno(std::fs::read(p("dangling"))), libc::ENOENT);
    // And through a fresh mount.
    let m2 = Mount::new(&c, &[]);
    assert_eq!(
        std::fs::read_link(m2.path().join("sym")).unwrap(),
        Path::new("d/hard")
    );
    assert_eq!(std::fs::read(m2.path().join("sym")).unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_up_and_down() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let f = m.path().join("t");
    let data = random_bytes(2 * CHUNK + 100, 21);
    std::fs::write(&f, &data).unwrap();
    // Down into the middle of the second chunk.
    run(&mut cmd("truncate", &[&"-s", &(CHUNK + 5).to_string(), &f]));
    assert_eq!(std::fs::metadata(&f).unwrap().len(), (CHUNK + 5) as u64);
    assert_eq!(std::fs::read(&f).unwrap(), &data[..CHUNK + 5]);
    // Up past the old end: the new range reads as zeros.
    run(&mut cmd("truncate", &[&"-s", &(3 * CHUNK).to_string(), &f]));
    let got = std::fs::read(&f).unwrap();
    assert_eq!(got.len(), 3 * CHUNK);
    assert_eq!(&got[..CHUNK + 5], &data[..CHUNK + 5]);
    assert!(got[CHUNK + 5..].iter().all(|&b| b == 0));
    // Through an open handle (ftruncate), then to zero.
    let h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    h.set_len(7).unwrap();
    drop(h);
    assert_eq!(std::fs::read(&f).unwrap(), &data[..7]);
    run(&mut cmd("truncate", &[&"-s", &"0", &f]));
    assert_eq!(std::fs::read(&f).unwrap(), b"");
    // The result is what a fresh mount sees, after dropping every cache.
    std::fs::write(&f, &data[..1000]).unwrap();
    run(&mut cmd("truncate", &[&"-s", &"1500", &f]));
    drop_caches();
    let m2 = Mount::new(&c, &[]);
    let got = std::fs::read(m2.path().join("t")).unwrap();
    assert_eq!(got.len(), 1500);
    assert_eq!(&got[..1000], &data[..1000]);
    assert!(got[1000..].iter().all(|&b| b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_file_with_one_byte_at_1_gib() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let f = m.path().join("sparse");
    let gib: u64 = 1 << 30;
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf Z | dd of='{}' bs=1 seek={gib} conv=notrunc status=none",
            f.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::metadata(&f).unwrap().len(), gib + 1);
    let du: u64 = run(&mut cmd("du", &[&"-k", &f]))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        du <= 8 * 1024,
        "du -k says {du} KiB for a 1-byte sparse file"
    );
    drop_caches();
    let mut h = std::fs::File::open(&f).unwrap();
    let mut buf = vec![0xffu8; 3 * MIB];
    for off in [0, 333 * MIB as u64, gib - 3 * MIB as u64] {
        h.seek(SeekFrom::Start(off)).unwrap();
        h.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "hole at {off} is not zeros");
    }
    h.seek(SeekFrom::Start(gib - 2)).unwrap();
    let mut tail = Vec::new();
    h.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"\0\0Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chmod_chown_utimens_visible_in_stat() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let f = m.path().join("f");
    let d = m.path().join("d");
    std::fs::write(&f, b"x").unwrap();
    std::fs::create_dir(&d).unwrap();
    // Created by root (the caller).
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    run(&mut cmd("chmod", &[&"640", &f]));
    run(&mut cmd("chmod", &[&"1750", &d]));
    run(&mut cmd("chown", &[&"1234:5678", &f]));
    run(&mut cmd(
        "touch",
        &[&"-m", &"-d", &"2001-02-03 04:05:06 UTC", &f],
    ));
    let check = |root: &Path| {
        let md = std::fs::metadata(root.join("f")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o640);
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
        assert_eq!(md.mtime(), 981_173_106);
        let md = std::fs::metadata(root.join("d")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o1750);
        assert!(md.is_dir());
        let stat = run(Command::new("stat")
            .args(["-c", "%a %u %g"])
            .arg(root.join("f")));
        assert_eq!(stat.trim(), "640 1234 5678");
    };
    check(m.path());
    let m2 = Mount::new(&c, &[]);
    check(m2.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattrs_with_setfattr_and_getfattr() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let f = m.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    run(&mut cmd(
        "setfattr",
        &[&"-n", &"user.color", &"-v", &"blue", &f],
    ));
    run(&mut cmd("setfattr", &[&"-n", &"user.empty", &f]));
    run(&mut cmd(
        "setfattr",
        &[&"-n", &"user.bin", &"-v", &"0x00ff10", &f],
    ));
    assert_eq!(
        run(&mut cmd(
            "getfattr",
            &[&"-n", &"user.color", &"--only-values", &f]
        )),
        "blue"
    );
    let hex = run(&mut cmd(
        "getfattr",
        &[&"-n", &"user.bin", &"-e", &"hex", &f],
    ));
    assert!(hex.contains("user.bin=0x00ff10"), "{hex}");
    let dump = run(&mut cmd("getfattr", &[&"-d", &"-m", &"^user\\.", &f]));
    for want in ["user.color=\"blue\"", "user.empty", "user.bin="] {
        assert!(dump.contains(want), "{want} missing from:\n{dump}");
    }
    // Replace, remove, and a missing one is an error.
    run(&mut cmd(
        "setfattr",
        &[&"-n", &"user.color", &"-v", &"red", &f],
    ));
    run(&mut cmd("setfattr", &[&"-x", &"user.empty", &f]));
    let dump = run(&mut cmd("getfattr", &[&"-d", &"-m", &"^user\\.", &f]));
    assert!(dump.contains("user.color=\"red\""), "{dump}");
    assert!(!dump.contains("user.empty"), "{dump}");
    let out = Command::new("getfattr")
        .args(["-n", "user.empty"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such attribute"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("setfattr")
        .args(["-x", "user.never"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success(), "removing a missing xattr succeeded");
    // xattrs on a directory too, and seen from a fresh mount.
    run(&mut cmd(
        "setfattr",
        &[&"-n", &"user.dir", &"-v", &"yes", &m.path()],
    ));
    let m2 = Mount::new(&c, &[]);
    let f2 = m2.path().join("f");
    assert_eq!(
        run(&mut cmd(
            "getfattr",
            &[&"-n", &"user.color", &"--only-values", &f2]
        )),
        "red"
    );
    assert_eq!(
        run(&mut cmd(
            "getfattr",
            &[&"-n", &"user.dir", &"--only-values", &m2.path()]
        )),
        "yes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn df_shows_the_cluster_capacity() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let out = run(&mut cmd(
        "df",
        &[&"-B1", &"--output=size,avail,target", &m.path()],
    ));
    let line = out.lines().nth(1).unwrap_or_else(|| panic!("df: {out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let size: u64 = cols[0].parse().unwrap();
    let avail: u64 = cols[1].parse().unwrap();
    assert!(size > 0 && avail > 0 && avail <= size, "df: {out}");
    assert_eq!(Path::new(cols[2]), m.path(), "df: {out}");
    // The source is the metadata members, as NFS shows its server.
    let source = run(&mut cmd("df", &[&"--output=source", &m.path()]));
    assert_eq!(
        source.lines().nth(1).map(str::trim),
        Some(c.meta_addr.as_str()),
        "{source}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_right_errno() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let p = |s: &str| m.path().join(s);
    std::fs::create_dir(p("d")).unwrap();
    std::fs::write(p("d/f"), b"x").unwrap();
    assert_eq!(errno(std::fs::remove_dir(p("d"))), libc::ENOTEMPTY);
    assert_eq!(errno(std::fs::create_dir(p("d"))), libc::EEXIST);
    assert_eq!(errno(std::fs::create_dir(p("d/f"))), libc::EEXIST);
    assert_eq!(errno(std::fs::File::open(p("missing"))), libc::ENOENT);
    assert_eq!(errno(std::fs::metadata(p("d/missing"))), libc::ENOENT);
    assert_eq!(errno(std::fs::remove_file(p("missing"))), libc::ENOENT);
    assert_eq!(errno(std::fs::File::open(p("d/f/x"))), libc::ENOTDIR);
    assert_eq!(errno(std::fs::remove_dir(p("d/f"))), libc::ENOTDIR);
    assert_eq!(
        errno(std::fs::OpenOptions::new().write(true).open(p("d"))),
        libc::EISDIR
    );
    assert_eq!(
        errno(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p("d/f"))
        ),
        libc::EEXIST
    );
    let long = "n".repeat(256);
    assert_eq!(errno(std::fs::write(p(&long), b"x")), libc::ENAMETOOLONG);
    assert_eq!(errno(std::fs::create_dir(p(&long))), libc::ENAMETOOLONG);
    // 255 bytes is the limit and works.
    let ok = "n".repeat(255);
    std::fs::write(p(&ok), b"x").unwrap();
    assert_eq!(std::fs::read(p(&ok)).unwrap(), b"x");
    // Permission checks apply to other users: a 0600 file owned by root is
    // not readable by uid 1000 (checked with setpriv when it exists).
    std::fs::write(p("secret"), b"s").unwrap();
    std::fs::set_permissions(p("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    if Path::new("/usr/bin/setpriv").exists() {
        let out = Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups", "cat"])
            .arg(p("secret"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "uid 1000 read a 0600 root file");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_file_stays_readable_while_open() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let m = Mount::new(&c, &[]);
    let f = m.path().join("victim");
    let data = random_bytes(3 * CHUNK + 4321, 31);
    std::fs::write(&f, &data).unwrap();
    let mut h = std::fs::File::open(&f).unwrap();
    std::fs::remove_file(&f).unwrap();
    assert!(!f.exists());
    assert!(!run(&mut cmd("ls", &[&m.path()])).contains("victim"));
    // Nothing left in the page cache: the reads below go to the cluster.
    drop_caches();
    let mut got = Vec::new();
    h.read_to_end(&mut got).unwrap();
    assert!(got == data, "unlinked-but-open file read back differently");
    h.seek(SeekFrom::Start(CHUNK as u64 - 3)).unwrap();
    let mut six = [0u8; 6];
    h.read_exact(&mut six).unwrap();
    assert_eq!(&six, &data[CHUNK - 3..CHUNK + 3]);
    drop(h);
    // The name can be reused for a new file.
    std::fs::write(&f, b"new").unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_see_each_others_closed_files() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let a = Mount::new(&c, &[]);
    let b = Mount::new(&c, &[]);
    let fa = a.path().join("shared");
    let fb = b.path().join("shared");
    let v1 = random_bytes(CHUNK + 77, 41);
    std::fs::write(&fa, &v1).unwrap();
    // Closed in A: B's open sees it whole (a fresh name for B).
    assert!(std::fs::read(&fb).unwrap() == v1, "B read a different v1");
    // Overwrite in B (shorter, different bytes); A sees it after its TTL.
    let v2 = random_bytes(1000, 42);
    std::fs::write(&fb, &v2).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let got = std::fs::read(&fa).unwrap();
    assert_eq!(got.len(), v2.len(), "A sees a stale size");
    assert!(got == v2, "A read stale bytes after B's overwrite");
    // In-place overwrite of the same length (a size check cannot help).
    let mut v3 = v2.clone();
    v3[500..510].copy_from_slice(b"0123456789");
    {
        let mut h = std::fs::OpenOptions::new().write(true).open(&fb).unwrap();
        h.seek(SeekFrom::Start(500)).unwrap();
        h.write_all(b"0123456789").unwrap();
    }
    std::thread::sleep(Duration::from_millis(600));
    assert!(std::fs::read(&fa).unwrap() == v3, "A read stale bytes (v3)");
    // New names and removals propagate too.
    std::fs::create_dir(a.path().join("dir")).unwrap();
    std::fs::write(a.path().join("dir/x"), b"x").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(std::fs::read(b.path().join("dir/x")).unwrap(), b"x");
    std::fs::remove_file(b.path().join("dir/x")).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(!a.path().join("dir/x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_cat_of_200_mib_is_invisible() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(3).await;
    let src = c.dir.path().join("big.src");
    std::fs::write(&src, random_bytes(200 * MIB, 51)).unwrap();
    {
        let w = Mount::new(&c, &[]);
        run(&mut cmd("cp", &[&src, &w.path().join("big")]));
    }
    wait_full_replication(&c).await;
    // A fresh mount and no page cache: every byte comes from the nodes.
    drop_caches();
    let m = Mount::new(&c, &[]);
    let out = c.dir.path().join("big.out");
    let mut cat = Command::new("cat")
        .arg(m.path().join("big"))
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cat.try_wait().unwrap().is_none(),
        "cat finished within 0.3 s, before the node was killed"
    );
    c.kill_node(0);
    let st = cat.wait().unwrap();
    assert!(st.success(), "cat failed after a node was killed: {st}");
    assert_cmp(&src, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_cp_of_200_mib_into_the_mount_is_invisible() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(3).await;
    let src = c.dir.path().join("big.src");
    std::fs::write(&src, random_bytes(200 * MIB, 61)).unwrap();
    let m = Mount::new(&c, &[]);
    let dst = m.path().join("big");
    let mut cp = Command::new("cp").arg(&src).arg(&dst).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cp.try_wait().unwrap().is_none(),
        "cp finished within 0.3 s, before the node was killed"
    );
    c.kill_node(0);
    let st = cp.wait().unwrap();
    assert!(st.success(), "cp failed after a node was killed: {st}");
    assert_cmp(&src, &dst);
    // What the cluster stored (not the page cache) is right as well.
    drop_caches();
    let m2 = Mount::new(&c, &[]);
    assert_cmp(&src, &m2.path().join("big"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_dead_read_fails_with_eio_within_the_retry_budget() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(3).await;
    let data = random_bytes(2 * CHUNK + 5, 71);
    {
        let w = Mount::new(&c, &[]);
        std::fs::write(w.path().join("f"), &data).unwrap();
    }
    wait_full_replication(&c).await;
    // Mounted before the nodes die; this mount never read the file.
    let m = Mount::new(&c, &[]);
    for i in 0..3 {
        c.kill_node(i);
    }
    drop_caches();
    let f = m.path().join("f");
    // Metadata still answers.
    assert_eq!(std::fs::metadata(&f).unwrap().len(), data.len() as u64);
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let f2 = f.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&f2));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("read with every replica dead hung for 60 s");
    let took = start.elapsed();
    assert_eq!(errno(r), libc::EIO);
    assert!(took < Duration::from_secs(30), "EIO took {took:?}");
    // The daemon is still alive and serving metadata.
    assert!(is_mounted(m.path()));
    assert!(
        std::fs::read_dir(m.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() == "f")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_close_leaves_the_data_readable() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let mut m = Mount::new(&c, &[]);
    let data = random_bytes(5 * CHUNK + 3, 81);
    std::fs::write(m.path().join("f"), &data).unwrap();
    std::fs::create_dir(m.path().join("d")).unwrap();
    std::fs::write(m.path().join("d/small"), b"small").unwrap();
    let st = m.unmount_with_sigterm();
    assert!(
        st.success(),
        "daemon exit after SIGTERM: {st}; see {}",
        m.log_path().display()
    );
    assert!(!is_mounted(m.path()));
    let m2 = Mount::new(&c, &[]);
    assert!(std::fs::read(m2.path().join("f")).unwrap() == data);
    assert_eq!(std::fs::read(m2.path().join("d/small")).unwrap(), b"small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_fsynced_file_still_open_exits_and_keeps_its_data() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let mut m = Mount::new(&c, &[]);
    let data = random_bytes(2 * CHUNK + 9, 82);
    let mut h = std::fs::File::create(m.path().join("open")).unwrap();
    h.write_all(&data).unwrap();
    h.sync_all().unwrap();
    // SIGTERM while an application still holds the file open: the daemon
    // must still stop (`systemctl stop`, shutdown), with the data durable.
    m.sigterm();
    let before_close = m.try_wait_exit(Duration::from_secs(10));
    drop(h);
    let after_close = match before_close {
        Some(s) => s,
        None => m
            .try_wait_exit(Duration::from_secs(10))
            .expect("daemon still running 10 s after the file was closed"),
    };
    let m2 = Mount::new(&c, &[]);
    assert!(
        std::fs::read(m2.path().join("open")).unwrap() == data,
        "fsync'd data lost"
    );
    assert!(
        before_close.is_some(),
        "bigfs-mount ignored SIGTERM for 10 s while a file was open (it exited \
         with {after_close} only once the file was closed); see {}",
        m.log_path().display()
    );
    assert!(after_close.success(), "daemon exit: {after_close}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umount_while_idle_exits_the_daemon_cleanly() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let mut m = Mount::new(&c, &[]);
    std::fs::write(m.path().join("f"), b"hello").unwrap();
    let _ = std::fs::read_dir(m.path()).unwrap().count();
    std::thread::sleep(Duration::from_millis(300));
    let st = m.unmount();
    assert!(
        st.success(),
        "daemon exit after umount: {st}; see {}",
        m.log_path().display()
    );
    assert!(!is_mounted(m.path()));
    let log = std::fs::read_to_string(m.log_path()).unwrap();
    assert!(!log.contains("ERROR"), "errors in the daemon log:\n{log}");
    let m2 = Mount::new(&c, &[]);
    assert_eq!(std::fs::read(m2.path().join("f")).unwrap(), b"hello");
}
