//! Apply-level tests of the namespace operations, and a model-based
//! proptest of random operation sequences.

use std::collections::BTreeMap;

use bigfs_proto::ChunkId;
use bigfs_proto::errno::*;
use proptest::prelude::*;

use super::*;
use crate::state::{Command, ReplicaStatus, apply};

fn t(secs: i64) -> Time {
    Time { secs, nanos: 0 }
}

fn create(
    s: &mut State,
    parent: u64,
    name: &str,
    kind: Kind,
    exclusive: bool,
) -> Result<u64, MetaError> {
    let cmd = Command::Create {
        parent,
        name: name.into(),
        kind,
        mode: 0o644,
        uid: 1,
        gid: 2,
        symlink_target: if kind == Kind::Symlink {
            "target".into()
        } else {
            String::new()
        },
        exclusive,
        rdev: 0,
        chunk_size: 100,
        replication: 2,
        now: t(10),
    };
    match apply(s, &cmd)? {
        crate::state::Reply::Ino(i) => Ok(i),
        other => panic!("create returned no inode: {other:?}"),
    }
}

fn file(s: &mut State, parent: u64, name: &str) -> u64 {
    create(s, parent, name, Kind::File, true).unwrap()
}

fn mkdir(s: &mut State, parent: u64, name: &str) -> u64 {
    create(s, parent, name, Kind::Directory, true).unwrap()
}

fn rename(
    s: &mut State,
    p: u64,
    n: &str,
    np: u64,
    nn: &str,
    noreplace: bool,
    exchange: bool,
) -> Result<(), MetaError> {
    apply(
        s,
        &Command::Rename {
            parent: p,
            name: n.into(),
            new_parent: np,
            new_name: nn.into(),
            noreplace,
            exchange,
            open_lease_ms: 0,
            now: t(20),
            trash_retention_ms: 0,
        },
    )
    .map(|_| ())
}

fn unlink(s: &mut State, p: u64, n: &str) -> Result<(), MetaError> {
    apply(
        s,
        &Command::Unlink {
            parent: p,
            name: n.into(),
            open_lease_ms: 0,
            now: t(30),
            trash_retention_ms: 0,
        },
    )
    .map(|_| ())
}

fn rmdir(s: &mut State, p: u64, n: &str) -> Result<(), MetaError> {
    apply(
        s,
        &Command::Rmdir {
            parent: p,
            name: n.into(),
            now: t(30),
        },
    )
    .map(|_| ())
}

fn link(s: &mut State, ino: u64, np: u64, nn: &str) -> Result<(), MetaError> {
    apply(
        s,
        &Command::Link {
            ino,
            new_parent: np,
            new_name: nn.into(),
            now: t(40),
        },
    )
    .map(|_| ())
}

fn errno<T: std::fmt::Debug>(r: Result<T, MetaError>) -> i32 {
    r.unwrap_err().errno().expect("a namespace error")
}

/// Checks `f` fails with `e` and leaves the state unchanged.
fn refused(s: &mut State, e: i32, f: impl FnOnce(&mut State) -> Result<(), MetaError>) {
    let before = s.clone();
    assert_eq!(errno(f(s)), e);
    assert_eq!(*s, before);
}

fn id(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

/// A state with one node and chunks 1..=4 (len 100, chunk 4: 50)
/// Available on it.
fn with_chunks() -> State {
    let mut s = State::new();
    apply(
        &mut s,
        &Command::RegisterNode {
            node_id: "n".into(),
            address: "n:1".into(),
            capacity: 1 << 30,
            lost: vec![],
            confirmed: vec![],
        },
    )
    .unwrap();
    for i in 1..=4 {
        apply(
            &mut s,
            &Command::RegisterChunk {
                confirmed: vec![],
                id: id(i),
                len: if i == 4 { 50 } else { 100 },
                node: "n".into(),
                designated: vec![],
                now_ms: 1,
            },
        )
        .unwrap();
    }
    s
}

fn commit(s: &mut State, ino: u64, refs: &[(u64, u8, u32)], size: u64) -> Result<(), MetaError> {
    apply(
        s,
        &Command::CommitLayout {
            ino,
            chunks: refs.iter().map(|&(i, c, l)| (i, id(c), l)).collect(),
            size,
            mtime: t(50),
            now: t(50),
        },
    )
    .map(|_| ())
}

fn truncate(s: &mut State, ino: u64, size: u64) {
    apply(s, &Command::resize_for_test(ino, size, t(60))).unwrap();
}

#[test]
fn root_is_a_directory_owned_by_root() {
    let s = State::new();
    let a = s.attr(ROOT_INO).unwrap();
    assert_eq!((a.mode, a.uid, a.gid, a.nlink), (0o755, 0, 0, 2));
    assert_eq!(a.kind, bigfs_proto::pb::FileKind::Directory as i32);
}

#[test]
fn create_checks_names_parents_and_existing_entries() {
    let mut s = State::new();
    let f = file(&mut s, ROOT_INO, "f");
    refused(&mut s, EINVAL, |s| {
        create(s, ROOT_INO, "", Kind::File, false).map(|_| ())
    });
    refused(&mut s, EINVAL, |s| {
        create(s, ROOT_INO, "..", Kind::File, false).map(|_| ())
    });
    refused(&mut s, EINVAL, |s| {
        create(s, ROOT_INO, "a/b", Kind::File, false).map(|_| ())
    });
    refused(&mut s, ENAMETOOLONG, |s| {
        create(s, ROOT_INO, &"x".repeat(256), Kind::File, false).map(|_| ())
    });
    refused(&mut s, ENOENT, |s| {
        create(s, 999, "x", Kind::File, false).map(|_| ())
    });
    refused(&mut s, ENOTDIR, |s| {
        create(s, f, "x", Kind::File, false).map(|_| ())
    });
    refused(&mut s, EEXIST, |s| {
        create(s, ROOT_INO, "f", Kind::File, true).map(|_| ())
    });
    refused(&mut s, EEXIST, |s| {
        create(s, ROOT_INO, "f", Kind::Directory, false).map(|_| ())
    });
    // Non-exclusive create of an existing file returns it.
    assert_eq!(create(&mut s, ROOT_INO, "f", Kind::File, false).unwrap(), f);
    let d = mkdir(&mut s, ROOT_INO, "d");
    refused(&mut s, EEXIST, |s| {
        create(s, ROOT_INO, "d", Kind::File, false).map(|_| ())
    });
    assert_eq!(s.attr(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(s.attr(d).unwrap().nlink, 2);
    let l = create(&mut s, ROOT_INO, "l", Kind::Symlink, true).unwrap();
    let a = s.attr(l).unwrap();
    assert_eq!((a.symlink_target.as_str(), a.size), ("target", 6));
    assert_eq!(s.attr(f).unwrap().chunk_size, 100);
}

#[test]
fn special_files_keep_their_kind_and_device_number_and_hold_no_data() {
    use bigfs_proto::pb::FileKind;
    let mut s = State::new();
    let node = |s: &mut State, name: &str, kind: Kind, rdev: u32| {
        let cmd = Command::Create {
            parent: ROOT_INO,
            name: name.into(),
            kind,
            mode: 0o640,
            uid: 7,
            gid: 8,
            symlink_target: String::new(),
            exclusive: true,
            rdev,
            chunk_size: 100,
            replication: 2,
            now: t(10),
        };
        match apply(s, &cmd) {
            Ok(crate::state::Reply::Ino(i)) => Ok(i),
            Ok(other) => panic!("create returned no inode: {other:?}"),
            Err(e) => Err(e),
        }
    };
    let fifo = node(&mut s, "p", Kind::Fifo, 0).unwrap();
    let sock = node(&mut s, "s", Kind::Socket, 0).unwrap();
    let chr = node(&mut s, "c", Kind::CharDevice, 0x0102).unwrap();
    let blk = node(&mut s, "b", Kind::BlockDevice, 0x0304).unwrap();
    let a = s.attr(fifo).unwrap();
    assert_eq!(
        (a.kind, a.mode, a.uid, a.gid, a.size, a.nlink, a.rdev),
        (FileKind::Fifo as i32, 0o640, 7, 8, 0, 1, 0)
    );
    assert_eq!(s.attr(sock).unwrap().kind, FileKind::Socket as i32);
    let a = s.attr(chr).unwrap();
    assert_eq!((a.kind, a.rdev), (FileKind::CharDevice as i32, 0x0102));
    let a = s.attr(blk).unwrap();
    assert_eq!((a.kind, a.rdev), (FileKind::BlockDevice as i32, 0x0304));
    // Only device nodes keep a device number.
    let fifo2 = node(&mut s, "p2", Kind::Fifo, 0x0506).unwrap();
    assert_eq!(s.attr(fifo2).unwrap().rdev, 0);
    // An existing name is EEXIST whatever the kinds, even non-exclusive.
    refused(&mut s, EEXIST, |s| node(s, "p", Kind::Fifo, 0).map(|_| ()));
    refused(&mut s, EEXIST, |s| {
        create(s, ROOT_INO, "c", Kind::File, false).map(|_| ())
    });
    // No size and no layout.
    refused(&mut s, EINVAL, |s| {
        apply(
            s,
            &Command::SetAttr {
                ino: fifo,
                mode: None,
                uid: None,
                gid: None,
                size: Some(1),
                atime: None,
                mtime: None,
                now: t(20),
            },
        )
        .map(|_| ())
    });
    refused(&mut s, EINVAL, |s| commit(s, chr, &[], 0));
    // Links, renames and unlinks work as for files.
    link(&mut s, fifo, ROOT_INO, "p-link").unwrap();
    assert_eq!(s.attr(fifo).unwrap().nlink, 2);
    rename(&mut s, ROOT_INO, "p-link", ROOT_INO, "b", false, false).unwrap();
    assert!(s.inode(blk).is_err(), "the replaced device node is freed");
    unlink(&mut s, ROOT_INO, "b").unwrap();
    unlink(&mut s, ROOT_INO, "p").unwrap();
    assert!(s.inode(fifo).is_err());
}

#[test]
fn rmdir_refuses_files_and_non_empty_directories() {
    let mut s = State::new();
    let d = mkdir(&mut s, ROOT_INO, "d");
    file(&mut s, d, "f");
    file(&mut s, ROOT_INO, "g");
    refused(&mut s, ENOTEMPTY, |s| rmdir(s, ROOT_INO, "d"));
    refused(&mut s, ENOTDIR, |s| rmdir(s, ROOT_INO, "g"));
    refused(&mut s, ENOENT, |s| rmdir(s, ROOT_INO, "nope"));
    refused(&mut s, EISDIR, |s| unlink(s, ROOT_INO, "d"));
    unlink(&mut s, d, "f").unwrap();
    rmdir(&mut s, ROOT_INO, "d").unwrap();
    assert_eq!(s.attr(ROOT_INO).unwrap().nlink, 2);
    assert!(s.inode(d).is_err());
}

#[test]
fn hard_links_count_names_and_free_at_zero() {
    let mut s = with_chunks();
    let f = file(&mut s, ROOT_INO, "f");
    commit(&mut s, f, &[(0, 1, 100)], 100).unwrap();
    let d = mkdir(&mut s, ROOT_INO, "d");
    link(&mut s, f, d, "g").unwrap();
    assert_eq!(s.attr(f).unwrap().nlink, 2);
    refused(&mut s, EPERM, |s| link(s, d, ROOT_INO, "dd"));
    refused(&mut s, EEXIST, |s| link(s, f, ROOT_INO, "d"));
    refused(&mut s, ENOENT, |s| link(s, 999, ROOT_INO, "x"));
    unlink(&mut s, ROOT_INO, "f").unwrap();
    assert_eq!(s.attr(f).unwrap().nlink, 1);
    assert_eq!(s.chunks[&id(1)].refcount, 1);
    unlink(&mut s, d, "g").unwrap();
    assert!(s.inode(f).is_err());
    assert!(!s.layouts.contains_key(&f));
    assert_eq!(s.chunks[&id(1)].refcount, 0);
    assert_eq!(s.chunks[&id(1)].zero_since_ms, Some(t(30).as_ms()));
}

#[test]
fn rename_moves_and_replaces_by_kind() {
    let mut s = State::new();
    let a = mkdir(&mut s, ROOT_INO, "a");
    let b = mkdir(&mut s, ROOT_INO, "b");
    let f = file(&mut s, a, "f");
    let g = file(&mut s, ROOT_INO, "g");
    let e = mkdir(&mut s, ROOT_INO, "e");
    // file over file: the target is unlinked.
    rename(&mut s, a, "f", ROOT_INO, "g", false, false).unwrap();
    assert!(s.inode(g).is_err());
    assert_eq!(lookup(&s, ROOT_INO, "g").unwrap(), f);
    // file over dir / dir over file.
    refused(&mut s, EISDIR, |s| {
        rename(s, ROOT_INO, "g", ROOT_INO, "e", false, false)
    });
    refused(&mut s, ENOTDIR, |s| {
        rename(s, ROOT_INO, "e", ROOT_INO, "g", false, false)
    });
    // dir over non-empty dir, then over empty dir.
    file(&mut s, b, "x");
    refused(&mut s, ENOTEMPTY, |s| {
        rename(s, ROOT_INO, "e", ROOT_INO, "b", false, false)
    });
    let nlink_root = s.attr(ROOT_INO).unwrap().nlink;
    rename(&mut s, ROOT_INO, "b", ROOT_INO, "e", false, false).unwrap();
    assert!(s.inode(e).is_err());
    assert_eq!(s.attr(ROOT_INO).unwrap().nlink, nlink_root - 1);
    // dir across parents: link counts and parent pointer follow.
    rename(&mut s, ROOT_INO, "e", a, "b2", false, false).unwrap();
    assert_eq!(s.attr(a).unwrap().nlink, 3);
    assert_eq!(s.inode(b).unwrap().parent, a);
    assert_eq!(
        resolve_path(&s, "/a/b2/x").unwrap(),
        lookup(&s, b, "x").unwrap()
    );
    assert_eq!(resolve_path(&s, "/a/b2/..").unwrap(), a);
    // Missing source.
    refused(&mut s, ENOENT, |s| {
        rename(s, ROOT_INO, "zz", ROOT_INO, "y", false, false)
    });
    // Onto itself: nothing changes.
    let before = s.clone();
    rename(&mut s, ROOT_INO, "g", ROOT_INO, "g", false, false).unwrap();
    assert_eq!(s, before);
}

#[test]
fn rename_into_own_subtree_is_refused() {
    let mut s = State::new();
    let a = mkdir(&mut s, ROOT_INO, "a");
    let b = mkdir(&mut s, a, "b");
    refused(&mut s, EINVAL, |s| {
        rename(s, ROOT_INO, "a", b, "a", false, false)
    });
    refused(&mut s, EINVAL, |s| {
        rename(s, ROOT_INO, "a", a, "x", false, false)
    });
}

#[test]
fn rename_noreplace_and_exchange() {
    let mut s = State::new();
    let a = mkdir(&mut s, ROOT_INO, "a");
    let f = file(&mut s, ROOT_INO, "f");
    let g = file(&mut s, a, "g");
    refused(&mut s, EEXIST, |s| {
        rename(s, ROOT_INO, "f", a, "g", true, false)
    });
    rename(&mut s, ROOT_INO, "f", a, "h", true, false).unwrap();
    refused(&mut s, ENOENT, |s| {
        rename(s, a, "h", ROOT_INO, "nope", false, true)
    });
    refused(&mut s, EINVAL, |s| rename(s, a, "h", a, "g", true, true));
    rename(&mut s, a, "h", a, "g", false, true).unwrap();
    assert_eq!(lookup(&s, a, "g").unwrap(), f);
    assert_eq!(lookup(&s, a, "h").unwrap(), g);
    // Exchange a dir with a file across parents fixes link counts.
    let d = mkdir(&mut s, ROOT_INO, "d");
    let root_links = s.attr(ROOT_INO).unwrap().nlink;
    rename(&mut s, ROOT_INO, "d", a, "g", false, true).unwrap();
    assert_eq!(lookup(&s, a, "g").unwrap(), d);
    assert_eq!(lookup(&s, ROOT_INO, "d").unwrap(), f);
    assert_eq!(s.attr(ROOT_INO).unwrap().nlink, root_links - 1);
    assert_eq!(s.attr(a).unwrap().nlink, 3);
    assert_eq!(s.inode(d).unwrap().parent, a);
    // Exchanging a dir with an entry inside it is refused.
    file(&mut s, d, "inner");
    refused(&mut s, EINVAL, |s| {
        rename(s, a, "g", d, "inner", false, true)
    });
}

#[test]
fn readdir_pages_by_cookie_and_survives_changes() {
    let mut s = State::new();
    for n in ["c", "a", "b", "d"] {
        file(&mut s, ROOT_INO, n);
    }
    let (page, eof) = read_dir(&s, ROOT_INO, 0, 2).unwrap();
    assert_eq!(
        page.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["c", "a"]
    );
    assert!(!eof);
    // An entry removed and one added between pages: no repeats, no skips.
    unlink(&mut s, ROOT_INO, "a").unwrap();
    file(&mut s, ROOT_INO, "e");
    let (rest, eof) = read_dir(&s, ROOT_INO, page[1].cookie, 0).unwrap();
    assert_eq!(
        rest.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["b", "d", "e"]
    );
    assert!(eof);
    let f = lookup(&s, ROOT_INO, "b").unwrap();
    assert_eq!(errno(read_dir(&s, f, 0, 0)), ENOTDIR);
}

#[test]
fn readdir_pages_are_clamped_to_max_readdir_page() {
    let mut s = State::new();
    let max = crate::limits::MAX_READDIR_PAGE as usize;
    for n in 0..max + 5 {
        file(&mut s, ROOT_INO, &format!("f{n}"));
    }
    let (page, eof) = read_dir(&s, ROOT_INO, 0, u32::MAX).unwrap();
    assert_eq!(page.len(), max);
    assert!(!eof);
    let (rest, eof) = read_dir(&s, ROOT_INO, page[max - 1].cookie, u32::MAX).unwrap();
    assert_eq!(rest.len(), 5);
    assert!(eof);
}

#[test]
fn truncate_shrink_cuts_boundary_and_releases_refs() {
    let mut s = with_chunks();
    let f = file(&mut s, ROOT_INO, "f");
    commit(&mut s, f, &[(0, 1, 100), (1, 2, 100), (2, 3, 50)], 250).unwrap();
    let v = s.attr(f).unwrap().version;
    truncate(&mut s, f, 130);
    let layout = &s.layouts[&f];
    assert_eq!(layout.len(), 2);
    assert_eq!(layout[&1].len, 30);
    assert_eq!(layout[&0].len, 100);
    assert_eq!(s.chunks[&id(3)].refcount, 0);
    assert!(s.chunks[&id(3)].zero_since_ms.is_some());
    assert_eq!(s.chunks[&id(2)].refcount, 1);
    let a = s.attr(f).unwrap();
    assert_eq!((a.size, a.version), (130, v + 1));
    // Exactly on a chunk boundary drops the chunk at that index.
    truncate(&mut s, f, 100);
    assert_eq!(s.layouts[&f].len(), 1);
    assert_eq!(s.chunks[&id(2)].refcount, 0);
    // Grow only sets the size.
    truncate(&mut s, f, 10_000);
    assert_eq!(s.attr(f).unwrap().size, 10_000);
    assert_eq!(s.layouts[&f].len(), 1);
    truncate(&mut s, f, 0);
    assert!(s.layouts[&f].is_empty());
    assert_eq!(s.chunks[&id(1)].refcount, 0);
    // Size on a directory is refused.
    let before = s.clone();
    let r = apply(
        &mut s,
        &Command::SetAttr {
            ino: ROOT_INO,
            mode: None,
            uid: None,
            gid: None,
            size: Some(0),
            atime: None,
            mtime: None,
            now: t(1),
        },
    );
    assert_eq!(errno(r), EISDIR);
    assert_eq!(s, before);
}

#[test]
fn set_attr_changes_mode_owner_and_times() {
    let mut s = State::new();
    let f = file(&mut s, ROOT_INO, "f");
    apply(
        &mut s,
        &Command::SetAttr {
            ino: f,
            mode: Some(0o100600),
            uid: Some(7),
            gid: Some(8),
            size: None,
            atime: Some(t(1)),
            mtime: Some(t(2)),
            now: t(3),
        },
    )
    .unwrap();
    let a = s.attr(f).unwrap();
    assert_eq!((a.mode, a.uid, a.gid), (0o600, 7, 8));
    assert_eq!(
        (
            a.atime.unwrap().secs,
            a.mtime.unwrap().secs,
            a.ctime.unwrap().secs
        ),
        (1, 2, 3)
    );
}

#[test]
fn commit_layout_counts_references_and_replaces_chunks() {
    let mut s = with_chunks();
    let f = file(&mut s, ROOT_INO, "f");
    let g = file(&mut s, ROOT_INO, "g");
    commit(&mut s, f, &[(0, 1, 100), (1, 2, 40)], 140).unwrap();
    commit(&mut s, g, &[(0, 1, 100)], 100).unwrap();
    assert_eq!(s.chunks[&id(1)].refcount, 2);
    assert_eq!(s.chunks[&id(1)].zero_since_ms, None);
    // Replace index 1: chunk 2 released, chunk 3 taken; size stays the max.
    commit(&mut s, f, &[(1, 3, 10)], 110).unwrap();
    assert_eq!(s.chunks[&id(2)].refcount, 0);
    assert_eq!(s.chunks[&id(3)].refcount, 1);
    let a = s.attr(f).unwrap();
    assert_eq!(a.size, 140);
    assert_eq!(a.version, 2);
    // Replacing a chunk by itself keeps it referenced.
    commit(&mut s, f, &[(1, 3, 20)], 0).unwrap();
    assert_eq!(s.chunks[&id(3)].refcount, 1);
    assert_eq!(s.chunks[&id(3)].zero_since_ms, None);
}

#[test]
fn commit_layout_refuses_unusable_chunks_without_change() {
    let mut s = with_chunks();
    let f = file(&mut s, ROOT_INO, "f");
    let d = mkdir(&mut s, ROOT_INO, "d");
    let check = |s: &mut State, refs: &[(u64, u8, u32)], want: &str| {
        let before = s.clone();
        match commit(s, f, refs, 10) {
            Err(MetaError::FailedPrecondition(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("expected failed precondition, got {other:?}"),
        }
        assert_eq!(*s, before);
    };
    check(&mut s, &[(0, 1, 10), (1, 9, 10)], &id(9).to_hex());
    check(&mut s, &[(0, 4, 60)], "stored");
    // Only Pending: not readable yet.
    s.chunks
        .get_mut(&id(2))
        .unwrap()
        .replicas
        .insert("n".into(), ReplicaStatus::Pending);
    check(&mut s, &[(0, 2, 10)], "no available replica");
    // Deleting anywhere: garbage collection has started.
    let r = &mut s.chunks.get_mut(&id(3)).unwrap().replicas;
    r.insert("m".into(), ReplicaStatus::Deleting);
    check(&mut s, &[(0, 3, 10)], "being deleted");
    assert_eq!(errno(commit(&mut s, d, &[], 0)), EISDIR);
    assert!(matches!(
        commit(&mut s, f, &[(0, 1, 200)], 0),
        Err(MetaError::InvalidArgument(_))
    ));
}

// ------------------------------------------------------------ model test

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MKind {
    File(u32),
    Dir,
}

type Path = Vec<&'static str>;

#[derive(Debug, Clone)]
enum Op {
    Create(Path),
    Mkdir(Path),
    Unlink(Path),
    Rmdir(Path),
    Rename(Path, Path),
    Link(Path, Path),
}

fn path() -> impl Strategy<Value = Path> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        path().prop_map(Op::Create),
        path().prop_map(Op::Mkdir),
        path().prop_map(Op::Unlink),
        path().prop_map(Op::Rmdir),
        (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
    ]
}

#[derive(Default)]
struct Model {
    tree: BTreeMap<Path, MKind>,
    next_file: u32,
}

impl Model {
    fn parent_ok(&self, p: &Path) -> bool {
        let parent = &p[..p.len() - 1];
        parent.is_empty() || self.tree.get(parent) == Some(&MKind::Dir)
    }

    fn empty(&self, p: &Path) -> bool {
        !self
            .tree
            .keys()
            .any(|k| k.len() > p.len() && k.starts_with(p))
    }

    fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::Create(p) | Op::Mkdir(p) => {
                if !self.parent_ok(p) || self.tree.contains_key(p) {
                    return false;
                }
                let k = if matches!(op, Op::Mkdir(_)) {
                    MKind::Dir
                } else {
                    self.next_file += 1;
                    MKind::File(self.next_file)
                };
                self.tree.insert(p.clone(), k);
                true
            }
            Op::Unlink(p) => match self.tree.get(p) {
                Some(MKind::File(_)) if self.parent_ok(p) => {
                    self.tree.remove(p);
                    true
                }
                _ => false,
            },
            Op::Rmdir(p) => match self.tree.get(p) {
                Some(MKind::Dir) if self.empty(p) => {
                    self.tree.remove(p);
                    true
                }
                _ => false,
            },
            Op::Link(p, q) => match self.tree.get(p) {
                Some(&MKind::File(i)) if self.parent_ok(q) && !self.tree.contains_key(q) => {
                    self.tree.insert(q.clone(), MKind::File(i));
                    true
                }
                _ => false,
            },
            Op::Rename(p, q) => {
                let Some(&src) = self.tree.get(p) else {
                    return false;
                };
                if !self.parent_ok(q) {
                    return false;
                }
                if p == q {
                    return true;
                }
                if src == MKind::Dir && q.starts_with(p) {
                    return false;
                }
                match (src, self.tree.get(q).copied()) {
                    (_, None) => {}
                    (MKind::File(a), Some(MKind::File(b))) if a == b => return true,
                    (MKind::File(_), Some(MKind::File(_))) => {}
                    (MKind::Dir, Some(MKind::Dir)) if self.empty(q) => {}
                    _ => return false,
                }
                self.tree.remove(q);
                let moved: Vec<(Path, MKind)> = self
                    .tree
                    .iter()
                    .filter(|(k, _)| k.starts_with(p))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                for (k, v) in moved {
                    self.tree.remove(&k);
                    let mut nk = q.clone();
                    nk.extend_from_slice(&k[p.len()..]);
                    self.tree.insert(nk, v);
                }
                true
            }
        }
    }
}

/// The inode of `p`'s parent, or an inode that does not exist.
fn parent_ino(s: &State, p: &Path) -> u64 {
    let mut ino = ROOT_INO;
    for name in &p[..p.len() - 1] {
        match lookup(s, ino, name) {
            Ok(i) => ino = i,
            Err(_) => return u64::MAX,
        }
    }
    ino
}

fn ino_of(s: &State, p: &Path) -> u64 {
    lookup(s, parent_ino(s, p), p[p.len() - 1]).unwrap_or(u64::MAX)
}

fn run_op(s: &mut State, op: &Op) -> bool {
    let name = |p: &Path| p[p.len() - 1];
    match op {
        Op::Create(p) => create(s, parent_ino(s, p), name(p), Kind::File, true).is_ok(),
        Op::Mkdir(p) => create(s, parent_ino(s, p), name(p), Kind::Directory, true).is_ok(),
        Op::Unlink(p) => unlink(s, parent_ino(s, p), name(p)).is_ok(),
        Op::Rmdir(p) => rmdir(s, parent_ino(s, p), name(p)).is_ok(),
        Op::Link(p, q) => link(s, ino_of(s, p), parent_ino(s, q), name(q)).is_ok(),
        Op::Rename(p, q) => rename(
            s,
            parent_ino(s, p),
            name(p),
            parent_ino(s, q),
            name(q),
            false,
            false,
        )
        .is_ok(),
    }
}

/// Walks the real tree: path -> (kind, ino).
fn walk(
    s: &State,
    ino: u64,
    prefix: &mut Vec<String>,
    out: &mut BTreeMap<Vec<String>, (Kind, u64)>,
) {
    let Some(d) = s.dirs.get(&ino) else { return };
    assert_eq!(d.entries.len(), d.by_cookie.len());
    for (name, &(child, _)) in &d.entries {
        prefix.push(name.clone());
        let k = s.inode(child).expect("dentry to a live inode").kind;
        out.insert(prefix.clone(), (k, child));
        walk(s, child, prefix, out);
        prefix.pop();
    }
}

fn check_same(s: &State, m: &Model) {
    let mut real = BTreeMap::new();
    walk(s, ROOT_INO, &mut Vec::new(), &mut real);
    let model: BTreeMap<Vec<String>, MKind> = m
        .tree
        .iter()
        .map(|(k, v)| (k.iter().map(|x| x.to_string()).collect(), *v))
        .collect();
    assert_eq!(
        real.keys().collect::<Vec<_>>(),
        model.keys().collect::<Vec<_>>()
    );
    let mut file_ino: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, (kind, ino)) in &real {
        match model[p] {
            MKind::Dir => {
                assert_eq!(*kind, Kind::Directory);
                let subdirs = model
                    .iter()
                    .filter(|(k, v)| {
                        k.len() == p.len() + 1 && k.starts_with(p) && **v == MKind::Dir
                    })
                    .count();
                assert_eq!(
                    s.inode(*ino).unwrap().nlink as usize,
                    2 + subdirs,
                    "nlink of {p:?}"
                );
            }
            MKind::File(i) => {
                assert_eq!(*kind, Kind::File);
                assert_eq!(
                    *file_ino.entry(i).or_insert(*ino),
                    *ino,
                    "hard links of {p:?}"
                );
                let names = model.values().filter(|v| **v == MKind::File(i)).count();
                assert_eq!(
                    s.inode(*ino).unwrap().nlink as usize,
                    names,
                    "nlink of {p:?}"
                );
            }
        }
    }
    // No inode outlives its last name.
    let live: std::collections::BTreeSet<u64> = real.values().map(|v| v.1).collect();
    assert_eq!(s.inodes.len(), live.len() + 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_namespace_ops_match_a_path_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut s = State::new();
        let mut m = Model::default();
        for op in &ops {
            let before = s.clone();
            let real_ok = run_op(&mut s, op);
            let model_ok = m.apply(op);
            prop_assert_eq!(real_ok, model_ok, "op {:?}", op);
            if !real_ok {
                prop_assert_eq!(&s, &before);
            }
            check_same(&s, &m);
        }
    }
}

#[test]
fn files_follow_renames_for_export_borders() {
    let mut s = State::new();
    let a = mkdir(&mut s, ROOT_INO, "a");
    let b = mkdir(&mut s, ROOT_INO, "b");
    let f = file(&mut s, a, "f");
    assert!(is_within(&s, f, a));
    rename(&mut s, a, "f", b, "f", false, false).unwrap();
    assert!(is_within(&s, f, b) && !is_within(&s, f, a));
    // An exchange moves both sides.
    let g = file(&mut s, a, "g");
    rename(&mut s, a, "g", b, "f", false, true).unwrap();
    assert!(is_within(&s, g, b) && is_within(&s, f, a));
    // A hard link does not move the file: it stays where it lives.
    link(&mut s, f, b, "f2").unwrap();
    assert!(is_within(&s, f, a) && !is_within(&s, f, b));
}

#[test]
fn confined_paths_stop_at_the_export_root() {
    assert_eq!(confined_path("/srv/web", "/"), "/srv/web");
    assert_eq!(confined_path("/srv/web", "/a/./b"), "/srv/web/a/b");
    assert_eq!(confined_path("/srv/web", "/../../etc"), "/srv/web/etc");
    assert_eq!(confined_path("/srv/web", "/a/../../b"), "/srv/web/b");
    assert_eq!(confined_path("/", "/x/.."), "/");
    assert_eq!(confined_path("/", "/x"), "/x");
}

#[test]
fn each_change_of_a_directorys_entries_bumps_its_version_once() {
    let mut s = State::new();
    let a = mkdir(&mut s, ROOT_INO, "a");
    let b = mkdir(&mut s, ROOT_INO, "b");
    let v = |s: &State, d: u64| s.inodes[&d].version;
    assert_eq!((v(&s, a), v(&s, b)), (0, 0), "a new directory is at 0");
    file(&mut s, a, "f");
    assert_eq!(v(&s, a), 1);
    // Within one directory: once, not once per side.
    rename(&mut s, a, "f", a, "g", false, false).unwrap();
    assert_eq!(v(&s, a), 2);
    mkdir(&mut s, a, "d1");
    mkdir(&mut s, b, "d2");
    assert_eq!((v(&s, a), v(&s, b)), (3, 1));
    // Across directories, replacing an empty directory: once each.
    rename(&mut s, a, "d1", b, "d2", false, false).unwrap();
    assert_eq!((v(&s, a), v(&s, b)), (4, 2));
    assert_eq!(s.inodes[&b].nlink, 3, "b holds one subdirectory");
    file(&mut s, b, "x");
    rename(&mut s, b, "x", b, "d2", false, true).unwrap();
    assert_eq!(v(&s, b), 4, "an exchange in one directory: once");
    unlink(&mut s, a, "g").unwrap();
    assert_eq!(v(&s, a), 5);
    rmdir(&mut s, b, "x").unwrap();
    assert_eq!(v(&s, b), 5);
}
