//! The restart test of the replicated metadata service: three members,
//! three storage nodes and a real mount. While writers create files through
//! the mount (write, fsync, close) and the CLI creates, renames and deletes
//! directories, members are killed with -9 or stopped with SIGTERM and
//! restarted, one at a time (the leader about half the time). No operation
//! may fail: the mount waits for a new leader (`meta_wait`) instead of
//! answering EIO. Then a fresh mount reads every acknowledged file back
//! byte for byte. The longest time any operation took is reported.
//!
//! The CI run lasts `SHORT_SECS`; the long run:
//! `BIGFS_META_RESTART_SECS=200 cargo test -p bigfs-tests --test meta_restart -- --nocapture`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bigfs_tests::group::Group;
use bigfs_tests::{Cluster, Mount, deadline, random_bytes, sha256_file, sha256_hex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHORT_SECS: u64 = 40;
const WRITERS: usize = 2;

/// What the run saw, for the report and the assertions.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    failed: Vec<String>,
    longest: Duration,
    longest_op: String,
}

type Shared = Arc<Mutex<Tally>>;

fn timed<T>(tally: &Shared, what: &str, f: impl FnOnce() -> std::io::Result<T>) -> Option<T> {
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    let mut g = tally.lock().unwrap();
    g.ops += 1;
    if took > g.longest {
        g.longest = took;
        g.longest_op = what.to_string();
    }
    match out {
        Ok(v) => Some(v),
        Err(e) => {
            g.failed.push(format!("{what}: {e}"));
            None
        }
    }
}

fn write_fsync_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    Ok(())
}

/// Creates files until `stop`; returns (name, sha) of each acknowledged one.
fn writer(
    dir: PathBuf,
    id: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    tally: Shared,
) -> Vec<(String, String)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("w{id}-{n}");
        let data = random_bytes(rng.random_range(0..300_000), rng.random());
        let path = dir.join(&name);
        if timed(&tally, &format!("write {name}"), || {
            write_fsync_close(&path, &data)
        })
        .is_some()
        {
            acked.push((name.clone(), sha256_hex(&data)));
        }
        // Reads and renames through the mount too.
        if n % 5 == 0 && !acked.is_empty() {
            let (old, sha) = acked[rng.random_range(0..acked.len())].clone();
            let new = format!("{old}.r");
            if timed(&tally, &format!("rename {old}"), || {
                std::fs::rename(dir.join(&old), dir.join(&new))
            })
            .is_some()
            {
                acked.retain(|(x, _)| *x != old);
                acked.push((new, sha));
            }
        }
        if n % 7 == 0 && !acked.is_empty() {
            let (name, sha) = acked[rng.random_range(0..acked.len())].clone();
            if let Some(got) = timed(&tally, &format!("read {name}"), || {
                std::fs::read(dir.join(&name))
            }) {
                assert_eq!(
                    sha256_hex(&got),
                    sha,
                    "{name} read back wrong during the run"
                );
            }
        }
    }
    acked
}

/// The CLI creating, renaming and removing directories until `stop`.
fn cli_worker(metadata: String, tls: PathBuf, stop: Arc<AtomicBool>, tally: Shared) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let a = format!("/cli-{n}");
        let b = format!("/cli-{n}-moved");
        for (what, args) in [
            ("mkdir", vec!["mkdir", a.as_str()]),
            ("mv", vec!["mv", a.as_str(), b.as_str()]),
            ("rm", vec!["rm", "-r", b.as_str()]),
        ] {
            timed(&tally, &format!("bigfs {what} {a}"), || {
                let out = std::process::Command::new(bigfs_tests::bin("bigfs"))
                    .args(["--metadata", &metadata, "--tls-dir"])
                    .arg(&tls)
                    .args(&args)
                    .output()?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(
                        String::from_utf8_lossy(&out.stderr).to_string(),
                    ))
                }
            });
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_killed_and_restarted_one_at_a_time_fail_no_operation_and_lose_nothing() {
    let secs: u64 = std::env::var("BIGFS_META_RESTART_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SHORT_SECS);
    let _deadline = deadline(Duration::from_secs(secs + 240));
    let mut g = Group::start(3).await;
    let c = Cluster::start_external(&g.addr_list(), 3).await;
    let m = Mount::with_metadata(&c, &g.addr_list(), &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let tally: Shared = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (dir, stop, tally) = (m.path().to_path_buf(), stop.clone(), tally.clone());
            std::thread::spawn(move || writer(dir, w, 1000 + w as u64, stop, tally))
        })
        .collect();
    let cli = {
        let (stop, tally) = (stop.clone(), tally.clone());
        let addr = g.addr_list();
        let tls = c.tls_dir("cli");
        std::thread::spawn(move || cli_worker(addr, tls, stop, tally))
    };

    let mut rng = StdRng::seed_from_u64(7);
    let (mut kills, mut terms, mut leader_faults) = (0, 0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..4_000))).await;
        let leader = g.wait_leader(Duration::from_secs(30)).await;
        let victim = if rng.random_bool(0.5) {
            leader_faults += 1;
            leader
        } else {
            (leader + rng.random_range(1..3)) % 3
        };
        if rng.random_bool(0.6) {
            kills += 1;
            g.kill(victim);
        } else {
            terms += 1;
            g.terminate(victim);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..4_000))).await;
        g.start_member(victim);
        // One member down at a time: wait until it has caught up.
        let l = g.wait_leader(Duration::from_secs(30)).await;
        if let Some(s) = g.status_of(l).await {
            g.wait_applied(victim, s.commit_index, Duration::from_secs(60))
                .await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.join().expect("writer"));
    }
    let cli_rounds = cli.join().expect("cli");
    drop(m);

    let fresh = Mount::with_metadata(&c, &g.addr_list(), &[]);
    for (name, sha) in &acked {
        assert_eq!(
            &sha256_file(&fresh.path().join(name)),
            sha,
            "acknowledged file {name} changed or is gone"
        );
    }
    let t = tally.lock().unwrap();
    eprintln!(
        "meta restart: {secs} s, {kills} kill -9 and {terms} SIGTERM ({leader_faults} of the leader); \
         {} operations ({cli_rounds} CLI rounds), {} files checked byte for byte from a fresh mount; \
         longest operation {:?} ({})",
        t.ops,
        acked.len(),
        t.longest,
        t.longest_op
    );
    assert!(t.failed.is_empty(), "operations failed: {:?}", t.failed);
    assert!(
        kills + terms > 0 && leader_faults > 0,
        "no leader fault injected"
    );
    assert!(!acked.is_empty());
}
