//! Access times (atime), as the mount's `noatime`, `relatime` (the
//! default) or `strictatime` option asks.
//!
//! The kernel leaves atime to a FUSE file system. The mount decides at each
//! `open` whether a read through that handle is due to update the file's
//! atime: never under `noatime`; under `relatime` only when the atime is not
//! newer than the mtime or ctime, or is a day old (so a file read over and
//! over costs one update per change, as on a local disk); under
//! `strictatime` once per open. A read-only open notes the time at once
//! (its reads may all come from the kernel's page cache); a read-write one
//! at its first read that reaches the mount, and a background task sends what was noted every
//! `FLUSH_INTERVAL` in one `RecordAccess` call: reads never wait for a
//! metadata write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigfs_proto::pb;
use serde::{Deserialize, Serialize};

use crate::client::Client;

/// How often noted access times are sent: a batch per second keeps reads
/// off the metadata log and `stat` close behind.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// relatime's bound: an atime older than this is updated anyway.
const RELATIME_AGE_SECS: i64 = 24 * 3600;

/// When reads update the access time (`-o noatime|relatime|strictatime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AtimeMode {
    NoAtime,
    #[default]
    Relatime,
    StrictAtime,
}

fn secs(t: &Option<pb::Timestamp>) -> (i64, u32) {
    t.as_ref().map_or((0, 0), |t| (t.secs, t.nanos))
}

impl AtimeMode {
    /// Whether a read of the file `a` describes, at `now`, updates its atime.
    pub fn due(self, a: &pb::Attr, now: &pb::Timestamp) -> bool {
        match self {
            AtimeMode::NoAtime => false,
            AtimeMode::StrictAtime => true,
            AtimeMode::Relatime => {
                let atime = secs(&a.atime);
                atime <= secs(&a.mtime)
                    || atime <= secs(&a.ctime)
                    || now.secs - atime.0 >= RELATIME_AGE_SECS
            }
        }
    }
}

/// Open handles due for an atime update, and the updates noted by reads.
#[derive(Default)]
pub struct Atimes {
    mode: AtimeMode,
    due: Mutex<HashSet<u64>>,
    noted: Mutex<HashMap<u64, pb::Timestamp>>,
}

impl Atimes {
    pub fn new(mode: AtimeMode) -> Self {
        Atimes {
            mode,
            ..Default::default()
        }
    }

    /// Handle `fh` opened the file `a` describes for reading (`only`:
    /// read-only). A read-only open counts as the read: the kernel may
    /// serve every read from its page cache, which the mount never sees.
    /// A read-write open waits for a read that reaches the mount.
    pub fn opened(&self, fh: u64, a: &pb::Attr, only: bool) {
        let now = bigfs_proto::now_timestamp();
        if !self.mode.due(a, &now) {
            return;
        }
        if only {
            (self.noted.lock().unwrap_or_else(|p| p.into_inner())).insert(a.ino, now);
        } else {
            self.due
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fh);
        }
    }

    /// A read through `fh` on `ino` reached the mount.
    pub fn read(&self, fh: u64, ino: u64) {
        if self.mode == AtimeMode::NoAtime {
            return;
        }
        if self
            .due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
        {
            (self.noted.lock().unwrap_or_else(|p| p.into_inner()))
                .insert(ino, bigfs_proto::now_timestamp());
        }
    }

    pub fn released(&self, fh: u64) {
        self.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    /// The noted access time of `ino` not sent yet, for `stat`.
    pub fn noted(&self, ino: u64) -> Option<pb::Timestamp> {
        (self.noted.lock().unwrap_or_else(|p| p.into_inner()))
            .get(&ino)
            .copied()
    }

    /// Sends what reads noted. A failed send is logged and dropped: an
    /// access time is not worth retrying for.
    pub async fn send(&self, client: &Client) {
        let times: Vec<(u64, pb::Timestamp)> =
            std::mem::take(&mut *self.noted.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if times.is_empty() {
            return;
        }
        if let Err(e) = client.record_access(times).await {
            tracing::warn!(error = %e, "recording access times failed");
        }
    }

    /// Sends noted access times every `FLUSH_INTERVAL`, for as long as the
    /// mount runs.
    pub async fn run(self: Arc<Self>, client: Arc<Client>) {
        if self.mode == AtimeMode::NoAtime {
            return;
        }
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            self.send(&client).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Option<pb::Timestamp> {
        Some(pb::Timestamp { secs, nanos: 0 })
    }

    fn file(atime: i64, mtime: i64, ctime: i64) -> pb::Attr {
        pb::Attr {
            ino: 5,
            atime: ts(atime),
            mtime: ts(mtime),
            ctime: ts(ctime),
            ..Default::default()
        }
    }

    #[test]
    fn relatime_updates_after_a_change_or_a_day_only() {
        let now = pb::Timestamp {
            secs: 100_000,
            nanos: 0,
        };
        let r = AtimeMode::Relatime;
        assert!(r.due(&file(50, 60, 50), &now), "modified since read");
        assert!(r.due(&file(50, 40, 60), &now), "changed since read");
        assert!(!r.due(&file(99_000, 60, 60), &now), "read since the change");
        assert!(r.due(&file(100_000 - 86_400, 60, 60), &now), "a day old");
        assert!(AtimeMode::StrictAtime.due(&file(99_000, 60, 60), &now));
        assert!(!AtimeMode::NoAtime.due(&file(50, 60, 50), &now));
    }

    #[test]
    fn one_update_per_due_open_noted_at_its_first_read() {
        let a = Atimes::new(AtimeMode::Relatime);
        a.opened(1, &file(0, 10, 10), false);
        a.opened(2, &file(i64::MAX / 2, 10, 10), false);
        a.read(2, 7);
        assert!(a.noted(7).is_none(), "not due");
        a.read(1, 5);
        let first = a.noted(5).expect("noted");
        a.noted.lock().unwrap().clear();
        a.read(1, 5);
        assert!(a.noted(5).is_none(), "once per open");
        assert!(first.secs > 0);
        a.opened(3, &file(0, 10, 10), false);
        a.released(3);
        a.read(3, 5);
        assert!(a.noted(5).is_none(), "released");
        a.opened(4, &file(0, 10, 10), true);
        assert!(a.noted(5).is_some(), "a read-only open is the read");
    }
}
