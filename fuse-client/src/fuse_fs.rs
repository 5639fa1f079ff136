//! The FUSE file system: a thin shell over the client library.
//!
//! Each kernel request copies what it needs, runs on the tokio runtime and
//! answers from there, so requests are served concurrently. This file owns
//! argument checks, errno mapping and replies; the I/O logic lives in the
//! client library (`file`, `chunk_io`) and is testable without a mount.

use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bigfs_proto::{errno, now_timestamp, pb};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle as Fh, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::atime::{AtimeMode, Atimes};
use crate::client::Client;
use crate::error::ClientError;
use crate::file::Pending;
use crate::fresh_inodes::FreshInodes;
use crate::fuse_locks::{FuseLocks, NotifierSlot};
use crate::mount_config::MountConfig;
use crate::open_dirs::OpenDirs;
use crate::open_files::OpenFiles;
use crate::permissions::{
    self, AttrChange, Squash, Who, permitted, require, require_removable, require_xattr_change,
};
use crate::trash_view::{TRASH_INO, TrashView};

/// Block size reported to applications: large, so `cp` and friends use big
/// buffers and the kernel sends big writes.
const IO_BLOCK: u32 = 1 << 20;

pub struct BigFs {
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    open: Arc<OpenFiles>,
    dirs: Arc<OpenDirs>,
    /// Access times noted by reads, sent in batches (see `atime`).
    atimes: Arc<Atimes>,
    fresh: Arc<FreshInodes>,
    cfg: MountConfig,
    /// The export's squash: callers it maps are checked here, as the
    /// anonymous user (see `permissions`).
    squash: Option<Squash>,
    /// Cluster-wide file locks (None with `-o nolocks`: the kernel's own).
    locks: Option<Arc<FuseLocks>>,
    notifier: NotifierSlot,
    /// The read-only `.trash` view (admin mounts; see `trash_view`).
    trash: Option<Arc<TrashView>>,
    /// The kernel enforces POSIX ACLs and leaves the umask to us (set at
    /// `init` when it agrees).
    acl: bool,
}

/// The entries after kernel offset `offset` (1 = ".", 2 = "..", then
/// metadata cookie + 2); listings are in cookie order.
fn entries_after(listing: &[pb::DirEntry], offset: u64) -> &[pb::DirEntry] {
    let after = offset.saturating_sub(2);
    let start = listing.partition_point(|e| e.cookie <= after);
    &listing[start..]
}

fn err(e: &ClientError) -> Errno {
    Errno::from_i32(e.errno())
}

fn to_system_time(t: &Option<pb::Timestamp>) -> SystemTime {
    match t {
        Some(t) if t.secs >= 0 => {
            UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos.min(999_999_999))
        }
        Some(t) => UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()),
        None => UNIX_EPOCH,
    }
}

fn to_timestamp(t: TimeOrNow) -> pb::Timestamp {
    match t {
        TimeOrNow::Now => now_timestamp(),
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => pb::Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                // Before 1970: round towards negative infinity.
                let (secs, nanos) = if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                };
                pb::Timestamp { secs, nanos }
            }
        },
    }
}

fn file_type(kind: i32) -> FileType {
    match pb::FileKind::try_from(kind) {
        Ok(pb::FileKind::Directory) => FileType::Directory,
        Ok(pb::FileKind::Symlink) => FileType::Symlink,
        Ok(pb::FileKind::Fifo) => FileType::NamedPipe,
        Ok(pb::FileKind::Socket) => FileType::Socket,
        Ok(pb::FileKind::CharDevice) => FileType::CharDevice,
        Ok(pb::FileKind::BlockDevice) => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// Kernel attributes of `a` (with `pending` overriding the committed size
/// and adding to the stored bytes when the mount holds unflushed writes).
///
/// `st_blocks` of a regular file counts what is stored (committed chunk
/// bytes) and what its buffered writes will store, not the size: a sparse
/// file shows only what was written, as `du` expects.
pub fn file_attr(a: &pb::Attr, pending: Option<Pending>) -> FileAttr {
    let size = pending.map_or(a.size, |p| p.size);
    let kind = file_type(a.kind);
    let size = if kind == FileType::Symlink {
        a.symlink_target.len() as u64
    } else {
        size
    };
    let stored = if kind == FileType::RegularFile {
        a.allocated + pending.map_or(0, |p| p.bytes)
    } else {
        size
    };
    FileAttr {
        ino: INodeNo(a.ino),
        size,
        blocks: stored.div_ceil(512),
        atime: to_system_time(&a.atime),
        mtime: to_system_time(&a.mtime),
        ctime: to_system_time(&a.ctime),
        crtime: to_system_time(&a.ctime),
        kind,
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: IO_BLOCK,
        flags: 0,
    }
}

/// A create request for `name` in `parent`, owned by the caller of `req`.
fn new_inode(
    req: &Request,
    parent: INodeNo,
    name: String,
    kind: pb::FileKind,
    mode: u32,
) -> pb::CreateRequest {
    pb::CreateRequest {
        parent: parent.0,
        name,
        kind: kind as i32,
        mode: mode & 0o7777,
        uid: req.uid(),
        gid: req.gid(),
        symlink_target: String::new(),
        exclusive: true,
        rdev: 0,
        umask: None,
        id: None,
    }
}

/// The kind of node `mknod` makes for the file type bits of `mode`; None
/// for a type no file system can hold (the kernel refuses those first).
fn mknod_kind(mode: u32) -> Option<pb::FileKind> {
    match mode & libc::S_IFMT {
        0 | libc::S_IFREG => Some(pb::FileKind::File),
        libc::S_IFIFO => Some(pb::FileKind::Fifo),
        libc::S_IFSOCK => Some(pb::FileKind::Socket),
        libc::S_IFCHR => Some(pb::FileKind::CharDevice),
        libc::S_IFBLK => Some(pb::FileKind::BlockDevice),
        _ => None,
    }
}

/// Write and search permission: what a directory needs for a new entry.
const WX: AccessFlags = AccessFlags::W_OK.union(AccessFlags::X_OK);

/// The permission an open with access mode `accmode` needs.
fn open_access(accmode: i32, truncate: bool) -> AccessFlags {
    let mut m = match accmode {
        libc::O_WRONLY => AccessFlags::W_OK,
        libc::O_RDWR => AccessFlags::R_OK | AccessFlags::W_OK,
        _ => AccessFlags::R_OK,
    };
    if truncate {
        m |= AccessFlags::W_OK;
    }
    m
}

/// Names travel as UTF-8; anything else is refused with EINVAL.
fn name_of(name: &OsStr) -> Result<String, Errno> {
    std::str::from_utf8(name.as_bytes())
        .map(str::to_string)
        .map_err(|_| Errno::EINVAL)
}

impl BigFs {
    pub fn new(client: Arc<Client>, rt: tokio::runtime::Handle, cfg: MountConfig) -> Self {
        let atimes = Arc::new(Atimes::new(if cfg.read_only {
            AtimeMode::NoAtime
        } else {
            cfg.atime
        }));
        rt.spawn(Arc::clone(&atimes).run(Arc::clone(&client)));
        let open = Arc::new(OpenFiles::default());
        let notifier = NotifierSlot::default();
        let locks = cfg.locks.then(|| {
            let session = crate::locks::Locks::new(
                client.io().meta.clone(),
                Duration::from_millis(cfg.lock_poll_ms),
            );
            Arc::new(FuseLocks::new(
                Arc::new(session),
                Arc::clone(&client),
                Arc::clone(&open),
                Arc::clone(&notifier),
                rt.clone(),
            ))
        });
        let trash = {
            // The channel's lazy connector needs the runtime.
            let _in_runtime = rt.enter();
            TrashView::new(&client.config().metadata).map(Arc::new)
        };
        BigFs {
            rt,
            open,
            atimes,
            dirs: Arc::new(OpenDirs::default()),
            fresh: Arc::new(FreshInodes::new(Duration::from_millis(cfg.attr_ttl_ms))),
            trash,
            client,
            cfg,
            squash: None,
            locks,
            notifier,
            acl: false,
        }
    }

    /// The lock session, if locks are cluster-wide (for its renewal task).
    pub fn lock_session(&self) -> Option<Arc<crate::locks::Locks>> {
        self.locks.as_ref().map(|l| l.locks())
    }

    /// Where the session's notifier goes once the FUSE session exists:
    /// locks use it to drop cached pages of files other mounts changed.
    pub fn notifier_slot(&self) -> NotifierSlot {
        Arc::clone(&self.notifier)
    }

    /// Makes the callers `squash` maps act as its anonymous user.
    pub fn with_squash(mut self, squash: Option<Squash>) -> Self {
        self.squash = squash;
        self
    }

    /// Applies `umask` to a create request: here when the kernel applied it
    /// (no ACLs), else on the metadata service, which skips it when the
    /// parent has a default ACL.
    fn masked(&self, mut r: pb::CreateRequest, umask: u32) -> pb::CreateRequest {
        if self.acl {
            r.umask = Some(umask & 0o777);
        } else {
            r.mode &= !umask;
        }
        r
    }

    /// Who the caller of `req` acts as, if the export squashes it.
    fn squashed(&self, req: &Request) -> Option<Who> {
        self.squash.and_then(|s| s.who(req.uid()))
    }

    /// The table of open files (shared with the signal handler for a final
    /// flush).
    pub fn open_files(&self) -> Arc<OpenFiles> {
        Arc::clone(&self.open)
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.rt.spawn(f);
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.cfg.attr_ttl_ms)
    }

    fn entry_ttl(&self) -> Duration {
        Duration::from_millis(self.cfg.entry_ttl_ms)
    }

    /// The attributes of `ino` as this mount sees them (including its own
    /// unflushed writes).
    async fn attr(
        client: &Client,
        open: &OpenFiles,
        ino: u64,
    ) -> Result<(pb::Attr, FileAttr), ClientError> {
        let a = client.getattr(ino).await?;
        Ok(Self::with_pending(open, ino, a).await)
    }

    /// `a` as the kernel sees it: with the size of writes this mount
    /// still buffers for the file.
    async fn with_pending(open: &OpenFiles, ino: u64, a: pb::Attr) -> (pb::Attr, FileAttr) {
        let size = match open.by_ino(ino) {
            Some(h) => h.pending().await,
            None => None,
        };
        let fa = file_attr(&a, size);
        (a, fa)
    }

    fn reply_entry(
        &self,
        reply: ReplyEntry,
        f: impl Future<Output = Result<pb::Attr, ClientError>> + Send + 'static,
    ) {
        let ttl = self.entry_ttl();
        let dirs = Arc::clone(&self.dirs);
        self.spawn(async move {
            match f.await {
                Ok(a) => {
                    dirs.seen(&a);
                    reply.entry(&ttl, &file_attr(&a, None), Generation(0))
                }
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn reply_empty(
        &self,
        reply: ReplyEmpty,
        f: impl Future<Output = Result<(), ClientError>> + Send + 'static,
    ) {
        self.spawn(async move {
            match f.await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn read_only(&self) -> bool {
        self.cfg.read_only
    }
}

macro_rules! name_or_reply {
    ($name:expr, $reply:expr) => {
        match name_of($name) {
            Ok(n) => n,
            Err(e) => {
                $reply.error(e);
                return;
            }
        }
    };
}

macro_rules! writable_or_reply {
    ($self:expr, $reply:expr) => {
        if $self.read_only() {
            $reply.error(Errno::EROFS);
            return;
        }
    };
}

impl Filesystem for BigFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        // The kernel sends fcntl and flock locks here instead of keeping
        // them itself (flock arrives as a whole-file lock of the file).
        let locks = if self.locks.is_some() {
            InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS
        } else {
            InitFlags::empty()
        };
        // POSIX ACLs: the kernel checks them (this forces
        // default_permissions on) and stops applying the umask, which the
        // metadata service applies unless the parent has a default ACL.
        let acl = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        self.acl =
            self.cfg.acl && self.cfg.default_permissions && config.capabilities().contains(acl);
        let acl = if self.acl { acl } else { InitFlags::empty() };
        let _ = config.add_capabilities((wanted | locks | acl) & config.capabilities());
        // 1 MiB writes: a quarter chunk per request.
        let _ = config
            .set_max_write(1 << 20)
            .or_else(|max| config.set_max_write(max));
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|max| config.set_max_readahead(max));
        Ok(())
    }

    fn destroy(&mut self) {
        // Unmounting: whatever is still buffered goes to the cluster first.
        let handles = self.open.all();
        let (client, atimes) = (Arc::clone(&self.client), Arc::clone(&self.atimes));
        self.rt.block_on(async move {
            for h in handles {
                if let Err(e) = h.flush().await {
                    tracing::error!(ino = h.ino(), error = %e, "flush at unmount failed");
                }
            }
            atimes.send(&client).await;
        });
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name_or_reply!(name, reply);
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let dirs = Arc::clone(&self.dirs);
        let ttl = self.entry_ttl();
        let who = self.squashed(req);
        let locks = self.locks.clone();
        let trash = self.trash.clone();
        self.spawn(async move {
            if let Some(view) = trash
                && let Some(found) = view.lookup(&client, parent.0, &name).await
            {
                return match found {
                    Ok(a) => reply.entry(&ttl, &file_attr(&a, None), Generation(0)),
                    Err(e) => reply.error(err(&e)),
                };
            }
            if let Err(e) = require(&client, who, parent.0, AccessFlags::X_OK).await {
                return reply.error(err(&e));
            }
            // A name this mount knows is not there (a directory it made):
            // the lookup before a create costs no round trip.
            if client.surely_absent(parent.0, &name) {
                return reply.error(Errno::ENOENT);
            }
            match client.lookup(parent.0, &name).await {
                Ok(a) => {
                    dirs.seen(&a);
                    if let Some(l) = &locks {
                        l.looked_up(parent.0, &name, a.ino);
                    }
                    let size = match open.by_ino(a.ino) {
                        Some(h) => h.pending().await,
                        None => None,
                    };
                    reply.entry(&ttl, &file_attr(&a, size), Generation(0))
                }
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<Fh>, reply: ReplyAttr) {
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let dirs = Arc::clone(&self.dirs);
        let atimes = Arc::clone(&self.atimes);
        let ttl = self.ttl();
        self.spawn(async move {
            if ino.0 == TRASH_INO {
                return match client.getattr(bigfs_proto::ROOT_INO).await {
                    Ok(r) => reply.attr(&ttl, &file_attr(&crate::trash_view::dir_attr(&r), None)),
                    Err(e) => reply.error(err(&e)),
                };
            }
            match Self::attr(&client, &open, ino.0).await {
                Ok((a, mut fa)) => {
                    dirs.seen(&a);
                    if let Some(t) = atimes.noted(a.ino) {
                        // Read here, not sent yet: stat shows it already.
                        fa.atime = fa.atime.max(to_system_time(&Some(t)));
                    }
                    reply.attr(&ttl, &fa)
                }
                Err(e) => match dirs.removed_while_open(ino.0) {
                    Some(a) if e.errno() == libc::ENOENT => {
                        reply.attr(&Duration::ZERO, &file_attr(&a, None))
                    }
                    _ => reply.error(err(&e)),
                },
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<Fh>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        writable_or_reply!(self, reply);
        if ino.0 == TRASH_INO || self.trash.as_ref().is_some_and(|t| t.is_trashed(ino.0)) {
            reply.error(Errno::EROFS);
            return;
        }
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let ttl = self.ttl();
        let who = self.squashed(req);
        self.spawn(async move {
            let outcome = async {
                let change = AttrChange {
                    mode,
                    uid,
                    gid,
                    size,
                    atime,
                    mtime,
                };
                permissions::require_setattr(&client, who, ino.0, &change).await?;
                if let Some(size) = size {
                    match open.by_ino(ino.0) {
                        Some(h) => {
                            h.truncate(size).await?;
                        }
                        None => {
                            client
                                .setattr(pb::SetAttrRequest {
                                    ino: ino.0,
                                    size: Some(size),
                                    ..Default::default()
                                })
                                .await?;
                        }
                    }
                }
                // Writes buffered here must land before a time is set,
                // or their commit at close would stamp the file with its
                // own mtime over the one asked for (tar's and cp -p's
                // futimens before close). NFS clients flush for it too.
                // Only for a time given (the kernel's own "now", as a
                // truncate sends, needs no flush: the commit's time is as
                // good).
                let given = |t: Option<TimeOrNow>| matches!(t, Some(TimeOrNow::SpecificTime(_)));
                if (given(atime) || given(mtime))
                    && let Some(h) = open.by_ino(ino.0)
                {
                    h.flush().await?;
                }
                let mut changed = None;
                if mode.is_some()
                    || uid.is_some()
                    || gid.is_some()
                    || atime.is_some()
                    || mtime.is_some()
                {
                    changed = Some(
                        client
                            .setattr(pb::SetAttrRequest {
                                ino: ino.0,
                                mode: mode.map(|m| m & 0o7777),
                                uid,
                                gid,
                                size: None,
                                atime: atime.map(to_timestamp),
                                mtime: mtime.map(to_timestamp),
                                id: None,
                            })
                            .await?,
                    );
                }
                match changed {
                    // The change answers the attributes it made (tar's
                    // futimens, fchown and fchmod of each file it writes
                    // need no GetAttr after them); a size change asks.
                    Some(a) if size.is_none() => Ok(Self::with_pending(&open, ino.0, a).await),
                    _ => Self::attr(&client, &open, ino.0).await,
                }
            }
            .await;
            match outcome {
                Ok((_, a)) => reply.attr(&ttl, &a),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let client = Arc::clone(&self.client);
        self.spawn(async move {
            match client.getattr(ino.0).await {
                Ok(a) if a.kind == pb::FileKind::Symlink as i32 => {
                    reply.data(a.symlink_target.as_bytes())
                }
                Ok(_) => reply.error(Errno::EINVAL),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let Some(kind) = mknod_kind(mode) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let client = Arc::clone(&self.client);
        let r = pb::CreateRequest {
            rdev,
            ..self.masked(new_inode(req, parent, name, kind, mode), umask)
        };
        let who = self.squashed(req);
        self.reply_entry(reply, async move {
            require(&client, who, parent.0, WX).await?;
            client.create(r).await
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let client = Arc::clone(&self.client);
        let r = self.masked(
            new_inode(req, parent, name, pb::FileKind::Directory, mode),
            umask,
        );
        let who = self.squashed(req);
        self.reply_entry(reply, async move {
            require(&client, who, parent.0, WX).await?;
            client.create(r).await
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let lease = self.cfg.open_lease_ms;
        let who = self.squashed(req);
        self.reply_empty(reply, async move {
            require_removable(&client, who, parent.0, &name).await?;
            // A file this mount still has open keeps its data until closed.
            // Only a file open here needs a lease; skip the lookup when
            // nothing is open.
            let ino = if open.any_open() {
                client.lookup(parent.0, &name).await?.ino
            } else {
                0
            };
            let keep = ino != 0 && open.is_open(ino);
            client
                .unlink_keeping(parent.0, &name, if keep { lease } else { 0 })
                .await?;
            if keep {
                open.mark_unlinked(ino);
            }
            Ok(())
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let client = Arc::clone(&self.client);
        let who = self.squashed(req);
        self.reply_empty(reply, async move {
            require_removable(&client, who, parent.0, &name).await?;
            client.rmdir(parent.0, &name).await
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(link_name, reply);
        let target = name_or_reply!(target.as_os_str(), reply);
        let client = Arc::clone(&self.client);
        let r = pb::CreateRequest {
            symlink_target: target,
            ..new_inode(req, parent, name, pb::FileKind::Symlink, 0o777)
        };
        let who = self.squashed(req);
        self.reply_entry(reply, async move {
            require(&client, who, parent.0, WX).await?;
            client.create(r).await
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let new_name = name_or_reply!(newname, reply);
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let lease = self.cfg.open_lease_ms;
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let who = self.squashed(req);
        self.reply_empty(reply, async move {
            require_removable(&client, who, parent.0, &name).await?;
            require(&client, who, newparent.0, WX).await?;
            if who.is_some() && client.lookup(newparent.0, &new_name).await.is_ok() {
                require_removable(&client, who, newparent.0, &new_name).await?;
            }
            let replaced = if open.any_open() {
                client
                    .lookup(newparent.0, &new_name)
                    .await
                    .ok()
                    .map(|a| a.ino)
            } else {
                None
            };
            let keep = replaced.is_some_and(|ino| open.is_open(ino));
            client
                .rename(pb::RenameRequest {
                    parent: parent.0,
                    name,
                    new_parent: newparent.0,
                    new_name,
                    noreplace,
                    exchange,
                    open_lease_ms: if keep { lease } else { 0 },
                    id: None,
                })
                .await?;
            if let (true, Some(ino)) = (keep, replaced) {
                open.mark_unlinked(ino);
            }
            Ok(())
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(newname, reply);
        let client = Arc::clone(&self.client);
        let who = self.squashed(req);
        let open = Arc::clone(&self.open);
        self.reply_entry(reply, async move {
            require(&client, who, newparent.0, WX).await?;
            let a = client.link(ino.0, newparent.0, &name).await?;
            // A tmpfile now named: its last close here no longer frees it.
            open.take_unlinked(ino.0);
            Ok(a)
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let accmode = flags.0 & libc::O_ACCMODE;
        let frozen = self.read_only() || self.trash.as_ref().is_some_and(|t| t.is_trashed(ino.0));
        if frozen && (accmode != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0) {
            reply.error(Errno::EROFS);
            return;
        }
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let who = self.squashed(req);
        let wanted = open_access(accmode, truncate);
        let atimes = Arc::clone(&self.atimes);
        self.spawn(async move {
            if let Err(e) = require(&client, who, ino.0, wanted).await {
                return reply.error(err(&e));
            }
            // Fresh attributes at every open: close-to-open consistency.
            // An open for reading takes the layout in the same call.
            let fetched = if accmode == libc::O_WRONLY || truncate {
                client.getattr(ino.0).await.map(|a| (a, None))
            } else {
                client
                    .layout(ino.0)
                    .await
                    .map(|l| (l.attr.clone(), Some(l)))
            };
            let (attr, layout) = match fetched {
                Ok(f) => f,
                Err(e) => return reply.error(err(&e)),
            };
            if attr.kind == pb::FileKind::Directory as i32 {
                return reply.error(Errno::EISDIR);
            }
            let mut made = None;
            let (fh, handle, keep_cache) = open.open(ino.0, attr.version, || {
                let h = client.open_attr(&attr);
                match h {
                    Ok(h) => h,
                    Err(e) => {
                        made = Some(e);
                        // Unreachable for a regular file; a handle that
                        // fails every call keeps the table consistent.
                        crate::file::FileHandle::new(
                            Arc::clone(client.io()),
                            &attr,
                            client.config(),
                        )
                    }
                }
            });
            if let Some(e) = made {
                open.release(fh);
                return reply.error(err(&e));
            }
            handle.reopen(&attr, layout).await;
            if truncate && let Err(e) = handle.truncate(0).await {
                open.release(fh);
                return reply.error(err(&e));
            }
            let flags = if keep_cache && !truncate {
                FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            };
            if accmode != libc::O_WRONLY {
                atimes.opened(fh, &attr, accmode == libc::O_RDONLY);
            }
            reply.opened(Fh(fh), flags);
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = self.open.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.atimes.read(fh.0, h.ino());
        self.spawn(async move {
            match h.read(offset, size as usize).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        writable_or_reply!(self, reply);
        let Some(h) = self.open.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let data = data.to_vec();
        self.spawn(async move {
            match h.write(offset, &data).await {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let Some(h) = self.open.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let open = Arc::clone(&self.open);
        let locks = self.lock_session();
        self.reply_empty(reply, async move {
            let flushed = h.flush().await;
            if let Some(a) = h.last_attr().await {
                open.set_version(a.ino, a.version);
            }
            // POSIX: closing any descriptor of a file drops the process's
            // fcntl locks on it.
            if let Some(l) = locks {
                FuseLocks::closed(&l, ino.0, lock_owner.0).await;
            }
            flushed
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.atimes.released(fh.0);
        // The last close of an open file description drops its flock lock.
        let flock_owner = lock_owner.zip(self.lock_session());
        let Some(released) = self.open.release(fh.0) else {
            if let Some((owner, l)) = flock_owner {
                self.spawn(async move { FuseLocks::closed(&l, ino.0, owner.0).await });
            }
            reply.ok();
            return;
        };
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        self.reply_empty(reply, async move {
            if let Some((owner, l)) = flock_owner {
                FuseLocks::closed(&l, ino.0, owner.0).await;
            }
            let h = released.handle;
            let flushed = h.flush().await;
            if let Some(a) = h.last_attr().await {
                open.set_version(a.ino, a.version);
            }
            if released.last && open.take_unlinked(h.ino()) {
                // The last close of a file unlinked while open frees it.
                let _ = client.release_inode(h.ino()).await;
            }
            flushed
        });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: Fh, _datasync: bool, reply: ReplyEmpty) {
        let Some(h) = self.open.get(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let client = Arc::clone(&self.client);
        self.reply_empty(reply, async move {
            // Data on the quorum (fsync'd there), then the metadata log.
            h.flush().await?;
            client.sync().await
        });
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: Fh,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        match &self.locks {
            Some(l) => l.getlk(ino.0, lock_owner.0, (start, end), typ, pid, reply),
            None => reply.error(Errno::ENOSYS),
        }
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        match &self.locks {
            Some(l) => l.setlk(
                req.pid(),
                ino.0,
                fh.0,
                lock_owner.0,
                (start, end),
                typ,
                pid,
                sleep,
                reply,
            ),
            None => reply.error(Errno::ENOSYS),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(who) = self.squashed(req).filter(|_| ino.0 != TRASH_INO) else {
            reply.opened(Fh(self.dirs.open(ino.0)), FopenFlags::empty());
            return;
        };
        let client = Arc::clone(&self.client);
        let fh = self.dirs.open(ino.0);
        self.spawn(async move {
            match require(&client, Some(who), ino.0, AccessFlags::R_OK).await {
                Ok(()) => reply.opened(Fh(fh), FopenFlags::empty()),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.release(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let client = Arc::clone(&self.client);
        let dirs = Arc::clone(&self.dirs);
        let trash = self.trash.clone();
        self.spawn(async move {
            // Offsets: 1 = ".", 2 = "..", then metadata cookie + 2.
            if offset < 1 && reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            if offset < 2 && reply.add(ino, 2, FileType::Directory, "..") {
                return reply.ok();
            }
            let listing = match dirs
                .listing(&client, (ino.0, trash.as_deref()), fh.0, offset)
                .await
            {
                Ok(l) => l,
                Err(e) => return reply.error(err(&e)),
            };
            for e in entries_after(&listing, offset) {
                if reply.add(INodeNo(e.ino), e.cookie + 2, file_type(e.kind), &e.name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let dirs = Arc::clone(&self.dirs);
        let trash = self.trash.clone();
        let ttl = self.entry_ttl();
        self.spawn(async move {
            if offset < 2 {
                let me = match if ino.0 == TRASH_INO {
                    client
                        .getattr(bigfs_proto::ROOT_INO)
                        .await
                        .map(|r| crate::trash_view::dir_attr(&r))
                } else {
                    client.getattr(ino.0).await
                } {
                    Ok(a) => file_attr(&a, None),
                    Err(e) => return reply.error(err(&e)),
                };
                if offset < 1 && reply.add(ino, 1, ".", &ttl, &me, Generation(0)) {
                    return reply.ok();
                }
                if reply.add(ino, 2, "..", &ttl, &me, Generation(0)) {
                    return reply.ok();
                }
            }
            let listing = match dirs
                .listing(&client, (ino.0, trash.as_deref()), fh.0, offset)
                .await
            {
                Ok(l) => l,
                Err(e) => return reply.error(err(&e)),
            };
            for e in entries_after(&listing, offset) {
                let Some(a) = &e.attr else { continue };
                dirs.seen(a);
                let size = match open.by_ino(e.ino) {
                    Some(h) => h.pending().await,
                    None => None,
                };
                if reply.add(
                    INodeNo(e.ino),
                    e.cookie + 2,
                    &e.name,
                    &ttl,
                    &file_attr(a, size),
                    Generation(0),
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }
    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: Fh, _datasync: bool, reply: ReplyEmpty) {
        let client = Arc::clone(&self.client);
        self.reply_empty(reply, async move { client.sync().await });
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let client = Arc::clone(&self.client);
        self.spawn(async move {
            // The quota of the directory asked about (the mount's root, or
            // a directory in it) or of the nearest one above, if any.
            let quota = client
                .get_quota(ino.0, true)
                .await
                .ok()
                .and_then(|q| q.quota.filter(|_| q.found));
            match client.status().await {
                Ok(s) => {
                    let f = crate::statfs::figures(&s, quota.as_ref(), IO_BLOCK);
                    reply.statfs(
                        f.blocks, f.bfree, f.bfree, f.files, f.ffree, f.bsize, 255, f.frsize,
                    );
                }
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let client = Arc::clone(&self.client);
        let value = value.to_vec();
        self.fresh.forget(ino.0);
        let who = self.squashed(req);
        self.reply_empty(reply, async move {
            require_xattr_change(&client, who, ino.0, &name).await?;
            client.set_xattr(ino.0, &name, value, flags).await
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name_or_reply!(name, reply);
        // The replication attribute is never stored, so always there.
        if name != bigfs_proto::REPLICATION_XATTR && self.fresh.has_no_xattrs(ino.0) {
            reply.error(Errno::NO_XATTR);
            return;
        }
        let client = Arc::clone(&self.client);
        let who = self.squashed(req).filter(|_| !permissions::is_acl(&name));
        self.spawn(async move {
            if let Err(e) = require(&client, who, ino.0, AccessFlags::R_OK).await {
                return reply.error(err(&e));
            }
            match client.get_xattr(ino.0, &name).await {
                Ok(v) if size == 0 => reply.size(v.len() as u32),
                Ok(v) if v.len() <= size as usize => reply.data(&v),
                Ok(_) => reply.error(Errno::ERANGE),
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let client = Arc::clone(&self.client);
        self.spawn(async move {
            match client.list_xattr(ino.0).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    if size == 0 {
                        reply.size(buf.len() as u32)
                    } else if buf.len() <= size as usize {
                        reply.data(&buf)
                    } else {
                        reply.error(Errno::ERANGE)
                    }
                }
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let client = Arc::clone(&self.client);
        self.fresh.forget(ino.0);
        let who = self.squashed(req);
        self.reply_empty(reply, async move {
            require_xattr_change(&client, who, ino.0, &name).await?;
            client.remove_xattr(ino.0, &name).await
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let client = Arc::clone(&self.client);
        let (uid, gid) = match self.squashed(req) {
            Some(w) => (w.uid, w.gid),
            None => (req.uid(), req.gid()),
        };
        let ro = self.read_only();
        self.reply_empty(reply, async move {
            let a = client.getattr(ino.0).await?;
            if ro && mask.contains(AccessFlags::W_OK) {
                return Err(ClientError::Remote {
                    op: "access",
                    errno: errno::EROFS,
                    code: tonic::Code::PermissionDenied,
                    message: "read-only mount".into(),
                });
            }
            if permitted(&a, uid, gid, mask) {
                Ok(())
            } else {
                Err(ClientError::Remote {
                    op: "access",
                    errno: errno::EACCES,
                    code: tonic::Code::PermissionDenied,
                    message: "permission denied".into(),
                })
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        writable_or_reply!(self, reply);
        let name = name_or_reply!(name, reply);
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let ttl = self.entry_ttl();
        let r = pb::CreateRequest {
            exclusive: flags & libc::O_EXCL != 0,
            ..self.masked(
                new_inode(req, parent, name, pb::FileKind::File, mode),
                umask,
            )
        };
        let fresh = Arc::clone(&self.fresh);
        let who = self.squashed(req);
        self.spawn(async move {
            if let Err(e) = require(&client, who, parent.0, WX).await {
                return reply.error(err(&e));
            }
            let exclusive = r.exclusive;
            let attr = match client.create(r).await {
                Ok(a) => a,
                Err(e) => return reply.error(err(&e)),
            };
            // Made just now (a non-exclusive create may have found a file
            // another mount made, which could carry attributes).
            if exclusive || attr.size == 0 {
                fresh.created(&attr);
            }
            let handle = match client.open_attr(&attr) {
                Ok(h) => h,
                Err(e) => return reply.error(err(&e)),
            };
            let (fh, shared, _) = open.open(attr.ino, attr.version, || handle);
            if flags & libc::O_TRUNC != 0
                && attr.size > 0
                && let Err(e) = shared.truncate(0).await
            {
                open.release(fh);
                return reply.error(err(&e));
            }
            let size = shared.pending().await;
            reply.created(
                &ttl,
                &file_attr(&attr, size),
                Generation(0),
                Fh(fh),
                FopenFlags::empty(),
            );
        });
    }

    /// `open(dir, O_TMPFILE)`: a file with no name, held by this mount like
    /// one unlinked while open (its last close here frees it) until
    /// `linkat` names it. The kernel links it only without `O_EXCL`.
    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        writable_or_reply!(self, reply);
        let client = Arc::clone(&self.client);
        let open = Arc::clone(&self.open);
        let fresh = Arc::clone(&self.fresh);
        let ttl = self.entry_ttl();
        let r = pb::TmpFileRequest {
            parent: parent.0,
            mode: mode & !umask & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
            linkable: flags & libc::O_EXCL == 0,
            open_lease_ms: self.cfg.open_lease_ms,
            id: None,
        };
        let who = self.squashed(req);
        self.spawn(async move {
            let made = async {
                require(&client, who, parent.0, WX).await?;
                let attr = client.tmpfile(r).await?;
                let handle = client.open_attr(&attr)?;
                Ok::<_, ClientError>((attr, handle))
            };
            match made.await {
                Ok((attr, handle)) => {
                    fresh.created(&attr);
                    let (fh, _, _) = open.open(attr.ino, attr.version, || handle);
                    open.mark_unlinked(attr.ino);
                    let a = file_attr(&attr, None);
                    reply.created(&ttl, &a, Generation(0), Fh(fh), FopenFlags::empty());
                }
                Err(e) => reply.error(err(&e)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        writable_or_reply!(self, reply);
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        if mode & !(KEEP | PUNCH | ZERO) != 0 || (mode & PUNCH != 0 && mode & ZERO != 0) {
            // Collapse and insert range would shift every later chunk.
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let Some(h) = self.open.get(fh.0).or_else(|| self.open.by_ino(ino.0)) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.reply_empty(reply, async move {
            let end = offset.saturating_add(length);
            if mode & (PUNCH | ZERO) != 0 {
                h.zero_range(offset, end).await?;
            }
            // Plain allocation reserves no space (chunks are written on
            // demand); only the size grows, as the caller expects.
            if mode & KEEP == 0 && end > h.size().await {
                h.truncate(end).await?;
            }
            Ok(())
        });
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: Fh,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: Fh,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        writable_or_reply!(self, reply);
        let (Some(src), Some(dst)) = (self.open.get(fh_in.0), self.open.get(fh_out.0)) else {
            reply.error(Errno::EBADF);
            return;
        };
        let client = Arc::clone(&self.client);
        self.spawn(async move {
            match crate::copy::copy_range(&client, &src, offset_in, &dst, offset_out, len).await {
                Ok(n) => reply.written(n.min(u64::from(u32::MAX)) as u32),
                Err(e) => reply.error(err(&e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(mode: u32, uid: u32, gid: u32) -> pb::Attr {
        pb::Attr {
            mode,
            uid,
            gid,
            kind: pb::FileKind::File as i32,
            ..Default::default()
        }
    }

    #[test]
    fn permission_bits_follow_owner_group_other() {
        let a = attr(0o640, 10, 20);
        assert!(permitted(&a, 10, 99, AccessFlags::R_OK | AccessFlags::W_OK));
        assert!(permitted(&a, 11, 20, AccessFlags::R_OK));
        assert!(!permitted(&a, 11, 20, AccessFlags::W_OK));
        assert!(!permitted(&a, 11, 21, AccessFlags::R_OK));
        assert!(permitted(&a, 0, 0, AccessFlags::W_OK));
        assert!(!permitted(&a, 0, 0, AccessFlags::X_OK));
    }

    #[test]
    fn timestamps_before_the_epoch_round_down() {
        let t = to_timestamp(TimeOrNow::SpecificTime(
            UNIX_EPOCH - Duration::from_millis(1500),
        ));
        assert_eq!((t.secs, t.nanos), (-2, 500_000_000));
        let back = to_system_time(&Some(pb::Timestamp { secs: 5, nanos: 7 }));
        assert_eq!(back, UNIX_EPOCH + Duration::new(5, 7));
    }

    #[test]
    fn entries_after_continues_past_the_cookie() {
        let e = |cookie| pb::DirEntry {
            cookie,
            ..Default::default()
        };
        let listing = vec![e(3), e(7), e(9)];
        assert_eq!(entries_after(&listing, 0).len(), 3);
        assert_eq!(entries_after(&listing, 2).len(), 3);
        assert_eq!(entries_after(&listing, 5).len(), 2); // after cookie 3
        assert_eq!(entries_after(&listing, 9).len(), 1); // after cookie 7
        assert!(entries_after(&listing, 11).is_empty());
    }

    #[test]
    fn symlink_size_is_the_target_length() {
        let a = pb::Attr {
            kind: pb::FileKind::Symlink as i32,
            symlink_target: "abc".into(),
            ..Default::default()
        };
        assert_eq!(file_attr(&a, None).size, 3);
    }
}
