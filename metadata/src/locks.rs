//! The lock table: byte-range locks (POSIX `fcntl` and `flock`) held by
//! mounts, part of the replicated state so that every member knows them and
//! a new leader keeps them.
//!
//! A lock belongs to an [`Owner`]: a session (one mount, named by its client
//! id) and the owner the kernel names inside it (a process's file table for
//! `fcntl` locks, an open file description for `flock`, which the kernel
//! sends as a whole-file lock of that owner). Locks of one owner never
//! conflict with each other; a new lock replaces the owner's locks on the
//! range it covers (an upgrade, a downgrade, or a split of a larger lock),
//! and adjacent ranges of one kind merge, as POSIX says.
//!
//! Every session has a lease (`until_ms`) that each lock and each renewal
//! extends; [`LockCommand::Expire`] drops the locks of sessions whose lease
//! ended, so a mount that died or was cut off frees what it held. The time
//! of every decision travels in the command: `apply` reads no clock.
//!
//! Bounded: [`MAX_LOCKS_PER_INODE`], [`MAX_LOCKS_PER_SESSION`] and
//! [`MAX_SESSIONS`]; past them a request is refused with ENOLCK. Constants,
//! not settings: every member must refuse the same requests.

use std::collections::BTreeMap;

use bigfs_proto::errno;
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::state::State;

/// Most locks on one inode. SQLite needs a handful per connection; a
/// thousand serves hundreds of processes sharing a file, and keeps the
/// linear scans of one inode's list short.
pub const MAX_LOCKS_PER_INODE: usize = 1024;
/// Most locks one session (mount) holds over all inodes.
pub const MAX_LOCKS_PER_SESSION: usize = 4096;
/// Most sessions holding locks at once (mounts using locks).
pub const MAX_SESSIONS: usize = 10_000;

/// Shared (read) or exclusive (write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
}

/// Who holds a lock: an owner (named by the kernel) inside a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    pub session: u64,
    pub owner: u64,
}

/// One held lock on the bytes `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub owner: Owner,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    /// The process that placed it (reported by F_GETLK).
    pub pid: u32,
}

impl Held {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    fn conflicts(&self, owner: Owner, kind: LockKind, start: u64, end: u64) -> bool {
        self.owner != owner
            && self.overlaps(start, end)
            && (kind == LockKind::Write || self.kind == LockKind::Write)
    }
}

/// A session's lease and where its locks are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The lease ends after this time (ms since the epoch).
    pub until_ms: u64,
    /// Locks held per inode (every count > 0).
    inos: BTreeMap<u64, usize>,
    /// Locks held in all.
    held: usize,
}

/// Every lock, by inode, and every session holding one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locks {
    by_ino: BTreeMap<u64, Vec<Held>>,
    sessions: BTreeMap<u64, Session>,
}

/// A change to the lock table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Places (`kind` Some) or removes (None) `owner`'s lock on
    /// `start..=end` of `ino`; a placed lock renews the session until
    /// `until_ms`. Refused with EAGAIN if another owner holds a conflicting
    /// lock, ENOLCK past the bounds.
    Set {
        ino: u64,
        owner: Owner,
        kind: Option<LockKind>,
        start: u64,
        end: u64,
        pid: u32,
        until_ms: u64,
    },
    /// Drops every lock of `owner` on `ino` (the owner closed the file).
    Release { ino: u64, owner: Owner },
    /// Extends the lease of `session`'s locks to `until_ms`.
    Renew { session: u64, until_ms: u64 },
    /// Drops the locks of every session whose lease ended before `now_ms`.
    Expire { now_ms: u64 },
}

impl Locks {
    /// The first lock of another owner that stands in the way of `owner`
    /// taking a `kind` lock on `start..=end` of `ino`.
    pub fn conflict(
        &self,
        ino: u64,
        owner: Owner,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> Option<Held> {
        self.by_ino
            .get(&ino)?
            .iter()
            .find(|h| h.conflicts(owner, kind, start, end))
            .copied()
    }

    /// The locks on `ino`.
    pub fn on(&self, ino: u64) -> &[Held] {
        self.by_ino.get(&ino).map_or(&[], Vec::as_slice)
    }

    /// Locks `session` holds.
    pub fn held_by(&self, session: u64) -> usize {
        self.sessions.get(&session).map_or(0, |s| s.held)
    }

    /// Locks held in all.
    pub fn len(&self) -> usize {
        self.sessions.values().map(|s| s.held).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether some session's lease ended before `now_ms` (an expiry is due).
    pub fn any_expired(&self, now_ms: u64) -> bool {
        self.sessions.values().any(|s| s.until_ms < now_ms)
    }

    /// Replaces the locks on `ino` by `new`, keeping the session counts.
    fn replace(&mut self, ino: u64, new: Vec<Held>) {
        let old = self.by_ino.remove(&ino).unwrap_or_default();
        let mut delta: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
        for h in &old {
            delta.entry(h.owner.session).or_default().0 += 1;
        }
        for h in &new {
            delta.entry(h.owner.session).or_default().1 += 1;
        }
        for (session, (before, after)) in delta {
            let s = self.sessions.entry(session).or_default();
            s.held = s.held.saturating_sub(before) + after;
            if after == 0 {
                s.inos.remove(&ino);
            } else {
                s.inos.insert(ino, after);
            }
            if s.held == 0 {
                self.sessions.remove(&session);
            }
        }
        if !new.is_empty() {
            self.by_ino.insert(ino, new);
        }
    }

    /// What the locks of `ino` become when `owner` sets `kind` (None:
    /// unlocks) on `start..=end`: the owner's locks lose that range (split
    /// if they reach past it), the new lock goes in, and the owner's
    /// touching locks of one kind merge.
    fn after_set(
        &self,
        ino: u64,
        owner: Owner,
        kind: Option<LockKind>,
        start: u64,
        end: u64,
        pid: u32,
    ) -> Vec<Held> {
        let mut others = Vec::new();
        let mut mine = Vec::new();
        for h in self.on(ino) {
            if h.owner != owner {
                others.push(*h);
                continue;
            }
            if !h.overlaps(start, end) {
                mine.push(*h);
                continue;
            }
            if h.start < start {
                mine.push(Held {
                    end: start - 1,
                    ..*h
                });
            }
            if h.end > end {
                mine.push(Held {
                    start: end + 1,
                    ..*h
                });
            }
        }
        if let Some(kind) = kind {
            mine.push(Held {
                owner,
                kind,
                start,
                end,
                pid,
            });
        }
        mine.sort_by_key(|h| h.start);
        let mut merged: Vec<Held> = Vec::with_capacity(mine.len());
        for h in mine {
            match merged.last_mut() {
                Some(last) if last.kind == h.kind && last.end.checked_add(1) == Some(h.start) => {
                    last.end = h.end;
                    last.pid = h.pid;
                }
                _ => merged.push(h),
            }
        }
        others.extend(merged);
        others
    }
}

fn invalid(msg: impl Into<String>) -> MetaError {
    MetaError::ns(errno::EINVAL, msg)
}

/// Checks a range: `start..=end` with `start <= end`.
pub fn check_range(start: u64, end: u64) -> Result<(), MetaError> {
    if start > end {
        return Err(invalid(format!(
            "lock range starts at {start}, after its end {end}"
        )));
    }
    Ok(())
}

fn set(
    state: &mut State,
    ino: u64,
    owner: Owner,
    kind: Option<LockKind>,
    (start, end): (u64, u64),
    pid: u32,
    until_ms: u64,
) -> Result<(), MetaError> {
    check_range(start, end)?;
    if kind.is_some() {
        state.inode(ino)?;
    }
    let locks = &mut state.locks;
    if let Some(k) = kind
        && let Some(c) = locks.conflict(ino, owner, k, start, end)
    {
        return Err(MetaError::ns(
            errno::EAGAIN,
            format!(
                "bytes {}..={} of inode {ino} are locked by another owner",
                c.start, c.end
            ),
        ));
    }
    let new = locks.after_set(ino, owner, kind, start, end, pid);
    if new.len() > MAX_LOCKS_PER_INODE && new.len() > locks.on(ino).len() {
        return Err(MetaError::ns(
            errno::ENOLCK,
            format!("inode {ino} holds {MAX_LOCKS_PER_INODE} locks (MAX_LOCKS_PER_INODE)"),
        ));
    }
    let count = |v: &[Held]| {
        v.iter()
            .filter(|h| h.owner.session == owner.session)
            .count()
    };
    let before = count(locks.on(ino));
    let after = count(&new);
    let session_total = locks.held_by(owner.session) - before + after;
    if after > before && session_total > MAX_LOCKS_PER_SESSION {
        return Err(MetaError::ns(
            errno::ENOLCK,
            format!("this mount holds {MAX_LOCKS_PER_SESSION} locks (MAX_LOCKS_PER_SESSION)"),
        ));
    }
    if after > 0
        && !locks.sessions.contains_key(&owner.session)
        && locks.sessions.len() >= MAX_SESSIONS
    {
        return Err(MetaError::ns(
            errno::ENOLCK,
            format!("{MAX_SESSIONS} mounts hold locks (MAX_SESSIONS)"),
        ));
    }
    locks.replace(ino, new);
    if kind.is_some()
        && let Some(s) = locks.sessions.get_mut(&owner.session)
    {
        s.until_ms = s.until_ms.max(until_ms);
    }
    Ok(())
}

fn release(locks: &mut Locks, ino: u64, owner: Owner) {
    if !locks.on(ino).iter().any(|h| h.owner == owner) {
        return;
    }
    let new = locks
        .on(ino)
        .iter()
        .filter(|h| h.owner != owner)
        .copied()
        .collect();
    locks.replace(ino, new);
}

fn expire(locks: &mut Locks, now_ms: u64) {
    let ended: Vec<(u64, Vec<u64>)> = locks
        .sessions
        .iter()
        .filter(|(_, s)| s.until_ms < now_ms)
        .map(|(id, s)| (*id, s.inos.keys().copied().collect()))
        .collect();
    for (session, inos) in ended {
        for ino in inos {
            let new = locks
                .on(ino)
                .iter()
                .filter(|h| h.owner.session != session)
                .copied()
                .collect();
            locks.replace(ino, new);
        }
        locks.sessions.remove(&session);
        tracing::info!(
            session = %format_args!("{session:016x}"),
            "lock lease ended: the session's locks are released"
        );
    }
}

/// Applies a lock command. Deterministic; an `Err` leaves `state` unchanged.
pub fn apply(state: &mut State, cmd: &LockCommand) -> Result<(), MetaError> {
    match cmd {
        LockCommand::Set {
            ino,
            owner,
            kind,
            start,
            end,
            pid,
            until_ms,
        } => set(state, *ino, *owner, *kind, (*start, *end), *pid, *until_ms),
        LockCommand::Release { ino, owner } => {
            release(&mut state.locks, *ino, *owner);
            Ok(())
        }
        LockCommand::Renew { session, until_ms } => {
            if let Some(s) = state.locks.sessions.get_mut(session) {
                s.until_ms = s.until_ms.max(*until_ms);
            }
            Ok(())
        }
        LockCommand::Expire { now_ms } => {
            expire(&mut state.locks, *now_ms);
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "locks_tests.rs"]
mod tests;
