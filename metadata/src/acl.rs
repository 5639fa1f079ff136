//! POSIX ACLs, kept as the two extended attributes Linux uses
//! (`system.posix_acl_access`, `system.posix_acl_default`) in the kernel's
//! xattr encoding, and kept in step with the mode as Linux file systems do:
//! - setting an access ACL sets the mode's permission bits from it, and an
//!   ACL the mode says in full (the three base entries) is not stored;
//! - chmod rewrites the access ACL's owner, mask (or group) and other
//!   entries;
//! - a new inode in a directory with a default ACL takes that ACL, masked
//!   by the create mode, as its access ACL (a new directory also as its
//!   default ACL), and the umask does not apply.
//!
//! The kernel enforces ACLs itself (the mount asks for `FUSE_POSIX_ACL`);
//! this module only stores them, so every function here is deterministic
//! and runs inside `apply`.

use bigfs_proto::errno::{EACCES, EINVAL};

use crate::error::MetaError;
use crate::state::{Inode, Kind};

/// The access ACL: what the kernel checks.
pub const ACCESS: &str = "system.posix_acl_access";
/// A directory's default ACL: what new entries in it inherit.
pub const DEFAULT: &str = "system.posix_acl_default";

/// The xattr encoding's version (`POSIX_ACL_XATTR_VERSION`).
const VERSION: u32 = 2;
/// Header: the version, a little-endian u32.
const HEADER_LEN: usize = 4;
/// Entry: tag (u16), perm (u16), id (u32), little-endian.
const ENTRY_LEN: usize = 8;
/// The id of an entry that names no one (owner, group, mask, other).
const UNDEFINED_ID: u32 = u32::MAX;

// Tags, in the order a valid ACL lists them.
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// Whether `name` is one of the two ACL attributes.
pub fn is_acl(name: &str) -> bool {
    name == ACCESS || name == DEFAULT
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed, valid ACL (entries in the canonical order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

fn invalid(why: &str) -> MetaError {
    MetaError::ns(EINVAL, format!("invalid POSIX ACL: {why}"))
}

impl Acl {
    /// Parses an xattr value; `None` for an ACL with no entries (which the
    /// kernel treats as removing it). EINVAL for anything malformed, as
    /// `posix_acl_valid` answers.
    pub fn parse(value: &[u8]) -> Result<Option<Acl>, MetaError> {
        if value.len() < HEADER_LEN || !(value.len() - HEADER_LEN).is_multiple_of(ENTRY_LEN) {
            return Err(invalid("the length is not a header and whole entries"));
        }
        let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if version != VERSION {
            return Err(invalid(&format!("version {version}, not {VERSION}")));
        }
        let entries: Vec<Entry> = value[HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let acl = Acl { entries };
        acl.validate()?;
        Ok(Some(acl))
    }

    /// The checks of the kernel's `posix_acl_valid`: one owner, group and
    /// other entry; named users and groups in increasing id order; a mask
    /// exactly when there are named entries; permissions rwx only.
    fn validate(&self) -> Result<(), MetaError> {
        let rank = |tag| match tag {
            USER_OBJ => Some(0),
            USER => Some(1),
            GROUP_OBJ => Some(2),
            GROUP => Some(3),
            MASK => Some(4),
            OTHER => Some(5),
            _ => None,
        };
        let mut last: Option<(u8, u32)> = None;
        let mut named = false;
        let mut count = [0u32; 6];
        for e in &self.entries {
            if e.perm & !7 != 0 {
                return Err(invalid(&format!("permission {:#o}", e.perm)));
            }
            let r = rank(e.tag).ok_or_else(|| invalid(&format!("tag {:#x}", e.tag)))?;
            let id = if matches!(e.tag, USER | GROUP) {
                named = true;
                e.id
            } else {
                0
            };
            if let Some(prev) = last
                && prev >= (r, id)
            {
                return Err(invalid("entries out of order or repeated"));
            }
            last = Some((r, id));
            count[usize::from(r)] += 1;
        }
        if count[0] != 1 || count[2] != 1 || count[5] != 1 {
            return Err(invalid("it needs one owner, one group and one other entry"));
        }
        if named && count[4] == 0 {
            return Err(invalid("named users or groups need a mask entry"));
        }
        Ok(())
    }

    /// The xattr encoding (base entries with the undefined id).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            let id = if matches!(e.tag, USER | GROUP) {
                e.id
            } else {
                UNDEFINED_ID
            };
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// Whether the ACL has no more than the three base entries, so that the
    /// mode says all of it.
    pub fn is_minimal(&self) -> bool {
        self.entries
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    }

    /// The permission bits (0777) the ACL gives the mode: owner, mask (or
    /// the owning group without one) and other, as `posix_acl_equiv_mode`.
    pub fn mode_bits(&self) -> u32 {
        let perm = |tag| {
            self.entries
                .iter()
                .find(|e| e.tag == tag)
                .map_or(0, |e| u32::from(e.perm))
        };
        let group = if self.has(MASK) {
            perm(MASK)
        } else {
            perm(GROUP_OBJ)
        };
        perm(USER_OBJ) << 6 | group << 3 | perm(OTHER)
    }

    fn has(&self, tag: u16) -> bool {
        self.entries.iter().any(|e| e.tag == tag)
    }

    /// Sets the owner, mask (or group without one) and other entries to
    /// `f(entry's perm, the mode's bits for its class)`.
    fn each_class(&mut self, mode: u32, f: impl Fn(u16, u16) -> u16) {
        let group_tag = if self.has(MASK) { MASK } else { GROUP_OBJ };
        for e in &mut self.entries {
            let bits = match e.tag {
                USER_OBJ => mode >> 6,
                OTHER => mode,
                t if t == group_tag => mode >> 3,
                _ => continue,
            };
            e.perm = f(e.perm, (bits & 7) as u16);
        }
    }

    /// A chmod to `mode`: the owner, mask (or group) and other entries take
    /// its bits, as `posix_acl_chmod`.
    pub fn chmod(&mut self, mode: u32) {
        self.each_class(mode, |_, bits| bits);
    }

    /// The ACL a new inode with create `mode` takes from this default ACL,
    /// and the inode's mode, as `posix_acl_create_masq`: each base entry
    /// (mask instead of group if there is one) keeps only the bits the
    /// create mode allows, and the mode takes the entries' bits.
    pub fn create_masked(&self, mode: u32) -> (Acl, u32) {
        let mut acl = self.clone();
        acl.each_class(mode, |perm, bits| perm & bits);
        let mode = (mode & !0o777) | acl.mode_bits();
        (acl, mode)
    }
}

/// Checks setting ACL `name` on `inode`: a default ACL only on a
/// directory (EACCES otherwise, as Linux answers), and a valid value.
pub fn check_set(inode: &Inode, name: &str, value: &[u8]) -> Result<Option<Acl>, MetaError> {
    if name == DEFAULT && inode.kind != Kind::Directory {
        return Err(MetaError::ns(EACCES, "only a directory has a default ACL"));
    }
    Acl::parse(value)
}

/// Sets ACL `name` on `inode` (checked by [`check_set`]): an access ACL sets
/// the mode's permission bits and is dropped when the mode says all of it;
/// `None` removes the attribute.
pub fn set(inode: &mut Inode, name: &str, acl: Option<Acl>) {
    match acl {
        Some(acl) if name == ACCESS => {
            inode.mode = (inode.mode & !0o777) | acl.mode_bits();
            if acl.is_minimal() {
                inode.xattrs.remove(ACCESS);
            } else {
                inode.xattrs.insert(ACCESS.to_string(), acl.encode());
            }
        }
        Some(acl) => {
            inode.xattrs.insert(name.to_string(), acl.encode());
        }
        None => {
            inode.xattrs.remove(name);
        }
    }
}

/// A chmod of `inode` to `mode`: its access ACL follows.
pub fn chmod(inode: &mut Inode, mode: u32) {
    let Some(Ok(Some(mut acl))) = inode.xattrs.get(ACCESS).map(|v| Acl::parse(v)) else {
        return;
    };
    acl.chmod(mode);
    inode.xattrs.insert(ACCESS.to_string(), acl.encode());
}

/// What a new inode of `kind` with create `mode` gets in a directory whose
/// attributes are `parent_xattrs`: its mode (the umask applies only when
/// the directory has no default ACL) and its ACL attributes.
pub fn inherit(
    parent_xattrs: &std::collections::BTreeMap<String, Vec<u8>>,
    kind: Kind,
    mode: u32,
    umask: u32,
) -> (u32, Vec<(String, Vec<u8>)>) {
    if kind == Kind::Symlink {
        // Always 0777, never an ACL.
        return (mode, Vec::new());
    }
    let default = match parent_xattrs.get(DEFAULT).map(|v| Acl::parse(v)) {
        Some(Ok(Some(acl))) => acl,
        _ => return (mode & !(umask & 0o777), Vec::new()),
    };
    let (access, mode) = default.create_masked(mode);
    let mut xattrs = Vec::new();
    if !access.is_minimal() {
        xattrs.push((ACCESS.to_string(), access.encode()));
    }
    if kind == Kind::Directory {
        xattrs.push((DEFAULT.to_string(), default.encode()));
    }
    (mode, xattrs)
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
