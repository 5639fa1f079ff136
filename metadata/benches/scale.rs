//! How the metadata state machine's costs grow with the namespace.
//!
//! `cargo bench -p bigfs-metadata --bench scale -- [FILES...]` fills a
//! state through the real apply path (Create, RegisterChunk, CommitLayout
//! per file: one-chunk files with three copies, 1000 per directory) to
//! each size in turn (default 10000 and 1000000) and reports, at each:
//! - create, stat (lookup + attributes) and rename per second, applied to
//!   the state directly (the service adds a constant per request);
//! - the pause a snapshot makes requests wait (the state's copy under the
//!   lock), then the encode the snapshot does beside them, and its size;
//! - the decode a restarting member does before it serves;
//! - the resident memory per file.
//!
//! The figures measure the state machine, not the network: run
//! `bench/pair.sh` for the mount's side.

use std::time::{Duration, Instant};

use bigfs_metadata::namespace;
use bigfs_metadata::state::{Command, Kind, State, Time, apply};
use bigfs_proto::common::ChunkId;

const PER_DIR: u64 = 1000;
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn now() -> Time {
    Time {
        secs: 1_700_000_000,
        nanos: 0,
    }
}

fn chunk_id(n: u64) -> ChunkId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8] = 0xb5;
    ChunkId(id)
}

fn create(parent: u64, name: String, kind: Kind) -> Command {
    Command::Create {
        parent,
        name,
        kind,
        mode: if kind == Kind::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        symlink_target: String::new(),
        exclusive: true,
        rdev: 0,
        chunk_size: 64 << 20,
        replication: 3,
        now: now(),
    }
}

fn ino_of(r: bigfs_metadata::state::Reply) -> u64 {
    match r {
        bigfs_metadata::state::Reply::Ino(i) => i,
        other => panic!("expected an inode, got {other:?}"),
    }
}

/// The namespace being filled: directories of `PER_DIR` files under /.
struct Filler {
    state: State,
    files: u64,
    dir: u64,
    chunks: u64,
}

impl Filler {
    fn new() -> Self {
        let mut state = State::new();
        for n in NODES {
            apply(
                &mut state,
                &Command::RegisterNode {
                    node_id: n.into(),
                    address: format!("{n}:1"),
                    capacity: 1 << 50,
                    lost: Vec::new(),
                    confirmed: Vec::new(),
                },
            )
            .expect("register node");
        }
        Filler {
            state,
            files: 0,
            dir: 0,
            chunks: 0,
        }
    }

    /// One file with one 4 KiB chunk on three nodes, as a mount writes it.
    fn add_file(&mut self, parent: u64, name: String) -> u64 {
        let ino =
            ino_of(apply(&mut self.state, &create(parent, name, Kind::File)).expect("create"));
        self.chunks += 1;
        let id = chunk_id(self.chunks);
        apply(
            &mut self.state,
            &Command::RegisterChunk {
                id,
                len: 4096,
                node: NODES[0].into(),
                designated: NODES[1..].iter().map(|s| s.to_string()).collect(),
                now_ms: 1,
                confirmed: NODES[1..].iter().map(|s| s.to_string()).collect(),
            },
        )
        .expect("register chunk");
        apply(
            &mut self.state,
            &Command::CommitLayout {
                ino,
                chunks: vec![(0, id, 4096)],
                size: 4096,
                mtime: now(),
                now: now(),
            },
        )
        .expect("commit layout");
        ino
    }

    fn fill_to(&mut self, files: u64) {
        while self.files < files {
            if self.files.is_multiple_of(PER_DIR) {
                let name = format!("d{}", self.files / PER_DIR);
                self.dir = ino_of(
                    apply(&mut self.state, &create(1, name, Kind::Directory)).expect("mkdir"),
                );
            }
            let name = format!("file-{:08}.txt", self.files);
            self.add_file(self.dir, name);
            self.files += 1;
        }
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Create, stat and rename rates in a fresh directory of the filled state.
fn ops(f: &mut Filler, n: u64, round: u64) -> (f64, f64, f64) {
    let dir = ino_of(
        apply(
            &mut f.state,
            &create(1, format!("bench-{round}"), Kind::Directory),
        )
        .expect("mkdir"),
    );
    let t = Instant::now();
    for i in 0..n {
        f.add_file(dir, format!("new-{i:08}"));
    }
    let create = per_sec(n, t.elapsed());
    // Stat files spread over the whole namespace.
    let t = Instant::now();
    let mut seen = 0u64;
    for i in 0..n {
        let k = i.wrapping_mul(2_654_435_761) % f.files;
        let d = namespace::lookup(&f.state, 1, &format!("d{}", k / PER_DIR)).expect("dir");
        let ino = namespace::lookup(&f.state, d, &format!("file-{k:08}.txt")).expect("file");
        seen += f.state.attr(ino).expect("attr").size;
    }
    let stat = per_sec(n, t.elapsed());
    assert_eq!(seen, n * 4096);
    let t = Instant::now();
    for i in 0..n {
        apply(
            &mut f.state,
            &Command::Rename {
                parent: dir,
                name: format!("new-{i:08}"),
                new_parent: dir,
                new_name: format!("moved-{i:08}"),
                noreplace: false,
                exchange: false,
                open_lease_ms: 0,
                now: now(),
                trash_retention_ms: 0,
            },
        )
        .expect("rename");
    }
    let rename = per_sec(n, t.elapsed());
    (create, stat, rename)
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 1_000_000]
    } else {
        sizes
    };
    let base = rss_bytes();
    let mut f = Filler::new();
    println!(
        "| files | fill s | RSS B/file | create/s | stat/s | rename/s | snapshot pause ms | encode s | snapshot MB | decode s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (round, &size) in sizes.iter().enumerate() {
        let t = Instant::now();
        f.fill_to(size);
        let fill = t.elapsed();
        let rss = rss_bytes().saturating_sub(base) as f64 / f.files as f64;
        let (create, stat, rename) = ops(&mut f, 20_000, round as u64);
        // What build_snapshot holds the lock for, then what it does beside.
        let t = Instant::now();
        let copy = f.state.clone();
        let pause = t.elapsed();
        let t = Instant::now();
        let bytes =
            bincode::serde::encode_to_vec(&copy, bincode::config::standard()).expect("encode");
        let encode = t.elapsed();
        drop(copy);
        let t = Instant::now();
        let (back, _): (State, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).expect("decode");
        let decode = t.elapsed();
        assert_eq!(back.inodes.len(), f.state.inodes.len());
        drop(back);
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2} | {:.0} | {:.2} |",
            f.files,
            fill.as_secs_f64(),
            rss,
            create,
            stat,
            rename,
            pause.as_secs_f64() * 1000.0,
            encode.as_secs_f64(),
            bytes.len() as f64 / 1e6,
            decode.as_secs_f64(),
        );
    }
}
