//! Extended attributes: names with a namespace prefix, bounded values.

use bigfs_proto::errno::{E2BIG, EEXIST, ENODATA, ENOSPC, EOPNOTSUPP, ERANGE};
use bigfs_proto::{MAX_XATTR_NAME_LEN, MAX_XATTR_VALUE_LEN};

use crate::acl;
use crate::error::MetaError;
use crate::limits::{MAX_XATTR_BYTES_PER_INODE, MAX_XATTRS_PER_INODE};
use crate::state::{State, Time};

/// `setxattr` flags, as in Linux.
pub const XATTR_CREATE: u32 = 1;
pub const XATTR_REPLACE: u32 = 2;

/// Namespaces BigFS stores. Of "system." only the two POSIX ACL names
/// (see `acl`), which keep the mode in step.
const NAMESPACES: &[&str] = &["user.", "trusted.", "security."];

/// Checks an attribute name.
pub fn check_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME_LEN {
        return Err(MetaError::ns(
            ERANGE,
            format!("attribute name must be 1..={MAX_XATTR_NAME_LEN} bytes"),
        ));
    }
    if !acl::is_acl(name)
        && !NAMESPACES
            .iter()
            .any(|p| name.starts_with(p) && name.len() > p.len())
    {
        return Err(MetaError::ns(
            EOPNOTSUPP,
            format!(
                "attribute {name:?}: only user., trusted., security. names and POSIX ACLs are supported"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn set(
    state: &mut State,
    ino: u64,
    name: &str,
    value: &[u8],
    flags: u32,
    now: Time,
) -> Result<(), MetaError> {
    check_name(name)?;
    if value.len() > MAX_XATTR_VALUE_LEN {
        return Err(MetaError::ns(
            E2BIG,
            format!(
                "attribute value is {} bytes, the limit is {MAX_XATTR_VALUE_LEN}",
                value.len()
            ),
        ));
    }
    crate::snapshot::check_writable(state, ino)?;
    let inode = state.inode(ino)?;
    let exists = inode.xattrs.contains_key(name);
    if flags & XATTR_CREATE != 0 && exists {
        return Err(MetaError::ns(EEXIST, format!("attribute {name:?} exists")));
    }
    if flags & XATTR_REPLACE != 0 && !exists {
        return Err(MetaError::ns(ENODATA, format!("no attribute {name:?}")));
    }
    check_room(&inode.xattrs, name, value.len())?;
    let acl = if acl::is_acl(name) {
        Some(acl::check_set(inode, name, value)?)
    } else {
        None
    };
    if let Some(i) = state.inodes.get_mut(&ino) {
        match acl {
            Some(acl) => acl::set(i, name, acl),
            None => {
                i.xattrs.insert(name.to_string(), value.to_vec());
            }
        }
        i.ctime = now;
    }
    Ok(())
}

/// Whether setting `name` to a value of `len` bytes keeps the inode within
/// `MAX_XATTRS_PER_INODE` and `MAX_XATTR_BYTES_PER_INODE` (ENOSPC, as a
/// full ext4 inode answers, otherwise).
fn check_room(
    xattrs: &std::collections::BTreeMap<String, Vec<u8>>,
    name: &str,
    len: usize,
) -> Result<(), MetaError> {
    let replaced = xattrs.get(name).map(|v| name.len() + v.len());
    let count = xattrs.len() + usize::from(replaced.is_none());
    if count > MAX_XATTRS_PER_INODE {
        return Err(MetaError::ns(
            ENOSPC,
            format!(
                "the inode already has {MAX_XATTRS_PER_INODE} attributes (MAX_XATTRS_PER_INODE)"
            ),
        ));
    }
    let used: usize = xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    let after = used - replaced.unwrap_or(0) + name.len() + len;
    if after > MAX_XATTR_BYTES_PER_INODE {
        return Err(MetaError::ns(
            ENOSPC,
            format!(
                "the inode's attributes would take {after} bytes, the limit is {MAX_XATTR_BYTES_PER_INODE} (MAX_XATTR_BYTES_PER_INODE)"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn remove(state: &mut State, ino: u64, name: &str, now: Time) -> Result<(), MetaError> {
    check_name(name)?;
    crate::snapshot::check_writable(state, ino)?;
    if !state.inode(ino)?.xattrs.contains_key(name) {
        return Err(MetaError::ns(ENODATA, format!("no attribute {name:?}")));
    }
    if let Some(i) = state.inodes.get_mut(&ino) {
        i.xattrs.remove(name);
        i.ctime = now;
    }
    Ok(())
}

pub fn get<'a>(state: &'a State, ino: u64, name: &str) -> Result<&'a [u8], MetaError> {
    check_name(name)?;
    state
        .inode(ino)?
        .xattrs
        .get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| MetaError::ns(ENODATA, format!("no attribute {name:?}")))
}

pub fn list(state: &State, ino: u64) -> Result<Vec<String>, MetaError> {
    Ok(state.inode(ino)?.xattrs.keys().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bigfs_proto::ROOT_INO;

    fn errno(e: MetaError) -> i32 {
        bigfs_proto::errno_of(&tonic::Status::from(e))
    }

    #[test]
    fn set_get_list_remove_with_create_and_replace_flags() {
        let mut s = State::new();
        let t = Time::default();
        set(&mut s, ROOT_INO, "user.a", b"1", 0, t).unwrap();
        assert_eq!(get(&s, ROOT_INO, "user.a").unwrap(), b"1");
        assert_eq!(
            errno(set(&mut s, ROOT_INO, "user.a", b"2", XATTR_CREATE, t).unwrap_err()),
            EEXIST
        );
        set(&mut s, ROOT_INO, "user.a", b"2", XATTR_REPLACE, t).unwrap();
        assert_eq!(
            errno(set(&mut s, ROOT_INO, "user.b", b"2", XATTR_REPLACE, t).unwrap_err()),
            ENODATA
        );
        set(&mut s, ROOT_INO, "trusted.t", b"", 0, t).unwrap();
        assert_eq!(list(&s, ROOT_INO).unwrap(), vec!["trusted.t", "user.a"]);
        remove(&mut s, ROOT_INO, "user.a", t).unwrap();
        assert_eq!(errno(get(&s, ROOT_INO, "user.a").unwrap_err()), ENODATA);
        assert_eq!(
            errno(remove(&mut s, ROOT_INO, "user.a", t).unwrap_err()),
            ENODATA
        );
    }

    #[test]
    fn bad_names_and_oversize_values_are_refused() {
        let mut s = State::new();
        let t = Time::default();
        assert_eq!(
            errno(set(&mut s, ROOT_INO, "plain", b"", 0, t).unwrap_err()),
            EOPNOTSUPP
        );
        assert_eq!(
            errno(set(&mut s, ROOT_INO, "user.", b"", 0, t).unwrap_err()),
            EOPNOTSUPP
        );
        let big = vec![0u8; MAX_XATTR_VALUE_LEN + 1];
        assert_eq!(
            errno(set(&mut s, ROOT_INO, "user.big", &big, 0, t).unwrap_err()),
            E2BIG
        );
        assert!(list(&s, ROOT_INO).unwrap().is_empty());
    }

    #[test]
    fn attributes_per_inode_are_capped_by_count_and_bytes() {
        let mut s = State::new();
        let t = Time::default();
        for n in 0..MAX_XATTRS_PER_INODE {
            set(&mut s, ROOT_INO, &format!("user.{n}"), b"", 0, t).unwrap();
        }
        let err = set(&mut s, ROOT_INO, "user.one-more", b"", 0, t).unwrap_err();
        assert!(err.to_string().contains("MAX_XATTRS_PER_INODE"), "{err}");
        assert_eq!(errno(err), bigfs_proto::errno::ENOSPC);
        // Replacing an existing one is still allowed at the cap.
        set(&mut s, ROOT_INO, "user.0", b"new", 0, t).unwrap();

        let mut s = State::new();
        let big = vec![0u8; MAX_XATTR_VALUE_LEN];
        let fits = MAX_XATTR_BYTES_PER_INODE / (MAX_XATTR_VALUE_LEN + 8);
        for n in 0..fits {
            set(&mut s, ROOT_INO, &format!("user.{n}"), &big, 0, t).unwrap();
        }
        let err = set(&mut s, ROOT_INO, "user.last", &big, 0, t).unwrap_err();
        assert!(
            err.to_string().contains("MAX_XATTR_BYTES_PER_INODE"),
            "{err}"
        );
    }
}
