//! Names this mount looked up, per directory, so that taking a lock can
//! drop the kernel's cached entries next to the locked file.
//!
//! Programs that coordinate through a lock often also look at which names
//! exist (SQLite decides whether a rollback journal is "hot" by whether
//! `DB-journal` exists). The kernel caches a name for `entry_ttl_ms`, so a
//! name another mount removed under the lock could still be seen here.
//! After a lock is granted, the entries this mount has looked up in the
//! locked file's directory are invalidated, and the next use looks them up
//! afresh. Bounded: a few names per directory, a few directories.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Names remembered per directory: a lock drops at most this many entries.
const MAX_NAMES_PER_DIR: usize = 64;
/// Directories remembered (the oldest is forgotten first).
const MAX_DIRS: usize = 1024;
/// Inodes whose directory is remembered (forgotten all at once past it).
const MAX_INODES: usize = 65_536;

#[derive(Default)]
struct Tables {
    names: HashMap<u64, VecDeque<String>>,
    dirs: VecDeque<u64>,
    parent_of: HashMap<u64, u64>,
}

#[derive(Default)]
pub struct KnownNames {
    tables: Mutex<Tables>,
}

impl KnownNames {
    /// Notes that `name` in directory `parent` was looked up as `ino`.
    pub fn seen(&self, parent: u64, name: &str, ino: u64) {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if t.parent_of.len() >= MAX_INODES {
            t.parent_of.clear();
        }
        t.parent_of.insert(ino, parent);
        if !t.names.contains_key(&parent) {
            if t.dirs.len() >= MAX_DIRS
                && let Some(old) = t.dirs.pop_front()
            {
                t.names.remove(&old);
            }
            t.dirs.push_back(parent);
        }
        let names = t.names.entry(parent).or_default();
        if names.iter().any(|n| n == name) {
            return;
        }
        if names.len() >= MAX_NAMES_PER_DIR {
            names.pop_front();
        }
        names.push_back(name.to_string());
    }

    /// The directory `ino` was looked up in and the names seen there.
    pub fn siblings(&self, ino: u64) -> Option<(u64, Vec<String>)> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let parent = *t.parent_of.get(&ino)?;
        let names = t.names.get(&parent)?.iter().cloned().collect();
        Some((parent, names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_the_names_seen_in_the_same_directory_bounded() {
        let k = KnownNames::default();
        k.seen(1, "db", 10);
        k.seen(1, "db-journal", 11);
        k.seen(1, "db", 10);
        k.seen(2, "other", 12);
        assert_eq!(
            k.siblings(10),
            Some((1, vec!["db".to_string(), "db-journal".to_string()]))
        );
        assert_eq!(k.siblings(99), None);
        for i in 0..(MAX_NAMES_PER_DIR as u64 + 5) {
            k.seen(3, &format!("n{i}"), 100 + i);
        }
        let (_, names) = k.siblings(100).expect("directory 3");
        assert_eq!(names.len(), MAX_NAMES_PER_DIR);
        assert_eq!(names[0], "n5", "the oldest names went first");
    }
}
