//! File locks that hold across mounts: `fcntl` byte-range locks and `flock`,
//! kept by the metadata service (its `Locks` service) for this client's
//! session.
//!
//! The session is the client's id; an owner inside it is what the kernel
//! names (the process's file table for `fcntl`, the open file description
//! for `flock`). The service drops a session's locks when it has not heard
//! from it for its lease (`lock_lease_ms` there), so [`Locks::run_renewal`]
//! renews every third of the lease while this client holds any.
//!
//! A lock that must wait (F_SETLKW) asks again with a backoff from
//! [`FIRST_POLL`] up to the configured most, and gives up with EINTR as
//! soon as `interrupted` says so: the caller is never blocked on a thread.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bigfs_proto::{errno, pb};

use crate::error::{ClientError, Result};
use crate::meta::Meta;

/// The first wait before a blocked lock asks again; it doubles up to the
/// configured most. Short: most locks are held for a few milliseconds.
pub const FIRST_POLL: Duration = Duration::from_millis(5);

/// The lease assumed before the service has told its own (its default).
const DEFAULT_LEASE_MS: u64 = 15_000;

/// How often the renewal task looks whether a renewal is due: often enough
/// for the shortest lease the service allows (1 s), and no call unless due.
const RENEWAL_TICK: Duration = Duration::from_millis(200);

/// One lock request: `typ` on bytes `start..=end` of `ino` by `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRange {
    pub ino: u64,
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    pub typ: pb::LockType,
    /// The process asking (shown to other owners' F_GETLK).
    pub pid: u32,
}

/// This client's lock session.
pub struct Locks {
    meta: Meta,
    session: u64,
    poll_max: Duration,
    lease_ms: AtomicU64,
    /// (inode, owner) pairs that were granted a lock here and not released
    /// since: what a close must release, and whether to renew at all.
    held: Mutex<HashSet<(u64, u64)>>,
    /// When the service last extended the lease (a grant or a renewal).
    extended: Mutex<Instant>,
}

impl Locks {
    /// The lock session of the client that talks through `meta`; a waiting
    /// lock asks again at least every `poll_max`.
    pub fn new(meta: Meta, poll_max: Duration) -> Self {
        let session = meta.client_id();
        Locks {
            meta,
            session,
            poll_max: poll_max.max(FIRST_POLL),
            lease_ms: AtomicU64::new(DEFAULT_LEASE_MS),
            held: Mutex::new(HashSet::new()),
            extended: Mutex::new(Instant::now()),
        }
    }

    /// The session id (this client's id).
    pub fn session(&self) -> u64 {
        self.session
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<(u64, u64)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request(&self, r: &LockRange) -> pb::LockRequest {
        pb::LockRequest {
            ino: r.ino,
            session: self.session,
            owner: r.owner,
            start: r.start,
            end: r.end,
            typ: r.typ as i32,
            pid: r.pid,
        }
    }

    /// Places or removes a lock without waiting: `None` once done, or the
    /// conflicting lock of another owner (`Some` with an empty conflict if
    /// the service did not say which).
    pub async fn try_set(&self, r: &LockRange) -> Result<Option<pb::LockConflict>> {
        let req = self.request(r);
        let reply = self
            .meta
            .call_locks("set lock", |mut c| async move { c.set_lock(req).await })
            .await?;
        if reply.lease_ms > 0 {
            self.lease_ms.store(reply.lease_ms, Ordering::Relaxed);
        }
        if !reply.granted {
            return Ok(Some(reply.conflict.unwrap_or_default()));
        }
        if r.typ != pb::LockType::Unlock {
            self.held().insert((r.ino, r.owner));
            self.mark_extended();
        }
        Ok(None)
    }

    /// Places a lock, waiting while another owner holds a conflicting one.
    /// `interrupted` is asked before every try: true gives up with EINTR.
    pub async fn set_waiting(&self, r: &LockRange, interrupted: impl Fn() -> bool) -> Result<()> {
        let mut pause = FIRST_POLL;
        loop {
            if interrupted() {
                return Err(ClientError::Io {
                    context: "waiting for a lock".into(),
                    message: "interrupted by a signal".into(),
                    errno: errno::EINTR,
                });
            }
            if self.try_set(r).await?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.poll_max);
        }
    }

    /// The lock of another owner that would stand in the way of `r`.
    pub async fn get(&self, r: &LockRange) -> Result<Option<pb::LockConflict>> {
        let req = self.request(r);
        let reply = self
            .meta
            .call_locks("get lock", |mut c| async move { c.get_lock(req).await })
            .await?;
        Ok(reply.conflict)
    }

    /// Drops every lock `owner` holds on `ino` (it closed the file), if it
    /// was granted any here: a file never locked costs no call.
    pub async fn release(&self, ino: u64, owner: u64) -> Result<()> {
        if !self.held().remove(&(ino, owner)) {
            return Ok(());
        }
        let req = pb::ReleaseLocksRequest {
            ino,
            session: self.session,
            owner,
        };
        self.meta
            .call_locks("release locks", |mut c| async move {
                c.release_locks(req).await
            })
            .await?;
        Ok(())
    }

    fn mark_extended(&self) {
        *self.extended.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Whether this session may hold locks (some were granted and not
    /// released).
    pub fn holds_any(&self) -> bool {
        !self.held().is_empty()
    }

    /// Renews the session's lease if it may hold locks.
    pub async fn renew(&self) -> Result<()> {
        if !self.holds_any() {
            return Ok(());
        }
        let session = self.session;
        let reply = self
            .meta
            .call_locks("renew locks", |mut c| async move {
                c.renew_locks(pb::RenewLocksRequest { session }).await
            })
            .await?;
        if reply.lease_ms > 0 {
            self.lease_ms.store(reply.lease_ms, Ordering::Relaxed);
        }
        self.mark_extended();
        if reply.held == 0 && self.holds_any() {
            // Either every lock was unlocked range by range (nothing lost),
            // or the lease ran out while the service could not be reached.
            tracing::info!(
                session = %format_args!("{:016x}", self.session),
                "the metadata service lists no locks for this mount"
            );
            self.held().clear();
        }
        Ok(())
    }

    /// How often the lease is renewed: a third of it.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.lease_ms.load(Ordering::Relaxed) / 3)
    }

    /// Renews the lease every third of it for as long as the task runs.
    pub async fn run_renewal(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(RENEWAL_TICK).await;
            let since = self
                .extended
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed();
            if since < self.renew_interval() {
                continue;
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(error = %e, "renewing the lock lease failed");
            }
        }
    }
}

/// The kernel's lock type (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`) as a request.
pub fn lock_type(typ: i32) -> Option<pb::LockType> {
    match typ {
        libc::F_RDLCK => Some(pb::LockType::Read),
        libc::F_WRLCK => Some(pb::LockType::Write),
        libc::F_UNLCK => Some(pb::LockType::Unlock),
        _ => None,
    }
}

/// A conflict's type as the kernel's `F_RDLCK` / `F_WRLCK`.
pub fn kernel_type(typ: i32) -> i32 {
    match pb::LockType::try_from(typ) {
        Ok(pb::LockType::Read) => libc::F_RDLCK,
        _ => libc::F_WRLCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lock_types_map_both_ways() {
        assert_eq!(lock_type(libc::F_RDLCK), Some(pb::LockType::Read));
        assert_eq!(lock_type(libc::F_WRLCK), Some(pb::LockType::Write));
        assert_eq!(lock_type(libc::F_UNLCK), Some(pb::LockType::Unlock));
        assert_eq!(lock_type(99), None);
        assert_eq!(kernel_type(pb::LockType::Read as i32), libc::F_RDLCK);
        assert_eq!(kernel_type(pb::LockType::Write as i32), libc::F_WRLCK);
    }
}
