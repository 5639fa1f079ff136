//! Small files kept inline in the metadata group (no chunk on any storage
//! node): written, rewritten, grown into chunks and shrunk back through a
//! real mount, read back byte for byte from a fresh mount after the
//! metadata leader is killed; and the rules that decide when a file is not
//! kept inline (a single member with more copies wanted, a full budget).

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use bigfs_tests::group::Group;
use bigfs_tests::{Cluster, Mount, deadline, drop_caches, random_bytes};

/// The service's default `inline_max_bytes`.
const INLINE_MAX: usize = 16 * 1024;

async fn chunks(c: &Cluster) -> u64 {
    c.status().await.chunks
}

fn read_all(m: &Mount, files: &[(String, Vec<u8>)]) {
    for (name, want) in files {
        let got = std::fs::read(m.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got == *want,
            "{name}: {} bytes read, {} written",
            got.len(),
            want.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_files_live_in_the_metadata_group_and_survive_losing_its_leader() {
    let _deadline = deadline(Duration::from_secs(180));
    let mut g = Group::start(3).await;
    let c = Cluster::start_external(&g.addr_list(), 3).await;
    let m = Mount::with_metadata(&c, &g.addr_list(), &[]);

    // Sizes around the limit; only the last one needs a chunk.
    let sizes = [
        1,
        100,
        4096,
        4097,
        10_000,
        INLINE_MAX - 1,
        INLINE_MAX,
        INLINE_MAX + 1,
    ];
    let mut files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("f{i}"), random_bytes(n, i as u64)))
        .collect();
    for (name, data) in &files {
        std::fs::write(m.path().join(name), data).unwrap();
    }
    assert_eq!(
        chunks(&c).await,
        1,
        "only the file past the limit has a chunk"
    );
    read_all(&m, &files);
    let f0 = std::fs::metadata(m.path().join("f4")).unwrap();
    assert_eq!(f0.len(), 10_000);
    // The CLI shows where the bytes are and reads them too.
    let stat = c.cli_ok(&["stat", "/f4"]);
    assert!(stat.contains("inline:      10000 bytes"), "{stat}");
    let cat = c.cli(&["cat", "/f4"]);
    assert!(
        cat.status.success() && cat.stdout == files[4].1,
        "bigfs cat of an inline file"
    );

    // Rewritten in place, shorter: still inline, no chunk.
    let small = m.path().join("f2");
    let mut fh = std::fs::OpenOptions::new()
        .write(true)
        .open(&small)
        .unwrap();
    fh.seek(SeekFrom::Start(10)).unwrap();
    fh.write_all(b"patched").unwrap();
    drop(fh);
    files[2].1[10..17].copy_from_slice(b"patched");
    assert_eq!(chunks(&c).await, 1);

    // Grown past the limit: its chunk 0 becomes a stored chunk.
    let grown = m.path().join("f1");
    let tail = random_bytes(50_000, 99);
    let mut fh = std::fs::OpenOptions::new()
        .append(true)
        .open(&grown)
        .unwrap();
    fh.write_all(&tail).unwrap();
    drop(fh);
    files[1].1.extend_from_slice(&tail);
    assert_eq!(chunks(&c).await, 2, "the grown file stored a chunk");
    assert_eq!(c.status().await.copies_wanted, 6);
    read_all(&m, &files);

    // Cut back and rewritten: inline again, the chunk no longer referenced.
    let fh = std::fs::OpenOptions::new()
        .write(true)
        .open(&grown)
        .unwrap();
    fh.set_len(20).unwrap();
    drop(fh);
    let mut fh = std::fs::OpenOptions::new()
        .write(true)
        .open(&grown)
        .unwrap();
    fh.write_all(b"head").unwrap();
    drop(fh);
    files[1].1.truncate(20);
    files[1].1[..4].copy_from_slice(b"head");
    read_all(&m, &files);
    assert_eq!(
        c.status().await.copies_wanted,
        3,
        "the grown file's chunk is no longer referenced"
    );

    // A hole after inline bytes reads as zeros.
    let sparse = m.path().join("sparse");
    let mut fh = std::fs::File::create(&sparse).unwrap();
    fh.write_all(b"abc").unwrap();
    fh.set_len(9000).unwrap();
    drop(fh);
    let mut want = b"abc".to_vec();
    want.resize(9000, 0);
    files.push(("sparse".into(), want));

    // The leader dies; a fresh mount reads every byte from the new one.
    let leader = g.wait_leader(Duration::from_secs(30)).await;
    g.kill(leader);
    let new = g.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(new, leader);
    drop_caches();
    let fresh = Mount::with_metadata(&c, &g.addr_list(), &[]);
    read_all(&fresh, &files);
    // The first mount fails over too.
    drop_caches();
    read_all(&m, &files);
    assert_eq!(c.status().await.copies_wanted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_keeps_small_files_in_chunks_when_files_want_more_copies() {
    let _deadline = deadline(Duration::from_secs(120));
    // One member, three copies wanted: inline bytes would have one.
    let c = Cluster::start_with(3, "").await;
    let m = Mount::new(&c, &[]);
    let data = random_bytes(3000, 1);
    std::fs::write(m.path().join("a"), &data).unwrap();
    assert_eq!(chunks(&c).await, 1);
    drop_caches();
    assert_eq!(std::fs::read(m.path().join("a")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_inline_budget_small_files_go_to_chunks() {
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(1, "replication = 1\ninline_total_max_bytes = 20000\n").await;
    let m = Mount::new(&c, &[]);
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("b{i}"), random_bytes(8000, 10 + i)))
        .collect();
    for (name, data) in &files {
        std::fs::write(m.path().join(name), data).unwrap();
    }
    // Two fit (16000 bytes); the third is refused and stored as a chunk,
    // and the mount stops trying for a while, so the rest are chunks too.
    assert_eq!(chunks(&c).await, 3);
    drop_caches();
    let fresh = Mount::new(&c, &[]);
    read_all(&fresh, &files);
}
