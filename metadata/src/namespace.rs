//! Inodes and directory entries: the namespace half of `apply`, plus the
//! read-only lookups the service answers without a command.
//!
//! Every mutating function checks everything first and mutates only once
//! nothing can fail any more, so an `Err` leaves the state unchanged.

use bigfs_proto::errno::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY, EPERM};
use bigfs_proto::{MAX_SYMLINK_LEN, ROOT_INO, validate_name};

use crate::error::MetaError;
use crate::state::{Dir, Inode, Kind, State, Time};
use crate::{chunks, quota};

/// Largest file size: offsets are signed 64-bit in the kernel.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Readdir entries per call when the client asks for 0.
pub const DEFAULT_READDIR_LIMIT: u32 = 1000;

/// What a Create command asks for.
pub struct NewInode<'a> {
    pub parent: u64,
    pub name: &'a str,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub symlink_target: &'a str,
    pub exclusive: bool,
    /// Device number (device nodes only).
    pub rdev: u32,
    pub chunk_size: u32,
    pub replication: u32,
    /// Masks the mode unless the parent has a default ACL (from a mount
    /// that leaves the umask to the file system; 0 from one that applied
    /// it already).
    pub umask: u32,
}

/// What a SetAttr command changes.
#[derive(Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
}

/// The entries of directory `ino`.
pub fn dir(state: &State, ino: u64) -> Result<&Dir, MetaError> {
    let inode = state.inode(ino)?;
    if inode.kind != Kind::Directory {
        return Err(MetaError::ns(
            ENOTDIR,
            format!("inode {ino} is not a directory"),
        ));
    }
    state
        .dirs
        .get(&ino)
        .ok_or_else(|| MetaError::Internal(format!("directory {ino} has no entry table")))
}

/// The inode `name` in directory `parent` names.
pub fn lookup(state: &State, parent: u64, name: &str) -> Result<u64, MetaError> {
    validate_name(name)?;
    dir(state, parent)?
        .entries
        .get(name)
        .map(|&(ino, _)| ino)
        .ok_or_else(|| MetaError::ns(ENOENT, format!("no entry {name:?} in directory {parent}")))
}

/// The inode of an absolute path; "." is skipped, ".." goes up. Symlinks are
/// not followed (the client does that).
pub fn resolve_path(state: &State, path: &str) -> Result<u64, MetaError> {
    if !path.starts_with('/') {
        return Err(MetaError::ns(
            EINVAL,
            format!("path {path:?} is not absolute"),
        ));
    }
    let mut ino = ROOT_INO;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                dir(state, ino)?;
                ino = state.inode(ino)?.parent;
            }
            name => ino = lookup(state, ino, name)?,
        }
    }
    Ok(ino)
}

/// `path` (absolute, from a client confined to `root`) as a path from the
/// real root: `.` and `..` are resolved by name first and `..` stops at
/// the client's root, as it would at a chroot's.
pub fn confined_path(root: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut out = root.trim_end_matches('/').to_string();
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// One directory entry as readdir returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub ino: u64,
    /// Pass as the next offset to continue after this entry.
    pub cookie: u64,
}

/// Entries of directory `ino` with a cookie above `offset`, in cookie order,
/// and whether the listing is complete.
pub fn read_dir(
    state: &State,
    ino: u64,
    offset: u64,
    limit: u32,
) -> Result<(Vec<Listed>, bool), MetaError> {
    let d = dir(state, ino)?;
    let limit = if limit == 0 {
        DEFAULT_READDIR_LIMIT
    } else {
        limit.min(crate::limits::MAX_READDIR_PAGE)
    } as usize;
    let mut out = Vec::new();
    let mut range = d.by_cookie.range(offset.saturating_add(1)..);
    for (&cookie, name) in range.by_ref() {
        if let Some(&(child, _)) = d.entries.get(name) {
            out.push(Listed {
                name: name.clone(),
                ino: child,
                cookie,
            });
        }
        if out.len() >= limit {
            break;
        }
    }
    let eof = range.next().is_none();
    Ok((out, eof))
}

pub(crate) fn create(state: &mut State, req: &NewInode<'_>, now: Time) -> Result<u64, MetaError> {
    validate_name(req.name)?;
    crate::snapshot::check_writable(state, req.parent)?;
    let d = dir(state, req.parent)?;
    if let Some(&(existing, _)) = d.entries.get(req.name) {
        let existing_kind = state.inode(existing)?.kind;
        if req.exclusive || req.kind != Kind::File || existing_kind != Kind::File {
            return Err(MetaError::ns(
                EEXIST,
                format!("{:?} already exists in directory {}", req.name, req.parent),
            ));
        }
        return Ok(existing);
    }
    let inode = new_inode(state, req, now)?;
    quota::check(state, req.parent, 0, 1)?;
    let ino = state.next_ino;
    state.next_ino += 1;
    let is_dir = req.kind == Kind::Directory;
    state.inodes.insert(ino, inode);
    if is_dir {
        state.dirs.insert(ino, Dir::default());
    }
    insert_dentry(state, req.parent, req.name, ino);
    touch_dir(state, req.parent, now, if is_dir { 1 } else { 0 });
    quota::charge(state, req.parent, 0, 1);
    Ok(ino)
}

/// The inode `req` asks for in directory `req.parent`, with one name (two
/// links for a directory), checked but not inserted: the directory's
/// set-group-ID bit and replication pass on to it.
pub(crate) fn new_inode(state: &State, req: &NewInode<'_>, now: Time) -> Result<Inode, MetaError> {
    let (size, mode) = match req.kind {
        Kind::Symlink => {
            if req.symlink_target.is_empty() {
                return Err(MetaError::ns(EINVAL, "empty symlink target"));
            }
            if req.symlink_target.len() > MAX_SYMLINK_LEN {
                return Err(MetaError::ns(
                    bigfs_proto::errno::ENAMETOOLONG,
                    format!(
                        "symlink target is {} bytes, the limit is {MAX_SYMLINK_LEN}",
                        req.symlink_target.len()
                    ),
                ));
            }
            (req.symlink_target.len() as u64, 0o777)
        }
        _ => (0, req.mode & 0o7777),
    };
    if req.kind == Kind::File && (req.chunk_size == 0 || req.replication == 0) {
        return Err(MetaError::InvalidArgument(
            "a file needs a chunk size and a replication factor".into(),
        ));
    }

    // A set-group-ID directory passes its group on, and to new
    // subdirectories its set-group-ID bit too (as on Linux file systems).
    let parent_inode = state.inode(req.parent)?;
    // The directory's setting (0: none, the cluster default) passes on.
    let replication = match (req.kind, parent_inode.replication) {
        (Kind::File, 0) => req.replication,
        (Kind::File | Kind::Directory, inherited) => inherited,
        _ => 0,
    };
    let (gid, mode) = if parent_inode.mode & 0o2000 != 0 {
        let sgid = if req.kind == Kind::Directory {
            0o2000
        } else {
            0
        };
        (parent_inode.gid, mode | sgid)
    } else {
        (req.gid, mode)
    };
    let (mode, acls) = crate::acl::inherit(&parent_inode.xattrs, req.kind, mode, req.umask);
    Ok(Inode {
        kind: req.kind,
        mode,
        uid: req.uid,
        gid,
        size,
        atime: now,
        mtime: now,
        ctime: now,
        nlink: if req.kind == Kind::Directory { 2 } else { 1 },
        chunk_size: if req.kind == Kind::File {
            req.chunk_size
        } else {
            0
        },
        replication,
        version: 0,
        symlink_target: if req.kind == Kind::Symlink {
            req.symlink_target.to_string()
        } else {
            String::new()
        },
        parent: req.parent,
        allocated: 0,
        xattrs: acls.into_iter().collect(),
        rdev: if req.kind.is_device() { req.rdev } else { 0 },
    })
}

/// Only regular files have a size and a layout: EISDIR for a directory,
/// EINVAL for a symlink or a special file.
pub(crate) fn holds_data(kind: Kind, ino: u64) -> Result<(), MetaError> {
    match kind {
        Kind::File => Ok(()),
        Kind::Directory => Err(MetaError::ns(EISDIR, format!("inode {ino} is a directory"))),
        other => Err(MetaError::ns(
            EINVAL,
            format!("inode {ino} is a {other:?}, not a regular file"),
        )),
    }
}

pub(crate) fn set_attr(
    state: &mut State,
    ino: u64,
    ch: &AttrChange,
    now: Time,
) -> Result<(), MetaError> {
    crate::snapshot::check_writable(state, ino)?;
    let inode = state.inode(ino)?;
    if let Some(size) = ch.size {
        holds_data(inode.kind, ino)?;
        if size > MAX_FILE_SIZE {
            return Err(MetaError::ns(
                bigfs_proto::errno::EFBIG,
                format!("size {size} exceeds {MAX_FILE_SIZE}"),
            ));
        }
    }
    let chunk_size = u64::from(inode.chunk_size.max(1));
    // An unlinked file (nlink 0) no longer counts toward quotas.
    let (old_size, counted, dir) = (inode.size, inode.nlink > 0, inode.parent);
    if let Some(size) = ch.size
        && counted
        && size > old_size
    {
        quota::check(state, dir, size - old_size, 0)?;
    }

    if let Some(size) = ch.size {
        truncate_layout(state, ino, size, chunk_size, now);
        if counted {
            quota::charge(
                state,
                dir,
                quota::bytes_of(Kind::File, size) - quota::bytes_of(Kind::File, old_size),
                0,
            );
        }
    }
    let Some(inode) = state.inodes.get_mut(&ino) else {
        return Err(MetaError::Internal(format!("inode {ino} vanished")));
    };
    if let Some(mode) = ch.mode {
        inode.mode = mode & 0o7777;
        crate::acl::chmod(inode, mode);
    }
    if let Some(uid) = ch.uid {
        inode.uid = uid;
    }
    if let Some(gid) = ch.gid {
        inode.gid = gid;
    }
    if let Some(t) = ch.atime {
        inode.atime = t;
    }
    if let Some(t) = ch.mtime {
        inode.mtime = t;
    }
    if let Some(size) = ch.size {
        inode.size = size;
        inode.version += 1;
        if ch.mtime.is_none() {
            inode.mtime = now;
        }
    }
    inode.ctime = now;
    Ok(())
}

/// Moves each inode's atime forward to its recorded read time. Gone inodes
/// are skipped: a read raced an unlink.
pub(crate) fn record_access(state: &mut State, times: &[(u64, Time)]) {
    for (ino, t) in times {
        if let Some(inode) = state.inodes.get_mut(ino)
            && *t > inode.atime
        {
            inode.atime = *t;
        }
    }
}

/// Drops chunk refs wholly past `size` and cuts the one across it.
fn truncate_layout(state: &mut State, ino: u64, size: u64, chunk_size: u64, now: Time) {
    let replication = state.inodes.get(&ino).map_or(0, |i| i.replication);
    state.inline.truncate(ino, size);
    let Some(layout) = state.layouts.get_mut(&ino) else {
        chunks::refresh_allocated(state, ino);
        return;
    };
    // First index with no byte below `size`.
    let first_dropped = size.div_ceil(chunk_size);
    let dropped = layout.split_off(&first_dropped);
    if let Some((&index, r)) = layout.iter_mut().next_back() {
        let start = index.saturating_mul(chunk_size);
        let keep = size.saturating_sub(start);
        if keep < u64::from(r.len) {
            // keep < r.len <= u32::MAX, so the cast is lossless.
            r.len = keep as u32;
        }
    }
    for r in dropped.values() {
        chunks::release(state, r.id, replication, now.as_ms());
    }
    chunks::refresh_allocated(state, ino);
}

pub(crate) fn link(
    state: &mut State,
    ino: u64,
    new_parent: u64,
    new_name: &str,
    now: Time,
) -> Result<(), MetaError> {
    validate_name(new_name)?;
    crate::snapshot::check_writable(state, ino)?;
    crate::snapshot::check_writable(state, new_parent)?;
    let inode = state.inode(ino)?;
    if inode.kind == Kind::Directory {
        return Err(MetaError::ns(
            EPERM,
            format!("inode {ino} is a directory: no hard links"),
        ));
    }
    quota::same_realm(state, inode.parent, new_parent)?;
    if dir(state, new_parent)?.entries.contains_key(new_name) {
        return Err(MetaError::ns(
            EEXIST,
            format!("{new_name:?} already exists in directory {new_parent}"),
        ));
    }
    // A file with no name left can only be named if O_TMPFILE made it.
    let first_name = crate::tmpfile::check_link(state, ino, new_parent)?;
    insert_dentry(state, new_parent, new_name, ino);
    touch_dir(state, new_parent, now, 0);
    if let Some(inode) = state.inodes.get_mut(&ino) {
        inode.nlink = inode.nlink.saturating_add(1);
        inode.ctime = now;
    }
    if first_name {
        crate::tmpfile::named(state, ino, new_parent);
    }
    Ok(())
}

/// What happens to a file whose last name goes: kept while open
/// (`open_lease_ms` > 0), and kept in the trash (`trash_retention_ms` > 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct LastLink {
    pub open_lease_ms: u64,
    pub trash_retention_ms: u64,
}

pub(crate) fn unlink(
    state: &mut State,
    parent: u64,
    name: &str,
    last: LastLink,
    now: Time,
) -> Result<(), MetaError> {
    let ino = lookup(state, parent, name)?;
    if state.inode(ino)?.kind == Kind::Directory {
        return Err(MetaError::ns(EISDIR, format!("{name:?} is a directory")));
    }
    let path = trash_path(state, ino, parent, name, last);
    remove_dentry(state, parent, name);
    touch_dir(state, parent, now, 0);
    drop_link(state, ino, parent, last, path, now);
    Ok(())
}

/// The path a file goes to the trash under if this name is its last one
/// and the trash is on (computed only then: it walks up the parents).
fn trash_path(state: &State, ino: u64, parent: u64, name: &str, last: LastLink) -> Option<String> {
    let i = state.inodes.get(&ino)?;
    (last.trash_retention_ms > 0 && i.kind == Kind::File && i.nlink <= 1)
        .then(|| crate::trash::child_path(state, parent, name))
}

pub(crate) fn rmdir(
    state: &mut State,
    parent: u64,
    name: &str,
    now: Time,
) -> Result<(), MetaError> {
    let ino = lookup(state, parent, name)?;
    check_removable_dir(state, ino, name)?;
    remove_dentry(state, parent, name);
    touch_dir(state, parent, now, -1);
    free_inode(state, ino, now);
    Ok(())
}

fn check_removable_dir(state: &State, ino: u64, name: &str) -> Result<(), MetaError> {
    let d = match dir(state, ino) {
        Ok(d) => d,
        Err(_) => {
            return Err(MetaError::ns(
                ENOTDIR,
                format!("{name:?} is not a directory"),
            ));
        }
    };
    if ino == ROOT_INO {
        return Err(MetaError::ns(EPERM, "the root cannot be removed"));
    }
    if !d.entries.is_empty() {
        return Err(MetaError::ns(
            ENOTEMPTY,
            format!("directory {name:?} is not empty"),
        ));
    }
    Ok(())
}

/// Whether `ino` is `ancestor` or lies below it (a file by the directory
/// it was created in or last renamed into).
pub(crate) fn is_within(state: &State, mut ino: u64, ancestor: u64) -> bool {
    // The depth is bounded by the number of inodes; guard against a cycle.
    for _ in 0..=state.inodes.len() {
        if ino == ancestor {
            return true;
        }
        if ino == ROOT_INO {
            return false;
        }
        match state.inodes.get(&ino) {
            Some(i) => ino = i.parent,
            None => return false,
        }
    }
    false
}

pub(crate) fn rename(
    state: &mut State,
    (parent, name): (u64, &str),
    (new_parent, new_name): (u64, &str),
    (noreplace, exchange): (bool, bool),
    last: LastLink,
    now: Time,
) -> Result<(), MetaError> {
    if noreplace && exchange {
        return Err(MetaError::ns(
            EINVAL,
            "noreplace and exchange exclude each other",
        ));
    }
    validate_name(new_name)?;
    crate::snapshot::check_writable(state, parent)?;
    crate::snapshot::check_writable(state, new_parent)?;
    let src = lookup(state, parent, name)?;
    let dst = dir(state, new_parent)?
        .entries
        .get(new_name)
        .map(|&(i, _)| i);
    if parent == new_parent && name == new_name {
        return Ok(());
    }
    let src_dir = state.inode(src)?.kind == Kind::Directory;
    if src_dir && is_within(state, new_parent, src) {
        return Err(MetaError::ns(
            EINVAL,
            format!("cannot move {name:?} into its own subtree"),
        ));
    }
    quota::same_realm(state, parent, new_parent)?;

    if exchange {
        let Some(dst) = dst else {
            return Err(MetaError::ns(
                ENOENT,
                format!("no entry {new_name:?} to exchange with"),
            ));
        };
        let dst_dir = state.inode(dst)?.kind == Kind::Directory;
        if dst_dir && is_within(state, parent, dst) {
            return Err(MetaError::ns(
                EINVAL,
                format!("cannot move {new_name:?} into its own subtree"),
            ));
        }
        set_dentry_ino(state, parent, name, dst);
        set_dentry_ino(state, new_parent, new_name, src);
        // Files too: an export's border is checked by parents.
        set_parent(state, src, new_parent);
        set_parent(state, dst, parent);
        let moved_dirs = i32::from(src_dir) - i32::from(dst_dir);
        touch_dirs(state, (parent, -moved_dirs), (new_parent, moved_dirs), now);
        touch_inode(state, src, now);
        touch_inode(state, dst, now);
        return Ok(());
    }

    if let Some(dst) = dst {
        if noreplace {
            return Err(MetaError::ns(
                EEXIST,
                format!("{new_name:?} already exists"),
            ));
        }
        if dst == src {
            // Two links to one inode: rename does nothing (POSIX).
            return Ok(());
        }
        let dst_dir = state.inode(dst)?.kind == Kind::Directory;
        match (src_dir, dst_dir) {
            (true, true) => check_removable_dir(state, dst, new_name)?,
            (true, false) => {
                return Err(MetaError::ns(
                    ENOTDIR,
                    format!("{new_name:?} is not a directory"),
                ));
            }
            (false, true) => {
                return Err(MetaError::ns(
                    EISDIR,
                    format!("{new_name:?} is a directory"),
                ));
            }
            (false, false) => {}
        }
        // Checks done: replace.
        let path = trash_path(state, dst, new_parent, new_name, last);
        remove_dentry(state, new_parent, new_name);
        if dst_dir {
            add_subdirs(state, new_parent, -1);
            free_inode(state, dst, now);
        } else {
            drop_link(state, dst, new_parent, last, path, now);
        }
    }
    remove_dentry(state, parent, name);
    insert_dentry(state, new_parent, new_name, src);
    set_parent(state, src, new_parent);
    let moved = i32::from(src_dir);
    touch_dirs(state, (parent, -moved), (new_parent, moved), now);
    touch_inode(state, src, now);
    Ok(())
}

pub(crate) fn insert_dentry(state: &mut State, parent: u64, name: &str, ino: u64) {
    let cookie = state.next_cookie;
    state.next_cookie += 1;
    if let Some(d) = state.dirs.get_mut(&parent) {
        d.entries.insert(name.to_string(), (ino, cookie));
        d.by_cookie.insert(cookie, name.to_string());
    }
}

fn remove_dentry(state: &mut State, parent: u64, name: &str) {
    if let Some(d) = state.dirs.get_mut(&parent)
        && let Some((_, cookie)) = d.entries.remove(name)
    {
        d.by_cookie.remove(&cookie);
    }
}

fn set_dentry_ino(state: &mut State, parent: u64, name: &str, ino: u64) {
    if let Some(d) = state.dirs.get_mut(&parent)
        && let Some(e) = d.entries.get_mut(name)
    {
        e.0 = ino;
    }
}

fn set_parent(state: &mut State, ino: u64, parent: u64) {
    if let Some(i) = state.inodes.get_mut(&ino) {
        i.parent = parent;
    }
}

/// Updates a directory whose entries a command changed: its times, its
/// link count by `subdirs` (+1 for a new subdirectory, -1 for one gone),
/// and its version, by one per command: a client that made the change
/// tells from the version whether anyone else changed the directory too
/// (see the mount's `fresh_dirs`).
pub(crate) fn touch_dir(state: &mut State, ino: u64, now: Time, subdirs: i32) {
    if let Some(i) = state.inodes.get_mut(&ino) {
        i.mtime = now;
        i.ctime = now;
        i.nlink = i.nlink.saturating_add_signed(subdirs);
        i.version += 1;
    }
}

/// [`touch_dir`] of a rename's two directories, once if they are one.
fn touch_dirs(
    state: &mut State,
    (a, a_subdirs): (u64, i32),
    (b, b_subdirs): (u64, i32),
    now: Time,
) {
    if a == b {
        touch_dir(state, a, now, a_subdirs + b_subdirs);
    } else {
        touch_dir(state, a, now, a_subdirs);
        touch_dir(state, b, now, b_subdirs);
    }
}

/// A directory's link count changed by `subdirs`, within a command that
/// touches it once elsewhere.
fn add_subdirs(state: &mut State, ino: u64, subdirs: i32) {
    if let Some(i) = state.inodes.get_mut(&ino) {
        i.nlink = i.nlink.saturating_add_signed(subdirs);
    }
}

fn touch_inode(state: &mut State, ino: u64, now: Time) {
    if let Some(i) = state.inodes.get_mut(&ino) {
        i.ctime = now;
    }
}

/// One name less (in directory `dir`) for a non-directory; frees it at
/// zero, unless the trash keeps it (`trash_path` is where it was, given
/// when the trash is on) or a client still has it open (`open_lease_ms` >
/// 0): then it lives on as an orphan until released or its lease ends. Its
/// last name gone, it stops counting toward quotas.
fn drop_link(
    state: &mut State,
    ino: u64,
    dir: u64,
    last: LastLink,
    trash_path: Option<String>,
    now: Time,
) {
    let Some(i) = state.inodes.get_mut(&ino) else {
        return;
    };
    i.nlink = i.nlink.saturating_sub(1);
    i.ctime = now;
    if i.nlink == 0 {
        let (bytes, kind) = (quota::bytes_of(i.kind, i.size), i.kind);
        quota::charge(state, dir, -bytes, -1);
        if let Some(path) = trash_path {
            crate::trash::put(state, ino, path, last.trash_retention_ms, now);
        } else if last.open_lease_ms > 0 && kind == Kind::File {
            state
                .orphans
                .insert(ino, now.as_ms().saturating_add(last.open_lease_ms));
        } else {
            free_inode(state, ino, now);
        }
    }
}

/// Removes an inode and releases the chunks its layout references.
pub(crate) fn free_inode(state: &mut State, ino: u64, now: Time) {
    state.orphans.remove(&ino);
    state.tmpfiles.remove(&ino);
    state.read_only.remove(&ino);
    crate::trash::forget(state, ino);
    let replication = match state.inodes.remove(&ino) {
        // Still named (a directory removed): it leaves its quotas now.
        Some(i) if i.nlink > 0 => {
            quota::charge(state, i.parent, -quota::bytes_of(i.kind, i.size), -1);
            i.replication
        }
        Some(i) => i.replication,
        None => 0,
    };
    state.quotas.remove(&ino);
    state.dirs.remove(&ino);
    state.inline.remove(ino);
    if let Some(layout) = state.layouts.remove(&ino) {
        for r in layout.values() {
            chunks::release(state, r.id, replication, now.as_ms());
        }
    }
}

#[cfg(test)]
#[path = "namespace_tests.rs"]
mod tests;
