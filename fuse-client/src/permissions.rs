//! Unix permission checks done by the mount itself: for `access(2)` under
//! `nodefault_permissions`, and for callers an export squashes.
//!
//! An export's squash (README "Security", "Exports") maps root (`root`)
//! or every user (`all`) to the export's anonymous uid/gid. The metadata
//! service stores the mapped owners; the mount makes the squashed caller
//! *act* as that user too, as NFS and MooseFS do:
//! - under `root`, the kernel checks everyone (`default_permissions`) but
//!   lets root through, so the mount checks root's calls as the anonymous
//!   user;
//! - under `all`, the mount turns `default_permissions` off and checks
//!   every call as the anonymous user.

use bigfs_proto::{errno, pb};
use fuser::{AccessFlags, TimeOrNow};

use crate::client::Client;
use crate::error::{ClientError, Result};

/// What an export does to callers' ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Squash {
    /// Every caller, not only root.
    pub all: bool,
    pub uid: u32,
    pub gid: u32,
}

/// The ids a squashed caller acts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    pub gid: u32,
}

impl Squash {
    /// The squash an export grants, if any.
    pub fn from_export(e: &pb::ExportReply) -> Option<Squash> {
        let all = match e.squash.as_str() {
            "root" => false,
            "all" => true,
            _ => return None,
        };
        Some(Squash {
            all,
            uid: e.anon_uid,
            gid: e.anon_gid,
        })
    }

    /// Who a caller with `uid` acts as, when squashed.
    pub fn who(&self, uid: u32) -> Option<Who> {
        (self.all || uid == 0).then_some(Who {
            uid: self.uid,
            gid: self.gid,
        })
    }
}

fn denied(op: &'static str, errno: i32, message: &str) -> ClientError {
    ClientError::Remote {
        op,
        errno,
        code: tonic::Code::PermissionDenied,
        message: message.into(),
    }
}

/// Classic Unix permission check of `mask` for `uid`/`gid` on `a`.
pub fn permitted(a: &pb::Attr, uid: u32, gid: u32, mask: AccessFlags) -> bool {
    if mask == AccessFlags::F_OK {
        return true;
    }
    let mode = a.mode;
    if uid == 0 {
        // Root may do anything but execute a file no one may execute.
        return !mask.contains(AccessFlags::X_OK)
            || mode & 0o111 != 0
            || a.kind == pb::FileKind::Directory as i32;
    }
    let bits = if uid == a.uid {
        (mode >> 6) & 7
    } else if gid == a.gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    let want = (if mask.contains(AccessFlags::R_OK) {
        4
    } else {
        0
    }) | (if mask.contains(AccessFlags::W_OK) {
        2
    } else {
        0
    }) | (if mask.contains(AccessFlags::X_OK) {
        1
    } else {
        0
    });
    bits & want == want
}

/// Refuses `who` (when squashed) `mask` on `ino` with EACCES.
pub async fn require(client: &Client, who: Option<Who>, ino: u64, mask: AccessFlags) -> Result<()> {
    let Some(w) = who else {
        return Ok(());
    };
    let a = client.getattr(ino).await?;
    if permitted(&a, w.uid, w.gid, mask) {
        Ok(())
    } else {
        Err(denied(
            "permission",
            errno::EACCES,
            "permission denied (squashed caller)",
        ))
    }
}

/// Whether xattr `name` is a POSIX ACL, which only the owner changes and
/// anyone may read (as on Linux) instead of needing write or read
/// permission.
pub fn is_acl(name: &str) -> bool {
    name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

/// May `who` change extended attribute `name` of `ino`: a POSIX ACL only
/// as the owner (EPERM), any other with write permission.
pub async fn require_xattr_change(
    client: &Client,
    who: Option<Who>,
    ino: u64,
    name: &str,
) -> Result<()> {
    let Some(w) = who else {
        return Ok(());
    };
    if !is_acl(name) {
        return require(client, who, ino, AccessFlags::W_OK).await;
    }
    if client.getattr(ino).await?.uid != w.uid {
        return Err(denied(
            "setxattr",
            errno::EPERM,
            "only the owner may change an ACL",
        ));
    }
    Ok(())
}

/// May `who` remove or rename away `name` from `parent`: write and search
/// on the directory, and in a sticky directory own it or the entry.
pub async fn require_removable(
    client: &Client,
    who: Option<Who>,
    parent: u64,
    name: &str,
) -> Result<()> {
    let Some(w) = who else {
        return Ok(());
    };
    let dir = client.getattr(parent).await?;
    if !permitted(&dir, w.uid, w.gid, AccessFlags::W_OK | AccessFlags::X_OK) {
        return Err(denied(
            "permission",
            errno::EACCES,
            "permission denied (squashed caller)",
        ));
    }
    if dir.mode & 0o1000 != 0 && dir.uid != w.uid {
        let entry = client.lookup(parent, name).await?;
        if entry.uid != w.uid {
            return Err(denied(
                "permission",
                errno::EPERM,
                "sticky directory: not the owner",
            ));
        }
    }
    Ok(())
}

/// The change a setattr asks for.
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

/// May `who` make `change` to `ino`: only the owner changes the mode, the
/// group (to its own) and sets times; nobody but root gives a file away;
/// a truncate needs write permission; setting the times to now needs the
/// owner or write permission.
pub async fn require_setattr(
    client: &Client,
    who: Option<Who>,
    ino: u64,
    change: &AttrChange,
) -> Result<()> {
    let Some(w) = who else {
        return Ok(());
    };
    let a = client.getattr(ino).await?;
    let owner = a.uid == w.uid;
    let eperm = |m: &str| Err(denied("setattr", errno::EPERM, m));
    if change.mode.is_some() && !owner {
        return eperm("only the owner may change the mode");
    }
    if change.uid.is_some_and(|u| u != a.uid) {
        return eperm("only root may give a file away");
    }
    if change
        .gid
        .is_some_and(|g| g != a.gid && !(owner && g == w.gid))
    {
        return eperm("only the owner may change the group, to its own");
    }
    let writable = permitted(&a, w.uid, w.gid, AccessFlags::W_OK);
    if change.size.is_some() && !writable {
        return Err(denied("setattr", errno::EACCES, "no write permission"));
    }
    for t in [change.atime, change.mtime].into_iter().flatten() {
        match t {
            TimeOrNow::SpecificTime(_) if !owner => {
                return eperm("only the owner may set a time");
            }
            TimeOrNow::Now if !owner && !writable => {
                return Err(denied("setattr", errno::EACCES, "no write permission"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squash_maps_root_or_everyone() {
        let export = |squash: &str| pb::ExportReply {
            squash: squash.into(),
            anon_uid: 7,
            anon_gid: 8,
            ..Default::default()
        };
        assert_eq!(Squash::from_export(&export("none")), None);
        let root = Squash::from_export(&export("root")).unwrap();
        assert_eq!(root.who(0), Some(Who { uid: 7, gid: 8 }));
        assert_eq!(root.who(1000), None);
        let all = Squash::from_export(&export("all")).unwrap();
        assert_eq!(all.who(1000), Some(Who { uid: 7, gid: 8 }));
    }
}
