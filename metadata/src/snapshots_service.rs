//! The tonic `Snapshots` service (admin.proto): the trash (list, restore,
//! purge) and tree snapshots. Admin certificates only (`auth::policy`): the
//! trash spans every export, so a confined client never reaches it.
//!
//! Reads pick what to change under the state's lock; the change itself is
//! a command ([`Command::RestoreTrash`], [`Command::PurgeTrash`],
//! [`Command::Snapshot`]) that re-checks everything when applied.

use bigfs_proto::pb::{self, snapshots_server::Snapshots};
use bigfs_proto::validate_name;
use tonic::{Request, Response, Status};

use crate::MetaError;
use crate::namespace;
use crate::service::MetadataService;
use crate::state::{Command, Reply, State, Time};

/// Entries answered by `TrashList` without a limit, and at most.
const DEFAULT_LIST_LIMIT: usize = 1000;
const MAX_LIST_LIMIT: usize = 10_000;

/// Trashed files freed per `PurgeTrash` command: a purge of a large trash
/// is several short commands, not one long apply.
const PURGE_BATCH: usize = 10_000;

/// Entries whose path starts with `prefix`, oldest deletion first.
pub fn list(state: &State, prefix: &str, limit: u32) -> pb::TrashListReply {
    let limit = match limit {
        0 => DEFAULT_LIST_LIMIT,
        n => (n as usize).min(MAX_LIST_LIMIT),
    };
    let mut all: Vec<(u64, &crate::trash::Entry)> = state
        .trash
        .iter()
        .filter(|(_, e)| e.path.starts_with(prefix))
        .collect();
    all.sort_by_key(|(ino, e)| (e.deleted, *ino));
    pb::TrashListReply {
        total: all.len() as u64,
        entries: all
            .into_iter()
            .take(limit)
            .map(|(ino, e)| pb::TrashEntry {
                ino,
                path: e.path.clone(),
                size: state.inodes.get(&ino).map_or(0, |i| i.size),
                deleted_ms: e.deleted.as_ms(),
                expires_ms: e.expires_ms,
            })
            .collect(),
        retention_ms: 0,
    }
}

/// The trashed file to restore to `path`: `ino` if given (it must have
/// been deleted from `path`), else the latest one deleted from there.
pub fn pick_restore(state: &State, path: &str, ino: u64) -> Result<u64, MetaError> {
    let not_found = || {
        MetaError::ns(
            bigfs_proto::errno::ENOENT,
            format!("no file deleted from {path:?} is in the trash (see `bigfs trash ls`)"),
        )
    };
    if ino != 0 {
        return match state.trash.get(ino) {
            Some(e) if e.path == path => Ok(ino),
            _ => Err(not_found()),
        };
    }
    state
        .trash
        .iter()
        .filter(|(_, e)| e.path == path)
        .max_by_key(|(ino, e)| (e.deleted, *ino))
        .map(|(ino, _)| ino)
        .ok_or_else(not_found)
}

/// Splits an absolute path into its parent's path and its last name.
fn split(path: &str) -> Result<(String, String), MetaError> {
    let trimmed = path.trim_end_matches('/');
    let Some((parent, name)) = trimmed.rsplit_once('/') else {
        return Err(MetaError::InvalidArgument(format!(
            "{path:?} is not an absolute path"
        )));
    };
    validate_name(name)?;
    if name == "." || name == ".." {
        return Err(MetaError::InvalidArgument(format!(
            "{path:?}: the last part must be a plain name"
        )));
    }
    let parent = if parent.is_empty() { "/" } else { parent };
    Ok((parent.to_string(), name.to_string()))
}

fn absolute(what: &str, path: &str) -> Result<(), Status> {
    if !path.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "{what} {path:?} is not an absolute path"
        )));
    }
    if path.len() > bigfs_proto::MAX_PATH_LEN {
        return Err(Status::invalid_argument(format!(
            "{what} is {} bytes, the limit is {}",
            path.len(),
            bigfs_proto::MAX_PATH_LEN
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Snapshots for MetadataService {
    async fn trash_list(
        &self,
        request: Request<pb::TrashListRequest>,
    ) -> Result<Response<pb::TrashListReply>, Status> {
        let r = request.into_inner();
        let retention_ms = self.config().trash_retention_ms;
        self.with(move |core, _, _| {
            let mut reply = list(&core.state, &r.prefix, r.limit);
            reply.retention_ms = retention_ms;
            Ok(reply)
        })
        .await
        .map(Response::new)
    }

    async fn trash_restore(
        &self,
        request: Request<pb::TrashRestoreRequest>,
    ) -> Result<Response<pb::TrashRestoreReply>, Status> {
        let r = request.into_inner();
        absolute("path", &r.path)?;
        let path = r.path.clone();
        let ino = self
            .with(move |core, _, _| pick_restore(&core.state, &path, r.ino))
            .await?;
        self.execute(Command::RestoreTrash {
            ino,
            path: r.path.clone(),
            now: Time::now(),
        })
        .await?;
        tracing::info!(ino, path = %r.path, "trashed file restored");
        Ok(Response::new(pb::TrashRestoreReply { ino, path: r.path }))
    }

    async fn trash_purge(
        &self,
        request: Request<pb::TrashPurgeRequest>,
    ) -> Result<Response<pb::TrashPurgeReply>, Status> {
        let path = request.into_inner().path;
        let mut purged = 0u64;
        loop {
            let p = path.clone();
            let inos: Vec<u64> = self
                .with(move |core, _, _| {
                    Ok(core
                        .state
                        .trash
                        .iter()
                        .filter(|(_, e)| p.is_empty() || e.path == p)
                        .map(|(ino, _)| ino)
                        .take(PURGE_BATCH)
                        .collect())
                })
                .await?;
            if inos.is_empty() {
                break;
            }
            let n = inos.len() as u64;
            self.execute(Command::PurgeTrash {
                inos,
                now: Time::now(),
            })
            .await?;
            purged += n;
        }
        tracing::info!(purged, path = %path, "trash purged");
        Ok(Response::new(pb::TrashPurgeReply { purged }))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let r = request.into_inner();
        absolute("source", &r.src)?;
        absolute("destination", &r.dst)?;
        let (dst_dir, dst_name) = split(&r.dst)?;
        let src_path = r.src.clone();
        let (src, dst_parent) = self
            .with(move |core, _, _| {
                Ok((
                    namespace::resolve_path(&core.state, &src_path)?,
                    namespace::resolve_path(&core.state, &dst_dir)?,
                ))
            })
            .await?;
        let reply = self
            .execute(Command::Snapshot {
                src,
                dst_parent,
                dst_name,
                max_inodes: self.config().snapshot_max_inodes,
                read_only: r.read_only,
                now: Time::now(),
            })
            .await?;
        let Reply::Copied {
            ino,
            inodes,
            chunk_refs,
        } = reply
        else {
            return Err(Status::internal("snapshot answered no copy"));
        };
        tracing::info!(src = %r.src, dst = %r.dst, ino, inodes, chunk_refs, read_only = r.read_only, "snapshot made");
        Ok(Response::new(pb::SnapshotReply { inodes, chunk_refs }))
    }
}
