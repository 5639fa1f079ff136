//! The chaos test's writer, as its own process: it keeps creating files in
//! a directory of a BigFS mount (write, fsync, close) and deleting older
//! ones past a bounded working set, until its stdin closes.
//!
//! It runs apart from the test process on purpose. A server the test
//! (re)starts inherits the test's file descriptors, and closing an
//! inherited descriptor of a mount file at exec sends a flush through the
//! mount, which can wait for the very metadata service being started. With
//! the writers here, the test holds no file of the mount.
//!
//! Usage: `bigfs-chaos-writer DIR ID SEED MAX_FILE KEEP`. It prints one line
//! per event on stdout:
//! - `ack NAME SHA256`: NAME was written, fsynced and closed without error;
//! - `drop NAME`: NAME leaves the checked set (about to be deleted; an
//!   unlink that fails may still have happened);
//! - `done OK FAILED` when it stops.

use std::io::{BufRead, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bigfs_tests::{random_bytes, sha256_hex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Writes `data` to a new file `path`, fsyncs and closes it, checking
/// close's own result (flush errors surface there).
fn write_fsync_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` is ours (taken from the File) and closed exactly once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        panic!("usage: bigfs-chaos-writer DIR ID SEED MAX_FILE KEEP (bad {what})")
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir: PathBuf = arg(&args, 0, "DIR");
    let id: usize = arg(&args, 1, "ID");
    let seed: u64 = arg(&args, 2, "SEED");
    let max_file: usize = arg(&args, 3, "MAX_FILE");
    let keep: usize = arg(&args, 4, "KEEP");

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for _ in std::io::stdin().lock().lines() {}
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut out = std::io::stdout().lock();
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut n = 0u64;
    let mut mine: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if mine.len() >= keep {
            let victim = mine.swap_remove(rng.random_range(0..mine.len()));
            writeln!(out, "drop {victim}")
                .and_then(|()| out.flush())
                .expect("stdout");
            let _ = std::fs::remove_file(dir.join(&victim));
        }
        n += 1;
        let name = format!("w{id}-{n}");
        let size = match rng.random_range(0..10) {
            0 => 0,
            1 => rng.random_range(1..4096),
            _ => rng.random_range(4096..=max_file),
        };
        let data = random_bytes(size, rng.random());
        match write_fsync_close(&dir.join(&name), &data) {
            Ok(()) => {
                ok += 1;
                writeln!(out, "ack {name} {}", sha256_hex(&data))
                    .and_then(|()| out.flush())
                    .expect("stdout");
                mine.push(name);
            }
            Err(_) => {
                failed += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    writeln!(out, "done {ok} {failed}").expect("stdout");
}
