//! Checks of request fields a peer sends, each failing with a message that
//! names what was wrong.

use bigfs_proto::errno::{E2BIG, ENAMETOOLONG};
use bigfs_proto::{
    ChunkId, MAX_CHUNK_SIZE, MAX_COMMIT_LAYOUT_ENTRIES, MAX_KEEP_INODES, MAX_PATH_LEN,
    MAX_SYMLINK_LEN, MAX_XATTR_VALUE_LEN,
};

use crate::error::MetaError;
use crate::limits::{
    FAILURE_OPERATIONS, MAX_FAILURE_ERROR_LEN, MAX_FAILURE_OPERATION_LEN, MAX_FAILURE_REPORTER_LEN,
    MAX_INVENTORY_CHUNKS, MAX_NODE_LIST,
};
use crate::namespace::MAX_FILE_SIZE;

/// A chunk id: exactly 32 bytes.
pub fn chunk_id(bytes: &[u8]) -> Result<ChunkId, MetaError> {
    ChunkId::from_slice(bytes).map_err(|e| MetaError::InvalidArgument(e.to_string()))
}

/// A chunk length: at most `MAX_CHUNK_SIZE`.
pub fn chunk_len(len: u32) -> Result<u32, MetaError> {
    if len > MAX_CHUNK_SIZE {
        return Err(MetaError::InvalidArgument(format!(
            "chunk length {len} exceeds {MAX_CHUNK_SIZE}"
        )));
    }
    Ok(len)
}

/// A file size: at most `i64::MAX`.
pub fn file_size(size: u64) -> Result<u64, MetaError> {
    if size > MAX_FILE_SIZE {
        return Err(MetaError::InvalidArgument(format!(
            "size {size} exceeds {MAX_FILE_SIZE}"
        )));
    }
    Ok(size)
}

/// A node id (`what` names the field): bounded, and only characters that
/// are safe in a metric label, a log line and the status page.
pub fn node_field<'a>(what: &str, v: &'a str) -> Result<&'a str, MetaError> {
    bigfs_proto::check_node_id(v)
        .map_err(|e| MetaError::InvalidArgument(format!("{what}: {e}")))?;
    Ok(v)
}

/// A node's address: bounded printable ASCII.
pub fn node_address(v: &str) -> Result<&str, MetaError> {
    bigfs_proto::check_node_address(v)
        .map_err(|e| MetaError::InvalidArgument(format!("address: {e}")))?;
    Ok(v)
}

/// A list of at most `max` items; `limit` names the constant.
fn list_len(what: &str, len: usize, max: usize, limit: &str) -> Result<(), MetaError> {
    if len > max {
        return Err(MetaError::InvalidArgument(format!(
            "{what} has {len} entries, the limit is {max} ({limit})"
        )));
    }
    Ok(())
}

/// A list of node ids (`RegisterChunk.confirmed`, `exclude_nodes`, ...).
pub fn node_list(what: &str, ids: &[String]) -> Result<(), MetaError> {
    list_len(what, ids.len(), MAX_NODE_LIST, "MAX_NODE_LIST")?;
    for id in ids {
        node_field(what, id)?;
    }
    Ok(())
}

/// `RegisterChunk.receipts`: at most one per confirmable node, each a
/// node id and a MAC of at most 64 bytes (an HMAC-SHA256 is 32).
pub fn receipts(receipts: &[bigfs_proto::pb::Receipt]) -> Result<(), MetaError> {
    list_len("receipts", receipts.len(), MAX_NODE_LIST, "MAX_NODE_LIST")?;
    for r in receipts {
        node_field("receipts", &r.node_id)?;
        receipt_mac(&r.mac)?;
    }
    Ok(())
}

/// A receipt's MAC: at most 64 bytes.
pub fn receipt_mac(mac: &[u8]) -> Result<(), MetaError> {
    if mac.len() > 64 {
        return Err(MetaError::InvalidArgument(format!(
            "a receipt has {} bytes; at most 64",
            mac.len()
        )));
    }
    Ok(())
}

/// A `RegisterNode` inventory's length.
pub fn inventory_len(len: usize) -> Result<(), MetaError> {
    list_len(
        "inventory",
        len,
        MAX_INVENTORY_CHUNKS,
        "MAX_INVENTORY_CHUNKS",
    )
}

/// Most data directories a node may report (a 4U chassis holds ~100 disks).
const MAX_NODE_DISKS: usize = 256;

/// Longest disk path or bad-disk reason kept (they are shown, not used).
const MAX_DISK_TEXT: usize = 4096;

/// A node's per-disk figures: bounded, since liveness keeps them.
pub fn disks(disks: &[bigfs_proto::pb::DiskStatus]) -> Result<(), MetaError> {
    list_len("disks", disks.len(), MAX_NODE_DISKS, "MAX_NODE_DISKS")?;
    for d in disks {
        if d.path.len() > MAX_DISK_TEXT || d.reason.len() > MAX_DISK_TEXT {
            return Err(MetaError::InvalidArgument(format!(
                "a disk's path or reason is longer than {MAX_DISK_TEXT} bytes (MAX_DISK_TEXT)"
            )));
        }
    }
    Ok(())
}

/// A `CommitLayout`'s number of chunk references.
pub fn commit_entries(len: usize) -> Result<(), MetaError> {
    list_len(
        "CommitLayout chunks",
        len,
        MAX_COMMIT_LAYOUT_ENTRIES,
        "MAX_COMMIT_LAYOUT_ENTRIES",
    )
}

/// A `KeepInodes` list's length.
pub fn keep_inodes_len(len: usize) -> Result<(), MetaError> {
    list_len("KeepInodes inos", len, MAX_KEEP_INODES, "MAX_KEEP_INODES")
}

/// A `RecordAccess` list's length (a mount's batch).
pub fn record_access_len(len: usize) -> Result<(), MetaError> {
    list_len(
        "RecordAccess accesses",
        len,
        MAX_KEEP_INODES,
        "MAX_KEEP_INODES",
    )
}

/// A directory entry name, checked before the command is logged (a named
/// command is logged even when refused).
pub fn name(v: &str) -> Result<(), MetaError> {
    bigfs_proto::validate_name(v).map_err(MetaError::from)
}

/// A path for `ResolvePath`.
pub fn path(v: &str) -> Result<(), MetaError> {
    if v.len() > MAX_PATH_LEN {
        return Err(MetaError::ns(
            ENAMETOOLONG,
            format!(
                "path is {} bytes, the limit is {MAX_PATH_LEN} (MAX_PATH_LEN)",
                v.len()
            ),
        ));
    }
    Ok(())
}

/// A symlink target.
pub fn symlink_target(v: &str) -> Result<(), MetaError> {
    if v.len() > MAX_SYMLINK_LEN {
        return Err(MetaError::ns(
            ENAMETOOLONG,
            format!(
                "symlink target is {} bytes, the limit is {MAX_SYMLINK_LEN} (MAX_SYMLINK_LEN)",
                v.len()
            ),
        ));
    }
    Ok(())
}

/// An xattr name and value, checked before the command is logged.
pub fn xattr(name: &str, value: &[u8]) -> Result<(), MetaError> {
    crate::xattr::check_name(name)?;
    if value.len() > MAX_XATTR_VALUE_LEN {
        return Err(MetaError::ns(
            E2BIG,
            format!(
                "attribute value is {} bytes, the limit is {MAX_XATTR_VALUE_LEN} (MAX_XATTR_VALUE_LEN)",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// A failure report's strings: `operation` and `reporter` are refused past
/// their limits, `error` is cut to `MAX_FAILURE_ERROR_LEN`. Answers the
/// error to keep and the operation's metric label.
pub fn failure_report(
    operation: &str,
    error: &str,
    reporter: &str,
) -> Result<(String, &'static str), MetaError> {
    for (what, v, max, limit) in [
        (
            "operation",
            operation,
            MAX_FAILURE_OPERATION_LEN,
            "MAX_FAILURE_OPERATION_LEN",
        ),
        (
            "reporter",
            reporter,
            MAX_FAILURE_REPORTER_LEN,
            "MAX_FAILURE_REPORTER_LEN",
        ),
    ] {
        if v.len() > max {
            return Err(MetaError::InvalidArgument(format!(
                "ReportFailure {what} is {} bytes, the limit is {max} ({limit})",
                v.len()
            )));
        }
    }
    let kept = if error.len() > MAX_FAILURE_ERROR_LEN {
        format!(
            "{}... ({} bytes, cut at MAX_FAILURE_ERROR_LEN)",
            bigfs_proto::truncate_utf8(error, MAX_FAILURE_ERROR_LEN),
            error.len()
        )
    } else {
        error.to_string()
    };
    let label = FAILURE_OPERATIONS
        .iter()
        .find(|o| **o == operation)
        .copied()
        .unwrap_or("other");
    Ok((kept, label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn code<T: std::fmt::Debug>(r: Result<T, MetaError>) -> Code {
        tonic::Status::from(r.unwrap_err()).code()
    }

    fn message<T: std::fmt::Debug>(r: Result<T, MetaError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn node_ids_with_newlines_or_quotes_are_refused() {
        assert!(node_field("node_id", "node-1").is_ok());
        assert_eq!(
            code(node_field("node_id", "n\nbigfs_fake 1")),
            Code::InvalidArgument
        );
        assert_eq!(code(node_field("node_id", "n\"")), Code::InvalidArgument);
        assert!(message(node_field("node_id", &"x".repeat(129))).contains("MAX_NODE_ID_LEN"));
        assert!(node_address("127.0.0.1:9500").is_ok());
        assert_eq!(code(node_address("a b")), Code::InvalidArgument);
    }

    #[test]
    fn lists_past_their_caps_are_refused_naming_the_cap() {
        assert!(commit_entries(MAX_COMMIT_LAYOUT_ENTRIES).is_ok());
        assert!(
            message(commit_entries(MAX_COMMIT_LAYOUT_ENTRIES + 1))
                .contains("MAX_COMMIT_LAYOUT_ENTRIES")
        );
        assert!(keep_inodes_len(MAX_KEEP_INODES).is_ok());
        assert!(message(keep_inodes_len(MAX_KEEP_INODES + 1)).contains("MAX_KEEP_INODES"));
        assert!(inventory_len(MAX_INVENTORY_CHUNKS).is_ok());
        assert!(message(inventory_len(MAX_INVENTORY_CHUNKS + 1)).contains("MAX_INVENTORY_CHUNKS"));
        let many: Vec<String> = (0..=MAX_NODE_LIST).map(|i| format!("n{i}")).collect();
        assert!(message(node_list("confirmed", &many)).contains("MAX_NODE_LIST"));
        assert!(node_list("confirmed", &many[..3]).is_ok());
        assert_eq!(
            code(node_list("confirmed", &["bad\nid".to_string()])),
            Code::InvalidArgument
        );
    }

    #[test]
    fn names_paths_targets_and_xattrs_are_bounded() {
        assert!(name(&"x".repeat(255)).is_ok());
        assert_eq!(code(name(&"x".repeat(256))), Code::InvalidArgument);
        assert!(path(&"/a".repeat(2048)).is_ok());
        assert!(message(path(&"/a".repeat(2049))).contains("MAX_PATH_LEN"));
        assert!(
            message(symlink_target(&"t".repeat(MAX_SYMLINK_LEN + 1))).contains("MAX_SYMLINK_LEN")
        );
        assert!(xattr("user.a", &[0; MAX_XATTR_VALUE_LEN]).is_ok());
        assert!(
            message(xattr("user.a", &[0; MAX_XATTR_VALUE_LEN + 1])).contains("MAX_XATTR_VALUE_LEN")
        );
        assert!(xattr(&format!("user.{}", "n".repeat(300)), b"").is_err());
    }

    #[test]
    fn failure_reports_cut_the_error_and_refuse_long_names() {
        let (kept, label) = failure_report("read", &"e".repeat(1 << 20), "client").unwrap();
        assert!(kept.len() < MAX_FAILURE_ERROR_LEN + 100);
        assert!(kept.contains("MAX_FAILURE_ERROR_LEN"));
        assert_eq!(label, "read");
        assert_eq!(failure_report("x\ny", "e", "c").unwrap().1, "other");
        assert!(
            message(failure_report(&"o".repeat(65), "e", "c"))
                .contains("MAX_FAILURE_OPERATION_LEN")
        );
        assert!(
            message(failure_report("read", "e", &"r".repeat(257)))
                .contains("MAX_FAILURE_REPORTER_LEN")
        );
    }
}
