//! Directory attributes as this client's own change left them.
//!
//! The kernel drops a directory's cached attributes whenever an entry in it
//! changes (create, unlink, rename, link), and the next path walk through
//! the directory asks for them again (GETATTR) to check permissions. The
//! metadata service answers each such change with the directory's attrs
//! after it, so that GETATTR is answered here instead of by another round
//! trip: one call of three for a create, rename or unlink.
//!
//! An entry is trusted only when nothing else this client did could have
//! changed the directory meanwhile: the change was the only one in flight
//! on the directory from start to end. It is used once, within the
//! attribute TTL (the staleness any cached attribute already has), and
//! any other change of the directory this client makes (setattr, xattrs)
//! drops it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bigfs_proto::pb;

/// Directories tracked at most; past it, expired entries are dropped.
const CAPACITY: usize = 4096;

#[derive(Default)]
struct Dir {
    /// Bumped when a change of the directory starts.
    generation: u64,
    /// Changes started and not yet finished.
    in_flight: u32,
    fresh: Option<(pb::Attr, Instant)>,
}

pub struct FreshDirs {
    ttl: Duration,
    dirs: Mutex<HashMap<u64, Dir>>,
}

/// A change in flight: per directory, the generation it started at and
/// whether it was alone then.
#[must_use = "finish the change, or its directories stay marked busy"]
pub struct Change {
    dirs: Vec<(u64, u64, bool)>,
}

impl FreshDirs {
    pub fn new(ttl: Duration) -> Self {
        FreshDirs {
            ttl,
            dirs: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Dir>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a change of `dirs` as started: their entries are dropped.
    pub fn start(&self, dirs: &[u64]) -> Change {
        let mut g = self.lock();
        if g.len() >= CAPACITY {
            let ttl = self.ttl;
            g.retain(|_, d| {
                d.in_flight > 0 || d.fresh.as_ref().is_some_and(|(_, t)| t.elapsed() < ttl)
            });
        }
        let mut out = Vec::with_capacity(dirs.len());
        for &ino in dirs {
            if out.iter().any(|(i, _, _)| *i == ino) {
                continue;
            }
            let d = g.entry(ino).or_default();
            d.generation += 1;
            d.fresh = None;
            out.push((ino, d.generation, d.in_flight == 0));
            d.in_flight += 1;
        }
        Change { dirs: out }
    }

    /// Ends `change`; `after` holds the directories' attrs after it (none
    /// when it failed). Kept for a directory only if no other change of it
    /// overlapped this one.
    pub fn finish(&self, change: Change, after: &[pb::Attr]) {
        let mut g = self.lock();
        let now = Instant::now();
        for (ino, generation, alone) in change.dirs {
            let Some(d) = g.get_mut(&ino) else {
                continue;
            };
            d.in_flight = d.in_flight.saturating_sub(1);
            if alone
                && d.generation == generation
                && let Some(a) = after.iter().find(|a| a.ino == ino)
            {
                d.fresh = Some((a.clone(), now));
            }
            if d.in_flight == 0 && d.fresh.is_none() {
                g.remove(&ino);
            }
        }
    }

    /// The attrs of `ino` as this client's last change left them, if that
    /// was within the TTL; used once.
    pub fn take(&self, ino: u64) -> Option<pb::Attr> {
        let mut g = self.lock();
        let d = g.get_mut(&ino)?;
        let (attr, at) = d.fresh.take()?;
        if d.in_flight == 0 {
            g.remove(&ino);
        }
        (at.elapsed() < self.ttl).then_some(attr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ino: u64, nlink: u32) -> pb::Attr {
        pb::Attr {
            ino,
            nlink,
            ..Default::default()
        }
    }

    #[test]
    fn a_lone_change_is_answered_once() {
        let f = FreshDirs::new(Duration::from_secs(5));
        let c = f.start(&[7]);
        f.finish(c, &[dir(7, 3)]);
        assert_eq!(f.take(7).map(|a| a.nlink), Some(3));
        assert_eq!(f.take(7), None, "used once");
    }

    #[test]
    fn overlapping_changes_trust_neither() {
        let f = FreshDirs::new(Duration::from_secs(5));
        let a = f.start(&[7]);
        let b = f.start(&[7]);
        // b's answer arrives first, a's (older) second: neither is kept.
        f.finish(b, &[dir(7, 4)]);
        f.finish(a, &[dir(7, 3)]);
        assert_eq!(f.take(7), None);
        // A change that started while another was in flight is not kept
        // even if it ends last.
        let a = f.start(&[7]);
        let b = f.start(&[7]);
        f.finish(a, &[dir(7, 3)]);
        f.finish(b, &[dir(7, 4)]);
        assert_eq!(f.take(7), None);
    }

    #[test]
    fn another_change_drops_the_entry_and_a_failure_keeps_nothing() {
        let f = FreshDirs::new(Duration::from_secs(5));
        let c = f.start(&[7, 8]);
        f.finish(c, &[dir(7, 3), dir(8, 2)]);
        // A setattr of 7 (no attrs to keep) drops 7's entry.
        let s = f.start(&[7]);
        f.finish(s, &[]);
        assert_eq!(f.take(7), None);
        assert_eq!(f.take(8).map(|a| a.nlink), Some(2));
        assert!(f.lock().is_empty(), "nothing left behind");
    }

    #[test]
    fn an_entry_older_than_the_ttl_is_not_used() {
        let f = FreshDirs::new(Duration::ZERO);
        let c = f.start(&[7]);
        f.finish(c, &[dir(7, 3)]);
        assert_eq!(f.take(7), None);
    }
}
