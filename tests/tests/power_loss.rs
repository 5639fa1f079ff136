//! Power loss: the data directories of the metadata service and the
//! storage nodes live on a disk that loses every write not fsync'd when its
//! power is cut (`bigfs-lossyfs`). Writers create, overwrite and rename
//! files and make directories; at a random moment every process is killed
//! and the power cut; after the restart every change a client saw
//! acknowledged must be there, byte for byte.
//!
//! Acknowledged means what an fsync promises (fuse-client `fsync`): the
//! file handle's `flush` returned Ok (data on the write quorum, layout
//! committed) and then `Client::sync` returned Ok (the metadata log is on
//! disk). Under `log_sync = "interval"` a flush alone is only durable once
//! the background sync has run, so it is not counted.
//!
//! The run is driven by one seed, printed at the start; set
//! `BIGFS_POWER_SEED` to replay its operations, sizes and cut moments (the
//! interleaving with the daemons still varies from run to run).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bigfs_client::{Client, FileHandle};
use bigfs_proto::pb;
use bigfs_tests::power::LossyDisk;
use bigfs_tests::{Cluster, random_bytes, sha256_hex, try_read_file};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Power cuts per run.
const ROUNDS: u64 = 4;
/// Writers running at once.
const WRITERS: u64 = 3;
/// Chunk size of the cluster: full chunks are written with O_DIRECT
/// (storage node `DIRECT_MIN`), the tail of a file through the page cache.
const CHUNK: usize = 256 << 10;

/// Metadata settings: frequent snapshots, so redb commits and command-log
/// truncations happen between the cuts too.
const META: &str = r#"
chunk_size = 262144
replication = 2
log_sync = "interval"
snapshot_every = 40
"#;

#[derive(Debug, Clone, PartialEq)]
enum Want {
    Dir,
    File(Arc<Vec<u8>>),
}

/// What the writers were told is durable, and what they were doing.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, Want>,
    /// Per writer, the paths its unacknowledged operation touches.
    in_flight: BTreeMap<u64, Vec<String>>,
    /// Errors seen before the power cut (there should be none).
    failures: Vec<String>,
    ops: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(l: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file size: the edges around pages and chunks, or anything up to three
/// chunks.
fn pick_len(rng: &mut StdRng) -> usize {
    const EDGES: [usize; 9] = [
        0,
        1,
        4095,
        4096,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        2 * CHUNK + 17,
    ];
    if rng.random_bool(0.5) {
        EDGES[rng.random_range(0..EDGES.len())]
    } else {
        rng.random_range(0..3 * CHUNK)
    }
}

/// One change a writer makes.
enum Op {
    Mkdir(String),
    /// A new file with this content.
    Create(String, Arc<Vec<u8>>),
    /// `patch` written at `offset` of an existing file; `after` is its
    /// whole content then.
    Overwrite {
        path: String,
        offset: u64,
        patch: Vec<u8>,
        after: Arc<Vec<u8>>,
    },
    Rename(String, String),
}

impl Op {
    /// A random change among a writer's acknowledged paths `mine` (the
    /// first is its root directory); `n` makes new names unique.
    fn pick(rng: &mut StdRng, mine: &BTreeMap<String, Want>, n: u64) -> Op {
        let dirs: Vec<&String> = mine
            .iter()
            .filter(|(_, w)| **w == Want::Dir)
            .map(|(p, _)| p)
            .collect();
        let files: Vec<(&String, &Arc<Vec<u8>>)> = mine
            .iter()
            .filter_map(|(p, w)| match w {
                Want::File(d) => Some((p, d)),
                Want::Dir => None,
            })
            .collect();
        let dir = dirs[rng.random_range(0..dirs.len())];
        match rng.random_range(0..10) {
            0 | 1 => Op::Mkdir(format!("{dir}/d{n}")),
            2 | 3 if !files.is_empty() => {
                let (from, _) = files[rng.random_range(0..files.len())];
                Op::Rename(from.clone(), format!("{dir}/r{n}"))
            }
            4 | 5 if !files.is_empty() => {
                let (path, before) = files[rng.random_range(0..files.len())];
                let offset = rng.random_range(0..=before.len());
                let patch = random_bytes(pick_len(rng) / 2, rng.random());
                let mut after = before.as_ref().clone();
                let end = offset + patch.len();
                after.resize(after.len().max(end), 0);
                after[offset..end].copy_from_slice(&patch);
                Op::Overwrite {
                    path: path.clone(),
                    offset: offset as u64,
                    patch,
                    after: Arc::new(after),
                }
            }
            _ => Op::Create(
                format!("{dir}/f{n}"),
                Arc::new(random_bytes(pick_len(rng), rng.random())),
            ),
        }
    }

    /// The paths whose state is unknown while this runs.
    fn touched(&self) -> Vec<String> {
        match self {
            Op::Mkdir(p) | Op::Create(p, _) | Op::Overwrite { path: p, .. } => vec![p.clone()],
            Op::Rename(from, to) => vec![from.clone(), to.clone()],
        }
    }

    /// Does it, with what an fsync does: flush, then sync the metadata.
    async fn run(&self, c: &Client) -> bigfs_client::Result<()> {
        match self {
            Op::Mkdir(path) => {
                let (parent, name) = c.parent_of(path).await?;
                c.mkdir(parent, &name, 0o755).await?;
            }
            Op::Create(path, data) => {
                write_and_flush(&c.create_path(path, 0o644).await?, 0, data).await?
            }
            Op::Overwrite {
                path,
                offset,
                patch,
                ..
            } => write_and_flush(&c.open_attr(&c.resolve(path).await?)?, *offset, patch).await?,
            Op::Rename(from, to) => {
                let (parent, name) = c.parent_of(from).await?;
                let (new_parent, new_name) = c.parent_of(to).await?;
                c.rename(pb::RenameRequest {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    ..Default::default()
                })
                .await?;
            }
        }
        c.sync().await
    }

    /// Records the change as acknowledged.
    fn apply(&self, paths: &mut BTreeMap<String, Want>) {
        match self {
            Op::Mkdir(p) => {
                paths.insert(p.clone(), Want::Dir);
            }
            Op::Create(p, data)
            | Op::Overwrite {
                path: p,
                after: data,
                ..
            } => {
                paths.insert(p.clone(), Want::File(Arc::clone(data)));
            }
            Op::Rename(from, to) => {
                if let Some(w) = paths.remove(from) {
                    paths.insert(to.clone(), w);
                }
            }
        }
    }
}

async fn write_and_flush(h: &FileHandle, offset: u64, data: &[u8]) -> bigfs_client::Result<()> {
    for (i, part) in data.chunks(1 << 20).enumerate() {
        h.write(offset + (i << 20) as u64, part).await?;
    }
    h.flush().await
}

/// One writer's changes under its own directory `root`, until the power
/// goes (an error then) or the task is aborted.
async fn writer(
    c: Arc<Client>,
    l: Shared,
    cutting: Arc<AtomicBool>,
    w: u64,
    root: String,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    // This writer's acknowledged paths.
    let mut mine = BTreeMap::new();
    for n in 0u64.. {
        let op = if n == 0 {
            Op::Mkdir(root.clone())
        } else {
            Op::pick(&mut rng, &mine, n)
        };
        ledger(&l).in_flight.insert(w, op.touched());
        if let Err(e) = op.run(&c).await {
            if !cutting.load(Ordering::SeqCst) {
                let what = op.touched();
                ledger(&l)
                    .failures
                    .push(format!("writer {w}: {what:?}: {e}"));
            }
            return;
        }
        op.apply(&mut mine);
        let mut led = ledger(&l);
        led.in_flight.remove(&w);
        led.ops += 1;
        op.apply(&mut led.acked);
    }
}

/// Every acknowledged path as it must be; one line per difference.
async fn check(c: &Client, acked: &BTreeMap<String, Want>) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, want) in acked {
        let attr = match c.resolve(path).await {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{path}: acknowledged but gone: {e}"));
                continue;
            }
        };
        match want {
            Want::Dir if attr.kind != pb::FileKind::Directory as i32 => {
                problems.push(format!(
                    "{path}: acknowledged directory is a {:?}",
                    attr.kind
                ));
            }
            Want::Dir => {}
            Want::File(data) => match try_read_file(c, path).await {
                Ok(got) if got == **data => {}
                Ok(got) => problems.push(format!(
                    "{path}: acknowledged {} bytes (sha256 {}), read back {} bytes (sha256 {})",
                    data.len(),
                    sha256_hex(data),
                    got.len(),
                    sha256_hex(&got)
                )),
                Err(e) => problems.push(format!("{path}: acknowledged but unreadable: {e}")),
            },
        }
    }
    problems
}

fn seed() -> u64 {
    match std::env::var("BIGFS_POWER_SEED") {
        Ok(s) => s.trim().parse().expect("BIGFS_POWER_SEED must be a u64"),
        Err(_) => rand::random(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_and_namespace_change_survives_power_cuts() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(90));
    let seed = seed();
    println!("power_loss seed {seed} (replay with BIGFS_POWER_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut disk = LossyDisk::mount();
    let mut cluster = Cluster::start_on(&disk.path(), 2, META, "").await;
    let l: Shared = Arc::default();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let c = cluster.client().await;
        let cutting = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    Arc::clone(&c),
                    Arc::clone(&l),
                    Arc::clone(&cutting),
                    w,
                    format!("/r{round}w{w}"),
                    rng.random(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..3000))).await;

        // The power goes: the processes die with it, then the disk's cache.
        cutting.store(true, Ordering::SeqCst);
        let cut_after = started.elapsed();
        cluster.kill_all();
        for w in &writers {
            w.abort();
        }
        for w in writers {
            let _ = w.await;
        }
        let keep = [0, 0, 50, 90][rng.random_range(0..4)];
        let cut = disk.power_cut(rng.random(), keep);
        disk.power_on();
        cluster.start_all().await;

        let c = cluster.client().await;
        let (acked, ops, unsure, failures) = {
            let mut led = ledger(&l);
            // An operation cut short may or may not have happened.
            let unsure: Vec<String> = std::mem::take(&mut led.in_flight)
                .into_values()
                .flatten()
                .collect();
            for p in &unsure {
                led.acked.remove(p);
            }
            (led.acked.clone(), led.ops, unsure, led.failures.clone())
        };
        assert!(
            failures.is_empty(),
            "operations failed before the power cut: {failures:#?}"
        );
        let problems = check(&c, &acked).await;
        println!(
            "round {round}: {ops} operations acknowledged so far, {} paths checked, \
             {} unsure, power cut after {:?} keeping {keep}% of unsynced pages ({cut})",
            acked.len(),
            unsure.len(),
            cut_after
        );
        assert!(
            problems.is_empty(),
            "seed {seed}, round {round}: {} acknowledged changes lost at the power cut:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    assert!(
        ledger(&l).ops >= 10 * ROUNDS,
        "too few operations were acknowledged to mean anything"
    );
    drop(cluster);
    drop(disk);
}

/// The disk itself: what was fsync'd (also through O_DIRECT, also a
/// truncation) survives a cut; what was only written and closed does not.
#[test]
fn the_lossy_disk_keeps_synced_data_and_loses_the_rest() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _deadline = bigfs_tests::deadline(Duration::from_secs(60));
    let mut disk = LossyDisk::mount();
    let d = disk.path();
    let put = |name: &str, data: &[u8], sync: bool| {
        let mut f = std::fs::File::create(d.join(name)).expect("create");
        f.write_all(data).expect("write");
        if sync {
            f.sync_data().expect("fdatasync");
        }
    };
    put("synced", b"kept", true);
    put("unsynced", b"lost", false);
    put("grown", b"old", true);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("grown"))
        .expect("open");
    f.write_all(b" and new").expect("append");
    drop(f);
    put("shrunk", b"0123456789", true);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("shrunk"))
        .expect("open");
    f.set_len(4).expect("truncate");
    f.sync_all().expect("fsync");
    drop(f);
    // O_DIRECT from an aligned buffer, as the storage node writes chunks.
    let big = random_bytes(1 << 20, 7);
    let mut aligned = vec![0u8; (1 << 20) + 4096];
    let shift = aligned.as_ptr().align_offset(4096);
    aligned[shift..shift + (1 << 20)].copy_from_slice(&big);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(d.join("direct"))
        .expect("open O_DIRECT");
    f.write_all(&aligned[shift..shift + (1 << 20)])
        .expect("O_DIRECT write");
    f.sync_data().expect("fdatasync");
    drop(f);
    assert_eq!(std::fs::read(d.join("unsynced")).expect("read"), b"lost");
    assert_eq!(
        std::fs::read(d.join("grown")).expect("read"),
        b"old and new"
    );

    let cut = disk.power_cut(1, 0);
    assert!(cut.starts_with("cut files=2 "), "{cut}");
    disk.power_on();
    let read = |name: &str| std::fs::read(d.join(name)).expect("read");
    assert_eq!(read("synced"), b"kept");
    assert_eq!(read("unsynced"), b"", "a name without its data");
    assert_eq!(read("grown"), b"old");
    assert_eq!(read("shrunk"), b"0123");
    assert_eq!(read("direct"), big);
}
