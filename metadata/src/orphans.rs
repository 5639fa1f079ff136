//! Files unlinked while a client has them open.
//!
//! When the last name of such a file goes, its inode stays (readable and
//! writable through the open handles) with a lease the client renews. The
//! last close releases it; a client that died lets the lease run out. Only
//! then are its chunks released.

use crate::namespace::free_inode;
use crate::state::{State, Time};

/// Extends the leases of `inos` that are orphans to `until_ms`.
pub(crate) fn keep(state: &mut State, inos: &[u64], until_ms: u64) {
    for ino in inos {
        if let Some(until) = state.orphans.get_mut(ino) {
            *until = (*until).max(until_ms);
        }
    }
}

/// Frees orphan `ino` (a no-op for an inode that still has a name).
pub(crate) fn release(state: &mut State, ino: u64, now: Time) {
    if state.orphans.contains_key(&ino) {
        free_inode(state, ino, now);
    }
}

/// Frees every orphan whose lease ended before `now`.
pub(crate) fn expire(state: &mut State, now: Time) {
    let now_ms = now.as_ms();
    let expired: Vec<u64> = state
        .orphans
        .iter()
        .filter(|(_, until)| **until < now_ms)
        .map(|(ino, _)| *ino)
        .collect();
    for ino in expired {
        free_inode(state, ino, now);
    }
}

/// Whether any orphan's lease has ended (so an expiry command is due).
pub fn any_expired(state: &State, now_ms: u64) -> bool {
    state.orphans.values().any(|until| *until < now_ms)
}

#[cfg(test)]
mod tests {
    use bigfs_proto::{ChunkId, ROOT_INO};

    use crate::state::{Command, Kind, State, Time, apply};

    fn t(ms: u64) -> Time {
        Time {
            secs: (ms / 1000) as i64,
            nanos: ((ms % 1000) * 1_000_000) as u32,
        }
    }

    /// A file with one committed chunk; returns its inode and chunk.
    fn file_with_chunk(s: &mut State) -> (u64, ChunkId) {
        apply(
            s,
            &Command::RegisterNode {
                node_id: "n1".into(),
                address: "a:1".into(),
                capacity: 1 << 30,
                lost: vec![],
                confirmed: vec![],
            },
        )
        .unwrap();
        let id = ChunkId::of(b"data");
        apply(
            s,
            &Command::RegisterChunk {
                confirmed: vec![],
                id,
                len: 4,
                node: "n1".into(),
                designated: vec![],
                now_ms: 0,
            },
        )
        .unwrap();
        let crate::state::Reply::Ino(ino) = apply(
            s,
            &Command::create_for_test(ROOT_INO, "f", Kind::File, t(0)),
        )
        .unwrap() else {
            panic!("create returned no inode")
        };
        apply(
            s,
            &Command::CommitLayout {
                ino,
                chunks: vec![(0, id, 4)],
                size: 4,
                mtime: t(0),
                now: t(0),
            },
        )
        .unwrap();
        (ino, id)
    }

    fn unlink(s: &mut State, lease: u64, now: u64) {
        apply(
            s,
            &Command::Unlink {
                parent: ROOT_INO,
                name: "f".into(),
                open_lease_ms: lease,
                now: t(now),
                trash_retention_ms: 0,
            },
        )
        .unwrap();
    }

    #[test]
    fn an_unlinked_open_file_lives_until_released() {
        let mut s = State::new();
        let (ino, id) = file_with_chunk(&mut s);
        unlink(&mut s, 60_000, 1000);
        assert!(s.inodes.contains_key(&ino), "kept while open");
        assert_eq!(s.chunks[&id].refcount, 1);
        assert!(
            crate::namespace::lookup(&s, ROOT_INO, "f").is_err(),
            "no longer named"
        );
        apply(&mut s, &Command::ReleaseInode { ino, now: t(2000) }).unwrap();
        assert!(!s.inodes.contains_key(&ino));
        assert_eq!(s.chunks[&id].refcount, 0);
        assert!(s.orphans.is_empty());
    }

    #[test]
    fn an_orphan_whose_lease_ends_is_freed_and_renewal_extends_it() {
        let mut s = State::new();
        let (ino, _) = file_with_chunk(&mut s);
        unlink(&mut s, 10_000, 1000); // until 11 000
        apply(
            &mut s,
            &Command::KeepInodes {
                inos: vec![ino, 999],
                until_ms: 20_000,
            },
        )
        .unwrap();
        apply(&mut s, &Command::ExpireOrphans { now: t(15_000) }).unwrap();
        assert!(s.inodes.contains_key(&ino), "renewed lease holds");
        apply(&mut s, &Command::ExpireOrphans { now: t(20_001) }).unwrap();
        assert!(!s.inodes.contains_key(&ino), "expired lease frees");
    }

    #[test]
    fn without_a_lease_unlink_frees_at_once_and_release_of_a_named_file_does_nothing() {
        let mut s = State::new();
        let (ino, _) = file_with_chunk(&mut s);
        apply(&mut s, &Command::ReleaseInode { ino, now: t(1) }).unwrap();
        assert!(s.inodes.contains_key(&ino), "a named file is not released");
        unlink(&mut s, 0, 1000);
        assert!(!s.inodes.contains_key(&ino));
        assert_eq!(s.inodes[&ROOT_INO].allocated, 0);
    }

    #[test]
    fn allocated_follows_commits_and_truncates() {
        let mut s = State::new();
        let (ino, _) = file_with_chunk(&mut s);
        assert_eq!(s.inodes[&ino].allocated, 4);
        apply(
            &mut s,
            &Command::SetAttr {
                ino,
                mode: None,
                uid: None,
                gid: None,
                size: Some(2),
                atime: None,
                mtime: None,
                now: t(5),
            },
        )
        .unwrap();
        assert_eq!(s.inodes[&ino].allocated, 2);
    }
}
