//! The FUSE side of file locks: `getlk`/`setlk` (fcntl, and flock, which the
//! kernel sends as a whole-file lock of the open file description) and the
//! releases at close, over the client library's [`Locks`].
//!
//! A lock also orders data between mounts, as on NFS: before an unlock this
//! mount's buffered writes to the file are committed, and after a lock is
//! granted the kernel's cached pages and attributes of the file are dropped
//! if another mount changed it, so the lock holder reads what the previous
//! holder wrote.
//!
//! Each request runs on the tokio runtime and answers from there: a lock
//! that waits holds no FUSE thread. It gives up with EINTR when its caller
//! has a signal pending ([`crate::interrupt`]).

use std::sync::{Arc, OnceLock};

use bigfs_proto::{errno, pb};
use fuser::{Errno, INodeNo, Notifier, ReplyEmpty, ReplyLock};

use crate::client::Client;
use crate::error::ClientError;
use crate::file::FileHandle;
use crate::interrupt;
use crate::known_names::KnownNames;
use crate::locks::{LockRange, Locks, kernel_type, lock_type};
use crate::open_files::OpenFiles;

/// Where the session's notifier goes once the session exists (the file
/// system is built before it).
pub type NotifierSlot = Arc<OnceLock<Notifier>>;

/// Lock requests of one mount.
pub struct FuseLocks {
    locks: Arc<Locks>,
    client: Arc<Client>,
    open: Arc<OpenFiles>,
    notifier: NotifierSlot,
    rt: tokio::runtime::Handle,
    /// Names looked up here, for dropping entries next to a locked file.
    names: Arc<KnownNames>,
}

fn errno_of(e: &ClientError) -> Errno {
    Errno::from_i32(e.errno())
}

/// A lock request from the kernel's arguments, checked.
fn range(
    ino: u64,
    owner: u64,
    (start, end): (u64, u64),
    typ: i32,
    pid: u32,
) -> Result<LockRange, Errno> {
    let typ = lock_type(typ).ok_or(Errno::EINVAL)?;
    if start > end {
        return Err(Errno::EINVAL);
    }
    Ok(LockRange {
        ino,
        owner,
        start,
        end,
        typ,
        pid,
    })
}

impl FuseLocks {
    pub fn new(
        locks: Arc<Locks>,
        client: Arc<Client>,
        open: Arc<OpenFiles>,
        notifier: NotifierSlot,
        rt: tokio::runtime::Handle,
    ) -> Self {
        FuseLocks {
            locks,
            client,
            open,
            notifier,
            rt,
            names: Arc::default(),
        }
    }

    /// Notes a name looked up through the mount (see [`KnownNames`]).
    pub fn looked_up(&self, parent: u64, name: &str, ino: u64) {
        self.names.seen(parent, name, ino);
    }

    /// The client library's lock session (for the renewal task).
    pub fn locks(&self) -> Arc<Locks> {
        Arc::clone(&self.locks)
    }

    /// F_GETLK: the conflicting lock, or F_UNLCK.
    pub fn getlk(
        &self,
        ino: u64,
        owner: u64,
        span: (u64, u64),
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let r = match range(ino, owner, span, typ, pid) {
            Ok(r) if r.typ != pb::LockType::Unlock => r,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(e),
        };
        let locks = Arc::clone(&self.locks);
        self.rt.spawn(async move {
            match locks.get(&r).await {
                Ok(Some(c)) => reply.locked(c.start, c.end, kernel_type(c.typ), c.pid),
                Ok(None) => reply.locked(r.start, r.end, libc::F_UNLCK, 0),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    /// F_SETLK / F_SETLKW (`sleep`), and flock. `tid` is the calling
    /// thread, watched for signals while the lock waits.
    #[allow(clippy::too_many_arguments)]
    pub fn setlk(
        &self,
        tid: u32,
        ino: u64,
        fh: u64,
        owner: u64,
        span: (u64, u64),
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let r = match range(ino, owner, span, typ, pid) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let locks = Arc::clone(&self.locks);
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let notifier = Arc::clone(&self.notifier);
        let names = Arc::clone(&self.names);
        let handle = self.open.get(fh);
        self.rt.spawn(async move {
            if r.typ == pb::LockType::Unlock {
                // What was written under the lock is out before others get it.
                if let Some(h) = &handle
                    && let Err(e) = commit(h, &open).await
                {
                    return reply.error(errno_of(&e));
                }
                return match locks.try_set(&r).await {
                    Ok(_) => reply.ok(),
                    Err(e) => reply.error(errno_of(&e)),
                };
            }
            let placed = if sleep {
                locks.set_waiting(&r, || interrupt::interrupted(tid)).await
            } else {
                match locks.try_set(&r).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => return reply.error(Errno::EAGAIN),
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = placed {
                return reply.error(errno_of(&e));
            }
            if !interrupt::alive(tid) {
                // The caller exited while waiting: its close already
                // released its locks, so this one would never be.
                let _ = locks.release(r.ino, r.owner).await;
                return reply.error(Errno::from_i32(errno::EINTR));
            }
            let changed = revalidate(&client, &open, r.ino).await;
            // The kernel may wait for requests this runtime serves (page
            // locks, the directory lock): not on a runtime thread.
            let ino = r.ino;
            let _ = tokio::task::spawn_blocking(move || {
                if changed && let Some(n) = notifier.get() {
                    drop_cached_pages(n, ino);
                }
                forget_siblings(&names, &notifier, ino);
            })
            .await;
            reply.ok();
        });
    }

    /// A close by `owner` (flush: its fcntl locks; release of an open file
    /// description: its flock lock) drops what it held on `ino`.
    pub async fn closed(locks: &Locks, ino: u64, owner: u64) {
        if let Err(e) = locks.release(ino, owner).await {
            // The lease ends them if this did not.
            tracing::warn!(ino, error = %e, "releasing locks at close failed");
        }
    }
}

/// After a lock is granted: drops the kernel's cached entries of the names
/// looked up next to the locked file, so that names another mount created
/// or removed under the lock are seen (SQLite's journal).
fn forget_siblings(names: &KnownNames, notifier: &NotifierSlot, ino: u64) {
    let (Some((parent, siblings)), Some(n)) = (names.siblings(ino), notifier.get()) else {
        return;
    };
    for name in siblings {
        // ENOENT: the kernel had no entry for it; nothing to drop.
        let _ = n.inval_entry(INodeNo(parent), std::ffi::OsStr::new(&name));
    }
}

/// Commits the handle's buffered writes and records the version written.
async fn commit(h: &FileHandle, open: &OpenFiles) -> Result<(), ClientError> {
    h.flush().await?;
    if let Some(a) = h.last_attr().await {
        open.set_version(a.ino, a.version);
    }
    Ok(())
}

/// After a lock is granted: if another mount changed the file since this
/// mount last saw it, forget the cached layout and size. True if it did
/// (the kernel's pages and attributes are then stale too).
async fn revalidate(client: &Client, open: &OpenFiles, ino: u64) -> bool {
    let attr = match client.getattr(ino).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(ino, error = %e, "fresh attributes after a lock failed");
            return true;
        }
    };
    if open.version(ino) == Some(attr.version) {
        return false;
    }
    if let Some(h) = open.by_ino(ino) {
        h.reopen(&attr, None).await;
    }
    open.set_version(ino, attr.version);
    true
}

/// Drops the kernel's cached pages and attributes of `ino`.
fn drop_cached_pages(n: &Notifier, ino: u64) {
    if let Err(e) = n.inval_inode(INodeNo(ino), 0, 0) {
        tracing::debug!(ino, error = %e, "dropping the kernel's cache of a locked file failed");
    }
}
