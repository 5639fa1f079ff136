//! The FUSE side: a passthrough of a backing directory in which file data
//! lives in per-file [`Overlay`]s until an fsync, and a power cut.
//!
//! Each inode the kernel knows is held as an `O_PATH` descriptor of its
//! backing file (as libfuse's `passthrough_ll` does), so renames, hard links
//! and unlinked-but-open files need no path bookkeeping: every namespace
//! call is an `*at` call relative to the parent's descriptor.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use rand::{Rng, SeedableRng};

use crate::overlay::Overlay;

/// How long the kernel may cache entries and attributes. Everything goes
/// through this mount, so they only change by its own requests.
const TTL: Duration = Duration::from_secs(1);

type R<T> = Result<T, Errno>;

/// A backing inode: (device, inode number).
type Key = (u64, u64);

fn nx(e: nix::Error) -> Errno {
    Errno::from_i32(e as i32)
}

fn io(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn key_of(st: &FileStat) -> Key {
    (st.st_dev, st.st_ino)
}

/// The `/proc` path that reopens descriptor `fd`.
fn proc_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

struct Inode {
    /// `O_PATH` descriptor of the backing inode.
    fd: OwnedFd,
    key: Key,
    /// Lookups the kernel holds (it forgets them with `forget`).
    lookups: u64,
}

/// An open file: its backing inode and a read-write descriptor of it.
struct Handle {
    key: Key,
    file: Arc<File>,
}

/// A file with unsynced data, and a descriptor that keeps its backing
/// inode (and so its inode number) alive while the data is pending.
struct Pending {
    file: Arc<File>,
    overlay: Overlay,
}

struct Tables {
    inodes: HashMap<u64, Inode>,
    by_key: HashMap<Key, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    dirs: HashMap<u64, Vec<(u64, FileType, std::ffi::OsString)>>,
    next_fh: u64,
    pending: HashMap<Key, Pending>,
}

/// The file system; cheap to clone (the control thread holds a clone).
#[derive(Clone)]
pub struct LossyFs {
    tables: Arc<Mutex<Tables>>,
    /// Taken for reading by every fsync; a power cut takes it for writing
    /// and never gives it back, so nothing reaches the disk after it.
    power: Arc<RwLock<()>>,
    /// Set by [`fail`](Self::fail): every operation answers EIO, as a
    /// dying disk does.
    failing: Arc<AtomicBool>,
}

/// What a power cut did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutSummary {
    /// Files with unsynced data.
    pub files: usize,
    /// Unsynced pages in them.
    pub pages: u64,
    /// Pages that reached the disk anyway.
    pub kept: u64,
}

impl LossyFs {
    /// A file system over the backing directory `root`.
    pub fn new(root: &Path) -> std::io::Result<LossyFs> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let key = key_of(&nix::sys::stat::fstat(&fd)?);
        let root_ino = INodeNo::ROOT.0;
        let tables = Tables {
            inodes: HashMap::from([(
                root_ino,
                Inode {
                    fd,
                    key,
                    lookups: 1,
                },
            )]),
            by_key: HashMap::from([(key, root_ino)]),
            next_ino: root_ino + 1,
            handles: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            pending: HashMap::new(),
        };
        Ok(LossyFs {
            tables: Arc::new(Mutex::new(tables)),
            power: Arc::new(RwLock::new(())),
            failing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Makes the disk fail: from now on every operation answers EIO.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the power: every file's unsynced pages are lost, except that
    /// each reaches the disk with probability `keep_percent` (a cache that
    /// was partly written back), chosen by `seed`. Nothing reaches the disk
    /// afterwards: the caller is to exit.
    pub fn power_cut(&self, seed: u64, keep_percent: u32) -> std::io::Result<CutSummary> {
        let guard = self.power.write().unwrap_or_else(|p| p.into_inner());
        // The power stays off: no fsync may persist anything after this.
        std::mem::forget(guard);
        let t = self.tables();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut keys: Vec<&Key> = t.pending.keys().collect();
        keys.sort();
        let mut s = CutSummary {
            files: keys.len(),
            pages: 0,
            kept: 0,
        };
        for key in keys {
            let p = &t.pending[key];
            s.pages += p.overlay.dirty_bytes() / crate::overlay::PAGE;
            p.overlay.persist_some(&p.file, || {
                let keep = rng.random_ratio(keep_percent.min(100), 100);
                s.kept += u64::from(keep);
                keep
            })?;
        }
        Ok(s)
    }
}

impl Tables {
    fn inode(&self, ino: INodeNo) -> R<&Inode> {
        self.inodes.get(&ino.0).ok_or(Errno::ESTALE)
    }

    fn handle(&self, fh: FileHandle) -> R<&Handle> {
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    /// The attributes of a backing inode as readers see them.
    fn attr(&self, ino: u64, st: &FileStat) -> FileAttr {
        let size = self
            .pending
            .get(&key_of(st))
            .map_or(st.st_size as u64, |p| p.overlay.size());
        let time = |secs: i64, nanos: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
        };
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::NamedPipe,
            libc::S_IFSOCK => FileType::Socket,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            _ => FileType::RegularFile,
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Looks `name` up in `parent` and counts one kernel lookup of it.
    fn remember(&mut self, parent: INodeNo, name: &OsStr) -> R<FileAttr> {
        let pfd = &self.inode(parent)?.fd;
        let st = nix::sys::stat::fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(nx)?;
        let key = key_of(&st);
        if let Some(&ino) = self.by_key.get(&key) {
            if let Some(i) = self.inodes.get_mut(&ino) {
                i.lookups += 1;
            }
            return Ok(self.attr(ino, &st));
        }
        let fd = nix::fcntl::openat(
            pfd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(nx)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                fd,
                key,
                lookups: 1,
            },
        );
        self.by_key.insert(key, ino);
        Ok(self.attr(ino, &st))
    }

    fn stat(&self, ino: INodeNo) -> R<FileStat> {
        nix::sys::stat::fstat(&self.inode(ino)?.fd).map_err(nx)
    }

    /// The pending overlay of `key`, created over `file` if there is none.
    fn pending(&mut self, key: Key, file: &Arc<File>) -> R<&mut Overlay> {
        let p = match self.pending.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let len = file.metadata().map_err(io)?.len();
                e.insert(Pending {
                    file: Arc::clone(file),
                    overlay: Overlay::new(len),
                })
            }
        };
        Ok(&mut p.overlay)
    }

    /// Forgets the unsynced data of a file that no name and no open file
    /// reaches any more: nobody can read or sync it.
    fn drop_if_unreachable(&mut self, key: Key) {
        if self.handles.values().any(|h| h.key == key) {
            return;
        }
        if let Some(p) = self.pending.get(&key)
            && p.file.metadata().is_ok_and(|m| m.nlink() == 0)
        {
            self.pending.remove(&key);
        }
    }

    /// The file a name is about to stop pointing at (unlink, rename over):
    /// its key if this was its last name.
    fn last_name(&self, parent: INodeNo, name: &OsStr) -> Option<Key> {
        let pfd = &self.inode(parent).ok()?.fd;
        let st = nix::sys::stat::fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        (st.st_nlink <= 1).then(|| key_of(&st))
    }

    fn new_handle(&mut self, key: Key, file: Arc<File>) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { key, file });
        fh
    }
}

/// Opens a backing file for reading and writing whatever the caller's
/// flags (the overlay needs both); O_DIRECT, O_APPEND and O_TRUNC are the
/// kernel's and the overlay's business, never the backing file's.
fn open_backing(fd: &OwnedFd) -> R<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(proc_path(fd))
        .map_err(io)
}

/// The attributes a `setattr` changes (None: left alone).
#[derive(Default)]
struct AttrChange {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

/// A reply that can carry an error.
trait Fail {
    fn fail(self, e: Errno);
}

macro_rules! fail_impl {
    ($($t:ty),*) => {
        $(impl Fail for $t {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        })*
    };
}
fail_impl!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite
);

fn answer<P: Fail, T>(reply: P, r: R<T>, ok: impl FnOnce(P, T)) {
    match r {
        Ok(v) => ok(reply, v),
        Err(e) => reply.fail(e),
    }
}

fn entry(reply: ReplyEntry, r: R<FileAttr>) {
    answer(reply, r, |p, a| p.entry(&TTL, &a, Generation(0)));
}

fn empty(reply: ReplyEmpty, r: R<()>) {
    answer(reply, r, |p, ()| p.ok());
}

fn timespec(t: Option<TimeOrNow>) -> nix::sys::time::TimeSpec {
    use nix::sys::time::TimeSpec;
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => {
            TimeSpec::from_duration(t.duration_since(UNIX_EPOCH).unwrap_or_default())
        }
    }
}

impl LossyFs {
    /// A namespace change in `parent`, then the lookup of `name` it made.
    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        op: impl FnOnce(&OwnedFd) -> R<()>,
    ) -> R<FileAttr> {
        let mut t = self.tables();
        op(&t.inode(parent)?.fd)?;
        t.remember(parent, name)
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, flag: nix::unistd::UnlinkatFlags) -> R<()> {
        let mut t = self.tables();
        let gone = t.last_name(parent, name);
        nix::unistd::unlinkat(&t.inode(parent)?.fd, name, flag).map_err(nx)?;
        if let Some(key) = gone {
            t.drop_if_unreachable(key);
        }
        Ok(())
    }

    fn set_attr(&self, ino: INodeNo, c: AttrChange) -> R<FileAttr> {
        let mut t = self.tables();
        let inode = t.inode(ino)?;
        let path = proc_path(&inode.fd);
        if let Some(mode) = c.mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        if c.uid.is_some() || c.gid.is_some() {
            std::os::unix::fs::chown(&path, c.uid, c.gid).map_err(io)?;
        }
        if c.atime.is_some() || c.mtime.is_some() {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &path,
                &timespec(c.atime),
                &timespec(c.mtime),
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )
            .map_err(nx)?;
        }
        if let Some(size) = c.size {
            let key = inode.key;
            let file = Arc::new(open_backing(&inode.fd)?);
            let file = t.pending.get(&key).map_or(file, |p| Arc::clone(&p.file));
            t.pending(key, &file)?.truncate(&file, size).map_err(io)?;
        }
        let st = t.stat(ino)?;
        Ok(t.attr(ino.0, &st))
    }

    /// The size readers see.
    fn size_of(&self, ino: INodeNo) -> R<u64> {
        let t = self.tables();
        let st = t.stat(ino)?;
        Ok(t.attr(ino.0, &st).size)
    }

    fn read_at(&self, fh: FileHandle, offset: u64, size: u32) -> R<Vec<u8>> {
        let t = self.tables();
        let h = t.handle(fh)?;
        let len = size as usize;
        match t.pending.get(&h.key) {
            Some(p) => p.overlay.read(&p.file, offset, len).map_err(io),
            // Without pending data the overlay's view is the backing file's.
            None => {
                let n = h.file.metadata().map_err(io)?.len();
                Overlay::new(n).read(&h.file, offset, len).map_err(io)
            }
        }
    }

    fn write_at(&self, fh: FileHandle, offset: u64, data: &[u8]) -> R<u32> {
        let mut t = self.tables();
        let h = t.handle(fh)?;
        let (key, file) = (h.key, Arc::clone(&h.file));
        t.pending(key, &file)?
            .write(&file, offset, data)
            .map_err(io)?;
        Ok(data.len() as u32)
    }

    /// fsync: the file's unsynced data reaches the backing file.
    fn sync(&self, ino: INodeNo) -> R<()> {
        let _power = self.power.read().unwrap_or_else(|p| p.into_inner());
        let mut t = self.tables();
        let key = t.inode(ino)?.key;
        if let Some(mut p) = t.pending.remove(&key)
            && let Err(e) = p.overlay.persist(&p.file)
        {
            t.pending.insert(key, p);
            return Err(io(e));
        }
        Ok(())
    }

    fn list(&self, ino: INodeNo) -> R<u64> {
        let mut t = self.tables();
        let inode = t.inode(ino)?;
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for e in std::fs::read_dir(proc_path(&inode.fd)).map_err(io)? {
            let e = e.map_err(io)?;
            let ft = e.file_type().map_err(io)?;
            let kind = if ft.is_dir() {
                FileType::Directory
            } else if ft.is_symlink() {
                FileType::Symlink
            } else {
                FileType::RegularFile
            };
            entries.push((e.ino(), kind, e.file_name()));
        }
        let fh = t.next_fh;
        t.next_fh += 1;
        t.dirs.insert(fh, entries);
        Ok(fh)
    }
}

use std::os::unix::fs::DirEntryExt;

impl Filesystem for LossyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config
            .set_max_write(1 << 20)
            .or_else(|max| config.set_max_write(max));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        entry(reply, self.tables().remember(parent, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut t = self.tables();
        if ino == INodeNo::ROOT {
            return;
        }
        let gone = t.inodes.get_mut(&ino.0).is_some_and(|i| {
            i.lookups = i.lookups.saturating_sub(nlookup);
            i.lookups == 0
        });
        if gone && let Some(i) = t.inodes.remove(&ino.0) {
            t.by_key.remove(&i.key);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let t = self.tables();
        let r = t.stat(ino).map(|st| t.attr(ino.0, &st));
        answer(reply, r, |p, a| p.attr(&TTL, &a));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let r = self.set_attr(ino, change);
        answer(reply, r, |p, a| p.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let t = self.tables();
        let r = t
            .inode(ino)
            .and_then(|i| nix::fcntl::readlinkat(&i.fd, "").map_err(nx));
        answer(reply, r, |p, target| {
            p.data(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()))
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let mode = Mode::from_bits_truncate(mode & !umask);
        let r = self.make(parent, name, |pfd| {
            nix::sys::stat::mkdirat(pfd, name, mode).map_err(nx)
        });
        entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        empty(
            reply,
            self.remove(parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        empty(
            reply,
            self.remove(parent, name, nix::unistd::UnlinkatFlags::RemoveDir),
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let r = self.make(parent, link_name, |pfd| {
            nix::unistd::symlinkat(target, pfd, link_name).map_err(nx)
        });
        entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let mut t = self.tables();
        let replaced = t.last_name(newparent, newname);
        let r = t.inode(parent).and_then(|from| {
            let to = t.inode(newparent)?;
            nix::fcntl::renameat2(
                &from.fd,
                name,
                &to.fd,
                newname,
                nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
            )
            .map_err(nx)
        });
        if r.is_ok()
            && let Some(key) = replaced
        {
            t.drop_if_unreachable(key);
        }
        empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let source = self.tables().inode(ino).map(|i| proc_path(&i.fd));
        let r = source.and_then(|source| {
            self.make(newparent, newname, |pfd| {
                nix::unistd::linkat(
                    nix::fcntl::AT_FDCWD,
                    &source,
                    pfd,
                    newname,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(nx)
            })
        });
        entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let mut t = self.tables();
        let r = t.inode(ino).and_then(|i| Ok((i.key, open_backing(&i.fd)?)));
        let r = r.map(|(key, file)| t.new_handle(key, Arc::new(file)));
        answer(reply, r, |p, fh| {
            p.opened(FileHandle(fh), FopenFlags::empty())
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        answer(reply, self.read_at(fh, offset, size), |p, d| p.data(&d));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        answer(reply, self.write_at(fh, offset, data), |p, n| p.written(n));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut t = self.tables();
        if let Some(h) = t.handles.remove(&fh.0) {
            t.drop_if_unreachable(h.key);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        empty(reply, self.sync(ino));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        answer(reply, self.list(ino), |p, fh| {
            p.opened(FileHandle(fh), FopenFlags::empty())
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let t = self.tables();
        let Some(entries) = t.dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.tables().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        // Namespace changes reach the backing directory at once.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let t = self.tables();
        let r = t
            .inode(INodeNo::ROOT)
            .and_then(|i| nix::sys::statvfs::fstatvfs(i.fd.as_fd()).map_err(nx));
        answer(reply, r, |p, s| {
            p.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            )
        });
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        let mut t = self.tables();
        let r = t.inode(parent).and_then(|p| {
            let excl = if flags & libc::O_EXCL != 0 {
                OFlag::O_EXCL
            } else {
                OFlag::empty()
            };
            let fd = nix::fcntl::openat(
                &p.fd,
                name,
                OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_CLOEXEC | excl,
                Mode::from_bits_truncate(mode & !umask),
            )
            .map_err(nx)?;
            Ok(File::from(fd))
        });
        let r = r.and_then(|file| {
            let attr = t.remember(parent, name)?;
            let key = key_of(&nix::sys::stat::fstat(&file).map_err(nx)?);
            let file = Arc::new(file);
            if flags & libc::O_TRUNC != 0 {
                t.pending(key, &file)?.truncate(&file, 0).map_err(io)?;
            }
            Ok((attr, t.new_handle(key, file)))
        });
        answer(reply, r, |p, (attr, fh)| {
            p.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            )
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if self.failing() {
            return reply.fail(Errno::EIO);
        }
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            // Reserving space changes nothing a reader sees.
            reply.ok();
            return;
        }
        let end = offset.saturating_add(length);
        let r = self.size_of(ino).and_then(|size| {
            if end > size {
                let grow = AttrChange {
                    size: Some(end),
                    ..AttrChange::default()
                };
                self.set_attr(ino, grow)?;
            }
            Ok(())
        });
        empty(reply, r);
    }
}
