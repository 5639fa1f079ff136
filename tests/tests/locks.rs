//! File locks across mounts: two `bigfs-mount`s of one cluster, with
//! processes taking `fcntl` and `flock` locks on the same files through
//! both. Linux only; needs /dev/fuse, fusermount3, `flock` (util-linux) and
//! `sqlite3` (scripts/install-deps.sh installs them).
//!
//! Lock-holding processes are forked children that make raw system calls
//! only (no allocation between fork and _exit), or the `flock` and
//! `sqlite3` programs.

#![cfg(target_os = "linux")]

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bigfs_tests::{Cluster, Mount, deadline};

/// Time limit of each test (see `bigfs_tests::deadline`): each takes 5 to
/// 20 s on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// A `struct flock` for `typ` on `len` bytes at `start` (0: to the end).
fn flock_of(typ: libc::c_int, start: i64, len: i64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// Forks a child that runs `f` and exits with its value. `f` must only make
/// raw system calls: the parent has other threads, so the child may not
/// allocate or take locks.
fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child runs `f`, which only makes system calls, then
    // _exit()s without running destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for child `pid`: its exit code (128 + signal if killed).
fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid failed");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// In a forked child: `rounds` times, lock the 8-byte counter at the start
/// of `path`, read it, pause, write it plus one and unlock. Exit codes
/// other than 0 name the failing step.
fn counter_rounds(path: &CString, rounds: u32) -> i32 {
    // SAFETY: raw system calls on buffers owned by this frame.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return 10;
        }
        for _ in 0..rounds {
            let mut fl = flock_of(libc::F_WRLCK, 0, 8);
            if libc::fcntl(fd, libc::F_SETLKW, &fl) != 0 {
                return 11;
            }
            let mut buf = [0u8; 8];
            if libc::pread(fd, buf.as_mut_ptr().cast(), 8, 0) != 8 {
                return 12;
            }
            // Widen the window a lost update needs: 2 ms inside the lock.
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 2_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
            let next = (u64::from_le_bytes(buf) + 1).to_le_bytes();
            if libc::pwrite(fd, next.as_ptr().cast(), 8, 0) != 8 {
                return 13;
            }
            fl.l_type = libc::F_UNLCK as libc::c_short;
            if libc::fcntl(fd, libc::F_SETLK, &fl) != 0 {
                return 14;
            }
        }
        libc::close(fd);
    }
    0
}

#[tokio::test(flavor = "multi_thread")]
async fn fcntl_locks_serialise_counter_updates_from_two_mounts() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(2).await;
    let (a, b) = (Mount::new(&c, &[]), Mount::new(&c, &[]));
    std::fs::write(a.path().join("counter"), 0u64.to_le_bytes()).expect("create counter");
    const PER_MOUNT: usize = 2;
    const ROUNDS: u32 = 25;
    let started = Instant::now();
    let pids: Vec<libc::pid_t> = [&a, &b]
        .iter()
        .flat_map(|m| {
            let path = c_path(&m.path().join("counter"));
            (0..PER_MOUNT)
                .map(|_| fork_child(|| counter_rounds(&path, ROUNDS)))
                .collect::<Vec<_>>()
        })
        .collect();
    let codes =
        tokio::task::spawn_blocking(move || pids.into_iter().map(wait_child).collect::<Vec<_>>())
            .await
            .expect("wait for workers");
    assert!(codes.iter().all(|c| *c == 0), "worker exit codes {codes:?}");
    for m in [&a, &b] {
        let bytes = std::fs::read(m.path().join("counter")).expect("read counter");
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        assert_eq!(
            n,
            2 * PER_MOUNT as u64 * u64::from(ROUNDS),
            "every locked increment counted, seen from {}",
            m.path().display()
        );
    }
    eprintln!(
        "{} locked increments in {:?}",
        2 * PER_MOUNT * ROUNDS as usize,
        started.elapsed()
    );
}

/// A forked child holding a `typ` lock on `len` bytes at `start` of `path`
/// until it reads a byte from its release pipe (killed if the test fails
/// first, so it does not outlive the test).
struct Holder {
    pid: libc::pid_t,
    release: libc::c_int,
    done: bool,
}

impl Drop for Holder {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: kill(2) and waitpid(2) on our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

impl Holder {
    fn take(path: &Path, typ: libc::c_int, start: i64, len: i64) -> Holder {
        let path = c_path(path);
        let (mut ready, mut release) = ([0; 2], [0; 2]);
        // SAFETY: pipe(2) into arrays of two fds.
        unsafe {
            assert_eq!(libc::pipe(ready.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(release.as_mut_ptr()), 0);
        }
        let pid = fork_child(|| {
            // SAFETY: raw system calls on this frame's buffers.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDWR);
                let fl = flock_of(typ, start, len);
                if fd < 0 || libc::fcntl(fd, libc::F_SETLKW, &fl) != 0 {
                    return 20;
                }
                let one = [1u8];
                libc::write(ready[1], one.as_ptr().cast(), 1);
                let mut b = [0u8];
                libc::read(release[0], b.as_mut_ptr().cast(), 1);
            }
            0
        });
        let mut b = [0u8];
        // SAFETY: read(2) of one byte from our pipe.
        let n = unsafe { libc::read(ready[0], b.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 1, "the lock holder did not get its lock");
        // SAFETY: closing fds this process owns.
        unsafe {
            libc::close(ready[0]);
            libc::close(ready[1]);
            libc::close(release[0]);
        }
        Holder {
            pid,
            release: release[1],
            done: false,
        }
    }

    /// Lets the child exit (its exit releases the lock); its exit code.
    fn release(mut self) -> i32 {
        self.done = true;
        let one = [1u8];
        // SAFETY: write(2) of one byte to our pipe, then close it.
        unsafe {
            libc::write(self.release, one.as_ptr().cast(), 1);
            libc::close(self.release);
        }
        wait_child(self.pid)
    }
}

/// fcntl(F_SETLK or F_GETLK) on an open file: the errno on failure.
fn fcntl(f: &std::fs::File, cmd: libc::c_int, fl: &mut libc::flock) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an open fd with a valid struct flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, fl as *mut libc::flock) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn byte_ranges_conflict_only_where_they_overlap_and_getlk_names_the_holder() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(2).await;
    let (a, b) = (Mount::new(&c, &[]), Mount::new(&c, &[]));
    std::fs::write(a.path().join("ranges"), vec![0u8; 100]).expect("create file");
    let holder = Holder::take(&a.path().join("ranges"), libc::F_WRLCK, 0, 10);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(b.path().join("ranges"))
        .expect("open on the second mount");
    assert_eq!(
        fcntl(&f, libc::F_SETLK, &mut flock_of(libc::F_RDLCK, 5, 1)),
        Err(libc::EAGAIN),
        "a read lock inside another mount's write lock"
    );
    let mut probe = flock_of(libc::F_WRLCK, 0, 0);
    fcntl(&f, libc::F_GETLK, &mut probe).expect("F_GETLK");
    assert_eq!(probe.l_type, libc::F_WRLCK as libc::c_short);
    assert_eq!((probe.l_start, probe.l_len), (0, 10));
    assert_eq!(probe.l_pid, holder.pid, "the holder's pid (same host)");
    // Next to it is free; then split our own lock by unlocking its middle.
    fcntl(&f, libc::F_SETLK, &mut flock_of(libc::F_WRLCK, 10, 30)).expect("lock 10..40");
    fcntl(&f, libc::F_SETLK, &mut flock_of(libc::F_UNLCK, 20, 10)).expect("unlock 20..30");
    let mut probe = flock_of(libc::F_WRLCK, 0, 0);
    fcntl(&f, libc::F_GETLK, &mut probe).expect("F_GETLK as the owner");
    assert_eq!(
        probe.l_type,
        libc::F_WRLCK as libc::c_short,
        "the holder's lock"
    );
    assert_eq!(holder.release(), 0);
    // Seen from the first mount: our two pieces, the hole between them free.
    let g = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.path().join("ranges"))
        .expect("open on the first mount");
    let mut probe = flock_of(libc::F_RDLCK, 0, 0);
    fcntl(&g, libc::F_GETLK, &mut probe).expect("F_GETLK");
    assert_eq!((probe.l_start, probe.l_len), (10, 10), "first piece");
    fcntl(&g, libc::F_SETLK, &mut flock_of(libc::F_WRLCK, 20, 10)).expect("the hole is free");
    assert_eq!(
        fcntl(&g, libc::F_SETLK, &mut flock_of(libc::F_RDLCK, 35, 1)),
        Err(libc::EAGAIN),
        "second piece still held"
    );
    // Closing a descriptor drops the process's locks (POSIX).
    drop(f);
    fcntl(&g, libc::F_SETLK, &mut flock_of(libc::F_WRLCK, 0, 0)).expect("all free after close");
}

/// A child process killed when dropped (a failed test leaves none behind).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `flock ARGS PATH sh -c 'echo locked; read x'`: returns once it
/// holds the lock; it keeps it until a line arrives on its stdin.
fn flock_holder(args: &[&str], path: &Path) -> Reaped {
    let mut child = Command::new("flock")
        .args(args)
        .arg(path)
        .args(["sh", "-c", "echo locked; read x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run flock (util-linux)");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read from flock");
    assert_eq!(line.trim(), "locked", "flock did not take the lock");
    Reaped(child)
}

fn release_holder(mut holder: Reaped) {
    let _ = holder.0.stdin.as_mut().expect("stdin").write_all(b"\n");
    let st = holder.0.wait().expect("wait flock");
    assert!(st.success(), "flock holder ended with {st}");
}

/// `flock ARGS PATH true`: its exit status and how long it took.
fn flock_run(args: &[&str], path: &Path) -> (i32, Duration) {
    let t = Instant::now();
    let st = Command::new("flock")
        .args(args)
        .arg(path)
        .arg("true")
        .stdin(Stdio::null())
        .status()
        .expect("run flock");
    (st.code().unwrap_or(128), t.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn flock_excludes_across_mounts_shares_read_locks_and_a_waiter_can_give_up() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(2).await;
    let (a, b) = (Mount::new(&c, &[]), Mount::new(&c, &[]));
    std::fs::write(a.path().join("lockfile"), b"").expect("create lock file");
    let (fa, fb) = (a.path().join("lockfile"), b.path().join("lockfile"));

    let holder = flock_holder(&[], &fa);
    assert_eq!(
        flock_run(&["-n"], &fb).0,
        1,
        "exclusive lock held elsewhere"
    );
    assert_eq!(flock_run(&["-n", "-s"], &fb).0, 1, "no shared lock either");
    // A waiter with a timeout: flock(1) arms SIGALRM, the wait ends EINTR.
    let (code, took) = flock_run(&["-w", "1"], &fb);
    assert_eq!(code, 1, "timed out");
    assert!(
        took < Duration::from_secs(10),
        "the wait was interrupted ({took:?})"
    );
    // A waiter that gets it once the holder is done.
    let waiter = std::thread::spawn(move || flock_run(&["-w", "60"], &fb));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished(), "the waiter waits");
    release_holder(holder);
    assert_eq!(waiter.join().expect("waiter").0, 0, "granted after release");

    let fb = b.path().join("lockfile");
    let shared = flock_holder(&["-s"], &fa);
    assert_eq!(flock_run(&["-n", "-s"], &fb).0, 0, "shared locks coexist");
    assert_eq!(flock_run(&["-n"], &fb).0, 1, "but exclude an exclusive one");
    release_holder(shared);
    assert_eq!(flock_run(&["-n"], &fb).0, 0, "free again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_mount_loses_its_locks_after_the_lease() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(2, "lock_lease_ms = 3000").await;
    let (mut a, b) = (Mount::new(&c, &[]), Mount::new(&c, &[]));
    std::fs::write(a.path().join("lockfile"), b"").expect("create lock file");
    let fb = b.path().join("lockfile");
    let holder = flock_holder(&[], &a.path().join("lockfile"));
    // Longer than the lease: renewals keep a live mount's lock.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(flock_run(&["-n"], &fb).0, 1, "held by the live mount");
    a.kill9();
    let killed = Instant::now();
    let (code, _) = flock_run(&["-w", "60"], &fb);
    assert_eq!(code, 0, "the dead mount's lock ended");
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "released by the lease, not at once ({took:?})"
    );
    eprintln!("lock of the killed mount released after {took:?}");
    drop(holder);
}

/// Runs `sqlite3 DB` with `script` on stdin; its stdout.
fn sqlite(db: &Path, script: &str) -> std::io::Result<std::process::Output> {
    let mut child = Command::new("sqlite3")
        .arg("-bail")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())?;
    child.wait_with_output()
}

fn sqlite_ok(db: &Path, script: &str) -> String {
    let out = sqlite(db, script).expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_with_a_rollback_journal_written_from_two_mounts_stays_consistent() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(2).await;
    // SQLite decides whether a rollback journal is "hot" by whether it
    // exists: a granted lock drops cached names next to the database.
    let (a, b) = (Mount::new(&c, &[]), Mount::new(&c, &[]));
    let mode = sqlite_ok(
        &a.path().join("db"),
        "PRAGMA journal_mode=DELETE;\nCREATE TABLE t(n INTEGER, who TEXT);\n\
         CREATE TABLE total(n INTEGER);\nINSERT INTO total VALUES(0);\n",
    );
    assert_eq!(mode, "delete");
    const WRITERS_PER_MOUNT: usize = 2;
    const TXNS: usize = 15;
    let started = Instant::now();
    let writers: Vec<_> = [a.path().to_path_buf(), b.path().to_path_buf()]
        .into_iter()
        .enumerate()
        .flat_map(|(m, dir)| {
            (0..WRITERS_PER_MOUNT).map(move |w| {
                let db = dir.join("db");
                std::thread::spawn(move || {
                    // A read-modify-write per transaction: a stale read
                    // under the lock would lose an increment.
                    let mut script = String::from(".timeout 60000\n");
                    for i in 0..TXNS {
                        script.push_str(&format!(
                            "BEGIN IMMEDIATE;\nINSERT INTO t VALUES({i}, 'm{m}w{w}');\n\
                             UPDATE total SET n = (SELECT n FROM total) + 1;\nCOMMIT;\n"
                        ));
                    }
                    sqlite(&db, &script).expect("run sqlite3")
                })
            })
        })
        .collect();
    for w in writers {
        let out = w.join().expect("writer thread");
        assert!(
            out.status.success(),
            "a writer failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let want = 2 * WRITERS_PER_MOUNT * TXNS;
    for m in [&a, &b] {
        let db = m.path().join("db");
        assert_eq!(sqlite_ok(&db, "PRAGMA integrity_check;"), "ok");
        assert_eq!(
            sqlite_ok(&db, "SELECT count(*), (SELECT n FROM total) FROM t;"),
            format!("{want}|{want}"),
            "every transaction kept, from {}",
            m.path().display()
        );
    }
    assert!(
        !a.path().join("db-journal").exists(),
        "no journal left behind"
    );
    eprintln!(
        "{want} SQLite transactions from two mounts in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_survive_a_change_of_metadata_leader() {
    let _deadline = deadline(DEADLINE);
    let mut g = bigfs_tests::group::Group::start(3).await;
    let c = Cluster::start_external(&g.addr_list(), 2).await;
    let (a, b) = (Mount::new(&c, &[]), Mount::new(&c, &[]));
    std::fs::write(a.path().join("lockfile"), b"").expect("create lock file");
    let fb = b.path().join("lockfile");
    let holder = flock_holder(&[], &a.path().join("lockfile"));
    let old = g.wait_leader(Duration::from_secs(30)).await;
    g.kill(old);
    let new = g.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(new, old);
    assert_eq!(
        flock_run(&["-n"], &fb).0,
        1,
        "still held under the new leader"
    );
    release_holder(holder);
    assert_eq!(
        flock_run(&["-w", "30"], &fb).0,
        0,
        "released through the new leader"
    );
}
