//! Persistence: a write-ahead command log in front of snapshots kept in redb.
//!
//! Every command is appended to `commands.log` (length, CRC-32, index,
//! bincode) with one `write` before it is answered. A written record is in
//! the kernel, so it survives the process being killed at any moment. How
//! soon it is on the disk too is the [`LogSync`] policy: `Always` syncs
//! each append (one fdatasync per command), `Interval` syncs from a
//! background thread every few milliseconds and whenever a client asks
//! (`sync`, e.g. for an fsync), like MooseFS's changelog.
//!
//! Every `snapshot_every` commands the whole state goes into redb (an ACID,
//! fsync'd transaction) with the index of the last command it includes,
//! and the log restarts empty. Loading reads the snapshot and replays the
//! log records after it, stopping at the first torn or corrupt record (the
//! tail of a write cut short by a crash, never answered).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::state::{Command, State, apply};

const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");

/// File name of the snapshot database inside the data directory.
pub const DB_FILE: &str = "metadata.redb";
/// File name of the command log inside the data directory.
pub const LOG_FILE: &str = "commands.log";

/// Bytes before a record's payload: length (u32), CRC-32 (u32), index (u64).
const HEADER: usize = 16;

/// When appended commands reach the disk (they reach the kernel at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSync {
    /// fdatasync after every command.
    Always,
    /// fdatasync every `interval` and on request.
    Interval,
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, MetaError> {
    Ok(bincode::serde::encode_to_vec(
        v,
        bincode::config::standard(),
    )?)
}

/// Decodes bincode bytes read from disk or from a peer.
///
/// bincode reserves a string's or byte buffer's declared length before it
/// reads the bytes, so a forged length in a few bytes of input would make
/// it allocate petabytes (an abort) or overflow a capacity (a panic). A
/// decode may therefore claim at most `DECODE_CLAIM_PER_BYTE` times its
/// input: bincode claims each value's in-memory size, at most 16 bytes per
/// byte of input (an `u128` encoded in one byte), and a string's length,
/// which a genuine string covers with its own bytes. The limit is a type
/// parameter in bincode, so it comes in steps of 16x.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MetaError> {
    let claim = bytes
        .len()
        .saturating_mul(DECODE_CLAIM_PER_BYTE)
        .saturating_add(DECODE_CLAIM_SLACK);
    let standard = bincode::config::standard();
    macro_rules! within {
        ($($limit:expr),*) => {
            $(
                if claim <= $limit {
                    let config = standard.with_limit::<{ $limit }>();
                    return Ok(bincode::serde::decode_from_slice(bytes, config)?.0);
                }
            )*
        };
    }
    within!(
        1 << 16,
        1 << 20,
        1 << 24,
        1 << 28,
        1 << 32,
        1 << 36,
        1 << 40
    );
    // Inputs of 64 GiB and more: the input itself bounds nothing further.
    Ok(bincode::serde::decode_from_slice(bytes, standard)?.0)
}

/// Bytes a decode may claim per byte of input (see [`decode`]).
const DECODE_CLAIM_PER_BYTE: usize = 16;
/// Claim allowed beyond that: headers of tiny inputs.
const DECODE_CLAIM_SLACK: usize = 4096;

pub(crate) fn io(context: &str, e: std::io::Error) -> MetaError {
    // A full disk is the operator's to fix, and the client's errno is
    // ENOSPC, not a generic I/O error.
    if e.kind() == std::io::ErrorKind::StorageFull {
        return MetaError::ResourceExhausted(format!(
            "the metadata disk is full ({context}: {e}); free space on it"
        ));
    }
    MetaError::Store(format!("{context}: {e}"))
}

/// The log file and whether it holds bytes not yet synced.
pub(crate) struct LogFile {
    pub(crate) file: Mutex<File>,
    pub(crate) dirty: AtomicBool,
}

impl LogFile {
    pub(crate) fn new(file: File) -> Self {
        LogFile {
            file: Mutex::new(file),
            dirty: AtomicBool::new(false),
        }
    }

    pub(crate) fn sync(&self) -> Result<(), MetaError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let f = self
                .file
                .lock()
                .map_err(|_| MetaError::Internal("log lock poisoned".into()))?
                .try_clone()
                .map_err(|e| io("cloning the log handle", e))?;
            if let Err(e) = f.sync_data() {
                self.dirty.store(true, Ordering::Release);
                return Err(io("fdatasync of the command log", e));
            }
        }
        Ok(())
    }
}

/// The open log and snapshot database, and where the log stands.
pub struct Store {
    db: Database,
    dir: PathBuf,
    log: Arc<LogFile>,
    sync: LogSync,
    /// Index the next appended command gets.
    next_index: u64,
    /// Commands appended since the last snapshot.
    since_snapshot: u64,
    snapshot_every: u64,
    stop_syncer: Arc<AtomicBool>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_syncer.store(true, Ordering::Release);
        let _ = self.log.sync();
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, syncing every command.
    pub fn open(data_dir: &Path, snapshot_every: u64) -> Result<(Store, State), MetaError> {
        Self::open_with(data_dir, snapshot_every, LogSync::Always, Duration::ZERO)
    }

    /// Opens (or creates) the store in `data_dir` and rebuilds the state:
    /// the snapshot, then every logged command after it.
    pub fn open_with(
        data_dir: &Path,
        snapshot_every: u64,
        sync: LogSync,
        interval: Duration,
    ) -> Result<(Store, State), MetaError> {
        let db = Database::create(data_dir.join(DB_FILE))?;
        let tx = db.begin_write()?;
        tx.open_table(SNAPSHOT)?;
        tx.commit()?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(data_dir.join(LOG_FILE))
            .map_err(|e| io("opening the command log", e))?;
        let log = Arc::new(LogFile::new(file));
        let stop_syncer = Arc::new(AtomicBool::new(false));
        if sync == LogSync::Interval {
            spawn_syncer(Arc::clone(&log), Arc::clone(&stop_syncer), interval)?;
        }
        let mut store = Store {
            db,
            dir: data_dir.to_path_buf(),
            log,
            sync,
            next_index: 1,
            since_snapshot: 0,
            snapshot_every: snapshot_every.max(1),
            stop_syncer,
        };
        let state = store.load()?;
        Ok((store, state))
    }

    /// Rebuilds the state from disk (also used to undo an in-memory change
    /// whose log append failed).
    pub fn load(&mut self) -> Result<State, MetaError> {
        let tx = self.db.begin_read()?;
        let snap = tx.open_table(SNAPSHOT)?;
        let (snap_index, mut state) = match snap.last()? {
            Some((k, v)) => (k.value(), decode::<State>(v.value())?),
            None => (0, State::new()),
        };
        let mut bytes = Vec::new();
        File::open(self.dir.join(LOG_FILE))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io("reading the command log", e))?;
        let Replayed {
            last,
            replayed,
            valid: pos,
        } = replay_command_log(&mut state, &bytes, snap_index)?;
        if pos < bytes.len() {
            // A torn tail: a write cut short, never acknowledged. Cut it so
            // new records follow the last good one.
            tracing::warn!(
                valid = pos,
                len = bytes.len(),
                "command log has a torn tail; truncating"
            );
            let f = self.lock_log()?;
            f.set_len(pos as u64)
                .map_err(|e| io("truncating the command log", e))?;
            f.sync_data()
                .map_err(|e| io("fdatasync of the command log", e))?;
        }
        self.next_index = last.checked_add(1).ok_or_else(|| {
            MetaError::Store(format!("{LOG_FILE} holds the last possible index {last}"))
        })?;
        self.since_snapshot = replayed;
        tracing::info!(dir = %self.dir.display(), last_index = last, replayed, "metadata state loaded");
        Ok(state)
    }

    fn lock_log(&self) -> Result<std::sync::MutexGuard<'_, File>, MetaError> {
        self.log
            .file
            .lock()
            .map_err(|_| MetaError::Internal("log lock poisoned".into()))
    }

    /// Appends `cmd` with one write (synced now under `LogSync::Always`);
    /// returns its index.
    pub fn append(&mut self, cmd: &Command) -> Result<u64, MetaError> {
        let payload = encode(cmd)?;
        let index = self.next_index;
        let mut rec = Vec::new();
        push_record(&mut rec, index, &payload);
        {
            let mut f = self.lock_log()?;
            f.write_all(&rec)
                .map_err(|e| io("appending to the command log", e))?;
        }
        self.log.dirty.store(true, Ordering::Release);
        if self.sync == LogSync::Always {
            self.log.sync()?;
        }
        self.next_index += 1;
        self.since_snapshot += 1;
        Ok(index)
    }

    /// A handle that makes everything appended so far durable.
    pub fn syncer(&self) -> Syncer {
        Syncer(Arc::clone(&self.log))
    }

    /// Writes a snapshot of `state` if enough commands were appended since
    /// the last one. `state` must include every appended command.
    pub fn maybe_snapshot(&mut self, state: &State) -> Result<(), MetaError> {
        if self.since_snapshot < self.snapshot_every {
            return Ok(());
        }
        let r = self.snapshot(state);
        if r.is_err() {
            // Not again at every command (a full disk would make each one
            // encode the whole state): after another tenth of the interval.
            self.since_snapshot = self.snapshot_every - (self.snapshot_every / 10).max(1);
        }
        r
    }

    /// Writes a snapshot of `state` (covering every appended command) in
    /// one durable transaction, then empties the log.
    pub fn snapshot(&mut self, state: &State) -> Result<(), MetaError> {
        let last = self.next_index - 1;
        let bytes = encode(state)?;
        let tx = self.db.begin_write()?;
        {
            let mut snap = tx.open_table(SNAPSHOT)?;
            snap.retain(|_, _| false)?;
            snap.insert(last, bytes.as_slice())?;
        }
        tx.commit()?;
        // A crash before this truncation only leaves records the snapshot
        // covers; loading skips them by index.
        {
            let f = self.lock_log()?;
            f.set_len(0)
                .map_err(|e| io("truncating the command log", e))?;
            f.sync_data()
                .map_err(|e| io("fdatasync of the command log", e))?;
        }
        self.log.dirty.store(false, Ordering::Release);
        self.since_snapshot = 0;
        tracing::info!(
            last_index = last,
            bytes = bytes.len(),
            "metadata snapshot written"
        );
        Ok(())
    }

    /// Records currently in the log (for tests and status).
    pub fn log_len(&self) -> Result<u64, MetaError> {
        let mut bytes = Vec::new();
        File::open(self.dir.join(LOG_FILE))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io("reading the command log", e))?;
        let mut n = 0;
        let mut pos = 0;
        while let Some((_, _, next)) = record_at(&bytes, pos) {
            n += 1;
            pos = next;
        }
        Ok(n)
    }
}

/// What replaying a command log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Index of the last command applied (`after` when none was).
    pub last: u64,
    /// Commands applied.
    pub replayed: u64,
    /// Where the valid records end: bytes after it are a torn tail.
    pub valid: usize,
}

/// Applies to `state` every command of a `commands.log` image after index
/// `after` (public for the fuzz harness, which feeds it arbitrary bytes).
pub fn replay_command_log(
    state: &mut State,
    bytes: &[u8],
    after: u64,
) -> Result<Replayed, MetaError> {
    let mut out = Replayed {
        last: after,
        replayed: 0,
        valid: 0,
    };
    while let Some((index, payload, next)) = record_at(bytes, out.valid) {
        if index > out.last {
            let cmd: Command = decode(payload)?;
            // Only commands that applied cleanly are logged, so this
            // succeeds; a failure would leave the state unchanged anyway.
            // A client's named command is logged with its refusal too.
            if let Err(e) = apply(state, &cmd)
                && !cmd.logged_when_refused()
            {
                tracing::warn!(index, error = %e, "logged command failed on replay");
            }
            out.last = index;
            out.replayed += 1;
        }
        out.valid = next;
    }
    Ok(out)
}

/// The state a single-member data directory of an earlier BigFS holds
/// (`metadata.redb` + `commands.log`, before the Raft log), if this one has
/// such files and no snapshot of the Raft state machine yet: the member
/// starts from it, then [`retire_legacy`] renames the old files.
pub fn load_legacy(dir: &Path) -> Result<Option<State>, MetaError> {
    if !dir.join(DB_FILE).exists() || crate::raft::machine::Machine::has_snapshot(dir) {
        return Ok(None);
    }
    let (_store, state) = Store::open(dir, u64::MAX)?;
    tracing::warn!(
        dir = %dir.display(),
        inodes = state.inodes.len(),
        "migrating a single-member metadata store to the Raft format"
    );
    Ok(Some(state))
}

/// Renames the files [`load_legacy`] read to `*.migrated`, once their state
/// is in the new snapshot. Delete them when the cluster runs well.
pub fn retire_legacy(dir: &Path) -> Result<(), MetaError> {
    for name in [DB_FILE, LOG_FILE] {
        let from = dir.join(name);
        if from.exists() {
            let to = dir.join(format!("{name}.migrated"));
            std::fs::rename(&from, &to).map_err(|e| io("renaming a migrated file", e))?;
        }
    }
    Ok(())
}

/// Makes the log durable on request, without the state lock.
#[derive(Clone)]
pub struct Syncer(pub(crate) Arc<LogFile>);

impl Syncer {
    pub fn sync(&self) -> Result<(), MetaError> {
        self.0.sync()
    }
}

/// Appends the record of `payload` at `index` to `out` (public so the fuzz
/// harness can frame arbitrary payloads past the checksum).
pub fn push_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Starts a thread that syncs `log` every `interval` until `stop` is set.
pub(crate) fn spawn_syncer(
    log: Arc<LogFile>,
    stop: Arc<AtomicBool>,
    interval: Duration,
) -> Result<(), MetaError> {
    let interval = interval.max(Duration::from_millis(1));
    std::thread::Builder::new()
        .name("metadata-log-sync".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(interval);
                if let Err(e) = log.sync() {
                    tracing::error!(error = %e, "background log sync failed");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| io("starting the log sync thread", e))
}

/// The record at `pos`: (index, payload, position after it), or None at the
/// end or at a torn or corrupt record.
pub(crate) fn record_at(bytes: &[u8], pos: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let index = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let payload = bytes.get(pos + HEADER..pos + HEADER + len)?;
    (crc32(index, payload) == crc).then_some((index, payload, pos + HEADER + len))
}

/// CRC-32 (IEEE) of a record's index and payload.
fn crc32(index: u64, payload: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in index.to_le_bytes().iter().chain(payload) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Kind, Time};

    fn mkdir(parent: u64, name: &str, t: i64) -> Command {
        Command::create_for_test(parent, name, Kind::Directory, Time { secs: t, nanos: 0 })
    }

    fn run(store: &mut Store, state: &mut State, cmd: Command) {
        apply(state, &cmd).unwrap();
        store.append(&cmd).unwrap();
        store.maybe_snapshot(state).unwrap();
    }

    #[test]
    fn reopen_replays_the_log_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = Store::open(dir.path(), 1000).unwrap();
        for i in 0..20 {
            run(&mut store, &mut state, mkdir(1, &format!("d{i}"), i));
        }
        run(
            &mut store,
            &mut state,
            Command::Rename {
                parent: 1,
                name: "d3".into(),
                new_parent: 2,
                new_name: "x".into(),
                noreplace: false,
                exchange: false,
                open_lease_ms: 0,
                now: Time::default(),
                trash_retention_ms: 0,
            },
        );
        drop(store);
        let (store2, state2) = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(encode(&state).unwrap(), encode(&state2).unwrap());
        assert_eq!(store2.log_len().unwrap(), 21);
    }

    #[test]
    fn snapshot_plus_later_log_gives_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = Store::open(dir.path(), 7).unwrap();
        for i in 0..25 {
            run(&mut store, &mut state, mkdir(1, &format!("d{i}"), i));
        }
        // Snapshots at 7, 14, 21: four commands remain in the log.
        assert_eq!(store.log_len().unwrap(), 4);
        drop(store);
        let (mut store2, mut state2) = Store::open(dir.path(), 7).unwrap();
        assert_eq!(state, state2);
        // Appending continues after the replayed entries.
        run(&mut store2, &mut state2, mkdir(1, "more", 99));
        apply(&mut state, &mkdir(1, "more", 99)).unwrap();
        drop(store2);
        let (_, state3) = Store::open(dir.path(), 7).unwrap();
        assert_eq!(state, state3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = Store::open(dir.path(), 1000).unwrap();
        for i in 0..5 {
            run(&mut store, &mut state, mkdir(1, &format!("d{i}"), i));
        }
        drop(store);
        // Half a record, as a crash in the middle of a write leaves it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(&[42, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut store, mut state2) = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(state, state2);
        run(&mut store, &mut state2, mkdir(1, "after", 9));
        drop(store);
        let (store, state3) = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(state2, state3);
        assert_eq!(store.log_len().unwrap(), 6);
    }

    fn open_interval(dir: &Path, interval: Duration) -> (Store, State) {
        Store::open_with(dir, 1000, LogSync::Interval, interval).unwrap()
    }

    #[test]
    fn interval_sync_mode_keeps_every_record_and_the_syncer_thread_syncs_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = open_interval(dir.path(), Duration::from_millis(5));
        for i in 0..10 {
            run(&mut store, &mut state, mkdir(1, &format!("d{i}"), i));
        }
        // Nobody asks for a sync: the background thread must make the
        // appended records durable on its own (it clears `dirty` only
        // around an fdatasync). A generous bound for a loaded machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.log.dirty.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "the interval syncer did not sync the log within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(store);
        let (_, state2) = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(state, state2);
    }

    #[test]
    fn interval_sync_mode_leaves_an_append_unsynced_until_asked() {
        let dir = tempfile::tempdir().unwrap();
        // A syncer that never wakes during the test.
        let (mut store, mut state) = open_interval(dir.path(), Duration::from_secs(3600));
        run(&mut store, &mut state, mkdir(1, "d", 1));
        assert!(store.log.dirty.load(Ordering::Acquire), "synced per append");
        store.syncer().sync().unwrap();
        assert!(!store.log.dirty.load(Ordering::Acquire), "sync on request");
    }

    /// A bincode length of `len`: the varint marker for a u64, then it.
    fn forged_len(len: u64) -> Vec<u8> {
        let mut b = vec![253];
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn a_forged_length_is_an_error_not_an_allocation() {
        // Found by fuzz/meta_log: a string declared 2^62 bytes long made
        // bincode reserve it before reading (an abort), and one longer
        // than isize::MAX overflowed the capacity (a panic).
        for len in [1u64 << 62, u64::MAX, 1 << 40, 100_000] {
            assert!(decode::<String>(&forged_len(len)).is_err(), "{len}");
            assert!(
                decode::<(u64, Vec<String>)>(&[[1].as_slice(), &[1], &forged_len(len)].concat())
                    .is_err()
            );
        }
        // Genuine values, long strings and wide integers included, decode.
        let big = (
            "x".repeat(200_000),
            vec![u128::MAX; 1000],
            vec![u64::MAX; 10],
        );
        assert_eq!(
            decode::<(String, Vec<u128>, Vec<u64>)>(&encode(&big).unwrap()).unwrap(),
            big
        );
        let narrow = vec![u128::from(u8::MAX); 100_000];
        assert_eq!(
            decode::<Vec<u128>>(&encode(&narrow).unwrap()).unwrap(),
            narrow
        );
    }

    #[test]
    fn replay_stops_at_the_first_torn_record_and_refuses_a_forged_one() {
        let mut state = State::new();
        let mut bytes = Vec::new();
        push_record(&mut bytes, 1, &encode(&mkdir(1, "a", 1)).unwrap());
        let good = bytes.len();
        bytes.extend_from_slice(&[1, 2, 3]);
        let r = replay_command_log(&mut state, &bytes, 0).unwrap();
        assert_eq!((r.last, r.replayed, r.valid), (1, 1, good));
        let mut forged = Vec::new();
        push_record(
            &mut forged,
            1,
            &[[0].as_slice(), &forged_len(1 << 62)].concat(),
        );
        assert!(replay_command_log(&mut State::new(), &forged, 0).is_err());
    }
}
