//! What one request to the metadata service may carry, and what one inode
//! may hold. Each limit is named in the refusal it causes; the checks live
//! in `validate` (requests) and `xattr` (per-inode totals, at apply time).

use bigfs_proto::message_limit::Limit;
use bigfs_proto::{MAX_MESSAGE_SIZE, MAX_REQUEST_SIZE};

/// Most chunk ids one `RegisterNode` inventory lists: what fits in
/// `MAX_MESSAGE_SIZE` at 34 bytes per id on the wire (8 TB of 4 MiB
/// chunks). Larger nodes need a paged inventory (not built yet).
pub const MAX_INVENTORY_CHUNKS: usize = 1_900_000;
const _: () = assert!(MAX_INVENTORY_CHUNKS * 34 < MAX_MESSAGE_SIZE);

/// Most node ids in `RegisterChunk.confirmed`/`pending` and
/// `PlaceChunk.exclude_nodes`: a chunk is never wanted on more nodes than
/// this, and a longer list is not a real client.
pub const MAX_NODE_LIST: usize = 64;

/// Largest `ReadDir` page: a larger `limit` is clamped. 10,000 entries with
/// their attributes are ~1.5 MB of reply and a few ms under the lock.
pub const MAX_READDIR_PAGE: u32 = 10_000;

/// Largest `Admin.Queue` page (as `Files`, whose cap is
/// `views::FILES_MAX_LIMIT`): a larger limit is clamped.
pub const MAX_QUEUE_PAGE: usize = 10_000;

/// Longest `ReportFailure.operation`, in bytes: a word ("read",
/// "replicate"); it becomes a metric label.
pub const MAX_FAILURE_OPERATION_LEN: usize = 64;

/// Longest `ReportFailure.reporter`, in bytes: a node id or a client name.
pub const MAX_FAILURE_REPORTER_LEN: usize = 256;

/// Longest `ReportFailure.error` kept, in bytes: longer messages are cut
/// (an error chain from a peer can be long, and the report is still worth
/// having); the failure ring keeps `recent_failures` of them.
pub const MAX_FAILURE_ERROR_LEN: usize = 1024;

/// Operations a failure report's metric label may name; any other is
/// counted as "other", so a caller cannot mint new metric series.
pub const FAILURE_OPERATIONS: &[&str] = &[
    "read",
    "write",
    "replicate",
    "scrub",
    "put",
    "get",
    "delete",
    "forward",
    "push",
    "confirm",
];

/// Most extended attributes one inode holds (Linux file systems hold a few
/// dozen; 1024 is generous and bounds the list reply).
pub const MAX_XATTRS_PER_INODE: usize = 1024;

/// Most bytes of xattr names and values one inode holds: 1 MiB keeps an
/// inode's record (stored in every snapshot) bounded while allowing a few
/// maximal 64 KiB values.
pub const MAX_XATTR_BYTES_PER_INODE: usize = 1024 * 1024;

/// The request limit of each RPC the metadata service serves, by path:
/// `RegisterNode` carries an inventory, the Raft service keeps its own
/// limit (`raft::network`), every other call gets `MAX_REQUEST_SIZE`.
pub fn request_limit(path: &str) -> Option<Limit> {
    if path.starts_with("/bigfs.Raft/") {
        return None;
    }
    Some(if path == "/bigfs.Metadata/RegisterNode" {
        Limit {
            bytes: MAX_MESSAGE_SIZE,
            name: "MAX_MESSAGE_SIZE",
        }
    } else {
        Limit {
            bytes: MAX_REQUEST_SIZE,
            name: "MAX_REQUEST_SIZE",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_calls_get_the_small_limit_and_raft_its_own() {
        assert_eq!(
            request_limit("/bigfs.Metadata/Create").unwrap().bytes,
            MAX_REQUEST_SIZE
        );
        assert_eq!(
            request_limit("/bigfs.Ops/Fsck").unwrap().bytes,
            MAX_REQUEST_SIZE
        );
        assert_eq!(
            request_limit("/bigfs.Metadata/RegisterNode").unwrap().bytes,
            MAX_MESSAGE_SIZE
        );
        assert!(request_limit("/bigfs.Raft/Append").is_none());
    }
}
