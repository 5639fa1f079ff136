//! Replication per file and per directory (MooseFS "goal"): how many copies
//! of its chunks a file wants, what a directory passes on to new entries,
//! and what a chunk wants when several files share it.
//!
//! - A file's `replication` is the number of copies each of its chunks
//!   wants (1..=[`MAX_REPLICATION`]).
//! - A directory's `replication` is what new files and subdirectories in
//!   it inherit; 0 means "not set": files get the cluster default.
//! - A chunk referenced by several files (hard links share a layout, dedup
//!   shares chunks between files) wants the highest of their counts: each
//!   chunk keeps its references counted by replication (`Chunk::wants`),
//!   so lowering one file's count never starves another's.
//!
//! The count is set by `bigfs setrepl`, or through a mount with the
//! extended attribute [`XATTR`].

use bigfs_proto::errno::{EINVAL, EPERM};

use crate::error::MetaError;
use crate::state::{Chunk, Kind, State, Time};

/// The most copies a file may want. More copies than storage nodes can
/// never be reached (healing keeps the chunk under-replicated and says
/// so); nine covers any sane layout (three racks of three) and keeps a
/// typo such as `setrepl 30` from being accepted.
pub const MAX_REPLICATION: u32 = 9;

/// The extended attribute that reads and sets the count through a mount.
/// In the `user.` namespace because the kernel passes `user.` names of
/// files and directories to FUSE for any user with access (`trusted.`
/// needs CAP_SYS_ADMIN). Not listed by `listxattr`, so `cp -a` and
/// `rsync -X` do not copy it as if it were data.
pub const XATTR: &str = bigfs_proto::REPLICATION_XATTR;

/// Checks a wanted count.
pub fn check(replication: u32) -> Result<(), MetaError> {
    if !(1..=MAX_REPLICATION).contains(&replication) {
        return Err(MetaError::ns(
            EINVAL,
            format!("replication {replication} is out of range: 1 to {MAX_REPLICATION} copies"),
        ));
    }
    Ok(())
}

/// Parses the value of [`XATTR`] as `setfattr -v 3` sends it (decimal,
/// surrounding whitespace and a trailing NUL allowed).
pub fn parse_xattr(value: &[u8]) -> Result<u32, MetaError> {
    let text = std::str::from_utf8(value)
        .ok()
        .map(|s| s.trim_end_matches('\0').trim());
    let n = text.and_then(|s| s.parse::<u32>().ok()).ok_or_else(|| {
        MetaError::ns(
            EINVAL,
            format!(
                "{XATTR} takes a number of copies (1 to {MAX_REPLICATION}), not {:?}",
                String::from_utf8_lossy(value)
            ),
        )
    })?;
    check(n)?;
    Ok(n)
}

/// The count `ino` wants, or passes on: its own, else the cluster default.
pub fn effective(state: &State, ino: u64, default: u32) -> Result<u32, MetaError> {
    let i = state.inode(ino)?;
    Ok(if i.replication == 0 {
        default
    } else {
        i.replication
    })
}

/// The copies `chunk` wants: the highest count among the files referencing
/// it; `default` for a chunk with no counted reference (state written
/// before references were counted by replication).
pub fn wanted(chunk: &Chunk, default: u32) -> u32 {
    chunk
        .wants
        .keys()
        .next_back()
        .copied()
        .unwrap_or(default)
        .max(1)
}

/// Forgets one reference of replication `replication`.
pub(crate) fn unwant(chunk: &mut Chunk, replication: u32) {
    if let Some(n) = chunk.wants.get_mut(&replication) {
        *n -= 1;
        if *n == 0 {
            chunk.wants.remove(&replication);
        }
    }
}

/// Sets the wanted copies of `ino` and, with `recursive` on a directory,
/// of every file and directory below it. Answers how many inodes changed.
pub(crate) fn set(
    state: &mut State,
    ino: u64,
    replication: u32,
    recursive: bool,
    now: Time,
) -> Result<u64, MetaError> {
    check(replication)?;
    let kind = state.inode(ino)?.kind;
    if !matches!(kind, Kind::File | Kind::Directory) {
        return Err(MetaError::ns(
            EPERM,
            format!("inode {ino} is a {kind:?}: only files and directories have a replication"),
        ));
    }
    let mut todo = vec![ino];
    let mut changed = 0;
    while let Some(i) = todo.pop() {
        if recursive && let Some(d) = state.dirs.get(&i) {
            todo.extend(d.entries.values().map(|&(child, _)| child));
        }
        let Some(inode) = state.inodes.get_mut(&i) else {
            continue;
        };
        if !matches!(inode.kind, Kind::File | Kind::Directory) || inode.replication == replication {
            continue;
        }
        let old = std::mem::replace(&mut inode.replication, replication);
        inode.ctime = now;
        changed += 1;
        for r in state.layouts.get(&i).into_iter().flat_map(|l| l.values()) {
            if let Some(c) = state.chunks.get_mut(&r.id) {
                unwant(c, old);
                *c.wants.entry(replication).or_default() += 1;
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Reply, apply};
    use bigfs_proto::{ChunkId, ROOT_INO};

    fn t() -> Time {
        Time { secs: 1, nanos: 0 }
    }

    fn mk(s: &mut State, parent: u64, name: &str, kind: Kind) -> u64 {
        match apply(s, &Command::create_for_test(parent, name, kind, t())).unwrap() {
            Reply::Ino(i) => i,
            other => panic!("{other:?}"),
        }
    }

    fn setrepl(s: &mut State, ino: u64, n: u32, recursive: bool) -> Result<Reply, MetaError> {
        apply(
            s,
            &Command::SetReplication {
                ino,
                replication: n,
                recursive,
                now: t(),
            },
        )
    }

    /// A file holding chunk `id` (registered on nodes a and b).
    fn with_chunk(s: &mut State, ino: u64, id: ChunkId) {
        apply(
            s,
            &Command::RegisterChunk {
                id,
                len: 1,
                node: "a".into(),
                designated: vec![],
                now_ms: 0,
                confirmed: vec!["b".into()],
            },
        )
        .unwrap();
        apply(
            s,
            &Command::CommitLayout {
                ino,
                chunks: vec![(0, id, 1)],
                size: 1,
                mtime: t(),
                now: t(),
            },
        )
        .unwrap();
    }

    #[test]
    fn new_entries_inherit_their_directory_setting() {
        let mut s = State::new();
        let d = mk(&mut s, ROOT_INO, "d", Kind::Directory);
        // Not set: files get the cluster default the command carries (2).
        assert_eq!(s.inodes[&d].replication, 0);
        let plain = mk(&mut s, d, "plain", Kind::File);
        assert_eq!(s.inodes[&plain].replication, 2);
        setrepl(&mut s, d, 4, false).unwrap();
        let f = mk(&mut s, d, "f", Kind::File);
        let sub = mk(&mut s, d, "sub", Kind::Directory);
        let g = mk(&mut s, sub, "g", Kind::File);
        assert_eq!(s.inodes[&f].replication, 4);
        assert_eq!(s.inodes[&sub].replication, 4);
        assert_eq!(s.inodes[&g].replication, 4);
        assert_eq!(effective(&s, ROOT_INO, 3).unwrap(), 3);
        assert_eq!(effective(&s, d, 3).unwrap(), 4);
    }

    #[test]
    fn recursive_set_changes_the_subtree_and_counts_changes() {
        let mut s = State::new();
        s.add_test_nodes(&["a", "b"], 1 << 30);
        let d = mk(&mut s, ROOT_INO, "d", Kind::Directory);
        let sub = mk(&mut s, d, "sub", Kind::Directory);
        let f = mk(&mut s, sub, "f", Kind::File);
        let other = mk(&mut s, ROOT_INO, "other", Kind::File);
        assert_eq!(setrepl(&mut s, d, 3, false).unwrap(), Reply::Count(1));
        assert_eq!(s.inodes[&f].replication, 2);
        assert_eq!(setrepl(&mut s, d, 5, true).unwrap(), Reply::Count(3));
        assert_eq!(s.inodes[&f].replication, 5);
        assert_eq!(s.inodes[&sub].replication, 5);
        assert_eq!(s.inodes[&other].replication, 2);
    }

    #[test]
    fn a_shared_chunk_wants_the_highest_count_of_its_files() {
        let mut s = State::new();
        s.add_test_nodes(&["a", "b"], 1 << 30);
        let id = ChunkId::of(b"shared");
        let f = mk(&mut s, ROOT_INO, "f", Kind::File);
        let g = mk(&mut s, ROOT_INO, "g", Kind::File);
        with_chunk(&mut s, f, id);
        with_chunk(&mut s, g, id);
        assert_eq!(wanted(&s.chunks[&id], 1), 2);
        setrepl(&mut s, f, 4, false).unwrap();
        assert_eq!(wanted(&s.chunks[&id], 1), 4);
        setrepl(&mut s, g, 3, false).unwrap();
        assert_eq!(wanted(&s.chunks[&id], 1), 4);
        // Lowering the highest gives the next one.
        setrepl(&mut s, f, 1, false).unwrap();
        assert_eq!(wanted(&s.chunks[&id], 1), 3);
        // Deleting a file forgets its reference.
        apply(
            &mut s,
            &Command::Unlink {
                parent: ROOT_INO,
                name: "g".into(),
                open_lease_ms: 0,
                trash_retention_ms: 0,
                now: t(),
            },
        )
        .unwrap();
        assert_eq!(wanted(&s.chunks[&id], 1), 1);
        assert_eq!(s.chunks[&id].wants.values().sum::<u64>(), 1);
        assert_eq!(s.chunks[&id].refcount, 1);
    }

    #[test]
    fn bounds_and_kinds_are_checked() {
        let mut s = State::new();
        let f = mk(&mut s, ROOT_INO, "f", Kind::File);
        let l = mk(&mut s, ROOT_INO, "l", Kind::Fifo);
        assert!(setrepl(&mut s, f, 0, false).is_err());
        assert!(setrepl(&mut s, f, MAX_REPLICATION + 1, false).is_err());
        assert!(setrepl(&mut s, f, MAX_REPLICATION, false).is_ok());
        assert!(setrepl(&mut s, l, 2, false).is_err());
        assert_eq!(parse_xattr(b"3").unwrap(), 3);
        assert_eq!(parse_xattr(b" 4\n\0").unwrap(), 4);
        assert!(parse_xattr(b"three").is_err());
        assert!(parse_xattr(b"0").is_err());
    }
}
