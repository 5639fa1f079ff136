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
//!
//! The same bookkeeping knows every name of the directories this client
//! made, so that looking up a name that is not there (what the kernel does
//! before every create, mkdir and rename target) costs no round trip. A
//! directory made here starts empty (its version 0). The service bumps a
//! directory's version once per change of its entries, so each later change
//! made here, alone, that finds the version exactly one higher than the
//! last one known proves nobody else changed the directory in between, and
//! the names are updated; anything else (another client's change, an
//! overlap, a failure, a change that is not of entries) forgets them. A
//! name is answered absent only within the attribute TTL of the last such
//! proof: the staleness the kernel's own cached entries have.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bigfs_proto::pb;

/// Directories tracked at most; past it, expired entries are dropped.
const CAPACITY: usize = 4096;

/// Names one known directory may hold; past it the names are forgotten.
const MAX_KNOWN_NAMES: usize = 50_000;

#[derive(Default)]
struct Dir {
    /// Bumped when a change of the directory starts.
    generation: u64,
    /// Changes started and not yet finished.
    in_flight: u32,
    fresh: Option<(pb::Attr, Instant)>,
    known: Option<Known>,
}

/// Every name of a directory, as of its `version`, proved at `at`.
struct Known {
    names: HashSet<String>,
    version: u64,
    at: Instant,
}

/// What a change did to one directory's names.
#[derive(Debug, Clone, Copy)]
pub enum NameChange<'a> {
    Added(u64, &'a str),
    Removed(u64, &'a str),
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
                d.in_flight > 0
                    || d.fresh.as_ref().is_some_and(|(_, t)| t.elapsed() < ttl)
                    || d.known.as_ref().is_some_and(|k| k.at.elapsed() < ttl)
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
            if d.in_flight > 0 {
                d.known = None;
            }
            out.push((ino, d.generation, d.in_flight == 0));
            d.in_flight += 1;
        }
        Change { dirs: out }
    }

    /// Ends `change`; `after` holds the directories' attrs after it (none
    /// when it failed), `names` what it did to their names. Kept for a
    /// directory only if no other change of it overlapped this one.
    pub fn finish(&self, change: Change, after: &[pb::Attr], names: &[NameChange<'_>]) {
        let mut g = self.lock();
        let now = Instant::now();
        for (ino, generation, alone) in change.dirs {
            let Some(d) = g.get_mut(&ino) else {
                continue;
            };
            d.in_flight = d.in_flight.saturating_sub(1);
            let attr = after.iter().find(|a| a.ino == ino);
            let mine = alone && d.generation == generation;
            if mine && let Some(a) = attr {
                d.fresh = Some((a.clone(), now));
            }
            d.known = d.known.take().and_then(|mut k| {
                let a = attr.filter(|a| mine && a.version == k.version + 1)?;
                for n in names {
                    match *n {
                        NameChange::Added(dir, name) if dir == ino => {
                            k.names.insert(name.to_string());
                        }
                        NameChange::Removed(dir, name) if dir == ino => {
                            k.names.remove(name);
                        }
                        _ => {}
                    }
                }
                k.version = a.version;
                k.at = now;
                (k.names.len() <= MAX_KNOWN_NAMES).then_some(k)
            });
            if d.in_flight == 0 && d.fresh.is_none() && d.known.is_none() {
                g.remove(&ino);
            }
        }
    }

    /// `attr`, a directory this client just made, starts known and empty,
    /// unless someone changed it already (its version is not 0).
    pub fn made(&self, attr: &pb::Attr) {
        if attr.version != 0 || attr.kind != pb::FileKind::Directory as i32 {
            return;
        }
        let mut g = self.lock();
        if g.len() >= CAPACITY {
            return;
        }
        let d = g.entry(attr.ino).or_default();
        if d.in_flight == 0 {
            d.known = Some(Known {
                names: HashSet::new(),
                version: 0,
                at: Instant::now(),
            });
        }
    }

    /// Whether `name` is surely not in directory `dir`: every name of it is
    /// known, proved within the TTL, with no change of it in flight.
    pub fn absent(&self, dir: u64, name: &str) -> bool {
        let g = self.lock();
        g.get(&dir).is_some_and(|d| {
            d.in_flight == 0
                && d.known
                    .as_ref()
                    .is_some_and(|k| k.at.elapsed() < self.ttl && !k.names.contains(name))
        })
    }

    /// The attrs of `ino` as this client's last change left them, if that
    /// was within the TTL; used once.
    pub fn take(&self, ino: u64) -> Option<pb::Attr> {
        let mut g = self.lock();
        let d = g.get_mut(&ino)?;
        let (attr, at) = d.fresh.take()?;
        if d.in_flight == 0 && d.known.is_none() {
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
        f.finish(c, &[dir(7, 3)], &[]);
        assert_eq!(f.take(7).map(|a| a.nlink), Some(3));
        assert_eq!(f.take(7), None, "used once");
    }

    #[test]
    fn overlapping_changes_trust_neither() {
        let f = FreshDirs::new(Duration::from_secs(5));
        let a = f.start(&[7]);
        let b = f.start(&[7]);
        // b's answer arrives first, a's (older) second: neither is kept.
        f.finish(b, &[dir(7, 4)], &[]);
        f.finish(a, &[dir(7, 3)], &[]);
        assert_eq!(f.take(7), None);
        // A change that started while another was in flight is not kept
        // even if it ends last.
        let a = f.start(&[7]);
        let b = f.start(&[7]);
        f.finish(a, &[dir(7, 3)], &[]);
        f.finish(b, &[dir(7, 4)], &[]);
        assert_eq!(f.take(7), None);
    }

    #[test]
    fn another_change_drops_the_entry_and_a_failure_keeps_nothing() {
        let f = FreshDirs::new(Duration::from_secs(5));
        let c = f.start(&[7, 8]);
        f.finish(c, &[dir(7, 3), dir(8, 2)], &[]);
        // A setattr of 7 (no attrs to keep) drops 7's entry.
        let s = f.start(&[7]);
        f.finish(s, &[], &[]);
        assert_eq!(f.take(7), None);
        assert_eq!(f.take(8).map(|a| a.nlink), Some(2));
        assert!(f.lock().is_empty(), "nothing left behind");
    }

    fn made(ino: u64) -> pb::Attr {
        pb::Attr {
            ino,
            kind: pb::FileKind::Directory as i32,
            ..Default::default()
        }
    }

    fn at(ino: u64, version: u64) -> pb::Attr {
        pb::Attr {
            ino,
            version,
            ..Default::default()
        }
    }

    #[test]
    fn names_of_a_directory_made_here_follow_its_own_changes() {
        let f = FreshDirs::new(Duration::from_secs(5));
        f.made(&made(7));
        assert!(f.absent(7, "a"));
        let c = f.start(&[7]);
        assert!(!f.absent(7, "a"), "not while a change is in flight");
        f.finish(c, &[at(7, 1)], &[NameChange::Added(7, "a")]);
        assert!(!f.absent(7, "a"));
        assert!(f.absent(7, "b"));
        let c = f.start(&[7]);
        f.finish(c, &[at(7, 2)], &[NameChange::Removed(7, "a")]);
        assert!(f.absent(7, "a"));
        // Someone else changed it too: the version moved by two.
        let c = f.start(&[7]);
        f.finish(c, &[at(7, 4)], &[NameChange::Added(7, "c")]);
        assert!(!f.absent(7, "b"), "forgotten");
    }

    #[test]
    fn names_are_forgotten_on_overlap_failure_or_a_changed_directory() {
        let f = FreshDirs::new(Duration::from_secs(5));
        // Made, but changed by someone before this client saw it.
        f.made(&at(7, 1));
        assert!(!f.absent(7, "a"));
        f.made(&made(8));
        let (a, b) = (f.start(&[8]), f.start(&[8]));
        f.finish(a, &[at(8, 1)], &[]);
        f.finish(b, &[at(8, 2)], &[]);
        assert!(!f.absent(8, "a"), "overlapping changes");
        f.made(&made(9));
        let c = f.start(&[9]);
        f.finish(c, &[], &[NameChange::Added(9, "a")]);
        assert!(!f.absent(9, "a"), "a failed change");
        // Past the TTL nothing is answered absent.
        let f = FreshDirs::new(Duration::ZERO);
        f.made(&made(7));
        assert!(!f.absent(7, "a"));
    }

    #[test]
    fn an_entry_older_than_the_ttl_is_not_used() {
        let f = FreshDirs::new(Duration::ZERO);
        let c = f.start(&[7]);
        f.finish(c, &[dir(7, 3)], &[]);
        assert_eq!(f.take(7), None);
    }
}
