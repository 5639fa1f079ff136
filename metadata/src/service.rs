//! The tonic `Metadata` service: validates requests, reads the state or
//! builds a command (filling in the time and the placement choices), logs
//! and applies it, and answers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bigfs_proto::ChunkId;
use bigfs_proto::pb::{self, NodeState, metadata_server::Metadata};
use tonic::{Request, Response, Status};

use crate::chunks;
use crate::clients;
use crate::config::Config;
use crate::error::MetaError;
use crate::exports::{Exports, Scope};
use crate::failures::{FailureLog, FailureReport};
use crate::liveness::Liveness;
use crate::machine::Core;
use crate::namespace;
use crate::placement::{self, Candidate};
use crate::raft::Consensus;
use crate::receipts;
use crate::registration;
use crate::state::{Command, Kind, ReplicaStatus, Reply, State, Time};
use crate::validate::{self, chunk_id, chunk_len, file_size, node_field};

#[path = "service_settings.rs"]
mod settings;

struct Inner {
    consensus: Consensus,
    live: Mutex<Liveness>,
    failures: Mutex<FailureLog>,
    config: Config,
    /// Who may mount what (`exports_file`); replaced on SIGHUP.
    exports: std::sync::RwLock<Arc<Exports>>,
    #[cfg(debug_assertions)]
    drop_replies: Mutex<Option<crate::fault::DropReplies>>,
}

/// The Metadata gRPC service.
#[derive(Clone)]
pub struct MetadataService {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, MetaError> {
    m.lock()
        .map_err(|_| MetaError::Internal("a metadata lock is poisoned".into()))
}

/// Rank of a replica's node for reads: Up first, then Suspect, then Down.
fn read_rank(s: NodeState) -> u8 {
    match s {
        NodeState::Up => 0,
        NodeState::Suspect => 1,
        _ => 2,
    }
}

impl MetadataService {
    /// Starts this metadata member in `config.data_dir` (its Raft log and
    /// state machine), reachable by the other members at `my_addr`.
    pub async fn open(config: Config, my_addr: String) -> Result<Self, MetaError> {
        let dir = config.data_dir.clone();
        let legacy = tokio::task::spawn_blocking(move || crate::store::load_legacy(&dir))
            .await
            .map_err(|e| MetaError::Internal(format!("migration task: {e}")))??;
        let consensus = crate::raft::start(&config, legacy, my_addr).await?;
        let exports = match &config.exports_file {
            Some(path) => Exports::load(path).map_err(MetaError::InvalidArgument)?,
            None => Exports::open(),
        };
        let live = Liveness::new(
            Duration::from_millis(config.suspect_after_ms),
            Duration::from_millis(config.down_after_ms),
        );
        Ok(MetadataService {
            inner: Arc::new(Inner {
                consensus,
                live: Mutex::new(live),
                failures: Mutex::new(FailureLog::new(config.recent_failures)),
                config,
                exports: std::sync::RwLock::new(Arc::new(exports)),
                #[cfg(debug_assertions)]
                drop_replies: Mutex::new(crate::fault::DropReplies::from_env()),
            }),
        })
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Reads the exports file again (on SIGHUP): the new rules apply to
    /// the next request. A file that does not parse leaves the old rules.
    pub fn reload_exports(&self) -> Result<usize, String> {
        let Some(path) = &self.inner.config.exports_file else {
            return Ok(0);
        };
        let fresh = Exports::load(path)?;
        let n = fresh.len();
        *self
            .inner
            .exports
            .write()
            .map_err(|_| "the exports lock is poisoned".to_string())? = Arc::new(fresh);
        Ok(n)
    }

    /// What the caller of `request` may touch (its export).
    pub(crate) fn scope<T>(&self, request: &Request<T>) -> Result<Scope, Status> {
        let caller = bigfs_proto::auth::caller(request)?;
        let exports = self
            .inner
            .exports
            .read()
            .map_err(|_| Status::internal("the exports lock is poisoned"))?
            .clone();
        let scope = Scope::of(&exports, caller, request.remote_addr().map(|a| a.ip()))?;
        match request.metadata().get(bigfs_proto::leader::SUBDIR_HEADER) {
            None => Ok(scope),
            Some(v) => scope.within(
                v.to_str()
                    .map_err(|_| Status::invalid_argument("the subdir header is not text"))?,
            ),
        }
    }

    /// The server's inodes for a confined client's `inos`, each checked to
    /// lie in its export (`writable`: refused on a read-only export).
    /// Unconfined callers pay nothing.
    pub(crate) async fn confine<const N: usize>(
        &self,
        scope: &Scope,
        writable: bool,
        inos: [u64; N],
    ) -> Result<[u64; N], Status> {
        if writable {
            scope.writable()?;
        }
        if *scope == Scope::Full {
            return Ok(inos);
        }
        let scope = scope.clone();
        self.with(move |core, _, _| {
            let mut out = inos;
            for i in &mut out {
                *i = scope.inode(&core.state, *i)?;
            }
            Ok(out)
        })
        .await
    }

    /// The Raft member this service runs on.
    pub fn consensus(&self) -> &Consensus {
        &self.inner.consensus
    }

    /// Runs `f` on the state (and liveness) once this member has confirmed
    /// it leads (a linearizable read), then proposes, in order, the
    /// commands `f` queued with [`Core::propose`]. Answers `f`'s value, or
    /// the first refusal of a proposed command.
    pub(crate) async fn with<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut Core, &mut Liveness, &Config) -> Result<T, MetaError> + Send + 'static,
    {
        self.inner.consensus.read_barrier().await?;
        let (out, queued) = self.with_local(f)?;
        let mut first_err = None;
        for q in queued {
            if let Err(e) = self.execute(q.cmd).await {
                match q.warn {
                    Some(what) => tracing::warn!(error = %e.message(), "{what} failed"),
                    None => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Runs `f` on this member's state as it is, leader or not, and hands
    /// back what it queued.
    fn with_local<T, F>(&self, f: F) -> Result<(T, Vec<crate::machine::Queued>), Status>
    where
        F: FnOnce(&mut Core, &mut Liveness, &Config) -> Result<T, MetaError>,
    {
        let inner = &self.inner;
        let out = (|| {
            let mut core = lock(&inner.consensus.core)?;
            let mut live = lock(&inner.live)?;
            let out = f(&mut core, &mut live, &inner.config);
            let queued = std::mem::take(&mut core.queued);
            out.map(|o| (o, queued))
        })();
        out.map_err(Status::from)
    }

    /// Runs `f` on a read-only view of this member's state, liveness,
    /// configuration and recent failures (for the admin HTTP pages, which
    /// a follower serves from its own, possibly lagging, copy).
    pub async fn inspect<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&State, &Liveness, &Config, &FailureLog) -> T + Send + 'static,
    {
        let inner = self.inner.clone();
        // The state's copy takes constant time (its tables share nodes
        // with the original), so `f` runs outside the lock: counting ten
        // million files for a status page holds up no request.
        let (copy, _) = self.with_local(move |core, live, config| {
            let failures = lock(&inner.failures)?;
            Ok((
                core.state.clone(),
                live.clone(),
                config.clone(),
                failures.clone(),
            ))
        })?;
        tokio::task::spawn_blocking(move || {
            let (state, live, config, failures) = copy;
            f(&state, &live, &config, &failures)
        })
        .await
        .map_err(|e| Status::internal(format!("inspecting the state: {e}")))
    }

    /// The status report (nodes, namespace and chunk counters), read after
    /// a read barrier and counted off the lock.
    pub(crate) async fn status_report(&self) -> Result<pb::StatusReply, Status> {
        self.inner.consensus.read_barrier().await?;
        self.inspect(|state, live, config, _| crate::status::status(state, live, config))
            .await
    }

    /// Proposes `cmd` through the Raft group and answers what applying it
    /// answered. A retried client mutation already answered is answered
    /// from the clients table without a proposal.
    pub(crate) async fn execute(&self, cmd: Command) -> Result<Reply, Status> {
        if let Command::Once(once) = &cmd {
            let id = once.id;
            let (answer, _) =
                self.with_local(move |core, _, _| Ok(core.state.clients.answered(id)))?;
            if let Some(answer) = answer {
                tracing::info!(
                    client = %format_args!("{:016x}", id.client),
                    slot = id.slot,
                    seq = id.seq,
                    "retried request answered from the clients table"
                );
                return answer.map_err(Status::from);
            }
        }
        #[cfg(debug_assertions)]
        let named = matches!(cmd, Command::Once(_));
        let out = self.inner.consensus.propose(cmd).await;
        #[cfg(debug_assertions)]
        if named
            && out.is_ok()
            && lock(&self.inner.drop_replies)?
                .as_mut()
                .is_some_and(|d| d.drop_this())
        {
            return Err(Status::unavailable(
                "test fault: reply dropped after the command was applied",
            ));
        }
        out
    }

    /// Frees open-but-unlinked inodes whose lease ran out (their client
    /// died without closing them). Leader only.
    pub async fn expire_orphans(&self) -> Result<(), Status> {
        if !self.inner.consensus.is_leader() {
            return Ok(());
        }
        self.with(move |core, _, _| {
            let now = Time::now();
            if crate::orphans::any_expired(&core.state, now.as_ms()) {
                core.propose(Command::ExpireOrphans { now });
            }
            Ok(())
        })
        .await
    }

    /// Frees trashed files whose retention ended (a batch per call).
    /// Leader only: the time is chosen here, before proposing.
    pub async fn expire_trash(&self) -> Result<(), Status> {
        if !self.inner.consensus.is_leader() {
            return Ok(());
        }
        self.with(move |core, _, _| {
            let now = Time::now();
            if core.state.trash.any_expired(now.as_ms()) {
                core.propose(Command::ExpireTrash { now });
            }
            Ok(())
        })
        .await
    }

    /// Counts every registered node as just heard from (with the capacity
    /// it registered), unless already heard: a new leader gives the nodes
    /// a heartbeat period to find it before calling them Suspect or Down.
    pub fn grant_liveness_grace(&self) {
        let r = self.with_local(|core, live, _| {
            let now = Instant::now();
            live.grace_from(now);
            for (id, n) in &core.state.nodes {
                if live.get(id).is_none_or(|s| s.last_heartbeat.is_none()) {
                    live.heard(id, n.capacity, 0, 0, now);
                }
            }
            Ok(core.state.nodes.len())
        });
        if let Ok((nodes, _)) = r {
            tracing::info!(nodes, "storage nodes given a heartbeat grace period");
        }
    }

    /// Runs a command built from the request and answers the inode's attr
    /// (as the caller's scope numbers it), with the attrs after it of the
    /// directories in `dirs` (see `AttrReply.dirs`).
    async fn execute_attr(
        &self,
        scope: Scope,
        cmd: Command,
        dirs: Vec<u64>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let ino = match self.execute(cmd).await? {
            Reply::Ino(ino) => ino,
            Reply::Done | Reply::Count(_) | Reply::Copied { .. } => {
                return Err(Status::internal("command returned no inode"));
            }
        };
        let ((attr, dirs), _) = self.with_local(move |core, _, _| {
            let attr = scope.attr(&core.state, ino)?;
            Ok((attr, dir_attrs(&scope, &core.state, dirs)))
        })?;
        Ok(Response::new(pb::AttrReply {
            attr: Some(attr),
            dirs,
        }))
    }

    /// Runs a command that changes entries of `dirs` and answers their
    /// attrs after it.
    async fn execute_dirs(
        &self,
        scope: Scope,
        cmd: Command,
        dirs: Vec<u64>,
    ) -> Result<Response<pb::DirsReply>, Status> {
        self.execute(cmd).await?;
        let (dirs, _) =
            self.with_local(move |core, _, _| Ok(dir_attrs(&scope, &core.state, dirs)))?;
        Ok(Response::new(pb::DirsReply { dirs }))
    }

    /// Names `cmd` with the request's id, if it carries one, so that a
    /// retry of the request is answered from the clients table.
    /// The copies bytes kept inline get: one per voting member.
    fn inline_copies(&self) -> u32 {
        u32::try_from(self.inner.consensus.voters()).unwrap_or(u32::MAX)
    }

    fn once(&self, id: Option<pb::RequestId>, cmd: Command) -> Command {
        let Some(id) = id else {
            return cmd;
        };
        let now_ms = bigfs_proto::now_ms();
        Command::Once(clients::Once {
            id: clients::RequestId {
                client: id.client,
                slot: id.slot,
                seq: id.seq,
            },
            now_ms,
            expires_ms: now_ms.saturating_add(self.inner.config.client_reply_ttl_ms),
            cmd: Box::new(cmd),
        })
    }

    /// Where a new inode goes and whom it belongs to: the server's inode
    /// for directory `parent` (writable, in the caller's export) and the
    /// owner as the export stores it (`squash`).
    async fn new_inode_in(
        &self,
        scope: &Scope,
        parent: u64,
        uid: u32,
        gid: u32,
    ) -> Result<(u64, u32, u32), Status> {
        let [parent] = self.confine(scope, true, [parent]).await?;
        let (uid, gid) = scope.owner(uid, gid);
        Ok((parent, uid, gid))
    }

    async fn execute_empty(&self, cmd: Command) -> Result<Response<pb::Empty>, Status> {
        self.execute(cmd).await.map(|_| Response::new(pb::Empty {}))
    }
}

/// Placement candidates: every registered node with its liveness.
fn candidates(state: &State, live: &Liveness, now: Instant) -> Vec<Candidate> {
    state
        .nodes
        .iter()
        .map(|(id, n)| Candidate {
            node_id: id.clone(),
            usable: live.state(id, n.decommissioned, now) == NodeState::Up,
            free: live.free(id).unwrap_or(0),
        })
        .collect()
}

fn is_up(state: &State, live: &Liveness, node: &str, now: Instant) -> bool {
    let decom = state.nodes.get(node).is_some_and(|n| n.decommissioned);
    live.state(node, decom, now) == NodeState::Up
}

fn location(state: &State, node: &str, status: ReplicaStatus) -> pb::ReplicaLocation {
    pb::ReplicaLocation {
        node_id: node.to_string(),
        address: state
            .nodes
            .get(node)
            .map(|n| n.address.clone())
            .unwrap_or_default(),
        status: status.to_pb() as i32,
    }
}

/// The attrs of `dirs` as `scope` numbers them, each once; a directory
/// gone or out of scope is left out (the mount then asks for it).
fn dir_attrs(scope: &Scope, state: &State, mut dirs: Vec<u64>) -> Vec<pb::Attr> {
    dirs.dedup();
    dirs.into_iter()
        .filter_map(|d| scope.attr(state, d).ok())
        .collect()
}

fn replication_or_default(r: u32, config: &Config) -> u32 {
    if r == 0 { config.replication } else { r }
}

#[tonic::async_trait]
impl Metadata for MetadataService {
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        self.with(move |core, _, _| {
            let st = &core.state;
            let ino = namespace::lookup(st, scope.inode(st, r.parent)?, &r.name)?;
            Ok(pb::AttrReply {
                attr: Some(scope.attr(st, ino)?),
                dirs: Vec::new(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn resolve_path(
        &self,
        request: Request<pb::ResolvePathRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::path(&r.path)?;
        self.with(move |core, _, _| {
            let ino = namespace::resolve_path(&core.state, &scope.path(&r.path))?;
            Ok(pb::AttrReply {
                attr: Some(scope.attr(&core.state, ino)?),
                dirs: Vec::new(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn get_attr(
        &self,
        request: Request<pb::InodeRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let ino = request.into_inner().ino;
        self.with(move |core, _, _| {
            let st = &core.state;
            Ok(pb::AttrReply {
                attr: Some(scope.attr(st, ino)?),
                dirs: Vec::new(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn set_attr(
        &self,
        request: Request<pb::SetAttrRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        if let Some(size) = r.size {
            file_size(size)?;
        }
        scope.chown(r.uid, r.gid)?;
        let [ino] = self.confine(&scope, true, [r.ino]).await?;
        self.execute_attr(
            scope,
            self.once(
                r.id,
                Command::SetAttr {
                    ino,
                    mode: r.mode,
                    uid: r.uid,
                    gid: r.gid,
                    size: r.size,
                    atime: r.atime.as_ref().map(Time::from_pb),
                    mtime: r.mtime.as_ref().map(Time::from_pb),
                    now: Time::now(),
                },
            ),
            vec![],
        )
        .await
    }

    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::name(&r.name).and_then(|()| validate::symlink_target(&r.symlink_target))?;
        let kind = Kind::from_pb(r.kind).ok_or_else(|| {
            MetaError::InvalidArgument(format!("kind {} is not a known file kind", r.kind))
        })?;
        let (parent, uid, gid) = self.new_inode_in(&scope, r.parent, r.uid, r.gid).await?;
        let config = &self.inner.config;
        let create = Command::Create {
            parent,
            name: r.name,
            kind,
            mode: r.mode,
            uid,
            gid,
            symlink_target: r.symlink_target,
            exclusive: r.exclusive,
            rdev: r.rdev,
            chunk_size: config.chunk_size,
            replication: config.replication,
            now: Time::now(),
        };
        let cmd = match r.umask {
            Some(umask) => Command::CreateMasked {
                umask,
                create: Box::new(create),
            },
            None => create,
        };
        self.execute_attr(scope, self.once(r.id, cmd), vec![parent])
            .await
    }

    async fn link(
        &self,
        request: Request<pb::LinkRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::name(&r.new_name)?;
        let [ino, new_parent] = self.confine(&scope, true, [r.ino, r.new_parent]).await?;
        self.execute_attr(
            scope,
            self.once(
                r.id,
                Command::Link {
                    ino,
                    new_parent,
                    new_name: r.new_name,
                    now: Time::now(),
                },
            ),
            vec![new_parent],
        )
        .await
    }

    async fn tmp_file(
        &self,
        request: Request<pb::TmpFileRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        let (parent, uid, gid) = self.new_inode_in(&scope, r.parent, r.uid, r.gid).await?;
        self.execute_attr(
            scope,
            self.once(
                r.id,
                Command::TmpFile {
                    parent,
                    mode: r.mode,
                    uid,
                    gid,
                    linkable: r.linkable,
                    open_lease_ms: r.open_lease_ms,
                    chunk_size: self.inner.config.chunk_size,
                    replication: self.inner.config.replication,
                    now: Time::now(),
                },
            ),
            vec![],
        )
        .await
    }

    async fn unlink(
        &self,
        request: Request<pb::NameRequest>,
    ) -> Result<Response<pb::DirsReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::name(&r.name)?;
        let [parent] = self.confine(&scope, true, [r.parent]).await?;
        let cmd = self.once(
            r.id,
            Command::Unlink {
                parent,
                name: r.name,
                open_lease_ms: r.open_lease_ms,
                now: Time::now(),
                trash_retention_ms: self.config().trash_retention_ms,
            },
        );
        self.execute_dirs(scope, cmd, vec![parent]).await
    }

    async fn rmdir(
        &self,
        request: Request<pb::NameRequest>,
    ) -> Result<Response<pb::DirsReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::name(&r.name)?;
        let [parent] = self.confine(&scope, true, [r.parent]).await?;
        let cmd = self.once(
            r.id,
            Command::Rmdir {
                parent,
                name: r.name,
                now: Time::now(),
            },
        );
        self.execute_dirs(scope, cmd, vec![parent]).await
    }

    async fn rename(
        &self,
        request: Request<pb::RenameRequest>,
    ) -> Result<Response<pb::DirsReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::name(&r.name).and_then(|()| validate::name(&r.new_name))?;
        let [parent, new_parent] = self.confine(&scope, true, [r.parent, r.new_parent]).await?;
        let cmd = self.once(
            r.id,
            Command::Rename {
                parent,
                name: r.name,
                new_parent,
                new_name: r.new_name,
                noreplace: r.noreplace,
                exchange: r.exchange,
                open_lease_ms: r.open_lease_ms,
                now: Time::now(),
                trash_retention_ms: self.config().trash_retention_ms,
            },
        );
        self.execute_dirs(scope, cmd, vec![parent, new_parent])
            .await
    }

    async fn read_dir(
        &self,
        request: Request<pb::ReadDirRequest>,
    ) -> Result<Response<pb::ReadDirReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        self.with(move |core, _, _| {
            let st = &core.state;
            let view = scope.view(st)?;
            let dir = view.inode(st, r.ino)?;
            let (list, eof) = namespace::read_dir(st, dir, r.offset, r.limit)?;
            let entries = list
                .into_iter()
                .filter_map(|e| {
                    // A confined client does not see a hard link whose
                    // file lives outside its export.
                    let attr = view.attr(st, e.ino).ok()?;
                    Some(pb::DirEntry {
                        name: e.name,
                        ino: e.ino,
                        kind: attr.kind,
                        cookie: e.cookie,
                        attr: Some(attr),
                    })
                })
                .collect();
            Ok(pb::ReadDirReply { entries, eof })
        })
        .await
        .map(Response::new)
    }

    async fn get_layout(
        &self,
        request: Request<pb::InodeRequest>,
    ) -> Result<Response<pb::LayoutReply>, Status> {
        let scope = self.scope(&request)?;
        let ino = request.into_inner().ino;
        self.with(move |core, live, _| {
            let st = &core.state;
            let view = scope.view(st)?;
            let ino = view.inode(st, ino)?;
            let attr = view.attr(st, ino)?;
            let now = Instant::now();
            let mut chunks = Vec::new();
            for (&index, r) in st.layouts.get(&ino).into_iter().flatten() {
                let c = st.chunks.get(&r.id);
                let mut replicas: Vec<(u8, &String)> = c
                    .into_iter()
                    .flat_map(|c| c.replicas.iter())
                    .filter(|(_, s)| **s == ReplicaStatus::Available)
                    .map(|(n, _)| {
                        let decom = st.nodes.get(n).is_some_and(|x| x.decommissioned);
                        (read_rank(live.state(n, decom, now)), n)
                    })
                    .collect();
                replicas.sort();
                chunks.push(pb::ChunkLocation {
                    chunk: Some(pb::ChunkRef {
                        index,
                        id: r.id.to_vec(),
                        len: r.len,
                    }),
                    stored_len: c.map_or(0, |c| c.len),
                    replicas: replicas
                        .into_iter()
                        .map(|(_, n)| location(st, n, ReplicaStatus::Available))
                        .collect(),
                });
            }
            Ok(pb::LayoutReply {
                attr: Some(attr),
                chunks,
                inline_data: st.inline.get(ino).cloned(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn commit_layout(
        &self,
        request: Request<pb::CommitLayoutRequest>,
    ) -> Result<Response<pb::AttrReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::commit_entries(r.chunks.len())?;
        let mut refs = Vec::with_capacity(r.chunks.len());
        for c in &r.chunks {
            refs.push((c.index, chunk_id(&c.id)?, chunk_len(c.len)?));
        }
        let [ino] = self.confine(&scope, true, [r.ino]).await?;
        let now = Time::now();
        let (size, mtime) = (
            file_size(r.size)?,
            r.mtime.as_ref().map_or(now, Time::from_pb),
        );
        let cmd = match r.inline_data {
            None => Command::CommitLayout {
                ino,
                chunks: refs,
                size,
                mtime,
                now,
            },
            Some(data) => {
                let config = &self.inner.config;
                if data.len() > config.inline_max_bytes as usize {
                    return Err(Status::failed_precondition(format!(
                        "{} inline bytes exceed inline_max_bytes ({}): store a chunk",
                        data.len(),
                        config.inline_max_bytes
                    )));
                }
                Command::CommitInline {
                    ino,
                    chunks: refs,
                    data,
                    size,
                    mtime,
                    budget: config.inline_total_max_bytes,
                    max_replication: self.inline_copies(),
                    now,
                }
            }
        };
        self.execute_attr(scope, self.once(r.id, cmd), vec![]).await
    }

    async fn place_chunk(
        &self,
        request: Request<pb::PlaceChunkRequest>,
    ) -> Result<Response<pb::PlaceChunkReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        let id = chunk_id(&r.id)?;
        let len = chunk_len(r.len)?;
        validate::node_list("exclude_nodes", &r.exclude_nodes)?;
        scope.writable()?;
        // An export without `replication` gets at most the default at
        // upload; a file whose count an operator raised gets the rest of
        // its copies from healing.
        let default = self.inner.config.replication;
        let wanted = scope.replication_cap(
            replication_or_default(r.replication, &self.inner.config),
            default,
        );
        self.with(move |core, live, _| {
            let st = &core.state;
            let now = Instant::now();
            let mut exclude: BTreeSet<String> = r.exclude_nodes.into_iter().collect();
            if let Some(c) = st.chunks.get(&id) {
                if chunks::is_dedup_hit(c, |n| is_up(st, live, n, now)) {
                    return Ok(pb::PlaceChunkReply {
                        already_stored: true,
                        targets: vec![],
                    });
                }
                exclude.extend(c.replicas.keys().cloned());
            }
            let n = wanted as usize;
            let cands = candidates(st, live, now);
            let targets = placement::choose(&cands, n, u64::from(len), &exclude, &mut rand::rng());
            if targets.is_empty() {
                return Err(MetaError::ResourceExhausted(format!(
                    "no storage node with {len} bytes free is up"
                )));
            }
            Ok(pb::PlaceChunkReply {
                already_stored: false,
                targets: targets
                    .iter()
                    .map(|t| location(st, t, ReplicaStatus::Pending))
                    .collect(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn register_chunk(
        &self,
        request: Request<pb::RegisterChunkRequest>,
    ) -> Result<Response<pb::RegisterChunkReply>, Status> {
        bigfs_proto::auth::require_node(&request, &request.get_ref().node_id)?;
        let r = request.into_inner();
        let id = chunk_id(&r.id)?;
        let len = chunk_len(r.len)?;
        node_field("node_id", &r.node_id)?;
        validate::node_list("confirmed", &r.confirmed)
            .and_then(|()| validate::node_list("pending", &r.pending))
            .and_then(|()| validate::receipts(&r.receipts))?;
        self.with(move |core, live, config| {
            let now = Instant::now();
            let st = &core.state;
            if !st.nodes.contains_key(&r.node_id) {
                return Err(MetaError::FailedPrecondition(format!(
                    "node {:?} is not registered; register it first",
                    r.node_id
                )));
            }
            let wanted = replication_or_default(r.replication, config) as usize;
            // Another node's copy is Available only with that node's
            // receipt; one without stays Pending (see `receipts`).
            let now_ms = bigfs_proto::now_ms();
            let (confirmed, unproven): (Vec<String>, Vec<String>) = r
                .confirmed
                .iter()
                .filter(|n| **n != r.node_id && st.nodes.contains_key(*n))
                .cloned()
                .partition(|n| {
                    let mac = r.receipts.iter().find(|x| x.node_id == *n);
                    let mac = mac.map_or(&[][..], |x| &x.mac[..]);
                    receipts::check(st, n, id, len, mac, now_ms)
                        .inspect_err(|why| receipts::rejected(n, id, &r.node_id, *why))
                        .is_ok()
                });
            let mut exclude = BTreeSet::from([r.node_id.clone()]);
            exclude.extend(confirmed.iter().cloned());
            exclude.extend(unproven.iter().cloned());
            let mut have_up = confirmed.iter().filter(|n| is_up(st, live, n, now)).count();
            let mut pending_up = Vec::new();
            if let Some(c) = st.chunks.get(&id) {
                for (n, s) in &c.replicas {
                    if exclude.contains(n) {
                        continue;
                    }
                    exclude.insert(n.clone());
                    if !is_up(st, live, n, now) {
                        continue;
                    }
                    match s {
                        ReplicaStatus::Available => have_up += 1,
                        ReplicaStatus::Pending => pending_up.push(n.clone()),
                        ReplicaStatus::Deleting => {}
                    }
                }
            }
            // Copies the primary is still sending count as designated, and
            // so do confirmed copies whose receipts did not verify.
            let mut designated = unproven;
            designated.extend(
                r.pending
                    .iter()
                    .filter(|n| !exclude.contains(*n) && is_up(st, live, n, now))
                    .take(wanted.saturating_sub(
                        1 + have_up + pending_up.len() + designated.len(),
                    ))
                    .cloned(),
            );
            exclude.extend(designated.iter().cloned());
            let more = wanted.saturating_sub(1 + have_up + pending_up.len() + designated.len());
            let cands = candidates(st, live, now);
            designated.extend(placement::choose(
                &cands,
                more,
                u64::from(len),
                &exclude,
                &mut rand::rng(),
            ));
            core.propose(Command::RegisterChunk {
                id,
                len,
                node: r.node_id.clone(),
                designated: designated.clone(),
                now_ms: bigfs_proto::now_ms(),
                confirmed,
            });
            tracing::debug!(chunk = %id.short(), node = %r.node_id, ?designated, "chunk registered");
            let st = &core.state;
            Ok(pb::RegisterChunkReply {
                replicas: pending_up
                    .iter()
                    .chain(designated.iter())
                    .map(|n| location(st, n, ReplicaStatus::Pending))
                    .collect(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn confirm_replica(
        &self,
        request: Request<pb::ConfirmReplicaRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let by_holder = crate::auth::confirms_own_copy(&request)?;
        let by = crate::auth::caller_name(&request);
        let r = request.into_inner();
        let id = chunk_id(&r.id)?;
        node_field("node_id", &r.node_id)?;
        validate::receipt_mac(&r.receipt)?;
        if !by_holder {
            crate::auth::check_receipt(self, &r, &by).await?;
        }
        self.execute_empty(Command::ConfirmReplica {
            id,
            node: r.node_id,
        })
        .await
    }

    async fn report_failure(
        &self,
        request: Request<pb::ReportFailureRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        crate::auth::check_report(&request)?;
        let r = request.into_inner();
        node_field("node_id", &r.node_id)?;
        let (error, op_label) = validate::failure_report(&r.operation, &r.error, &r.reporter)?;
        let chunk = if r.chunk_id.is_empty() {
            String::new()
        } else {
            chunk_id(&r.chunk_id)?.short()
        };
        let inner = self.inner.clone();
        self.with(move |core, live, _| {
            // Only count known nodes, so a peer cannot grow the table.
            if !core.state.nodes.contains_key(&r.node_id) {
                return Err(MetaError::NotFound(format!(
                    "node {:?} is not registered",
                    r.node_id
                )));
            }
            let failures = live.report_failure(&r.node_id);
            // A node reporting its own replica corrupt (scrub or read) has
            // quarantined it: unlist it, and repair makes a new copy.
            if let Some(id) = crate::heal::self_reported_loss(&r) {
                core.propose(Command::RemoveReplica {
                    id,
                    node: r.node_id.clone(),
                });
            }
            metrics::counter!("bigfs_metadata_failure_reports_total", "operation" => op_label)
                .increment(1);
            lock(&inner.failures)?.push(FailureReport {
                at_ms: bigfs_proto::now_ms(),
                node_id: r.node_id.clone(),
                chunk: chunk.clone(),
                operation: r.operation.clone(),
                error: error.clone(),
                reporter: r.reporter.clone(),
            });
            tracing::warn!(
                node = %r.node_id,
                chunk = %chunk,
                op = %r.operation,
                error = %error,
                reporter = %r.reporter,
                failures,
                "failure reported"
            );
            Ok(pb::Empty {})
        })
        .await
        .map(Response::new)
    }

    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeReply>, Status> {
        bigfs_proto::auth::require_node(&request, &request.get_ref().node_id)?;
        let r = request.into_inner();
        node_field("node_id", &r.node_id)?;
        validate::node_address(&r.address)?;
        validate::inventory_len(r.chunks.len())?;
        validate::disks(&r.disks)?;
        let mut inventory = Vec::with_capacity(r.chunks.len());
        for c in &r.chunks {
            inventory.push(chunk_id(c)?);
        }
        let receipt_key = bigfs_proto::receipt::new_key().map_err(Status::internal)?;
        self.with(move |core, live, config| {
            let now = Instant::now();
            let rec = chunks::reconcile(&core.state, &r.node_id, &inventory);
            let registered = core.state.nodes.get(&r.node_id).map(|n| {
                let state = live.state(&r.node_id, n.decommissioned, now);
                (n.address.as_str(), state)
            });
            registration::check_id_conflict(&r.node_id, &r.address, registered)
                .and_then(|()| {
                    registration::check_inventory(
                        &r.node_id,
                        &rec,
                        &config.registration,
                        r.accept_inventory,
                        registration::DiskLoss::of(&r.disks),
                    )
                })
                .inspect_err(|refusal| {
                    metrics::counter!(
                        "bigfs_metadata_registrations_refused_total",
                        "reason" => refusal.reason()
                    )
                    .increment(1);
                    tracing::error!(node = %r.node_id, address = %r.address, reason = refusal.reason(), "registration refused: {refusal}");
                })?;
            let disk_loss = registration::DiskLoss::of(&r.disks);
            if disk_loss.declared() && rec.lost_available > 0 {
                metrics::counter!("bigfs_metadata_disk_losses_total").increment(1);
                tracing::warn!(
                    node = %r.node_id,
                    bad_disks = disk_loss.bad,
                    disks = disk_loss.total,
                    listed = rec.listed_available,
                    missing = rec.lost_available,
                    "node reports bad disks: its copies there are unlisted and healed elsewhere"
                );
            } else if r.accept_inventory && rec.lost_available > 0 {
                tracing::warn!(
                    node = %r.node_id,
                    listed = rec.listed_available,
                    missing = rec.lost_available,
                    "operator accepted the node's inventory: its missing copies are unlisted"
                );
            }
            let delete = rec.delete;
            tracing::info!(
                node = %r.node_id,
                address = %r.address,
                inventory = inventory.len(),
                lost = rec.lost.len(),
                confirmed = rec.confirmed.len(),
                delete = delete.len(),
                "node registered"
            );
            core.propose(Command::RegisterNode {
                node_id: r.node_id.clone(),
                address: r.address,
                capacity: r.capacity,
                lost: rec.lost,
                confirmed: rec.confirmed,
            });
            core.propose(Command::SetReceiptKey {
                node: r.node_id.clone(),
                key: receipt_key,
                now_ms: bigfs_proto::now_ms(),
            });
            live.heard(
                &r.node_id,
                r.capacity,
                r.used,
                inventory.len() as u64,
                now,
            );
            live.heard_disks(&r.node_id, r.disks);
            Ok(pb::RegisterNodeReply {
                delete_chunks: delete.iter().map(ChunkId::to_vec).collect(),
                heartbeat_interval_ms: config.heartbeat_interval_ms,
                receipt_key: receipt_key.to_vec(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        bigfs_proto::auth::require_node(&request, &request.get_ref().node_id)?;
        let r = request.into_inner();
        node_field("node_id", &r.node_id)?;
        validate::disks(&r.disks)?;
        self.with(move |core, live, _| {
            if !core.state.nodes.contains_key(&r.node_id) {
                return Ok(pb::HeartbeatReply { reregister: true });
            }
            live.heard(
                &r.node_id,
                r.capacity,
                r.used,
                r.chunk_count,
                Instant::now(),
            );
            live.heard_disks(&r.node_id, r.disks);
            Ok(pb::HeartbeatReply { reregister: false })
        })
        .await
        .map(Response::new)
    }

    async fn export(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::ExportReply>, Status> {
        let scope = self.scope(&request)?;
        let copies = self.inline_copies();
        let mut reply = self
            .with(move |core, _, _| {
                scope.root(&core.state)?;
                Ok(scope.describe())
            })
            .await?;
        // Inline files get one copy per member: offered only where that is
        // as many as a file gets by default.
        let config = &self.inner.config;
        if config.replication <= copies {
            reply.inline_max_bytes = config.inline_max_bytes;
        }
        Ok(Response::new(reply))
    }

    async fn status(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.status_report().await.map(Response::new)
    }

    async fn set_xattr(
        &self,
        request: Request<pb::SetXattrRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::xattr(&r.name, &r.value)?;
        if r.name == crate::replication::XATTR {
            return self.set_replication_xattr(scope, r).await;
        }
        let [ino] = self.confine(&scope, true, [r.ino]).await?;
        self.execute_empty(self.once(
            r.id,
            Command::SetXattr {
                ino,
                name: r.name,
                value: r.value,
                flags: r.flags,
                now: Time::now(),
            },
        ))
        .await
    }

    async fn get_xattr(
        &self,
        request: Request<pb::XattrNameRequest>,
    ) -> Result<Response<pb::XattrValueReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        self.with(move |core, _, config| {
            let ino = scope.inode(&core.state, r.ino)?;
            if r.name == crate::replication::XATTR {
                return settings::replication_xattr(&core.state, ino, config);
            }
            Ok(pb::XattrValueReply {
                value: crate::xattr::get(&core.state, ino, &r.name)?.to_vec(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn list_xattr(
        &self,
        request: Request<pb::InodeRequest>,
    ) -> Result<Response<pb::XattrListReply>, Status> {
        let scope = self.scope(&request)?;
        let ino = request.into_inner().ino;
        self.with(move |core, _, _| {
            let ino = scope.inode(&core.state, ino)?;
            Ok(pb::XattrListReply {
                names: crate::xattr::list(&core.state, ino)?,
            })
        })
        .await
        .map(Response::new)
    }

    async fn remove_xattr(
        &self,
        request: Request<pb::XattrNameRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::xattr(&r.name, &[])?;
        settings::removable_xattr(&r.name)?;
        let [ino] = self.confine(&scope, true, [r.ino]).await?;
        self.execute_empty(self.once(
            r.id,
            Command::RemoveXattr {
                ino,
                name: r.name,
                now: Time::now(),
            },
        ))
        .await
    }

    async fn keep_inodes(
        &self,
        request: Request<pb::KeepInodesRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::keep_inodes_len(r.inos.len())?;
        let until_ms = bigfs_proto::now_ms().saturating_add(r.lease_ms);
        self.with(move |core, _, _| {
            // Only orphans have leases: log just those, if any (and, for a
            // confined client, only those in its export).
            let st = &core.state;
            let inos: Vec<u64> = (r.inos.into_iter())
                .filter_map(|i| scope.inode(st, i).ok())
                .filter(|i| st.orphans.contains_key(i))
                .collect();
            if !inos.is_empty() {
                core.propose(Command::KeepInodes { inos, until_ms });
            }
            Ok(pb::Empty {})
        })
        .await
        .map(Response::new)
    }

    async fn record_access(
        &self,
        request: Request<pb::RecordAccessRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        validate::record_access_len(r.accesses.len())?;
        if scope.writable().is_err() {
            // A read-only export records no access times (as a ro mount).
            return Ok(Response::new(pb::Empty {}));
        }
        // A mount's clock ahead of ours does not put atimes in the future.
        let now = Time::now();
        self.with(move |core, _, _| {
            let st = &core.state;
            let times: Vec<(u64, Time)> = (r.accesses.into_iter())
                .filter_map(|a| {
                    let t = Time::from_pb(a.atime.as_ref()?).min(now);
                    Some((scope.inode(st, a.ino).ok()?, t))
                })
                .filter(|(ino, t)| st.inodes.get(ino).is_some_and(|i| *t > i.atime))
                .collect();
            if !times.is_empty() {
                core.propose(Command::RecordAccess { times });
            }
            Ok(pb::Empty {})
        })
        .await
        .map(Response::new)
    }

    async fn release_inode(
        &self,
        request: Request<pb::InodeRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let scope = self.scope(&request)?;
        let ino = request.into_inner().ino;
        self.with(move |core, _, _| {
            let ino = scope.inode(&core.state, ino)?;
            // Only an orphan is released; skip the log otherwise.
            if core.state.orphans.contains_key(&ino) {
                core.propose(Command::ReleaseInode {
                    ino,
                    now: Time::now(),
                });
            }
            Ok(pb::Empty {})
        })
        .await
        .map(Response::new)
    }

    async fn sync(&self, _request: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        self.inner.consensus.read_barrier().await?;
        let syncer = self.inner.consensus.syncer();
        tokio::task::spawn_blocking(move || syncer.sync())
            .await
            .map_err(|e| Status::internal(format!("sync worker failed: {e}")))?
            .map_err(Status::from)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_replication(
        &self,
        request: Request<pb::SetReplicationRequest>,
    ) -> Result<Response<pb::SetReplicationReply>, Status> {
        let scope = self.scope(&request)?;
        self.set_replication_rpc(scope, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn set_quota(
        &self,
        request: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::QuotaReply>, Status> {
        let scope = self.scope(&request)?;
        self.set_quota_rpc(scope, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_quota(
        &self,
        request: Request<pb::QuotaRequest>,
    ) -> Result<Response<pb::QuotaReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        self.with(move |core, _, _| settings::get_quota(&core.state, &scope, r.ino, r.nearest))
            .await
            .map(Response::new)
    }

    async fn list_quotas(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::QuotaListReply>, Status> {
        let scope = self.scope(&request)?;
        self.with(move |core, _, _| Ok(settings::list_quotas(&core.state, &scope)))
            .await
            .map(Response::new)
    }
}
