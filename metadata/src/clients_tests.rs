//! Apply-level tests of exactly-once mutations: a retried request gets the
//! first answer and changes nothing, stale ones are refused, the table is
//! bounded and expires, and it survives a restart of the store.

use bigfs_proto::errno::{EEXIST, ENOENT};
use bigfs_proto::{ChunkId, ROOT_INO};

use super::*;
use crate::state::{Kind, Time, apply};
use crate::store::encode;

const CLIENT: u64 = 0xc1;

fn id(slot: u32, seq: u64) -> RequestId {
    RequestId {
        client: CLIENT,
        slot,
        seq,
    }
}

/// `cmd` named `id`, proposed at time 1000 and remembered until 2000.
fn once(id: RequestId, cmd: Command) -> Command {
    once_at(id, 1000, 2000, cmd)
}

fn once_at(id: RequestId, now_ms: u64, expires_ms: u64, cmd: Command) -> Command {
    Command::Once(Once {
        id,
        now_ms,
        expires_ms,
        cmd: Box::new(cmd),
    })
}

fn create(name: &str) -> Command {
    Command::create_for_test(ROOT_INO, name, Kind::File, Time::default())
}

fn unlink(name: &str) -> Command {
    Command::Unlink {
        parent: ROOT_INO,
        name: name.into(),
        open_lease_ms: 0,
        now: Time::default(),
        trash_retention_ms: 0,
    }
}

fn rename(from: &str, to: &str) -> Command {
    Command::Rename {
        parent: ROOT_INO,
        name: from.into(),
        new_parent: ROOT_INO,
        new_name: to.into(),
        noreplace: false,
        exchange: false,
        open_lease_ms: 0,
        now: Time::default(),
        trash_retention_ms: 0,
    }
}

/// Applies `cmd` twice (a lost reply and its retry): both answers must be
/// the same and the retry must change nothing.
fn applied_twice(s: &mut State, cmd: &Command) -> Result<Reply, MetaError> {
    let first = apply(s, cmd);
    let after_first = encode(s).unwrap();
    let retry = apply(s, cmd);
    assert_eq!(first, retry, "the retry is answered as the first try");
    assert_eq!(encode(s).unwrap(), after_first, "the retry changed state");
    first
}

fn errno(r: Result<Reply, MetaError>) -> Option<i32> {
    r.err().and_then(|e| e.errno())
}

#[test]
fn a_retried_create_gets_the_created_inode_not_eexist() {
    let mut s = State::new();
    let Ok(Reply::Ino(ino)) = applied_twice(&mut s, &once(id(0, 1), create("a"))) else {
        panic!("create gave no inode");
    };
    assert_eq!(s.dirs[&ROOT_INO].entries["a"].0, ino);
    // Unnamed, the same retry is refused: that is what the id prevents.
    assert_eq!(errno(apply(&mut s, &create("a"))), Some(EEXIST));
}

#[test]
fn a_retried_rename_or_unlink_succeeds_again_not_enoent() {
    let mut s = State::new();
    apply(&mut s, &create("a")).unwrap();
    assert_eq!(
        applied_twice(&mut s, &once(id(0, 1), rename("a", "b"))),
        Ok(Reply::Done)
    );
    assert_eq!(
        applied_twice(&mut s, &once(id(0, 2), unlink("b"))),
        Ok(Reply::Done)
    );
    assert!(s.dirs[&ROOT_INO].entries.is_empty());
    assert_eq!(errno(apply(&mut s, &unlink("b"))), Some(ENOENT));
}

#[test]
fn a_refusal_is_remembered_too() {
    let mut s = State::new();
    apply(&mut s, &create("a")).unwrap();
    let cmd = once(id(0, 1), create("a"));
    assert_eq!(errno(apply(&mut s, &cmd)), Some(EEXIST));
    // Someone else removes the name; the retry still gets the first
    // answer and creates nothing.
    apply(&mut s, &unlink("a")).unwrap();
    assert_eq!(errno(apply(&mut s, &cmd)), Some(EEXIST));
    assert!(s.dirs[&ROOT_INO].entries.is_empty());
}

#[test]
fn a_retried_commit_does_not_undo_a_later_one_or_count_twice() {
    let mut s = State::new();
    s.add_test_nodes(&["n"], 1 << 30);
    let (a, b) = (ChunkId([1; 32]), ChunkId([2; 32]));
    for c in [a, b] {
        apply(
            &mut s,
            &Command::RegisterChunk {
                id: c,
                len: 10,
                node: "n".into(),
                designated: vec![],
                now_ms: 1,
                confirmed: vec![],
            },
        )
        .unwrap();
    }
    let Ok(Reply::Ino(f)) = apply(&mut s, &create("f")) else {
        panic!("create gave no inode");
    };
    let commit = |c: ChunkId| Command::CommitLayout {
        ino: f,
        chunks: vec![(0, c, 10)],
        size: 10,
        mtime: Time::default(),
        now: Time::default(),
    };
    let first = once(id(0, 1), commit(a));
    assert_eq!(applied_twice(&mut s, &first), Ok(Reply::Ino(f)));
    assert_eq!(s.chunks[&a].refcount, 1);
    // Another request of the same client (another slot) replaces it; a
    // late retry of the first must not bring chunk `a` back.
    apply(&mut s, &once(id(1, 1), commit(b))).unwrap();
    let version = s.inodes[&f].version;
    assert_eq!(apply(&mut s, &first), Ok(Reply::Ino(f)));
    assert_eq!((s.chunks[&a].refcount, s.chunks[&b].refcount), (0, 1));
    assert_eq!(s.layouts[&f][&0].id, b);
    assert_eq!(s.inodes[&f].version, version);
}

#[test]
fn a_stale_request_is_refused_and_changes_nothing() {
    let mut s = State::new();
    apply(&mut s, &once(id(0, 2), create("b"))).unwrap();
    let before = encode(&s).unwrap();
    let r = apply(&mut s, &once(id(0, 1), create("a")));
    assert!(
        matches!(
            r,
            Err(MetaError::StaleRequest {
                seq: 1,
                last: 2,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(encode(&s).unwrap(), before);
    // The next number on the slot goes through.
    apply(&mut s, &once(id(0, 3), create("c"))).unwrap();
}

#[test]
fn answers_expire_at_the_time_the_command_carries() {
    let mut s = State::new();
    apply(&mut s, &once_at(id(0, 1), 1000, 5000, create("a"))).unwrap();
    apply(&mut s, &once_at(id(1, 1), 1000, 9000, create("b"))).unwrap();
    // Still remembered at 4999 ...
    apply(&mut s, &once_at(id(2, 1), 4999, 9000, create("c"))).unwrap();
    assert_eq!(s.clients.len(), 3);
    // ... and gone once a command proposed at 5000 is applied.
    apply(&mut s, &once_at(id(2, 2), 5000, 9000, create("d"))).unwrap();
    assert_eq!(s.clients.len(), 2);
    assert_eq!(s.clients.answered(id(0, 1)), None, "slot 0 forgotten");
    assert!(s.clients.answered(id(1, 1)).is_some(), "slot 1 kept");
}

#[test]
fn the_table_is_bounded_and_drops_the_answer_closest_to_expiry() {
    let mut s = State::new();
    let keep = Command::KeepInodes {
        inos: vec![],
        until_ms: 0,
    };
    let n = MAX_ENTRIES as u64 + 5;
    for client in 0..n {
        let cmd = once_at(
            RequestId {
                client,
                slot: 0,
                seq: 1,
            },
            0,
            1_000_000 - client,
            keep.clone(),
        );
        apply(&mut s, &cmd).unwrap();
    }
    assert_eq!(s.clients.len(), MAX_ENTRIES);
    // Later clients expire sooner here, so the last ones made room for
    // each other, and the first ones are all kept.
    let seen = |client| {
        s.clients
            .answered(RequestId {
                client,
                slot: 0,
                seq: 1,
            })
            .is_some()
    };
    assert!(seen(0) && seen(MAX_ENTRIES as u64 - 2) && seen(n - 1));
    assert!(!seen(MAX_ENTRIES as u64 - 1) && !seen(n - 2));
}
