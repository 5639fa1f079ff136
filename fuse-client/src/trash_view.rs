//! The read-only `.trash` directory in the root of an admin mount: the
//! files `bigfs trash ls` lists, each named `INODE-NAME` (the inode and
//! the last part of the path it was deleted from), readable as they were.
//!
//! It exists only when the mount's certificate may call the (admin-only)
//! Snapshots service; on any other mount `.trash` is an ordinary name. It
//! is reachable by name but not listed in the root, so tools that walk the
//! tree (`find`, `du`, `rsync`, `ls -a` checks) never see it, and on an
//! admin mount it hides a real entry of that name in the root. Nothing in
//! it can change: opening its files for writing or changing their
//! attributes answers EROFS, and entries cannot be made or removed there.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use bigfs_proto::leader::{SnapshotsClient, snapshots_client};
use bigfs_proto::{ROOT_INO, pb};

use crate::client::Client;
use crate::error::ClientError;

/// The view's name in the mount's root.
pub const TRASH_NAME: &str = ".trash";

/// The view's inode number: the metadata service numbers inodes up from
/// 1 and never gets near it.
pub const TRASH_INO: u64 = u64::MAX - 1;

/// Entries listed at most (the service's default page).
const LIST_LIMIT: u32 = 1000;

const UNKNOWN: u8 = 0;
const ADMIN: u8 = 1;
const NOT_ADMIN: u8 = 2;

pub struct TrashView {
    client: SnapshotsClient,
    /// Whether the service answers this mount (checked once).
    admitted: AtomicU8,
    /// Inodes handed out from the view: read-only here.
    seen: Mutex<HashSet<u64>>,
}

/// `INODE-NAME` for a file deleted from `path`.
pub fn entry_name(ino: u64, path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or_default();
    format!("{ino}-{base}")
}

/// The inode an entry name stands for.
pub fn parse_name(name: &str) -> Option<u64> {
    name.split_once('-')?.0.parse().ok()
}

/// The attributes of the view's directory: root's, read-only (0555).
pub fn dir_attr(root: &pb::Attr) -> pb::Attr {
    pb::Attr {
        ino: TRASH_INO,
        kind: pb::FileKind::Directory as i32,
        mode: 0o555,
        nlink: 2,
        size: 0,
        allocated: 0,
        ..root.clone()
    }
}

impl TrashView {
    /// A view over the metadata members `metadata`, if the address parses.
    pub fn new(metadata: &str) -> Option<Self> {
        Some(TrashView {
            client: snapshots_client(metadata).ok()?,
            admitted: AtomicU8::new(UNKNOWN),
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `(parent, name)` names the view.
    pub fn is_view(parent: u64, name: &str) -> bool {
        parent == ROOT_INO && name == TRASH_NAME
    }

    /// The listed entries (name, inode), or `None` when this mount may not
    /// see the trash (not an admin certificate) or it cannot be read.
    pub async fn entries(&self) -> Option<Vec<(String, u64)>> {
        if self.admitted.load(Ordering::Relaxed) == NOT_ADMIN {
            return None;
        }
        let mut c = self.client.clone();
        let req = pb::TrashListRequest {
            prefix: String::new(),
            limit: LIST_LIMIT,
        };
        match c.trash_list(req).await {
            Ok(r) => {
                self.admitted.store(ADMIN, Ordering::Relaxed);
                let out: Vec<(String, u64)> = r
                    .into_inner()
                    .entries
                    .iter()
                    .map(|e| (entry_name(e.ino, &e.path), e.ino))
                    .collect();
                if let Ok(mut seen) = self.seen.lock() {
                    seen.extend(out.iter().map(|(_, i)| *i));
                }
                Some(out)
            }
            Err(s) => {
                if matches!(
                    s.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) {
                    tracing::info!("no .trash view: the mount's certificate is not an admin's");
                    self.admitted.store(NOT_ADMIN, Ordering::Relaxed);
                } else {
                    tracing::warn!(error = %s.message(), "listing the trash failed");
                }
                None
            }
        }
    }

    /// A lookup the view answers: the view itself in the root, or an entry
    /// in it. `None`: not the view's (the mount looks the name up as usual;
    /// also `.trash` in the root of a mount that is not an admin's).
    pub async fn lookup(
        &self,
        client: &Client,
        parent: u64,
        name: &str,
    ) -> Option<Result<pb::Attr, ClientError>> {
        if Self::is_view(parent, name) {
            self.entries().await?;
            return Some(client.getattr(ROOT_INO).await.map(|r| dir_attr(&r)));
        }
        if parent != TRASH_INO {
            return None;
        }
        let listed = match parse_name(name) {
            Some(ino) if self.is_trashed(ino) => Some(ino),
            Some(ino) => self
                .entries()
                .await
                .and_then(|e| e.iter().find(|(n, _)| n == name).map(|_| ino)),
            None => None,
        };
        Some(match listed {
            Some(ino) => client.getattr(ino).await,
            None => Err(not_found(name)),
        })
    }

    /// The view's directory listing, with attributes (cookies 1, 2, ...).
    pub async fn listing(&self, client: &Client) -> Result<Vec<pb::DirEntry>, ClientError> {
        let Some(entries) = self.entries().await else {
            return Err(not_found(TRASH_NAME));
        };
        let mut out = Vec::with_capacity(entries.len());
        for (cookie, (name, ino)) in (1u64..).zip(entries) {
            // Purged or expired since it was listed: skip it.
            let Ok(attr) = client.getattr(ino).await else {
                continue;
            };
            out.push(pb::DirEntry {
                name,
                ino,
                kind: attr.kind,
                cookie,
                attr: Some(attr),
            });
        }
        Ok(out)
    }

    /// Whether `ino` was handed out by the view (so it is read-only here).
    pub fn is_trashed(&self, ino: u64) -> bool {
        self.seen.lock().is_ok_and(|s| s.contains(&ino))
    }
}

fn not_found(name: &str) -> ClientError {
    ClientError::Remote {
        op: "trash lookup",
        errno: bigfs_proto::errno::ENOENT,
        code: tonic::Code::NotFound,
        message: format!("{name:?} is not in the trash"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_carry_the_inode_and_the_last_path_part() {
        assert_eq!(entry_name(42, "/docs/report.pdf"), "42-report.pdf");
        assert_eq!(parse_name("42-report.pdf"), Some(42));
        assert_eq!(parse_name("42-a-b"), Some(42));
        assert_eq!(parse_name("report"), None);
        assert!(TrashView::is_view(ROOT_INO, ".trash"));
        assert!(!TrashView::is_view(7, ".trash"));
    }
}
