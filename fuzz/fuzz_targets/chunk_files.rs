//! A storage node's data directory as it finds it at start: chunk files
//! (well named or not, intact or corrupt), stray names in the fan-out
//! directories, leftovers in `tmp/`, quarantined files with and without a
//! valid stamp, and directories where files should be. The store opens it,
//! lists it, serves ranges of it, quarantines and sweeps it.
//!
//! Properties: no panic and no huge allocation; the inventory lists only
//! well-named chunk files; a verified read answers only bytes that hash to
//! the id asked for, clipped to the range asked for; a range past the end
//! is an `Err`; the counters never go negative (wrap) under deletes.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bigfs_fuzz::{CappedAlloc, Input, runtime};
use bigfs_proto::ChunkId;
use bigfs_storagenode::chunk_store::{Check, ChunkStore, StoreLimits};
use bigfs_storagenode::quarantine;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// One directory reused by every run (emptied first): a new temporary
/// directory per run would cost more than the run. On tmpfs where there is
/// one: the store fsyncs, and a disk's fsyncs would bound the run rate.
fn root() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory")
    })
    .path()
}

/// A file name from fuzz bytes: anything a directory entry may be called.
fn name(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| *c != '/' && *c != '\0')
        .take(200)
        .collect();
    match s.as_str() {
        "" | "." | ".." => "x".into(),
        _ => s,
    }
}

/// Writes a file, creating its directory; answers whether it was written
/// (a directory of that name may be in the way).
fn write(path: &Path, data: &[u8]) -> bool {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(path, data).is_ok()
}

/// Lays out the data directory the input describes; answers the ids of
/// the files written as intact chunks.
fn lay_out(root: &Path, input: &mut Input<'_>) -> Vec<ChunkId> {
    let chunks = root.join("chunks");
    let mut intact = Vec::new();
    for _ in 0..input.u8() % 8 {
        let kind = input.u8();
        let data = input.chunk();
        let id = ChunkId::of(data);
        let hex = id.to_hex();
        match kind % 8 {
            0 => {
                if write(&chunks.join(&hex[..2]).join(&hex), data) {
                    intact.push(id);
                }
            }
            // A chunk file whose bytes no longer match its name.
            1 => {
                let other = ChunkId::of(&[data, b"x"].concat()).to_hex();
                let _ = write(&chunks.join(&other[..2]).join(&other), data);
            }
            // A stray name in a fan-out directory, or a fan-out of its own.
            2 => _ = write(&chunks.join(&hex[..2]).join(name(data)), data),
            3 => _ = write(&chunks.join(name(data)).join(&hex), data),
            4 => _ = write(&root.join("tmp").join(name(data)), data),
            5 => {
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(input.u64());
                let dir = quarantine::unlisted_dir(root);
                let _ = write(&dir.join(quarantine::stamped_name(&id, at)), data);
            }
            6 => _ = write(&quarantine::unlisted_dir(root).join(name(data)), data),
            // A directory where a chunk file should be.
            _ => {
                let _ = std::fs::create_dir_all(chunks.join(&hex[..2]).join(&hex));
            }
        }
    }
    intact
}

async fn exercise(root: &Path, input: &mut Input<'_>) {
    let intact = lay_out(root, input);
    let limits = StoreLimits {
        reserve_bytes: 0,
        capacity_bytes: 1 << 30,
    };
    let Ok(store) = ChunkStore::open(root, limits).await else {
        return;
    };
    let Ok(listed) = store.inventory().await else {
        return;
    };
    for id in &intact {
        assert!(listed.contains(id), "an intact chunk file is not listed");
    }
    let _ = store.has(listed.clone()).await;
    for id in listed.iter().take(4) {
        let (offset, len) = (input.u64() % 70_000, input.u64() % 70_000);
        let check = if input.u8() % 2 == 0 {
            Check::Verify
        } else {
            Check::CallerVerifies
        };
        match store.read(*id, offset, len, check).await {
            Ok(read) => {
                assert!(offset <= read.stored_len, "a range past the end was served");
                if len > 0 {
                    assert!(read.data.len() as u64 <= len, "more bytes than asked");
                }
                if check == Check::Verify && offset == 0 && len == 0 {
                    assert_eq!(ChunkId::of(&read.data), *id, "corrupt bytes served");
                }
            }
            Err(_) => {}
        }
    }
    let cutoff = SystemTime::now() + Duration::from_secs(60);
    for id in listed.iter().take(2) {
        match input.u8() % 3 {
            0 => drop(store.delete(*id).await),
            1 => drop(store.delete_if_older(*id, cutoff).await),
            _ => drop(store.quarantine_unlisted(*id, cutoff).await),
        }
    }
    let _ = store.sweep_unlisted(Duration::ZERO).await;
    let (unlisted_bytes, _) = store.unlisted();
    assert!(store.used_bytes() < u64::MAX / 2, "used bytes wrapped");
    assert!(unlisted_bytes < u64::MAX / 2, "quarantined bytes wrapped");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let root = root();
    for sub in ["chunks", "tmp", "quarantine"] {
        let _ = std::fs::remove_dir_all(root.join(sub));
    }
    let mut input = Input::new(data);
    runtime().block_on(exercise(root, &mut input));
});
