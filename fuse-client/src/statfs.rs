//! What `statfs` (`df`) answers: the cluster's Up capacity, or the quota of
//! the directory asked about (or of the nearest one above it) when it has
//! one. Pure, so it is tested without a mount.

use bigfs_proto::pb;

/// Fragment size when a quota applies: quotas are counted in bytes, and
/// `df` shows sizes in fragments, so a small unit keeps a 1 MiB quota's
/// free space from rounding to zero.
const QUOTA_FRAGMENT: u64 = 4096;

/// Inodes reported free when no quota limits them (the metadata service
/// has no fixed inode table).
const FREE_INODES: u64 = 1_000_000;

/// The figures of a `statfs` reply; blocks are in `frsize` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    /// Preferred I/O size.
    pub bsize: u32,
    pub frsize: u32,
}

/// The figures for cluster `status` and the `quota` that applies, if any;
/// `io_block` is the mount's preferred I/O size.
pub fn figures(status: &pb::StatusReply, quota: Option<&pb::QuotaInfo>, io_block: u32) -> StatFs {
    let (cap, used) = status
        .nodes
        .iter()
        .filter(|n| n.state == pb::NodeState::Up as i32)
        .fold((0u64, 0u64), |(c, u), n| (c + n.capacity, u + n.used));
    // Space garbage collection is about to free counts as free: it comes
    // back within seconds.
    let mut free = cap
        .saturating_sub(used)
        .saturating_add(status.gc_pending_bytes)
        .min(cap);
    let mut size = cap;
    let mut files = status.files + status.directories + FREE_INODES;
    let mut ffree = FREE_INODES;
    let mut frsize = u64::from(io_block);
    if let Some(q) = quota {
        if q.max_bytes > 0 {
            size = q.max_bytes;
            free = free.min(q.max_bytes.saturating_sub(q.bytes));
            frsize = QUOTA_FRAGMENT;
        }
        if q.max_inodes > 0 {
            files = q.max_inodes;
            ffree = q.max_inodes.saturating_sub(q.inodes);
        }
    }
    StatFs {
        blocks: size / frsize,
        bfree: free / frsize,
        files,
        ffree,
        bsize: io_block,
        frsize: u32::try_from(frsize).unwrap_or(io_block),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> pb::StatusReply {
        pb::StatusReply {
            nodes: vec![pb::NodeInfo {
                capacity: 100 << 30,
                used: 10 << 30,
                state: pb::NodeState::Up as i32,
                ..Default::default()
            }],
            files: 5,
            ..Default::default()
        }
    }

    #[test]
    fn without_a_quota_the_cluster_capacity() {
        let f = figures(&status(), None, 1 << 20);
        assert_eq!(f.blocks, 100 << 10);
        assert_eq!(f.bfree, 90 << 10);
        assert_eq!(f.ffree, FREE_INODES);
    }

    #[test]
    fn a_quota_is_the_size_and_its_room_the_free_space() {
        let q = pb::QuotaInfo {
            max_bytes: 1 << 20,
            bytes: 1000,
            max_inodes: 10,
            inodes: 3,
            ..Default::default()
        };
        let f = figures(&status(), Some(&q), 1 << 20);
        assert_eq!(f.blocks * u64::from(f.frsize), 1 << 20);
        assert_eq!(f.bfree, ((1 << 20) - 1000) / 4096);
        assert_eq!((f.files, f.ffree), (10, 7));
        // Over the limit: nothing free, not an underflow.
        let over = pb::QuotaInfo {
            bytes: 2 << 20,
            inodes: 20,
            ..q.clone()
        };
        let f = figures(&status(), Some(&over), 1 << 20);
        assert_eq!((f.bfree, f.ffree), (0, 0));
        // A quota on inodes only keeps the cluster's bytes.
        let inodes_only = pb::QuotaInfo { max_bytes: 0, ..q };
        assert_eq!(
            figures(&status(), Some(&inodes_only), 1 << 20).blocks,
            100 << 10
        );
    }
}
