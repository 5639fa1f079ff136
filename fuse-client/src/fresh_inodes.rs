//! Inodes this mount created a moment ago, known to carry no extended
//! attributes.
//!
//! The kernel asks for `security.capability` before the first write to
//! every file (to drop file capabilities on write). For a file this mount
//! has just created the answer is known: there are none. Answering from
//! here saves one metadata round trip per new file. An entry lasts the
//! attribute TTL, the same staleness any cached attribute already has, and
//! this mount's own setxattr/removexattr drop it at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bigfs_proto::pb;
use lru::LruCache;

/// Entries kept at most; older ones are simply asked about again.
const CAPACITY: usize = 4096;

pub struct FreshInodes {
    ttl: Duration,
    created: Mutex<LruCache<u64, Instant>>,
}

impl FreshInodes {
    pub fn new(ttl: Duration) -> Self {
        let cap = std::num::NonZeroUsize::new(CAPACITY).unwrap_or(std::num::NonZeroUsize::MIN);
        FreshInodes {
            ttl,
            created: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The inode of `attr` was just created here: known to have no
    /// extended attributes unless the service says it has some (an ACL
    /// inherited from the directory's default ACL).
    pub fn created(&self, attr: &pb::Attr) {
        if attr.has_xattrs {
            return;
        }
        if let Ok(mut c) = self.created.lock() {
            c.put(attr.ino, Instant::now());
        }
    }

    /// Its extended attributes are changing: ask the cluster from now on.
    pub fn forget(&self, ino: u64) {
        if let Ok(mut c) = self.created.lock() {
            c.pop(&ino);
        }
    }

    /// Whether `ino` is known to have no extended attributes right now.
    pub fn has_no_xattrs(&self, ino: u64) -> bool {
        let Ok(mut c) = self.created.lock() else {
            return false;
        };
        match c.peek(&ino) {
            Some(t) if t.elapsed() < self.ttl => true,
            Some(_) => {
                c.pop(&ino);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(ino: u64, has_xattrs: bool) -> pb::Attr {
        pb::Attr {
            ino,
            has_xattrs,
            ..Default::default()
        }
    }

    #[test]
    fn known_only_while_fresh_and_until_changed() {
        let f = FreshInodes::new(Duration::from_millis(50));
        assert!(!f.has_no_xattrs(7));
        f.created(&made(7, false));
        assert!(f.has_no_xattrs(7));
        f.forget(7);
        assert!(!f.has_no_xattrs(7));
        f.created(&made(9, true));
        assert!(!f.has_no_xattrs(9), "made with an inherited ACL");
        f.created(&made(8, false));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!f.has_no_xattrs(8), "stale after the TTL");
    }
}
