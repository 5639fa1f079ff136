use bigfs_proto::{ROOT_INO, errno};

use super::*;
use crate::state::{Command, Kind, Reply, Time, apply as apply_cmd};

const A: Owner = Owner {
    session: 1,
    owner: 10,
};
const A2: Owner = Owner {
    session: 1,
    owner: 11,
};
const B: Owner = Owner {
    session: 2,
    owner: 10,
};

/// A state with one file; returns it and the file's inode.
fn with_file() -> (State, u64) {
    let mut s = State::new();
    let Reply::Ino(ino) = apply_cmd(
        &mut s,
        &Command::create_for_test(ROOT_INO, "f", Kind::File, Time::default()),
    )
    .unwrap() else {
        panic!("create returned no inode")
    };
    (s, ino)
}

fn set(
    s: &mut State,
    ino: u64,
    owner: Owner,
    kind: Option<LockKind>,
    start: u64,
    end: u64,
) -> Result<(), MetaError> {
    apply(
        s,
        &LockCommand::Set {
            ino,
            owner,
            kind,
            start,
            end,
            pid: 7,
            until_ms: 1000,
        },
    )
}

const R: Option<LockKind> = Some(LockKind::Read);
const W: Option<LockKind> = Some(LockKind::Write);

/// The locks of `owner` on `ino` as (kind, start, end), by start.
fn of(s: &State, ino: u64, owner: Owner) -> Vec<(LockKind, u64, u64)> {
    let mut v: Vec<_> = s
        .locks
        .on(ino)
        .iter()
        .filter(|h| h.owner == owner)
        .map(|h| (h.kind, h.start, h.end))
        .collect();
    v.sort_by_key(|x| x.1);
    v
}

fn errno_of(r: Result<(), MetaError>) -> i32 {
    r.unwrap_err().errno().expect("a namespace error")
}

#[test]
fn shared_locks_coexist_and_exclusive_ones_conflict() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, R, 0, 99).unwrap();
    set(&mut s, ino, B, R, 50, 149).unwrap();
    assert_eq!(errno_of(set(&mut s, ino, B, W, 90, 95)), errno::EAGAIN);
    // Outside A's range B may write-lock.
    set(&mut s, ino, B, W, 100, 200).unwrap();
    let c = s.locks.conflict(ino, A, LockKind::Read, 150, 150).unwrap();
    assert_eq!(
        (c.owner, c.kind, c.start, c.end),
        (B, LockKind::Write, 100, 200)
    );
    assert!(s.locks.conflict(ino, A, LockKind::Read, 0, 99).is_none());
}

#[test]
fn owners_in_one_session_conflict_too() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, W, 0, 9).unwrap();
    assert_eq!(errno_of(set(&mut s, ino, A2, R, 5, 5)), errno::EAGAIN);
}

#[test]
fn a_refused_lock_changes_nothing() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, W, 0, 9).unwrap();
    let before = s.clone();
    assert!(set(&mut s, ino, B, W, 0, 0).is_err());
    assert!(set(&mut s, ino, B, R, 5, 2).is_err(), "start after end");
    assert_eq!(s, before);
}

#[test]
fn unlocking_the_middle_splits_a_lock() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, W, 0, 99).unwrap();
    set(&mut s, ino, A, None, 40, 59).unwrap();
    assert_eq!(
        of(&s, ino, A),
        vec![(LockKind::Write, 0, 39), (LockKind::Write, 60, 99)]
    );
    assert_eq!(s.locks.held_by(1), 2);
    set(&mut s, ino, B, W, 40, 59).unwrap();
}

#[test]
fn a_read_lock_inside_a_write_lock_downgrades_that_part() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, W, 0, 99).unwrap();
    set(&mut s, ino, A, R, 10, 19).unwrap();
    assert_eq!(
        of(&s, ino, A),
        vec![
            (LockKind::Write, 0, 9),
            (LockKind::Read, 10, 19),
            (LockKind::Write, 20, 99)
        ]
    );
    set(&mut s, ino, B, R, 15, 15).unwrap();
    assert_eq!(errno_of(set(&mut s, ino, B, R, 5, 15)), errno::EAGAIN);
}

#[test]
fn upgrade_waits_for_other_readers_then_merges() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, R, 0, 9).unwrap();
    set(&mut s, ino, B, R, 0, 9).unwrap();
    assert_eq!(errno_of(set(&mut s, ino, A, W, 0, 9)), errno::EAGAIN);
    assert_eq!(
        of(&s, ino, A),
        vec![(LockKind::Read, 0, 9)],
        "kept on refusal"
    );
    set(&mut s, ino, B, None, 0, 9).unwrap();
    set(&mut s, ino, A, W, 0, 9).unwrap();
    set(&mut s, ino, A, W, 10, 19).unwrap();
    assert_eq!(
        of(&s, ino, A),
        vec![(LockKind::Write, 0, 19)],
        "adjacent merge"
    );
    set(&mut s, ino, A, W, 5, u64::MAX).unwrap();
    assert_eq!(of(&s, ino, A), vec![(LockKind::Write, 0, u64::MAX)]);
    assert_eq!(s.locks.held_by(1), 1);
}

#[test]
fn release_drops_one_owner_only_and_empties_the_tables() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, R, 0, 9).unwrap();
    set(&mut s, ino, A2, R, 0, 9).unwrap();
    set(&mut s, ino, B, R, 0, 9).unwrap();
    apply(&mut s, &LockCommand::Release { ino, owner: A }).unwrap();
    assert!(of(&s, ino, A).is_empty());
    assert_eq!(s.locks.held_by(1), 1);
    apply(&mut s, &LockCommand::Release { ino, owner: A2 }).unwrap();
    apply(&mut s, &LockCommand::Release { ino, owner: B }).unwrap();
    assert!(s.locks.is_empty());
    assert_eq!(s.locks, Locks::default(), "nothing left behind");
}

#[test]
fn an_ended_lease_frees_the_session_and_renewal_extends_it() {
    let (mut s, ino) = with_file();
    set(&mut s, ino, A, W, 0, 9).unwrap(); // until 1000
    set(&mut s, ino, B, W, 10, 19).unwrap(); // until 1000
    apply(
        &mut s,
        &LockCommand::Renew {
            session: 2,
            until_ms: 5000,
        },
    )
    .unwrap();
    assert!(!s.locks.any_expired(1000));
    assert!(s.locks.any_expired(1001));
    apply(&mut s, &LockCommand::Expire { now_ms: 1001 }).unwrap();
    assert!(of(&s, ino, A).is_empty(), "A's lease ended");
    assert_eq!(of(&s, ino, B), vec![(LockKind::Write, 10, 19)], "B renewed");
    set(
        &mut s,
        ino,
        Owner {
            session: 3,
            owner: 1,
        },
        W,
        0,
        9,
    )
    .unwrap();
    apply(&mut s, &LockCommand::Expire { now_ms: 6000 }).unwrap();
    assert!(s.locks.is_empty());
}

#[test]
fn past_the_per_inode_bound_a_lock_is_refused_with_enolck() {
    let (mut s, ino) = with_file();
    for i in 0..MAX_LOCKS_PER_INODE as u64 {
        // Every other byte, so nothing merges.
        set(&mut s, ino, A, W, 2 * i, 2 * i).unwrap();
    }
    assert_eq!(
        errno_of(set(&mut s, ino, A, W, u64::MAX, u64::MAX)),
        errno::ENOLCK
    );
    // Unlocking (fewer locks) still works at the bound.
    set(&mut s, ino, A, None, 0, 0).unwrap();
    set(&mut s, ino, A, W, u64::MAX, u64::MAX).unwrap();
}

#[test]
fn a_lock_on_a_missing_inode_is_refused_but_unlock_is_not() {
    let mut s = State::new();
    assert_eq!(errno_of(set(&mut s, 99, A, W, 0, 0)), errno::ENOENT);
    set(&mut s, 99, A, None, 0, 0).unwrap();
}

#[test]
fn replay_rebuilds_the_same_table() {
    let (mut s, ino) = with_file();
    let cmds = [
        LockCommand::Set {
            ino,
            owner: A,
            kind: W,
            start: 0,
            end: 99,
            pid: 1,
            until_ms: 10,
        },
        LockCommand::Set {
            ino,
            owner: A,
            kind: None,
            start: 10,
            end: 20,
            pid: 1,
            until_ms: 10,
        },
        LockCommand::Renew {
            session: 1,
            until_ms: 50,
        },
    ];
    let mut copy = s.clone();
    for c in &cmds {
        apply(&mut s, c).unwrap();
        apply_cmd(&mut copy, &Command::Lock(c.clone())).unwrap();
    }
    assert_eq!(s, copy);
    let bytes = crate::store::encode(&s).unwrap();
    let back: State = crate::store::decode(&bytes).unwrap();
    assert_eq!(back.locks, s.locks);
}
