//! Persistence: a command log and a snapshot in one redb database.
//!
//! `log` maps an index to a serialized `Command`; `snapshot` holds one entry,
//! the index of the last command it includes -> the serialized `State`.
//! redb commits are durable (fsync'd) before `commit` returns, so a command
//! appended before its answer survives `kill -9`. A snapshot and the removal
//! of the log entries it covers are one transaction.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::MetaError;
use crate::state::{Command, State, apply};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "metadata.redb";

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, MetaError> {
    Ok(bincode::serde::encode_to_vec(
        v,
        bincode::config::standard(),
    )?)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MetaError> {
    Ok(bincode::serde::decode_from_slice(bytes, bincode::config::standard())?.0)
}

/// The open database and where the log stands.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Index the next appended command gets.
    next_index: u64,
    /// Commands appended since the last snapshot.
    since_snapshot: u64,
    snapshot_every: u64,
}

impl Store {
    /// Opens (or creates) the database in `data_dir` and rebuilds the state:
    /// the snapshot, then every logged command after it.
    pub fn open(data_dir: &Path, snapshot_every: u64) -> Result<(Store, State), MetaError> {
        let path = data_dir.join(DB_FILE);
        let db = Database::create(&path)?;
        let tx = db.begin_write()?;
        tx.open_table(LOG)?;
        tx.open_table(SNAPSHOT)?;
        tx.commit()?;
        let mut store = Store {
            db,
            path,
            next_index: 1,
            since_snapshot: 0,
            snapshot_every: snapshot_every.max(1),
        };
        let state = store.load()?;
        Ok((store, state))
    }

    /// Rebuilds the state from disk (also used to undo an in-memory change
    /// whose log append failed).
    pub fn load(&mut self) -> Result<State, MetaError> {
        let tx = self.db.begin_read()?;
        let snap = tx.open_table(SNAPSHOT)?;
        let (mut last, mut state) = match snap.last()? {
            Some((k, v)) => (k.value(), decode::<State>(v.value())?),
            None => (0, State::new()),
        };
        let log = tx.open_table(LOG)?;
        let mut replayed = 0;
        for entry in log.range(last.saturating_add(1)..)? {
            let (k, v) = entry?;
            let cmd: Command = decode(v.value())?;
            // Only commands that applied cleanly are logged, so this
            // succeeds; a failure would leave the state unchanged anyway.
            if let Err(e) = apply(&mut state, &cmd) {
                tracing::warn!(index = k.value(), error = %e, "logged command failed on replay");
            }
            last = k.value();
            replayed += 1;
        }
        self.next_index = last + 1;
        self.since_snapshot = replayed;
        tracing::info!(path = %self.path.display(), last_index = last, replayed, "metadata state loaded");
        Ok(state)
    }

    /// Durably appends `cmd`; returns its index.
    pub fn append(&mut self, cmd: &Command) -> Result<u64, MetaError> {
        let bytes = encode(cmd)?;
        let index = self.next_index;
        let tx = self.db.begin_write()?;
        tx.open_table(LOG)?.insert(index, bytes.as_slice())?;
        tx.commit()?;
        self.next_index += 1;
        self.since_snapshot += 1;
        Ok(index)
    }

    /// Writes a snapshot of `state` if enough commands were appended since
    /// the last one. `state` must include every appended command.
    pub fn maybe_snapshot(&mut self, state: &State) -> Result<(), MetaError> {
        if self.since_snapshot < self.snapshot_every {
            return Ok(());
        }
        self.snapshot(state)
    }

    /// Writes a snapshot of `state` (covering every appended command) and
    /// drops the log entries it covers, in one transaction.
    pub fn snapshot(&mut self, state: &State) -> Result<(), MetaError> {
        let last = self.next_index - 1;
        let bytes = encode(state)?;
        let tx = self.db.begin_write()?;
        {
            let mut snap = tx.open_table(SNAPSHOT)?;
            snap.retain(|_, _| false)?;
            snap.insert(last, bytes.as_slice())?;
            let mut log = tx.open_table(LOG)?;
            log.retain_in(..=last, |_, _| false)?;
        }
        tx.commit()?;
        self.since_snapshot = 0;
        tracing::info!(
            last_index = last,
            bytes = bytes.len(),
            "metadata snapshot written"
        );
        Ok(())
    }

    /// Entries currently in the log (for tests and status).
    pub fn log_len(&self) -> Result<u64, MetaError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(LOG)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Kind, Time};

    fn mkdir(parent: u64, name: &str, t: i64) -> Command {
        Command::Create {
            parent,
            name: name.into(),
            kind: Kind::Directory,
            mode: 0o755,
            uid: 1,
            gid: 1,
            symlink_target: String::new(),
            exclusive: true,
            chunk_size: 1 << 20,
            replication: 2,
            now: Time { secs: t, nanos: 0 },
        }
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
    fn load_discards_unlogged_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = Store::open(dir.path(), 100).unwrap();
        run(&mut store, &mut state, mkdir(1, "kept", 1));
        let mut dirty = state.clone();
        apply(&mut dirty, &mkdir(1, "lost", 2)).unwrap();
        assert_eq!(store.load().unwrap(), state);
    }
}
