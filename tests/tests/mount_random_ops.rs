//! An fsx-style check of the mount's data path: random writes, truncates,
//! reads, fsyncs, reopens and shared mmap writes on one file, mirrored on a
//! local file; every read and the final content must match the mirror byte
//! for byte, through the same mount and through a fresh one. Once across
//! chunk boundaries, once around the size where a file's bytes move
//! between the metadata (inline) and a chunk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline};
use rand::{Rng, SeedableRng};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 11 s on a loaded 2-core machine; the limit is ~5x that.
const DEADLINE: Duration = Duration::from_secs(60);

/// Small chunks, so a few MiB of file cross many chunk boundaries.
const META: &str = "chunk_size = 65536\n";

/// One member and one copy, so small files are kept inline; files of the
/// run below are about as often under the limit as over it.
const INLINE_META: &str = "chunk_size = 65536\nreplication = 1\ninline_max_bytes = 32768\n";

/// The sizes one run plays with.
struct Sizes {
    /// Largest file.
    max_len: u64,
    /// Largest write, read and mmap write.
    max_write: usize,
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open")
}

fn read_at(f: &mut File, off: u64, len: usize) -> Vec<u8> {
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf).unwrap();
    buf
}

/// Writes `data` at `off` through a shared mapping of the file.
fn mmap_write(f: &File, off: u64, data: &[u8]) {
    use std::os::unix::io::AsRawFd;
    let len = off as usize + data.len();
    // SAFETY: a fresh shared mapping of `len` bytes of a file at least that
    // long (the caller checked); unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        std::ptr::copy_nonoverlapping(data.as_ptr(), (p as *mut u8).add(off as usize), data.len());
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0, "msync");
        assert_eq!(libc::munmap(p, len), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_truncates_and_mmap_match_a_local_mirror() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(3, META).await;
    let sizes = Sizes {
        max_len: 3 << 20,
        max_write: 200_000,
    };
    let inline_seen = fsx(&c, &sizes, 600).await;
    assert_eq!(
        inline_seen, 0,
        "three copies wanted of one member: no inline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_file_ops_across_the_inline_limit_match_a_local_mirror() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start_with(1, INLINE_META).await;
    let sizes = Sizes {
        max_len: 40_000,
        max_write: 12_000,
    };
    let inline_seen = fsx(&c, &sizes, 500).await;
    assert!(
        inline_seen > 5,
        "the file was inline at {inline_seen} reopens"
    );
}

/// Runs `steps` random operations on one file of `c` and its local mirror;
/// answers at how many reopens the file was kept inline.
async fn fsx(c: &Cluster, sizes: &Sizes, steps: u32) -> u32 {
    let (max_len, max_write) = (sizes.max_len, sizes.max_write);
    let mut inline_seen = 0;
    let m = Mount::new(c, &[]);
    let local = tempfile::tempdir().unwrap();
    let (rp, lp) = (m.path().join("fsx"), local.path().join("fsx"));
    File::create(&rp).unwrap();
    File::create(&lp).unwrap();
    let (mut r, mut l) = (open_rw(&rp), open_rw(&lp));
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut len: u64 = 0;
    for step in 0..steps {
        match rng.random_range(0..100) {
            // Write anywhere up to MAX_LEN, often across chunk boundaries.
            0..=44 => {
                let off = rng.random_range(0..max_len);
                let n = rng.random_range(1..max_write).min((max_len - off) as usize);
                let mut data = vec![0u8; n];
                rng.fill(&mut data[..]);
                for f in [&mut r, &mut l] {
                    f.seek(SeekFrom::Start(off)).unwrap();
                    f.write_all(&data).unwrap();
                }
                len = len.max(off + n as u64);
            }
            45..=54 => {
                let to = rng.random_range(0..max_len);
                r.set_len(to).unwrap();
                l.set_len(to).unwrap();
                len = to;
            }
            55..=79 => {
                let off = rng.random_range(0..len + 1000);
                let n = rng.random_range(1..max_write * 3 / 2);
                assert!(
                    read_at(&mut r, off, n) == read_at(&mut l, off, n),
                    "step {step}: read of {n} at {off} differs (length {len})"
                );
            }
            80..=87 => r.sync_all().unwrap(),
            88..=93 => {
                // Close and reopen: what close published is what we read.
                r = open_rw(&rp);
                l = open_rw(&lp);
                if c.status().await.inline_files > 0 {
                    inline_seen += 1;
                }
            }
            _ if len > 0 => {
                let off = rng.random_range(0..len);
                let n = rng.random_range(1..max_write / 4).min((len - off) as usize);
                let mut data = vec![0u8; n];
                rng.fill(&mut data[..]);
                r.sync_all().unwrap();
                mmap_write(&r, off, &data);
                l.seek(SeekFrom::Start(off)).unwrap();
                l.write_all(&data).unwrap();
            }
            _ => {}
        }
        assert_eq!(r.metadata().unwrap().len(), len, "step {step}: length");
    }
    drop(r);
    let want = std::fs::read(&lp).unwrap();
    assert!(std::fs::read(&rp).unwrap() == want, "final content differs");
    let fresh = Mount::new(c, &[]);
    assert!(
        std::fs::read(fresh.path().join("fsx")).unwrap() == want,
        "final content differs in a fresh mount"
    );
    inline_seen
}
