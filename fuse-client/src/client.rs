//! The client: namespace operations against the metadata service and
//! `open` for file handles. Everything a CLI or the FUSE layer needs.

use std::sync::Arc;

use bigfs_proto::leader::MetaClient;
use bigfs_proto::{ROOT_INO, pb, validate_name};

use crate::chunk_io::ChunkIo;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::file::FileHandle;
use crate::fresh_dirs::{FreshDirs, NameChange};
use crate::layout::Layout;
use crate::meta_wait::MetaWait;
use crate::metrics::MetricsSnapshot;

#[path = "settings.rs"]
mod settings;

pub struct Client {
    io: Arc<ChunkIo>,
    cfg: ClientConfig,
    /// Directory attrs as this client's last change of them left them.
    fresh: FreshDirs,
}

/// A reply that may carry the attrs of the directories its call changed.
trait ChangedDirs {
    fn dirs(&self) -> &[pb::Attr] {
        &[]
    }
}

impl ChangedDirs for pb::AttrReply {
    fn dirs(&self) -> &[pb::Attr] {
        &self.dirs
    }
}

impl ChangedDirs for pb::DirsReply {
    fn dirs(&self) -> &[pb::Attr] {
        &self.dirs
    }
}

impl ChangedDirs for pb::Empty {}
impl ChangedDirs for pb::SetReplicationReply {}

fn attr_of(reply: pb::AttrReply) -> Result<pb::Attr> {
    reply
        .attr
        .ok_or_else(|| ClientError::Invalid("reply without attr".into()))
}

/// Splits "/a/b/c" into ("/a/b", "c"). The root has no parent.
pub fn split_path(path: &str) -> Result<(String, String)> {
    let trimmed = path.trim_end_matches('/');
    if !trimmed.starts_with('/') {
        return Err(ClientError::Invalid(format!(
            "{path:?}: remote paths are absolute (start with /)"
        )));
    }
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() {
        return Err(ClientError::Invalid(format!(
            "{path:?}: the root has no name"
        )));
    }
    validate_name(name).map_err(|e| ClientError::Invalid(format!("{path:?}: {e}")))?;
    let parent = if parent.is_empty() {
        "/".to_string()
    } else {
        parent.to_string()
    };
    Ok((parent, name.to_string()))
}

impl Client {
    /// Connects to the metadata service and checks it answers, failing
    /// fast when the cluster cannot be reached at all, whatever the wait
    /// configured for later calls (a mount's start-up).
    pub async fn connect(cfg: ClientConfig) -> Result<Arc<Self>> {
        Self::connect_waiting(cfg, MetaWait::Retries).await
    }

    /// As [`Client::connect`], waiting for the service as `wait` allows
    /// (the CLI waits through a leader election).
    pub async fn connect_waiting(cfg: ClientConfig, wait: MetaWait) -> Result<Arc<Self>> {
        cfg.validate().map_err(ClientError::Invalid)?;
        let io = Arc::new(ChunkIo::new(&cfg)?);
        let fresh = FreshDirs::new(cfg.fresh_dir_ttl);
        let client = Arc::new(Client { io, cfg, fresh });
        let first = client
            .io
            .meta
            .call_waiting("status", wait, |mut c| async move {
                c.status(pb::Empty {}).await
            });
        first.await.map_err(|e| ClientError::Connect {
            addr: client.cfg.metadata.clone(),
            message: e.to_string(),
        })?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn io(&self) -> &Arc<ChunkIo> {
        &self.io
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            meta_waits: self.io.meta.wait_counts(),
            ..self.io.metrics.snapshot()
        }
    }

    /// What this client's export grants (refused when it has none). Small
    /// files are kept inline from then on, as far as the service allows.
    pub async fn export(&self) -> Result<pb::ExportReply> {
        let reply = self
            .io
            .meta
            .call(
                "export",
                |mut c| async move { c.export(pb::Empty {}).await },
            )
            .await?;
        self.io.set_inline_max(reply.inline_max_bytes);
        Ok(reply)
    }

    pub async fn status(&self) -> Result<pb::StatusReply> {
        self.io
            .meta
            .call(
                "status",
                |mut c| async move { c.status(pb::Empty {}).await },
            )
            .await
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<pb::Attr> {
        let req = pb::LookupRequest {
            parent,
            name: name.to_string(),
        };
        attr_of(
            self.io
                .meta
                .call("lookup", |mut c| {
                    let r = req.clone();
                    async move { c.lookup(r).await }
                })
                .await?,
        )
    }

    pub async fn resolve(&self, path: &str) -> Result<pb::Attr> {
        let req = pb::ResolvePathRequest {
            path: path.to_string(),
        };
        attr_of(
            self.io
                .meta
                .call("resolve", |mut c| {
                    let r = req.clone();
                    async move { c.resolve_path(r).await }
                })
                .await?,
        )
    }

    pub async fn getattr(&self, ino: u64) -> Result<pb::Attr> {
        if let Some(a) = self.fresh.take(ino) {
            return Ok(a);
        }
        attr_of(
            self.io
                .meta
                .call("getattr", |mut c| async move {
                    c.get_attr(pb::InodeRequest { ino }).await
                })
                .await?,
        )
    }

    pub async fn setattr(&self, req: pb::SetAttrRequest) -> Result<pb::Attr> {
        let reply = self
            .changing(
                &[req.ino],
                &[],
                self.io.meta.mutate(
                    "setattr",
                    req,
                    |mut c, r| async move { c.set_attr(r).await },
                ),
            )
            .await;
        attr_of(reply?)
    }

    pub async fn create(&self, req: pb::CreateRequest) -> Result<pb::Attr> {
        let (parent, name) = (req.parent, req.name.clone());
        let reply = self
            .changing(
                &[parent],
                &[NameChange::Added(parent, &name)],
                self.io
                    .meta
                    .mutate("create", req, |mut c, r| async move { c.create(r).await }),
            )
            .await;
        let attr = attr_of(reply?)?;
        self.fresh.made(&attr);
        Ok(attr)
    }

    /// Whether `name` is surely not in directory `parent` (see
    /// [`FreshDirs::absent`]), so a lookup of it can answer ENOENT at once;
    /// only with `negative_lookups`.
    pub fn surely_absent(&self, parent: u64, name: &str) -> bool {
        self.cfg.negative_lookups && self.fresh.absent(parent, name)
    }

    /// Runs `call`, a change of `dirs` doing `names` to their names, and
    /// keeps the directories' attrs its reply carries (see [`FreshDirs`]).
    async fn changing<T: ChangedDirs>(
        &self,
        dirs: &[u64],
        names: &[NameChange<'_>],
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let change = self.fresh.start(dirs);
        let reply = call.await;
        let after = reply.as_ref().map_or(&[][..], ChangedDirs::dirs);
        self.fresh.finish(change, after, names);
        reply
    }

    /// Creates a regular file (or returns the existing one unless
    /// `exclusive`).
    pub async fn create_file(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        exclusive: bool,
    ) -> Result<pb::Attr> {
        self.create(pb::CreateRequest {
            parent,
            name: name.to_string(),
            kind: pb::FileKind::File as i32,
            mode,
            uid: current_uid(),
            gid: current_gid(),
            symlink_target: String::new(),
            exclusive,
            rdev: 0,
            umask: None,
            id: None,
        })
        .await
    }

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32) -> Result<pb::Attr> {
        self.create(pb::CreateRequest {
            parent,
            name: name.to_string(),
            kind: pb::FileKind::Directory as i32,
            mode,
            uid: current_uid(),
            gid: current_gid(),
            symlink_target: String::new(),
            exclusive: true,
            rdev: 0,
            umask: None,
            id: None,
        })
        .await
    }

    /// Makes a file with no name (`open(O_TMPFILE)`): it lives for
    /// `req.open_lease_ms` (renewed by `keep_inodes`) until `release_inode`,
    /// unless `link` names it first.
    pub async fn tmpfile(&self, req: pb::TmpFileRequest) -> Result<pb::Attr> {
        attr_of(
            self.io
                .meta
                .mutate(
                    "tmpfile",
                    req,
                    |mut c, r| async move { c.tmp_file(r).await },
                )
                .await?,
        )
    }

    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> Result<pb::Attr> {
        let req = pb::LinkRequest {
            ino,
            new_parent,
            new_name: new_name.to_string(),
            id: None,
        };
        let reply = self
            .changing(
                &[new_parent],
                &[NameChange::Added(new_parent, new_name)],
                self.io
                    .meta
                    .mutate("link", req, |mut c, r| async move { c.link(r).await }),
            )
            .await;
        attr_of(reply?)
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.unlink_keeping(parent, name, 0).await
    }

    /// Unlinks; if this was the last name of a file the caller has open,
    /// the file lives on for `open_lease_ms` (renewed by `keep_inodes`)
    /// until `release_inode`.
    pub async fn unlink_keeping(&self, parent: u64, name: &str, open_lease_ms: u64) -> Result<()> {
        self.remove_name(
            "unlink",
            parent,
            name,
            open_lease_ms,
            |mut c, r| async move { c.unlink(r).await },
        )
        .await
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        self.remove_name("rmdir", parent, name, 0, |mut c, r| async move {
            c.rmdir(r).await
        })
        .await
    }

    /// Removes `name` from `parent` with `call` (Unlink or Rmdir).
    async fn remove_name<F, Fut>(
        &self,
        op: &'static str,
        parent: u64,
        name: &str,
        open_lease_ms: u64,
        call: F,
    ) -> Result<()>
    where
        F: Fn(MetaClient, pb::NameRequest) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<pb::DirsReply>, tonic::Status>>,
    {
        let req = pb::NameRequest {
            parent,
            name: name.to_string(),
            open_lease_ms,
            id: None,
        };
        let reply = self
            .changing(
                &[parent],
                &[NameChange::Removed(parent, name)],
                self.io.meta.mutate(op, req, call),
            )
            .await;
        reply.map(drop)
    }

    pub async fn rename(&self, req: pb::RenameRequest) -> Result<()> {
        let (from, to) = (
            (req.parent, req.name.clone()),
            (req.new_parent, req.new_name.clone()),
        );
        // An exchange leaves both names in place.
        let names = if req.exchange {
            vec![]
        } else {
            vec![
                NameChange::Removed(from.0, &from.1),
                NameChange::Added(to.0, &to.1),
            ]
        };
        let reply = self
            .changing(
                &[req.parent, req.new_parent],
                &names,
                self.io
                    .meta
                    .mutate("rename", req, |mut c, r| async move { c.rename(r).await }),
            )
            .await;
        reply.map(drop)
    }

    /// Makes every metadata change answered so far durable on disk.
    pub async fn sync(&self) -> Result<()> {
        self.io
            .meta
            .call("sync", |mut c| async move { c.sync(pb::Empty {}).await })
            .await?;
        Ok(())
    }

    /// Renews the leases of open-but-unlinked inodes.
    /// Sends `MAX_KEEP_INODES` per call, the most the service takes.
    pub async fn keep_inodes(&self, inos: Vec<u64>, lease_ms: u64) -> Result<()> {
        for batch in inos.chunks(bigfs_proto::MAX_KEEP_INODES) {
            let req = pb::KeepInodesRequest {
                inos: batch.to_vec(),
                lease_ms,
            };
            self.io
                .meta
                .call("keep inodes", |mut c| {
                    let r = req.clone();
                    async move { c.keep_inodes(r).await }
                })
                .await?;
        }
        Ok(())
    }

    /// Records access times from reads (see `atime`), `MAX_KEEP_INODES`
    /// per call.
    pub async fn record_access(&self, times: Vec<(u64, pb::Timestamp)>) -> Result<()> {
        for batch in times.chunks(bigfs_proto::MAX_KEEP_INODES) {
            let req = pb::RecordAccessRequest {
                accesses: (batch.iter())
                    .map(|(ino, t)| pb::InodeTime {
                        ino: *ino,
                        atime: Some(*t),
                    })
                    .collect(),
            };
            self.io
                .meta
                .call("record access", |mut c| {
                    let r = req.clone();
                    async move { c.record_access(r).await }
                })
                .await?;
        }
        Ok(())
    }

    /// The last open of `ino` closed: frees it if it was unlinked meanwhile.
    pub async fn release_inode(&self, ino: u64) -> Result<()> {
        self.io
            .meta
            .call("release inode", |mut c| async move {
                c.release_inode(pb::InodeRequest { ino }).await
            })
            .await?;
        Ok(())
    }

    pub async fn set_xattr(&self, ino: u64, name: &str, value: Vec<u8>, flags: i32) -> Result<()> {
        let req = pb::SetXattrRequest {
            ino,
            name: name.to_string(),
            value,
            flags: flags as u32,
            id: None,
        };
        let reply = self
            .changing(
                &[ino],
                &[],
                self.io.meta.mutate(
                    "setxattr",
                    req,
                    |mut c, r| async move { c.set_xattr(r).await },
                ),
            )
            .await;
        reply.map(drop)
    }

    pub async fn get_xattr(&self, ino: u64, name: &str) -> Result<Vec<u8>> {
        let req = pb::XattrNameRequest {
            ino,
            name: name.to_string(),
            id: None,
        };
        Ok(self
            .io
            .meta
            .call("getxattr", |mut c| {
                let r = req.clone();
                async move { c.get_xattr(r).await }
            })
            .await?
            .value)
    }

    pub async fn list_xattr(&self, ino: u64) -> Result<Vec<String>> {
        Ok(self
            .io
            .meta
            .call("listxattr", |mut c| async move {
                c.list_xattr(pb::InodeRequest { ino }).await
            })
            .await?
            .names)
    }

    pub async fn remove_xattr(&self, ino: u64, name: &str) -> Result<()> {
        let req = pb::XattrNameRequest {
            ino,
            name: name.to_string(),
            id: None,
        };
        let reply = self
            .changing(
                &[ino],
                &[],
                self.io
                    .meta
                    .mutate("removexattr", req, |mut c, r| async move {
                        c.remove_xattr(r).await
                    }),
            )
            .await;
        reply.map(drop)
    }

    /// One page of a directory, continuing after `offset` (a cookie).
    pub async fn readdir(&self, ino: u64, offset: u64, limit: u32) -> Result<pb::ReadDirReply> {
        self.io
            .meta
            .call("readdir", |mut c| async move {
                c.read_dir(pb::ReadDirRequest { ino, offset, limit }).await
            })
            .await
    }

    /// Every entry of a directory.
    pub async fn readdir_all(&self, ino: u64) -> Result<Vec<pb::DirEntry>> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.readdir(ino, offset, 0).await?;
            if let Some(last) = page.entries.last() {
                offset = last.cookie;
            }
            let empty = page.entries.is_empty();
            out.extend(page.entries);
            if page.eof || empty {
                return Ok(out);
            }
        }
    }

    /// A handle for reading and writing the file `attr` describes.
    pub fn open_attr(&self, attr: &pb::Attr) -> Result<FileHandle> {
        if attr.kind != pb::FileKind::File as i32 {
            return Err(ClientError::Remote {
                op: "open",
                errno: bigfs_proto::errno::EISDIR,
                code: tonic::Code::FailedPrecondition,
                message: format!("inode {} is not a regular file", attr.ino),
            });
        }
        Ok(FileHandle::new(Arc::clone(&self.io), attr, &self.cfg))
    }

    /// The attrs and chunk locations of `ino`: an open for reading takes
    /// both in one call.
    pub async fn layout(&self, ino: u64) -> Result<Layout> {
        crate::file::fetch_layout(&self.io, ino).await
    }

    /// Opens inode `ino` (fresh attributes: close-to-open consistency).
    pub async fn open(&self, ino: u64) -> Result<FileHandle> {
        let attr = self.getattr(ino).await?;
        self.open_attr(&attr)
    }

    /// Creates (or truncates) the file at `path` and opens it.
    pub async fn create_path(&self, path: &str, mode: u32) -> Result<FileHandle> {
        let (parent, name) = split_path(path)?;
        let parent = self.resolve(&parent).await?;
        let attr = self.create_file(parent.ino, &name, mode, false).await?;
        let h = self.open_attr(&attr)?;
        if attr.size > 0 {
            h.truncate(0).await?;
        }
        Ok(h)
    }

    /// Resolves the parent directory of `path` and the final name.
    pub async fn parent_of(&self, path: &str) -> Result<(u64, String)> {
        let (parent, name) = split_path(path)?;
        Ok((self.resolve(&parent).await?.ino, name))
    }

    pub fn root(&self) -> u64 {
        ROOT_INO
    }
}

pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

pub fn current_gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_separates_parent_and_name() {
        assert_eq!(split_path("/a").unwrap(), ("/".into(), "a".into()));
        assert_eq!(split_path("/a/b/").unwrap(), ("/a".into(), "b".into()));
        assert!(split_path("/").is_err());
        assert!(split_path("relative").is_err());
        assert!(split_path("/a/..").is_err());
    }
}
