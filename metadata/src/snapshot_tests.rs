use bigfs_proto::ROOT_INO;
use bigfs_proto::errno::{EEXIST, EINVAL, ENOSPC, EROFS};

use super::*;
use crate::namespace::lookup;
use crate::state::{Command, Reply, apply};

fn t(s: i64) -> Time {
    Time { secs: s, nanos: 0 }
}

fn ino_of(r: Reply) -> u64 {
    match r {
        Reply::Ino(i) => i,
        _ => panic!("no inode"),
    }
}

fn create(s: &mut State, parent: u64, name: &str, kind: Kind) -> u64 {
    ino_of(apply(s, &Command::create_for_test(parent, name, kind, t(0))).unwrap())
}

/// A file with `n` distinct committed chunks.
fn file(s: &mut State, parent: u64, name: &str, n: u8) -> u64 {
    if !s.nodes.contains_key("n1") {
        s.add_test_nodes(&["n1"], 1 << 30);
    }
    let ino = create(s, parent, name, Kind::File);
    let mut refs = Vec::new();
    for i in 0..n {
        let id = bigfs_proto::ChunkId::of(format!("{name}{i}").as_bytes());
        apply(
            s,
            &Command::RegisterChunk {
                confirmed: vec![],
                id,
                len: 8,
                node: "n1".into(),
                designated: vec![],
                now_ms: 0,
            },
        )
        .unwrap();
        refs.push((u64::from(i), id, 8));
    }
    apply(
        s,
        &Command::CommitLayout {
            ino,
            chunks: refs,
            size: 8 * u64::from(n),
            mtime: t(0),
            now: t(0),
        },
    )
    .unwrap();
    ino
}

fn snap(s: &mut State, src: u64, name: &str, max: u64, ro: bool) -> Result<Reply, MetaError> {
    apply(
        s,
        &Command::Snapshot {
            src,
            dst_parent: ROOT_INO,
            dst_name: name.into(),
            max_inodes: max,
            read_only: ro,
            now: t(5),
        },
    )
}

#[test]
fn a_snapshot_copies_the_tree_and_shares_every_chunk() {
    let mut s = State::new();
    let d = create(&mut s, ROOT_INO, "d", Kind::Directory);
    let sub = create(&mut s, d, "sub", Kind::Directory);
    let f = file(&mut s, d, "f", 3);
    file(&mut s, sub, "g", 2);
    apply(
        &mut s,
        &Command::Link {
            ino: f,
            new_parent: sub,
            new_name: "f2".into(),
            now: t(1),
        },
    )
    .unwrap();
    let chunks_before = s.chunks.len();
    let Reply::Copied {
        ino,
        inodes,
        chunk_refs,
    } = snap(&mut s, d, "copy", 100, false).unwrap()
    else {
        panic!("no copy")
    };
    assert_eq!((inodes, chunk_refs), (4, 5));
    assert_eq!(s.chunks.len(), chunks_before, "no chunk made");
    assert!(
        s.chunks.values().all(|c| c.refcount == 2),
        "every chunk shared"
    );
    assert_eq!(lookup(&s, ROOT_INO, "copy").unwrap(), ino);
    let csub = lookup(&s, ino, "sub").unwrap();
    let cf = lookup(&s, ino, "f").unwrap();
    assert_eq!(lookup(&s, csub, "f2").unwrap(), cf, "hard link kept");
    assert_eq!(s.inodes[&cf].nlink, 2);
    assert_eq!(s.inodes[&csub].parent, ino);
    assert_eq!(s.layouts[&cf], s.layouts[&f]);
    assert_eq!(s.inodes[&ROOT_INO].nlink, 4, "root gained a subdirectory");

    // Freeing the source leaves every chunk referenced once.
    apply(
        &mut s,
        &Command::Unlink {
            parent: d,
            name: "f".into(),
            open_lease_ms: 0,
            now: t(6),
            trash_retention_ms: 0,
        },
    )
    .unwrap();
    apply(
        &mut s,
        &Command::Unlink {
            parent: sub,
            name: "f2".into(),
            open_lease_ms: 0,
            now: t(6),
            trash_retention_ms: 0,
        },
    )
    .unwrap();
    for c in s.layouts[&cf].values() {
        assert_eq!(s.chunks[&c.id].refcount, 1);
    }
}

#[test]
fn a_snapshot_is_refused_over_an_existing_name_into_itself_or_past_the_limit() {
    let mut s = State::new();
    let d = create(&mut s, ROOT_INO, "d", Kind::Directory);
    file(&mut s, d, "a", 1);
    file(&mut s, d, "b", 1);
    let before = s.clone();
    let e = snap(&mut s, d, "d", 100, false).unwrap_err();
    assert_eq!(e.errno(), Some(EEXIST));
    let e = snap(&mut s, d, "small", 2, false).unwrap_err();
    assert_eq!(e.errno(), Some(ENOSPC));
    assert!(e.to_string().contains("snapshot_max_inodes"), "{e}");
    let e = apply(
        &mut s,
        &Command::Snapshot {
            src: d,
            dst_parent: d,
            dst_name: "inner".into(),
            max_inodes: 100,
            read_only: false,
            now: t(5),
        },
    )
    .unwrap_err();
    assert_eq!(e.errno(), Some(EINVAL));
    assert_eq!(s, before, "nothing changed");
    snap(&mut s, d, "fits", 3, false).unwrap();
}

#[test]
fn a_read_only_snapshot_refuses_changes_but_can_be_removed() {
    let mut s = State::new();
    let d = create(&mut s, ROOT_INO, "d", Kind::Directory);
    file(&mut s, d, "f", 1);
    let Reply::Copied { ino, .. } = snap(&mut s, d, "ro", 100, true).unwrap() else {
        panic!("no copy")
    };
    let cf = lookup(&s, ino, "f").unwrap();
    let e = apply(
        &mut s,
        &Command::create_for_test(ino, "new", Kind::File, t(6)),
    )
    .unwrap_err();
    assert_eq!(e.errno(), Some(EROFS));
    let e = apply(
        &mut s,
        &Command::CommitLayout {
            ino: cf,
            chunks: vec![],
            size: 100,
            mtime: t(6),
            now: t(6),
        },
    )
    .unwrap_err();
    assert_eq!(e.errno(), Some(EROFS));
    apply(
        &mut s,
        &Command::Unlink {
            parent: ino,
            name: "f".into(),
            open_lease_ms: 0,
            now: t(7),
            trash_retention_ms: 0,
        },
    )
    .unwrap();
    apply(
        &mut s,
        &Command::Rmdir {
            parent: ROOT_INO,
            name: "ro".into(),
            now: t(7),
        },
    )
    .unwrap();
    assert!(s.read_only.is_empty(), "freed inodes leave the set");
}
