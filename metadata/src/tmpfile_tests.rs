//! Apply-level tests of O_TMPFILE files: made as orphans, named by Link
//! when linkable, freed at release otherwise.

use bigfs_proto::errno::{EDQUOT, ENOENT};
use bigfs_proto::{ChunkId, ROOT_INO};

use crate::error::MetaError;
use crate::quota::QuotaChange;
use crate::state::{Command, Kind, Reply, State, Time, apply};

const LEASE_MS: u64 = 60_000;

fn t(secs: i64) -> Time {
    Time { secs, nanos: 0 }
}

fn ino_of(r: Result<Reply, MetaError>) -> Result<u64, MetaError> {
    match r? {
        Reply::Ino(i) => Ok(i),
        other => panic!("no inode in {other:?}"),
    }
}

fn tmpfile(s: &mut State, parent: u64, linkable: bool) -> Result<u64, MetaError> {
    ino_of(apply(
        s,
        &Command::TmpFile {
            parent,
            mode: 0o600,
            uid: 7,
            gid: 8,
            linkable,
            open_lease_ms: LEASE_MS,
            chunk_size: 4,
            replication: 2,
            now: t(10),
        },
    ))
}

fn link(s: &mut State, ino: u64, parent: u64, name: &str) -> Result<u64, MetaError> {
    ino_of(apply(
        s,
        &Command::Link {
            ino,
            new_parent: parent,
            new_name: name.into(),
            now: t(20),
        },
    ))
}

/// Unlinks `name` from the root as a mount that has it open does.
fn unlink_while_open(s: &mut State, name: &str, now: Time) {
    apply(
        s,
        &Command::Unlink {
            parent: ROOT_INO,
            name: name.into(),
            open_lease_ms: LEASE_MS,
            now,
            trash_retention_ms: 0,
        },
    )
    .unwrap();
}

fn errno<T: std::fmt::Debug>(r: Result<T, MetaError>) -> Option<i32> {
    r.expect_err("refused").errno()
}

/// Gives `ino` one committed 4-byte chunk; answers the chunk.
fn write_chunk(s: &mut State, ino: u64) -> ChunkId {
    s.add_test_nodes(&["n1"], 1 << 30);
    let id = ChunkId::of(b"data");
    apply(
        s,
        &Command::RegisterChunk {
            id,
            len: 4,
            node: "n1".into(),
            designated: vec![],
            now_ms: 0,
            confirmed: vec![],
        },
    )
    .unwrap();
    apply(
        s,
        &Command::CommitLayout {
            ino,
            chunks: vec![(0, id, 4)],
            size: 4,
            mtime: t(11),
            now: t(11),
        },
    )
    .unwrap();
    id
}

#[test]
fn a_tmpfile_has_no_name_and_is_freed_with_its_chunks_at_release() {
    let mut s = State::new();
    let ino = tmpfile(&mut s, ROOT_INO, true).unwrap();
    let i = &s.inodes[&ino];
    assert_eq!((i.nlink, i.mode, i.uid, i.gid), (0, 0o600, 7, 8));
    assert_eq!(i.kind, Kind::File);
    assert!(s.dirs[&ROOT_INO].entries.is_empty(), "no directory entry");
    assert!(s.orphans.contains_key(&ino), "held by the open lease");
    let id = write_chunk(&mut s, ino);
    assert_eq!(s.chunks[&id].refcount, 1);
    apply(&mut s, &Command::ReleaseInode { ino, now: t(30) }).unwrap();
    assert!(!s.inodes.contains_key(&ino));
    assert!(s.tmpfiles.is_empty() && s.orphans.is_empty());
    assert_eq!(s.chunks[&id].refcount, 0, "its chunk goes to collection");
}

#[test]
fn a_tmpfile_whose_lease_ends_is_freed() {
    let mut s = State::new();
    let ino = tmpfile(&mut s, ROOT_INO, true).unwrap();
    apply(&mut s, &Command::ExpireOrphans { now: t(10 + 61) }).unwrap();
    assert!(!s.inodes.contains_key(&ino));
    assert!(s.tmpfiles.is_empty());
}

#[test]
fn linking_a_tmpfile_names_it_once_and_it_stays() {
    let mut s = State::new();
    let ino = tmpfile(&mut s, ROOT_INO, true).unwrap();
    write_chunk(&mut s, ino);
    assert_eq!(link(&mut s, ino, ROOT_INO, "kept").unwrap(), ino);
    assert_eq!(s.inodes[&ino].nlink, 1);
    assert_eq!(s.dirs[&ROOT_INO].entries["kept"].0, ino);
    assert!(!s.orphans.contains_key(&ino) && s.tmpfiles.is_empty());
    // The last close of the open that made it no longer frees it.
    apply(&mut s, &Command::ReleaseInode { ino, now: t(30) }).unwrap();
    assert_eq!(s.inodes[&ino].size, 4);
    // Unlinked again while open, it cannot be named from nothing again.
    unlink_while_open(&mut s, "kept", t(40));
    assert_eq!(errno(link(&mut s, ino, ROOT_INO, "again")), Some(ENOENT));
}

#[test]
fn an_exclusive_tmpfile_and_an_unlinked_open_file_cannot_be_linked() {
    let mut s = State::new();
    let excl = tmpfile(&mut s, ROOT_INO, false).unwrap();
    assert_eq!(errno(link(&mut s, excl, ROOT_INO, "x")), Some(ENOENT));
    assert!(s.dirs[&ROOT_INO].entries.is_empty());

    let f = ino_of(apply(
        &mut s,
        &Command::create_for_test(ROOT_INO, "f", Kind::File, t(1)),
    ))
    .unwrap();
    unlink_while_open(&mut s, "f", t(2));
    assert_eq!(errno(link(&mut s, f, ROOT_INO, "f")), Some(ENOENT));
}

#[test]
fn a_tmpfile_counts_toward_quotas_once_named() {
    let mut s = State::new();
    let d = ino_of(apply(
        &mut s,
        &Command::create_for_test(ROOT_INO, "q", Kind::Directory, t(1)),
    ))
    .unwrap();
    apply(
        &mut s,
        &Command::SetQuota {
            ino: d,
            change: QuotaChange::Limits {
                max_bytes: None,
                max_inodes: Some(1),
            },
        },
    )
    .unwrap();
    let ino = tmpfile(&mut s, d, true).unwrap();
    write_chunk(&mut s, ino);
    assert_eq!((s.quotas[&d].inodes, s.quotas[&d].bytes), (0, 0));
    link(&mut s, ino, d, "named").unwrap();
    assert_eq!((s.quotas[&d].inodes, s.quotas[&d].bytes), (1, 4));
    // The quota is full now: neither a create nor a tmpfile fits.
    assert_eq!(errno(tmpfile(&mut s, d, true)), Some(EDQUOT));
}
