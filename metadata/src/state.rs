//! The metadata state machine: the whole persisted state, the commands that
//! change it, and the one deterministic `apply`.
//!
//! `apply` never reads a clock or a random source: commands carry the time
//! and the chosen nodes, so replaying the log rebuilds the same state. An
//! `Err` from `apply` leaves the state untouched (every operation validates
//! before it mutates), except that a client's named command
//! ([`Command::Once`]) remembers its refusal in the clients table.

use std::collections::BTreeMap;

use bigfs_proto::{ChunkId, ROOT_INO, pb};
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::namespace::LastLink;
use crate::{chunks, clients, namespace, orphans, trash, xattr};

/// A table of the state that may grow with the namespace: an ordered map
/// whose clone shares its nodes with the original (copy on write), so a
/// snapshot copies the state in constant time, under the lock, and encodes
/// the copy beside the requests (see `raft::machine`). Encoded as a map,
/// exactly as a `BTreeMap`.
pub type Table<K, V> = imbl::OrdMap<K, V>;

/// Keeps the entries of `table` for which `keep` holds (a `Table` has no
/// `retain` of its own).
pub fn retain<K: Ord + Clone, V: Clone>(
    table: &mut Table<K, V>,
    mut keep: impl FnMut(&K, &V) -> bool,
) {
    let gone: Vec<K> = table
        .iter()
        .filter(|(k, v)| !keep(k, v))
        .map(|(k, _)| k.clone())
        .collect();
    for k in gone {
        table.remove(&k);
    }
}

/// A wall-clock time as stored in inodes (same shape as `pb::Timestamp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn from_pb(t: &pb::Timestamp) -> Self {
        Time {
            secs: t.secs,
            nanos: t.nanos.min(999_999_999),
        }
    }

    pub fn to_pb(self) -> pb::Timestamp {
        pb::Timestamp {
            secs: self.secs,
            nanos: self.nanos,
        }
    }

    /// Milliseconds since the epoch (0 for times before it).
    pub fn as_ms(self) -> u64 {
        let secs = u64::try_from(self.secs).unwrap_or(0);
        secs.saturating_mul(1000)
            .saturating_add(u64::from(self.nanos / 1_000_000))
    }

    /// Now, from the system clock (only ever called outside `apply`).
    pub fn now() -> Self {
        Time::from_pb(&bigfs_proto::now_timestamp())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    // Special files: attributes and a name, never data.
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    pub fn from_pb(k: i32) -> Option<Self> {
        match pb::FileKind::try_from(k).ok()? {
            pb::FileKind::File => Some(Kind::File),
            pb::FileKind::Directory => Some(Kind::Directory),
            pb::FileKind::Symlink => Some(Kind::Symlink),
            pb::FileKind::Fifo => Some(Kind::Fifo),
            pb::FileKind::Socket => Some(Kind::Socket),
            pb::FileKind::CharDevice => Some(Kind::CharDevice),
            pb::FileKind::BlockDevice => Some(Kind::BlockDevice),
            pb::FileKind::Unspecified => None,
        }
    }

    pub fn to_pb(self) -> pb::FileKind {
        match self {
            Kind::File => pb::FileKind::File,
            Kind::Directory => pb::FileKind::Directory,
            Kind::Symlink => pb::FileKind::Symlink,
            Kind::Fifo => pb::FileKind::Fifo,
            Kind::Socket => pb::FileKind::Socket,
            Kind::CharDevice => pb::FileKind::CharDevice,
            Kind::BlockDevice => pb::FileKind::BlockDevice,
        }
    }

    /// Whether a device number means anything for this kind.
    pub fn is_device(self) -> bool {
        matches!(self, Kind::CharDevice | Kind::BlockDevice)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub kind: Kind,
    /// Permission bits only (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub nlink: u32,
    pub chunk_size: u32,
    pub replication: u32,
    pub version: u64,
    pub symlink_target: String,
    /// For directories: the directory holding it (root: itself).
    pub parent: u64,
    /// Bytes of chunk data the layout references (for `st_blocks`).
    #[serde(default)]
    pub allocated: u64,
    /// Extended attributes, by full name ("user.x").
    #[serde(default)]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Device number of a device node (kernel encoding), else 0.
    #[serde(default)]
    pub rdev: u32,
}

impl Inode {
    pub fn to_attr(&self, ino: u64) -> pb::Attr {
        pb::Attr {
            ino,
            kind: self.kind.to_pb() as i32,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            atime: Some(self.atime.to_pb()),
            mtime: Some(self.mtime.to_pb()),
            ctime: Some(self.ctime.to_pb()),
            nlink: self.nlink,
            chunk_size: self.chunk_size,
            replication: self.replication,
            version: self.version,
            symlink_target: self.symlink_target.clone(),
            allocated: self.allocated,
            rdev: self.rdev,
            has_xattrs: !self.xattrs.is_empty(),
        }
    }
}

/// One directory's entries, by name and by cookie.
///
/// A cookie is assigned when a dentry is created and never reused, so a
/// readdir continuing "after cookie c" is stable under concurrent changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    pub entries: Table<String, (u64, u64)>,
    pub by_cookie: Table<u64, String>,
}

/// The part of a file a chunk provides: the first `len` bytes of chunk `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaStatus {
    Pending,
    Available,
    Deleting,
}

impl ReplicaStatus {
    pub fn to_pb(self) -> pb::ReplicaStatus {
        match self {
            ReplicaStatus::Pending => pb::ReplicaStatus::Pending,
            ReplicaStatus::Available => pb::ReplicaStatus::Available,
            ReplicaStatus::Deleting => pb::ReplicaStatus::Deleting,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Stored length of the chunk.
    pub len: u32,
    /// Layout references to it.
    pub refcount: u64,
    /// When the refcount last became zero (Some iff refcount is zero).
    pub zero_since_ms: Option<u64>,
    pub created_ms: u64,
    pub replicas: BTreeMap<String, ReplicaStatus>,
    /// Layout references by the replication of the file holding them: a
    /// chunk shared by several files (hard links, dedup) wants the highest
    /// (see [`crate::replication::wanted`]). Sums to `refcount`.
    #[serde(default)]
    pub wants: BTreeMap<u32, u64>,
}

/// The persisted part of a storage node; liveness is soft state elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub address: String,
    pub capacity: u64,
    pub decommissioned: bool,
}

/// Everything the metadata service persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub inodes: Table<u64, Inode>,
    pub dirs: Table<u64, Dir>,
    /// File layouts: chunk index -> reference; a missing index is a hole.
    pub layouts: Table<u64, BTreeMap<u64, ChunkRef>>,
    pub chunks: Table<ChunkId, Chunk>,
    pub nodes: BTreeMap<String, Node>,
    pub next_ino: u64,
    pub next_cookie: u64,
    /// Inodes with no name left that a client still has open: ino -> lease
    /// expiry (ms since the epoch). Freed at release or expiry.
    #[serde(default)]
    pub orphans: BTreeMap<u64, u64>,
    /// The repair queue and the trash (self-healing).
    #[serde(default)]
    pub heal: crate::heal::HealState,
    /// The last answer per client request slot (exactly-once mutations).
    #[serde(default)]
    pub clients: clients::Clients,
    /// Byte-range locks held by mounts (see `locks`).
    #[serde(default)]
    pub locks: crate::locks::Locks,
    /// Deleted and overwritten files kept for recovery (`trash`).
    #[serde(default)]
    pub trash: trash::Trash,
    /// Inodes of read-only snapshots: every change to them is refused
    /// (EROFS), except removing them.
    #[serde(default)]
    pub read_only: std::collections::BTreeSet<u64>,
    /// Directory quotas: limits and usage, by directory (see `quota`).
    #[serde(default)]
    pub quotas: BTreeMap<u64, crate::quota::Quota>,
    /// Orphans made by `open(O_TMPFILE)` without `O_EXCL`: the only files
    /// with no name that a Link may name (see `tmpfile`).
    #[serde(default)]
    pub tmpfiles: std::collections::BTreeSet<u64>,
    /// Small files' bytes kept in the metadata (see `inline`).
    #[serde(default)]
    pub inline: crate::inline::Inline,
    /// Each storage node's receipt key (see `receipts`).
    #[serde(default)]
    pub receipt_keys: BTreeMap<String, crate::receipts::NodeKey>,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// An empty file system: the root directory only.
    pub fn new() -> Self {
        let root = Inode {
            kind: Kind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            nlink: 2,
            chunk_size: 0,
            replication: 0,
            version: 0,
            symlink_target: String::new(),
            parent: ROOT_INO,
            allocated: 0,
            xattrs: BTreeMap::new(),
            rdev: 0,
        };
        State {
            inodes: Table::unit(ROOT_INO, root),
            dirs: Table::unit(ROOT_INO, Dir::default()),
            layouts: Table::new(),
            chunks: Table::new(),
            nodes: BTreeMap::new(),
            next_ino: ROOT_INO + 1,
            next_cookie: 1,
            orphans: BTreeMap::new(),
            heal: crate::heal::HealState::default(),
            clients: clients::Clients::default(),
            locks: crate::locks::Locks::default(),
            trash: trash::Trash::default(),
            read_only: Default::default(),
            quotas: BTreeMap::new(),
            tmpfiles: Default::default(),
            inline: Default::default(),
            receipt_keys: BTreeMap::new(),
        }
    }

    pub fn inode(&self, ino: u64) -> Result<&Inode, MetaError> {
        self.inodes
            .get(&ino)
            .ok_or_else(|| MetaError::ns(bigfs_proto::errno::ENOENT, format!("no inode {ino}")))
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<pb::Attr, MetaError> {
        Ok(self.inode(ino)?.to_attr(ino))
    }
}

/// One mutation of the state. Every field the outcome depends on is here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    // Variants are encoded by position in the Raft log and snapshots: a new
    // one goes at the end, and an existing one keeps its fields (a change
    // of fields, as Unlink and Rename gained `trash_retention_ms`, is a new
    // log format version: `raft::log::HARD_VERSION`).
    Create {
        parent: u64,
        name: String,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        symlink_target: String,
        exclusive: bool,
        /// Device number of a new device node.
        #[serde(default)]
        rdev: u32,
        /// Chunk size and replication of a new file (cluster defaults).
        chunk_size: u32,
        replication: u32,
        now: Time,
    },
    SetAttr {
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Time>,
        mtime: Option<Time>,
        now: Time,
    },
    Link {
        ino: u64,
        new_parent: u64,
        new_name: String,
        now: Time,
    },
    Unlink {
        parent: u64,
        name: String,
        /// Keep the inode this long if its last name goes (open elsewhere).
        #[serde(default)]
        open_lease_ms: u64,
        now: Time,
        /// Keep a file whose last name goes in the trash this long (the
        /// leader's `trash_retention_ms`; 0: free it).
        #[serde(default)]
        trash_retention_ms: u64,
    },
    Rmdir {
        parent: u64,
        name: String,
        now: Time,
    },
    Rename {
        parent: u64,
        name: String,
        new_parent: u64,
        new_name: String,
        noreplace: bool,
        exchange: bool,
        #[serde(default)]
        open_lease_ms: u64,
        now: Time,
        /// As for `Unlink`: the trash retention of a replaced file.
        #[serde(default)]
        trash_retention_ms: u64,
    },
    CommitLayout {
        ino: u64,
        /// (index, chunk, bytes used).
        chunks: Vec<(u64, ChunkId, u32)>,
        size: u64,
        mtime: Time,
        now: Time,
    },
    RegisterChunk {
        id: ChunkId,
        len: u32,
        node: String,
        designated: Vec<String>,
        now_ms: u64,
        /// Other nodes that already hold a verified copy.
        #[serde(default)]
        confirmed: Vec<String>,
    },
    ConfirmReplica {
        id: ChunkId,
        node: String,
    },
    RemoveReplica {
        id: ChunkId,
        node: String,
    },
    /// Adds or updates a node, and applies its inventory reconciliation
    /// (computed by `chunks::reconcile` under the same lock).
    RegisterNode {
        node_id: String,
        address: String,
        capacity: u64,
        /// Chunks listed for the node but missing from its inventory.
        lost: Vec<ChunkId>,
        /// Pending replicas the inventory shows present.
        confirmed: Vec<ChunkId>,
    },
    /// Sets a chunk's reference count (`fsck --repair` fixing drift).
    SetRefcount {
        id: ChunkId,
        refcount: u64,
        now_ms: u64,
    },
    /// Sets (flags: 1 create-only, 2 replace-only) an extended attribute.
    SetXattr {
        ino: u64,
        name: String,
        value: Vec<u8>,
        flags: u32,
        now: Time,
    },
    RemoveXattr {
        ino: u64,
        name: String,
        now: Time,
    },
    /// Extends the leases of open-but-unlinked inodes to `until_ms`.
    KeepInodes {
        inos: Vec<u64>,
        until_ms: u64,
    },
    /// Frees an open-but-unlinked inode (its last open closed).
    ReleaseInode {
        ino: u64,
        now: Time,
    },
    /// Frees open-but-unlinked inodes whose lease ended before `now`.
    ExpireOrphans {
        now: Time,
    },
    /// Repair queue, garbage collection, decommission (see `heal`).
    Heal(crate::heal::HealCommand),
    /// A client's mutation named by its request id: a retry of it is
    /// answered from the clients table instead of being applied again.
    Once(clients::Once),
    /// Access times recorded by mounts from reads: each inode's atime moves
    /// forward to its time (never back); ctime and version stay.
    RecordAccess {
        times: Vec<(u64, Time)>,
    },
    /// Byte-range locks (see `locks`).
    Lock(crate::locks::LockCommand),
    /// Frees trashed files whose retention ended at or before `now`.
    ExpireTrash {
        now: Time,
    },
    /// Frees the trashed files among `inos` (`bigfs trash purge`).
    PurgeTrash {
        inos: Vec<u64>,
        now: Time,
    },
    /// Gives trashed file `ino` the name `path` again, recreating missing
    /// parent directories.
    RestoreTrash {
        ino: u64,
        path: String,
        now: Time,
    },
    /// Copies the tree at `src` to `dst_name` in `dst_parent`, sharing its
    /// chunks (`bigfs snapshot`); refused past `max_inodes`.
    Snapshot {
        src: u64,
        dst_parent: u64,
        dst_name: String,
        max_inodes: u64,
        read_only: bool,
        now: Time,
    },
    /// Sets the wanted copies of a file, or of a directory (what new
    /// entries inherit) and, with `recursive`, of everything below it.
    SetReplication {
        ino: u64,
        replication: u32,
        recursive: bool,
        now: Time,
    },
    /// Sets or clears a directory's quota.
    SetQuota {
        ino: u64,
        change: crate::quota::QuotaChange,
    },
    /// A `Create` (the only command it may hold) from a mount that leaves
    /// the umask to the file system, as it must with POSIX ACLs: `umask`
    /// masks the mode unless the parent directory has a default ACL.
    CreateMasked {
        umask: u32,
        create: Box<Command>,
    },
    /// Makes a regular file with no name for `open(O_TMPFILE)` in
    /// directory `parent`: an orphan kept `open_lease_ms` (renewed like a
    /// file unlinked while open); `linkable` (no `O_EXCL`) lets a Link
    /// give it a name (see `tmpfile`).
    TmpFile {
        parent: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        linkable: bool,
        open_lease_ms: u64,
        /// Chunk size and replication (cluster defaults).
        chunk_size: u32,
        replication: u32,
        now: Time,
    },
    /// A `CommitLayout` whose chunk index 0 is kept inline: `data` replaces
    /// whatever index 0 held (see `inline`). `budget` is the most inline
    /// bytes the state may hold after it (the leader's configuration).
    CommitInline {
        ino: u64,
        /// (index, chunk, bytes used), none at index 0.
        chunks: Vec<(u64, ChunkId, u32)>,
        data: bytes::Bytes,
        size: u64,
        mtime: Time,
        budget: u64,
        /// Copies inline bytes get (the metadata members): a file wanting
        /// more is refused.
        max_replication: u32,
        now: Time,
    },
    /// A storage node's new receipt key, made by the leader when the node
    /// registers (proposed right after its `RegisterNode`); the previous
    /// one verifies for a short grace (see `receipts`).
    SetReceiptKey {
        node: String,
        key: bigfs_proto::receipt::ReceiptKey,
        now_ms: u64,
    },
}

impl Command {
    /// Whether the command goes to the log even when `apply` refuses it: a
    /// named command remembers its refusal, so replay must see it too.
    pub fn logged_when_refused(&self) -> bool {
        matches!(self, Command::Once(_))
    }
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The inode the command created, found or changed.
    Ino(u64),
    Done,
    /// A snapshot's new root and what it copied.
    Copied {
        ino: u64,
        inodes: u64,
        chunk_refs: u64,
    },
    /// How many things the command changed.
    Count(u64),
}

#[cfg(test)]
impl State {
    /// Registers nodes named `names` (address "NAME:1") with `capacity`.
    pub(crate) fn add_test_nodes(&mut self, names: &[&str], capacity: u64) {
        for n in names {
            self.nodes.insert(
                n.to_string(),
                Node {
                    address: format!("{n}:1"),
                    capacity,
                    decommissioned: false,
                },
            );
        }
    }
}

#[cfg(test)]
impl Command {
    /// A `SetAttr` that only sets the size, for tests.
    pub(crate) fn resize_for_test(ino: u64, size: u64, now: Time) -> Command {
        Command::SetAttr {
            ino,
            mode: None,
            uid: None,
            gid: None,
            size: Some(size),
            atime: None,
            mtime: None,
            now,
        }
    }

    /// A `Create` for tests: mode 0o755 for a directory and 0o644 otherwise,
    /// owner 0:0, exclusive, no device number, 1 MiB chunks, replication 2.
    pub(crate) fn create_for_test(parent: u64, name: &str, kind: Kind, now: Time) -> Command {
        Command::Create {
            parent,
            name: name.into(),
            kind,
            mode: if kind == Kind::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            symlink_target: String::new(),
            exclusive: true,
            rdev: 0,
            chunk_size: 1 << 20,
            replication: 2,
            now,
        }
    }
}

/// Applies one command. Deterministic; an `Err` leaves `state` unchanged.
pub fn apply(state: &mut State, cmd: &Command) -> Result<Reply, MetaError> {
    match cmd {
        Command::Create { .. } => create(state, cmd, 0),
        Command::SetAttr {
            ino,
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            now,
        } => namespace::set_attr(
            state,
            *ino,
            &namespace::AttrChange {
                mode: *mode,
                uid: *uid,
                gid: *gid,
                size: *size,
                atime: *atime,
                mtime: *mtime,
            },
            *now,
        )
        .map(|()| Reply::Ino(*ino)),
        Command::Link {
            ino,
            new_parent,
            new_name,
            now,
        } => namespace::link(state, *ino, *new_parent, new_name, *now).map(|()| Reply::Ino(*ino)),
        Command::Unlink {
            parent,
            name,
            open_lease_ms,
            now,
            trash_retention_ms,
        } => namespace::unlink(
            state,
            *parent,
            name,
            LastLink {
                open_lease_ms: *open_lease_ms,
                trash_retention_ms: *trash_retention_ms,
            },
            *now,
        )
        .map(|()| Reply::Done),
        Command::Rmdir { parent, name, now } => {
            namespace::rmdir(state, *parent, name, *now).map(|()| Reply::Done)
        }
        Command::Rename {
            parent,
            name,
            new_parent,
            new_name,
            noreplace,
            exchange,
            open_lease_ms,
            now,
            trash_retention_ms,
        } => namespace::rename(
            state,
            (*parent, name),
            (*new_parent, new_name),
            (*noreplace, *exchange),
            LastLink {
                open_lease_ms: *open_lease_ms,
                trash_retention_ms: *trash_retention_ms,
            },
            *now,
        )
        .map(|()| Reply::Done),
        Command::CommitLayout {
            ino,
            chunks,
            size,
            mtime,
            now,
        } => chunks::commit_layout(state, *ino, chunks, *size, *mtime, *now)
            .map(|()| Reply::Ino(*ino)),
        Command::RegisterChunk {
            id,
            len,
            node,
            designated,
            now_ms,
            confirmed,
        } => chunks::register_chunk(state, *id, *len, (node, confirmed), designated, *now_ms)
            .map(|()| Reply::Done),
        Command::ConfirmReplica { id, node } => {
            chunks::confirm_replica(state, *id, node).map(|()| Reply::Done)
        }
        Command::RemoveReplica { id, node } => {
            chunks::remove_replica(state, *id, node);
            Ok(Reply::Done)
        }
        Command::RegisterNode {
            node_id,
            address,
            capacity,
            lost,
            confirmed,
        } => {
            chunks::register_node(state, node_id, address, *capacity, lost, confirmed);
            Ok(Reply::Done)
        }
        Command::SetRefcount {
            id,
            refcount,
            now_ms,
        } => {
            crate::fsck::set_refcount(state, *id, *refcount, *now_ms);
            Ok(Reply::Done)
        }
        Command::SetXattr {
            ino,
            name,
            value,
            flags,
            now,
        } => xattr::set(state, *ino, name, value, *flags, *now).map(|()| Reply::Done),
        Command::RemoveXattr { ino, name, now } => {
            xattr::remove(state, *ino, name, *now).map(|()| Reply::Done)
        }
        Command::KeepInodes { inos, until_ms } => {
            orphans::keep(state, inos, *until_ms);
            Ok(Reply::Done)
        }
        Command::ReleaseInode { ino, now } => {
            orphans::release(state, *ino, *now);
            Ok(Reply::Done)
        }
        Command::RecordAccess { times } => {
            namespace::record_access(state, times);
            Ok(Reply::Done)
        }
        Command::ExpireOrphans { now } => {
            orphans::expire(state, *now);
            Ok(Reply::Done)
        }
        Command::Heal(h) => crate::heal::apply(state, h).map(|()| Reply::Done),
        Command::Lock(l) => crate::locks::apply(state, l).map(|()| Reply::Done),
        Command::ExpireTrash { now } => {
            trash::expire(state, *now);
            Ok(Reply::Done)
        }
        Command::PurgeTrash { inos, now } => {
            trash::purge(state, inos, *now);
            Ok(Reply::Done)
        }
        Command::RestoreTrash { ino, path, now } => {
            trash::restore(state, *ino, path, *now).map(|()| Reply::Ino(*ino))
        }
        Command::Snapshot {
            src,
            dst_parent,
            dst_name,
            max_inodes,
            read_only,
            now,
        } => {
            let next = state.next_ino;
            crate::snapshot::snapshot(
                state,
                *src,
                (*dst_parent, dst_name),
                (*max_inodes, *read_only),
                *now,
            )
            .map(|c| Reply::Copied {
                ino: next,
                inodes: c.inodes,
                chunk_refs: c.chunk_refs,
            })
        }
        Command::Once(once) => clients::apply(state, once),
        Command::SetReplication {
            ino,
            replication,
            recursive,
            now,
        } => crate::replication::set(state, *ino, *replication, *recursive, *now).map(Reply::Count),
        Command::SetQuota { ino, change } => {
            crate::quota::set(state, *ino, change).map(|()| Reply::Ino(*ino))
        }
        Command::CreateMasked { umask, create: c } => create(state, c, *umask),
        Command::TmpFile {
            parent,
            mode,
            uid,
            gid,
            linkable,
            open_lease_ms,
            chunk_size,
            replication,
            now,
        } => crate::tmpfile::create(
            state,
            &namespace::NewInode {
                parent: *parent,
                name: "",
                kind: Kind::File,
                mode: *mode,
                uid: *uid,
                gid: *gid,
                symlink_target: "",
                exclusive: true,
                rdev: 0,
                chunk_size: *chunk_size,
                replication: *replication,
                umask: 0,
            },
            (*linkable, *open_lease_ms),
            *now,
        )
        .map(Reply::Ino),
        Command::CommitInline {
            ino,
            chunks,
            data,
            size,
            mtime,
            budget,
            max_replication,
            now,
        } => crate::inline::commit(
            state,
            &crate::inline::InlineCommit {
                ino: *ino,
                chunks,
                data,
                size: *size,
                mtime: *mtime,
                budget: *budget,
                max_replication: *max_replication,
            },
            *now,
        )
        .map(|()| Reply::Ino(*ino)),
        Command::SetReceiptKey { node, key, now_ms } => {
            if !state.nodes.contains_key(node) {
                return Err(MetaError::FailedPrecondition(format!(
                    "node {node:?} is not registered"
                )));
            }
            crate::receipts::set_key(state, node, *key, *now_ms);
            Ok(Reply::Done)
        }
    }
}

/// Applies `Command::Create` `cmd`, masking its mode with `umask` unless
/// the parent has a default ACL (`acl::inherit`).
fn create(state: &mut State, cmd: &Command, umask: u32) -> Result<Reply, MetaError> {
    let Command::Create {
        parent,
        name,
        kind,
        mode,
        uid,
        gid,
        symlink_target,
        exclusive,
        rdev,
        chunk_size,
        replication,
        now,
    } = cmd
    else {
        return Err(MetaError::InvalidArgument(
            "CreateMasked holds a command other than Create".into(),
        ));
    };
    namespace::create(
        state,
        &namespace::NewInode {
            parent: *parent,
            name,
            kind: *kind,
            mode: *mode,
            uid: *uid,
            gid: *gid,
            symlink_target,
            exclusive: *exclusive,
            rdev: *rdev,
            chunk_size: *chunk_size,
            replication: *replication,
            umask,
        },
        *now,
    )
    .map(Reply::Ino)
}
