use bytes::Bytes;

use bigfs_proto::ROOT_INO;

use super::*;
use crate::state::{Command, Kind, apply};

fn t() -> Time {
    Time { secs: 1, nanos: 0 }
}

fn file(s: &mut State, name: &str) -> u64 {
    match apply(
        s,
        &Command::create_for_test(ROOT_INO, name, Kind::File, t()),
    )
    .unwrap()
    {
        crate::state::Reply::Ino(i) => i,
        other => panic!("{other:?}"),
    }
}

fn inline(s: &mut State, ino: u64, data: &[u8], budget: u64) -> Result<(), MetaError> {
    commit(
        s,
        &InlineCommit {
            ino,
            chunks: &[],
            data: &Bytes::copy_from_slice(data),
            size: data.len() as u64,
            mtime: t(),
            budget,
            max_replication: 3,
        },
        t(),
    )
}

#[test]
fn inline_bytes_are_kept_counted_and_cut() {
    let mut s = State::new();
    let f = file(&mut s, "f");
    inline(&mut s, f, b"hello world", 1 << 20).unwrap();
    assert_eq!(s.inline.get(f).unwrap().as_ref(), b"hello world");
    assert_eq!(s.inline.total_bytes(), 11);
    let a = s.attr(f).unwrap();
    assert_eq!(a.size, 11);
    // st_blocks counts inline bytes as held data.
    assert_eq!(s.inodes[&f].allocated, 11);
    // A truncate cuts them; growing leaves them (the rest reads as zeros).
    apply(&mut s, &Command::resize_for_test(f, 5, t())).unwrap();
    assert_eq!(s.inline.get(f).unwrap().as_ref(), b"hello");
    assert_eq!(s.inline.total_bytes(), 5);
    apply(&mut s, &Command::resize_for_test(f, 100, t())).unwrap();
    assert_eq!(s.inline.get(f).unwrap().as_ref(), b"hello");
    assert_eq!(s.attr(f).unwrap().size, 100);
    // Truncated to nothing: gone.
    apply(&mut s, &Command::resize_for_test(f, 0, t())).unwrap();
    assert!(s.inline.get(f).is_none());
    assert_eq!(s.inline.total_bytes(), 0);
}

#[test]
fn the_budget_and_the_copies_refuse_without_change() {
    let mut s = State::new();
    let f = file(&mut s, "f");
    let g = file(&mut s, "g");
    inline(&mut s, f, &[1; 60], 100).unwrap();
    let before = s.clone();
    match inline(&mut s, g, &[2; 50], 100) {
        Err(MetaError::FailedPrecondition(m)) => assert!(m.contains("limit"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s, before);
    // Rewriting f within the budget is fine: its old bytes do not count.
    inline(&mut s, f, &[3; 90], 100).unwrap();
    assert_eq!(s.inline.total_bytes(), 90);
    // A file wanting more copies than there are members.
    let before = s.clone();
    let r = commit(
        &mut s,
        &InlineCommit {
            ino: g,
            chunks: &[],
            data: &Bytes::from_static(b"x"),
            size: 1,
            mtime: t(),
            budget: 1 << 20,
            max_replication: 1,
        },
        t(),
    );
    assert!(matches!(r, Err(MetaError::FailedPrecondition(_))), "{r:?}");
    assert_eq!(s, before);
}

#[test]
fn index_zero_is_inline_or_a_chunk_never_both() {
    let mut s = State::new();
    s.add_test_nodes(&["a"], 1 << 30);
    let f = file(&mut s, "f");
    let c = ChunkId::of(b"chunk zero");
    apply(
        &mut s,
        &Command::RegisterChunk {
            id: c,
            len: 10,
            node: "a".into(),
            designated: vec![],
            now_ms: 1,
            confirmed: vec![],
        },
    )
    .unwrap();
    let commit_chunk = |s: &mut State| {
        apply(
            s,
            &Command::CommitLayout {
                ino: f,
                chunks: vec![(0, c, 10)],
                size: 10,
                mtime: t(),
                now: t(),
            },
        )
    };
    commit_chunk(&mut s).unwrap();
    assert_eq!(s.chunks[&c].refcount, 1);
    // Inline bytes replace the chunk: its reference is released.
    inline(&mut s, f, b"small", 1 << 20).unwrap();
    assert_eq!(s.chunks[&c].refcount, 0);
    assert!(!s.layouts[&f].contains_key(&0));
    assert_eq!(s.inodes[&f].allocated, 5);
    // And a chunk at index 0 replaces the inline bytes.
    commit_chunk(&mut s).unwrap();
    assert!(s.inline.get(f).is_none());
    assert_eq!(s.inline.total_bytes(), 0);
    assert_eq!(s.chunks[&c].refcount, 1);
    assert_eq!(s.inodes[&f].allocated, 10);
}

#[test]
fn freeing_and_snapshotting_a_file_carry_its_inline_bytes() {
    let mut s = State::new();
    let d = match apply(
        &mut s,
        &Command::create_for_test(ROOT_INO, "d", Kind::Directory, t()),
    )
    .unwrap()
    {
        crate::state::Reply::Ino(i) => i,
        other => panic!("{other:?}"),
    };
    let f = match apply(&mut s, &Command::create_for_test(d, "f", Kind::File, t())).unwrap() {
        crate::state::Reply::Ino(i) => i,
        other => panic!("{other:?}"),
    };
    inline(&mut s, f, b"keep me", 1 << 20).unwrap();
    crate::snapshot::snapshot(&mut s, d, (ROOT_INO, "snap"), (100, true), t()).unwrap();
    assert_eq!(s.inline.files(), 2);
    assert_eq!(s.inline.total_bytes(), 14);
    let snap_dir = s.dirs[&ROOT_INO].entries["snap"].0;
    let copy = s.dirs[&snap_dir].entries["f"].0;
    assert_eq!(s.inline.get(copy).unwrap().as_ref(), b"keep me");
    // Unlinking with the trash off frees the inode and its bytes.
    apply(
        &mut s,
        &Command::Unlink {
            parent: d,
            name: "f".into(),
            open_lease_ms: 0,
            now: t(),
            trash_retention_ms: 0,
        },
    )
    .unwrap();
    assert!(s.inline.get(f).is_none());
    assert_eq!(s.inline.total_bytes(), 7);
}
