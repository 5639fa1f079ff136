use bigfs_proto::errno::{EEXIST, ENOENT, ENOTDIR};
use bigfs_proto::{ChunkId, ROOT_INO};

use super::*;
use crate::namespace::lookup;
use crate::state::{Command, Reply, apply};

const DAY_MS: u64 = 24 * 3600 * 1000;

fn t(ms: u64) -> Time {
    Time {
        secs: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as u32,
    }
}

fn ino_of(r: Reply) -> u64 {
    match r {
        Reply::Ino(i) => i,
        _ => panic!("no inode"),
    }
}

fn mkdir(s: &mut State, parent: u64, name: &str) -> u64 {
    ino_of(
        apply(
            s,
            &Command::create_for_test(parent, name, Kind::Directory, t(0)),
        )
        .unwrap(),
    )
}

/// A file `name` in `parent` with one committed chunk of `data`.
fn file(s: &mut State, parent: u64, name: &str, data: &[u8]) -> (u64, ChunkId) {
    if !s.nodes.contains_key("n1") {
        s.add_test_nodes(&["n1"], 1 << 30);
    }
    let id = ChunkId::of(data);
    apply(
        s,
        &Command::RegisterChunk {
            confirmed: vec![],
            id,
            len: data.len() as u32,
            node: "n1".into(),
            designated: vec![],
            now_ms: 0,
        },
    )
    .unwrap();
    let ino = ino_of(apply(s, &Command::create_for_test(parent, name, Kind::File, t(0))).unwrap());
    apply(
        s,
        &Command::CommitLayout {
            ino,
            chunks: vec![(0, id, data.len() as u32)],
            size: data.len() as u64,
            mtime: t(0),
            now: t(0),
        },
    )
    .unwrap();
    (ino, id)
}

fn unlink(s: &mut State, parent: u64, name: &str, retention: u64, now: u64) {
    apply(
        s,
        &Command::Unlink {
            parent,
            name: name.into(),
            open_lease_ms: 0,
            now: t(now),
            trash_retention_ms: retention,
        },
    )
    .unwrap();
}

#[test]
fn an_unlinked_file_goes_to_the_trash_with_its_path_and_keeps_its_chunks() {
    let mut s = State::new();
    let d = mkdir(&mut s, ROOT_INO, "docs");
    let sub = mkdir(&mut s, d, "old");
    let (ino, id) = file(&mut s, sub, "a.txt", b"alpha");
    unlink(&mut s, sub, "a.txt", DAY_MS, 1000);
    assert!(lookup(&s, sub, "a.txt").is_err(), "the name is gone");
    let e = s.trash.get(ino).expect("in the trash");
    assert_eq!(e.path, "/docs/old/a.txt");
    assert_eq!(e.expires_ms, 1000 + DAY_MS);
    assert_eq!(s.chunks[&id].refcount, 1, "the chunk stays referenced");
    assert_eq!(s.inodes[&ino].nlink, 0);
}

#[test]
fn retention_zero_frees_at_once_and_a_remaining_hard_link_keeps_the_file_out() {
    let mut s = State::new();
    let (ino, id) = file(&mut s, ROOT_INO, "f", b"x");
    apply(
        &mut s,
        &Command::Link {
            ino,
            new_parent: ROOT_INO,
            new_name: "g".into(),
            now: t(0),
        },
    )
    .unwrap();
    unlink(&mut s, ROOT_INO, "f", DAY_MS, 1);
    assert!(s.trash.is_empty(), "another name remains");
    unlink(&mut s, ROOT_INO, "g", 0, 2);
    assert!(s.trash.is_empty());
    assert!(!s.inodes.contains_key(&ino));
    assert_eq!(s.chunks[&id].refcount, 0);
}

#[test]
fn a_file_replaced_by_rename_goes_to_the_trash() {
    let mut s = State::new();
    let (old, old_chunk) = file(&mut s, ROOT_INO, "conf", b"old");
    file(&mut s, ROOT_INO, "conf.new", b"new");
    apply(
        &mut s,
        &Command::Rename {
            parent: ROOT_INO,
            name: "conf.new".into(),
            new_parent: ROOT_INO,
            new_name: "conf".into(),
            noreplace: false,
            exchange: false,
            open_lease_ms: 0,
            now: t(5),
            trash_retention_ms: DAY_MS,
        },
    )
    .unwrap();
    assert_eq!(s.trash.get(old).expect("trashed").path, "/conf");
    assert_eq!(s.chunks[&old_chunk].refcount, 1);
}

#[test]
fn expiry_frees_only_due_entries_and_releases_their_chunks() {
    let mut s = State::new();
    let (a, a_chunk) = file(&mut s, ROOT_INO, "a", b"a");
    let (b, _) = file(&mut s, ROOT_INO, "b", b"b");
    unlink(&mut s, ROOT_INO, "a", 1000, 0);
    unlink(&mut s, ROOT_INO, "b", 5000, 0);
    assert!(!s.trash.any_expired(999));
    assert!(s.trash.any_expired(1000));
    apply(&mut s, &Command::ExpireTrash { now: t(1000) }).unwrap();
    assert!(!s.inodes.contains_key(&a));
    assert_eq!(s.chunks[&a_chunk].refcount, 0);
    assert_eq!(s.chunks[&a_chunk].zero_since_ms, Some(1000));
    assert!(s.trash.contains(b));
    assert_eq!(s.trash.len(), 1);
}

#[test]
fn restore_gives_the_name_back_and_recreates_missing_parents() {
    let mut s = State::new();
    let d = mkdir(&mut s, ROOT_INO, "d");
    let (ino, id) = file(&mut s, d, "f", b"data");
    unlink(&mut s, d, "f", DAY_MS, 10);
    apply(
        &mut s,
        &Command::Rmdir {
            parent: ROOT_INO,
            name: "d".into(),
            now: t(11),
        },
    )
    .unwrap();
    apply(
        &mut s,
        &Command::RestoreTrash {
            ino,
            path: "/d/f".into(),
            now: t(12),
        },
    )
    .unwrap();
    let d2 = lookup(&s, ROOT_INO, "d").unwrap();
    assert_eq!(lookup(&s, d2, "f").unwrap(), ino);
    assert_eq!(s.inodes[&ino].nlink, 1);
    assert_eq!(s.inodes[&ino].parent, d2);
    assert!(s.trash.is_empty());
    assert_eq!(s.chunks[&id].refcount, 1);
}

#[test]
fn restore_refuses_a_taken_path_or_a_file_in_the_way_and_changes_nothing() {
    let mut s = State::new();
    let (ino, _) = file(&mut s, ROOT_INO, "f", b"one");
    unlink(&mut s, ROOT_INO, "f", DAY_MS, 10);
    file(&mut s, ROOT_INO, "f", b"two");
    let before = s.clone();
    let taken = apply(
        &mut s,
        &Command::RestoreTrash {
            ino,
            path: "/f".into(),
            now: t(12),
        },
    )
    .unwrap_err();
    assert_eq!(taken.errno(), Some(EEXIST));
    let crossing = apply(
        &mut s,
        &Command::RestoreTrash {
            ino,
            path: "/f/g".into(),
            now: t(12),
        },
    )
    .unwrap_err();
    assert_eq!(crossing.errno(), Some(ENOTDIR));
    assert_eq!(s, before);
    let not_trashed = apply(
        &mut s,
        &Command::RestoreTrash {
            ino: 9999,
            path: "/h".into(),
            now: t(12),
        },
    )
    .unwrap_err();
    assert_eq!(not_trashed.errno(), Some(ENOENT));
}

#[test]
fn purge_frees_the_named_entries_only() {
    let mut s = State::new();
    let (a, _) = file(&mut s, ROOT_INO, "a", b"a");
    let (b, _) = file(&mut s, ROOT_INO, "b", b"b");
    let (c, _) = file(&mut s, ROOT_INO, "c", b"c");
    unlink(&mut s, ROOT_INO, "a", DAY_MS, 0);
    unlink(&mut s, ROOT_INO, "b", DAY_MS, 0);
    apply(
        &mut s,
        &Command::PurgeTrash {
            inos: vec![a, c],
            now: t(1),
        },
    )
    .unwrap();
    assert!(!s.inodes.contains_key(&a));
    assert!(s.inodes.contains_key(&c), "a named file is not purged");
    assert!(s.trash.contains(b));
}

#[test]
fn a_full_trash_frees_the_entry_closest_to_expiry() {
    let mut s = State::new();
    let (a, _) = file(&mut s, ROOT_INO, "a", b"a");
    let (b, _) = file(&mut s, ROOT_INO, "b", b"b");
    let (c, _) = file(&mut s, ROOT_INO, "c", b"c");
    for (ino, expiry) in [(a, 500), (b, 100), (c, 900)] {
        s.inodes.get_mut(&ino).unwrap().nlink = 0;
        s.dirs.get_mut(&ROOT_INO).unwrap().entries.clear();
        put_bounded(&mut s, ino, format!("/{ino}"), expiry, t(0), 2);
    }
    assert_eq!(s.trash.len(), 2);
    assert!(!s.inodes.contains_key(&b), "closest to expiry went");
    assert!(s.trash.contains(a) && s.trash.contains(c));
}
