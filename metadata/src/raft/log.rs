//! The Raft log and vote on disk.
//!
//! - `raft.log`: one record per entry, in the command log's record format
//!   (length, CRC-32, index, bincode entry). Appends are one `write` per
//!   batch; when they reach the disk is the [`LogSync`] policy: `Always`
//!   acknowledges an append to openraft only after an fdatasync, which a
//!   flusher thread shares among every append waiting for it (group
//!   commit); `Interval` acknowledges once the write is in the kernel and
//!   syncs in the background, as the single-member command log did.
//! - `raft.vote`: the vote and the last purged log id, replaced atomically
//!   (written aside, synced, renamed).
//!
//! A truncation (a follower's log conflicting with the leader's) or a purge
//! (entries a snapshot covers) rewrites `raft.log` the same atomic way; both
//! are rare, and the log between snapshots is short. Every entry not yet
//! purged is also kept in memory, where openraft reads it back.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use super::{Entry, NodeId, TypeConfig};
use crate::error::MetaError;
use crate::store::{LogFile, LogSync, Syncer, decode, encode, push_record, record_at};

/// File name of the Raft log inside the data directory.
pub const LOG_FILE: &str = "raft.log";
/// File name of the vote (and purge point) inside the data directory.
pub const VOTE_FILE: &str = "raft.vote";

/// What `raft.vote` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hard {
    /// Format version of the file.
    version: u32,
    vote: Option<Vote<NodeId>>,
    purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// Version 2: trash, quotas, locks and replication settings changed the
/// commands' encoding (see `state::Command`); a version-1 data directory is
/// refused, not misread.
pub const HARD_VERSION: u32 = 2;

struct Inner {
    dir: PathBuf,
    entries: BTreeMap<u64, Entry>,
    hard: Hard,
}

/// The log store: cheap to clone (openraft wants a reader beside it).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    file: Arc<LogFile>,
    sync: LogSync,
    flusher: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
    /// Stops the background syncer when the last clone goes.
    _stop: Arc<StopOnDrop>,
}

/// Sets its flag when dropped: the syncer thread's stop signal.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn sio(e: impl std::fmt::Display, verb: ErrorVerb) -> StorageError<NodeId> {
    storage_error(ErrorSubject::Logs, e, verb)
}

/// An openraft storage error about `subject`, from our own error.
pub(crate) fn storage_error(
    subject: ErrorSubject<NodeId>,
    e: impl std::fmt::Display,
    verb: ErrorVerb,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Replaces `path` with `bytes` atomically: a crash leaves the old file or
/// the new one, never a mix.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path, sync: LogSync, interval: Duration) -> Result<LogStore, MetaError> {
        let hard = match std::fs::read(dir.join(VOTE_FILE)) {
            Ok(bytes) => decode_hard(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Hard {
                version: HARD_VERSION,
                ..Hard::default()
            },
            Err(e) => return Err(crate::store::io("reading the Raft vote", e)),
        };
        let path = dir.join(LOG_FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| crate::store::io("reading the Raft log", e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::store::io("opening the Raft log", e)),
        }
        let (entries, pos) = decode_log(&bytes, hard.purged)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| crate::store::io("opening the Raft log", e))?;
        if pos < bytes.len() {
            tracing::warn!(
                valid = pos,
                len = bytes.len(),
                "Raft log has a torn tail; truncating"
            );
            file.set_len(pos as u64)
                .map_err(|e| crate::store::io("truncating the Raft log", e))?;
            file.sync_data()
                .map_err(|e| crate::store::io("fdatasync of the Raft log", e))?;
        }
        tracing::info!(
            entries = entries.len(),
            last = entries.keys().next_back().copied(),
            purged = ?hard.purged,
            "Raft log loaded"
        );
        let file = Arc::new(LogFile::new(file));
        let stop = Arc::new(AtomicBool::new(false));
        let flusher = match sync {
            LogSync::Interval => {
                crate::store::spawn_syncer(Arc::clone(&file), Arc::clone(&stop), interval)?;
                None
            }
            LogSync::Always => Some(spawn_flusher(Arc::clone(&file))?),
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                entries,
                hard,
            })),
            file,
            sync,
            flusher,
            _stop: Arc::new(StopOnDrop(stop)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle that makes every appended entry durable now (a client's
    /// fsync under `LogSync::Interval`).
    pub fn syncer(&self) -> Syncer {
        Syncer(Arc::clone(&self.file))
    }

    /// The last committed log id this member was told of.
    pub fn committed(&self) -> Option<LogId<NodeId>> {
        self.lock().hard.committed
    }

    /// Whether the log holds no entry and no vote: a member never started.
    pub fn is_empty(&self) -> bool {
        let g = self.lock();
        g.entries.is_empty() && g.hard.vote.is_none() && g.hard.purged.is_none()
    }

    /// Rewrites `raft.log` with the entries kept in memory.
    fn rewrite(&self, g: &Inner) -> Result<(), MetaError> {
        let bytes = encode_log(&g.entries)?;
        let path = g.dir.join(LOG_FILE);
        let mut f = self
            .file
            .file
            .lock()
            .map_err(|_| MetaError::Internal("log lock poisoned".into()))?;
        replace_file(&path, &bytes).map_err(|e| crate::store::io("rewriting the Raft log", e))?;
        *f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| crate::store::io("reopening the Raft log", e))?;
        self.file.dirty.store(false, Ordering::Release);
        Ok(())
    }

    fn save_hard(&self, g: &Inner) -> Result<(), MetaError> {
        replace_file(&g.dir.join(VOTE_FILE), &encode(&g.hard)?)
            .map_err(|e| crate::store::io("writing the Raft vote", e))
    }
}

/// Decodes `raft.vote`, refusing a format version this build does not read.
fn decode_hard(bytes: &[u8]) -> Result<Hard, MetaError> {
    let hard: Hard = decode(bytes)?;
    if hard.version != HARD_VERSION {
        return Err(MetaError::Store(format!(
            "{VOTE_FILE} has format version {}, this build reads {HARD_VERSION}. \
             A data directory of an older BigFS is not migrated: start the \
             bigfs-metadata that wrote it, or wipe this member's data directory \
             and let it rejoin from the others",
            hard.version
        )));
    }
    Ok(hard)
}

/// Decodes a whole `raft.vote` file and answers its purge point, which
/// decides what [`decode_log`] keeps (public for the fuzz harness).
pub fn decode_vote_file(bytes: &[u8]) -> Result<Option<LogId<NodeId>>, MetaError> {
    decode_hard(bytes).map(|h| h.purged)
}

/// Decodes the records of a `raft.log` image, skipping those up to the
/// `purged` log id. Answers the entries and where the valid records end:
/// bytes after it are a torn tail. A record whose checksum holds but whose
/// entry does not decode is an error, not a tail.
pub fn decode_log(
    bytes: &[u8],
    purged: Option<LogId<NodeId>>,
) -> Result<(BTreeMap<u64, Entry>, usize), MetaError> {
    let mut entries = BTreeMap::new();
    let mut pos = 0;
    while let Some((index, payload, next)) = record_at(bytes, pos) {
        if purged.is_none_or(|p| index > p.index) {
            let entry: Entry = decode(payload)?;
            entries.insert(index, entry);
        }
        pos = next;
    }
    Ok((entries, pos))
}

/// The `raft.log` image of `entries`: what [`decode_log`] reads back.
pub fn encode_log(entries: &BTreeMap<u64, Entry>) -> Result<Vec<u8>, MetaError> {
    let mut bytes = Vec::new();
    for (index, entry) in entries {
        push_record(&mut bytes, *index, &encode(entry)?);
    }
    Ok(bytes)
}

/// A thread that fdatasyncs the log and then acknowledges every append
/// that was waiting: one sync serves all appends queued behind it.
fn spawn_flusher(file: Arc<LogFile>) -> Result<mpsc::Sender<LogFlushed<TypeConfig>>, MetaError> {
    let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
    std::thread::Builder::new()
        .name("raft-log-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                let outcome = file.sync();
                for cb in waiting {
                    cb.log_io_completed(
                        outcome
                            .clone()
                            .map_err(|e| std::io::Error::other(e.to_string())),
                    );
                }
            }
        })
        .map_err(|e| crate::store::io("starting the Raft log flusher", e))?;
    Ok(tx)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let g = self.lock();
        Ok(g.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let g = self.lock();
        let last = g
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.hard.purged);
        Ok(LogState {
            last_purged_log_id: g.hard.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        g.hard.vote = Some(*vote);
        self.save_hard(&g).map_err(|e| sio(e, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().hard.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Kept in memory for `bigfs admin meta status` only. It is not
        // read back at start (`read_committed` answers None): a value
        // written with an earlier vote could lag a newer snapshot, which
        // openraft refuses; after a restart the member learns the commit
        // point from the leader, or alone by committing its first entry.
        self.lock().hard.committed = committed;
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut bytes = Vec::new();
        {
            let mut g = self.lock();
            for entry in entries {
                let payload = encode(&entry).map_err(|e| sio(e, ErrorVerb::Write))?;
                push_record(&mut bytes, entry.log_id.index, &payload);
                g.entries.insert(entry.log_id.index, entry);
            }
            let mut f = self
                .file
                .file
                .lock()
                .map_err(|_| sio("log lock poisoned", ErrorVerb::Write))?;
            f.write_all(&bytes).map_err(|e| sio(e, ErrorVerb::Write))?;
            self.file.dirty.store(true, Ordering::Release);
        }
        match (&self.sync, &self.flusher) {
            (LogSync::Always, Some(tx)) => {
                if let Err(mpsc::SendError(cb)) = tx.send(callback) {
                    cb.log_io_completed(Err(std::io::Error::other("the log flusher stopped")));
                }
            }
            _ => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        g.entries.split_off(&log_id.index);
        tracing::info!(from = log_id.index, "Raft log truncated");
        self.rewrite(&g).map_err(|e| sio(e, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        g.hard.purged = Some(log_id);
        // The purge point first: entries a crash leaves behind it are
        // skipped at load.
        self.save_hard(&g).map_err(|e| sio(e, ErrorVerb::Write))?;
        g.entries = g.entries.split_off(&(log_id.index + 1));
        self.rewrite(&g).map_err(|e| sio(e, ErrorVerb::Delete))
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;

    #[test]
    fn a_record_with_a_forged_length_inside_is_an_error() {
        // fuzz/meta_log's first crash: an entry whose command holds a
        // string declared ~92 PB long, behind a valid checksum.
        let payload = [
            0x4a, 0x01, 0x01, 0x01, 0x00, 0x00, 0xfd, 0x00, 0x00, 0x4a, 0x01, 0x01, 0x01, 0x4a,
            0x01, 0x01, 0x2a, 0x01,
        ];
        let mut bytes = Vec::new();
        push_record(&mut bytes, 7, &payload);
        assert!(decode_log(&bytes, None).is_err());
    }

    #[test]
    fn the_last_possible_purge_point_skips_every_record() {
        // A purge point at u64::MAX used to be turned into `index + 1`.
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 3),
            payload: EntryPayload::Blank,
        };
        let mut entries = BTreeMap::new();
        entries.insert(3, entry);
        let bytes = encode_log(&entries).unwrap();
        let last = LogId::new(openraft::CommittedLeaderId::new(1, 1), u64::MAX);
        let (kept, valid) = decode_log(&bytes, Some(last)).unwrap();
        assert!(kept.is_empty());
        assert_eq!(valid, bytes.len());
        assert_eq!(decode_log(&bytes, None).unwrap().0, entries);
    }
}
