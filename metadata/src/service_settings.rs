//! The RPCs of per-directory settings: replication (`SetReplication` and
//! the `user.bigfs.replication` extended attribute) and quotas
//! (`SetQuota`, `GetQuota`, `ListQuotas`). The rules live in
//! [`crate::replication`] and [`crate::quota`]; this is the edge.

use bigfs_proto::errno::{ENODATA, EPERM};
use bigfs_proto::{ROOT_INO, pb};
use tonic::{Response, Status};

use super::MetadataService;
use crate::config::Config;
use crate::error::MetaError;
use crate::exports::Scope;
use crate::quota::{self, QuotaChange};
use crate::replication;
use crate::state::{Command, Kind, Reply, State, Time};

impl MetadataService {
    pub(super) async fn set_replication_rpc(
        &self,
        scope: Scope,
        r: pb::SetReplicationRequest,
    ) -> Result<pb::SetReplicationReply, Status> {
        replication::check(r.replication)?;
        scope.replication(r.replication, self.inner.config.replication)?;
        let [ino] = self.confine(&scope, true, [r.ino]).await?;
        let cmd = self.once(
            r.id,
            Command::SetReplication {
                ino,
                replication: r.replication,
                recursive: r.recursive,
                now: Time::now(),
            },
        );
        match self.execute(cmd).await? {
            Reply::Count(changed) => Ok(pb::SetReplicationReply { changed }),
            _ => Err(Status::internal("setting replication answered no count")),
        }
    }

    /// `setfattr -n user.bigfs.replication -v N`: the file's or directory's
    /// count, not recursive.
    pub(super) async fn set_replication_xattr(
        &self,
        scope: Scope,
        r: pb::SetXattrRequest,
    ) -> Result<Response<pb::Empty>, Status> {
        let replication = replication::parse_xattr(&r.value)?;
        self.set_replication_rpc(
            scope,
            pb::SetReplicationRequest {
                ino: r.ino,
                replication,
                recursive: false,
                id: r.id,
            },
        )
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    pub(super) async fn set_quota_rpc(
        &self,
        scope: Scope,
        r: pb::SetQuotaRequest,
    ) -> Result<pb::QuotaReply, Status> {
        // A confined client could lift its own limits.
        if scope != Scope::Full {
            return Err(MetaError::ns(
                EPERM,
                "quotas are set by an operator, not by a client confined to an export",
            )
            .into());
        }
        let change = if r.clear {
            QuotaChange::Clear
        } else {
            QuotaChange::Limits {
                max_bytes: r.max_bytes,
                max_inodes: r.max_inodes,
            }
        };
        let ino = r.ino;
        self.execute(self.once(r.id, Command::SetQuota { ino, change }))
            .await?;
        self.with(move |core, _, _| get_quota(&core.state, &scope, ino, false))
            .await
    }
}

/// The value of `user.bigfs.replication`: the count the inode wants, or a
/// directory passes on (the cluster default when it sets none).
pub(super) fn replication_xattr(
    state: &State,
    ino: u64,
    config: &Config,
) -> Result<pb::XattrValueReply, MetaError> {
    if !matches!(state.inode(ino)?.kind, Kind::File | Kind::Directory) {
        return Err(MetaError::ns(
            ENODATA,
            format!("inode {ino} has no replication: only files and directories do"),
        ));
    }
    Ok(pb::XattrValueReply {
        value: replication::effective(state, ino, config.replication)?
            .to_string()
            .into_bytes(),
    })
}

/// The replication attribute is always there: it is set, never removed.
pub(super) fn removable_xattr(name: &str) -> Result<(), MetaError> {
    if name == replication::XATTR {
        return Err(MetaError::ns(
            EPERM,
            format!("{name} cannot be removed; set it to the count wanted"),
        ));
    }
    Ok(())
}

/// Quota `q` as the caller sees it (paths and inode below its root).
fn info(state: &State, q: u64, root: u64) -> pb::QuotaInfo {
    let usage = state.quotas.get(&q).cloned().unwrap_or_default();
    pb::QuotaInfo {
        ino: if q == root { ROOT_INO } else { q },
        path: quota::dir_path(state, q, root).unwrap_or_default(),
        max_bytes: usage.max_bytes,
        max_inodes: usage.max_inodes,
        bytes: usage.bytes,
        inodes: usage.inodes,
    }
}

/// The quota of directory `ino` (of a file: of its directory) or, with
/// `nearest`, of the nearest directory at or above it that has one.
pub(super) fn get_quota(
    state: &State,
    scope: &Scope,
    ino: u64,
    nearest: bool,
) -> Result<pb::QuotaReply, MetaError> {
    let root = scope.root(state)?;
    let ino = scope.inode(state, ino)?;
    let inode = state.inode(ino)?;
    let dir = if inode.kind == Kind::Directory {
        ino
    } else {
        inode.parent
    };
    let found = if nearest {
        quota::above(state, dir).first().copied()
    } else {
        state.quotas.contains_key(&dir).then_some(dir)
    };
    Ok(match found {
        None => pb::QuotaReply::default(),
        Some(q) => pb::QuotaReply {
            found: true,
            quota: Some(info(state, q, root)),
        },
    })
}

/// Every quota under the caller's root, by directory path.
pub(super) fn list_quotas(state: &State, scope: &Scope) -> pb::QuotaListReply {
    let root = scope.root(state).unwrap_or(ROOT_INO);
    let mut quotas: Vec<pb::QuotaInfo> = state
        .quotas
        .keys()
        .map(|q| info(state, *q, root))
        .filter(|i| !i.path.is_empty())
        .collect();
    quotas.sort_by(|a, b| a.path.cmp(&b.path));
    pb::QuotaListReply { quotas }
}
