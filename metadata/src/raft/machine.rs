//! The state machine openraft drives: applies committed entries to the
//! shared [`Core`], builds snapshots and installs those a leader sends.
//!
//! A snapshot is the whole state with the log position and membership it
//! covers, bincode-encoded behind a magic and a format version, in
//! `snapshot.bin` (replaced atomically). It is what a new or lagging member
//! installs, and where a restarting member starts before replaying the
//! log after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::log::replace_file;
use super::{Applied, Entry, NodeId, TypeConfig};
use crate::error::MetaError;
use crate::machine::Core;
use crate::state::{Reply, State, apply};
use crate::store::{decode, encode};

/// File name of the latest snapshot inside the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// First bytes of a snapshot file, then a little-endian u32 version.
pub const MAGIC: &[u8; 8] = b"BIGFSSNP";
/// Format version of snapshots this build writes. 2: the state gained the
/// trash and the read-only snapshot set, and `Unlink`/`Rename` a trash
/// retention (bincode has no optional trailing fields, so a version 1
/// state would not decode as one). 3: the state gained inline bytes and
/// receipt keys, at its end; version 2 is still read (see [`V2_TAIL`]).
pub const SNAPSHOT_VERSION: u32 = 3;

/// What a version 2 body lacks to be a version 3 one: the state is the
/// last field of a body, and the two fields version 3 added to its end,
/// both empty, encode as these bytes (an empty map, a zero total, an
/// empty map).
const V2_TAIL: [u8; 3] = [0, 0, 0];

/// What a snapshot holds.
#[derive(Serialize, Deserialize)]
struct Body {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: State,
}

/// A snapshot as stored: its meta and the encoded body.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<NodeId, BasicNode>,
    body: Vec<u8>,
}

fn sio(e: impl std::fmt::Display, verb: ErrorVerb) -> StorageError<NodeId> {
    super::log::storage_error(ErrorSubject::StateMachine, e, verb)
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state machine storage.
#[derive(Clone)]
pub struct Machine {
    core: Arc<Mutex<Core>>,
    dir: PathBuf,
    /// Snapshots built by this process (for unique ids).
    built: Arc<std::sync::atomic::AtomicU64>,
}

fn read_stored(dir: &Path) -> Result<Option<Stored>, MetaError> {
    let bytes = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::store::io("reading the snapshot", e)),
    };
    parse_stored(&bytes).map(Some)
}

/// A `snapshot.bin` image: magic, version, then the stored snapshot.
fn parse_stored(bytes: &[u8]) -> Result<Stored, MetaError> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(MetaError::Store(format!(
            "{SNAPSHOT_FILE} is not a BigFS snapshot (bad magic)"
        )));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version == 2 {
        let mut stored: Stored = decode(&bytes[12..])?;
        stored.body.extend_from_slice(&V2_TAIL);
        return Ok(stored);
    }
    if version != SNAPSHOT_VERSION {
        return Err(MetaError::Store(format!(
            "{SNAPSHOT_FILE} has format version {version}; this build reads {SNAPSHOT_VERSION}. \
             Start the bigfs-metadata that wrote it, or wipe this member's data directory \
             and let it rejoin from the others"
        )));
    }
    decode(&bytes[12..])
}

/// The log position and state a `snapshot.bin` image holds, decoded as
/// [`Machine::open`] does (public for the fuzz harness).
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<(Option<LogId<NodeId>>, State), MetaError> {
    let stored = parse_stored(bytes)?;
    decode_snapshot_body(&stored.body)
}

/// The log position and state of a snapshot body, as a leader sends it to
/// `install_snapshot` (public for the fuzz harness).
pub fn decode_snapshot_body(bytes: &[u8]) -> Result<(Option<LogId<NodeId>>, State), MetaError> {
    let body: Body = decode(bytes)?;
    Ok((body.applied, body.state))
}

fn write_stored(dir: &Path, stored: &Stored) -> Result<(), MetaError> {
    let mut bytes = Vec::with_capacity(stored.body.len() + 256);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&encode(stored)?);
    replace_file(&dir.join(SNAPSHOT_FILE), &bytes)
        .map_err(|e| crate::store::io("writing the snapshot", e))
}

impl Machine {
    /// Loads the latest snapshot in `dir` into a new core. With no
    /// snapshot, starts from `legacy` (a migrated store, written at once as
    /// the starting snapshot) or from an empty file system.
    pub fn open(
        dir: &Path,
        legacy: Option<State>,
    ) -> Result<(Machine, Arc<Mutex<Core>>), MetaError> {
        let mut core = Core::new(State::new());
        if let Some(state) = legacy {
            let body = encode(&Body {
                applied: None,
                membership: StoredMembership::default(),
                state,
            })?;
            let meta = SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: "migrated".into(),
            };
            write_stored(dir, &Stored { meta, body })?;
        }
        if let Some(stored) = read_stored(dir)? {
            let body: Body = decode(&stored.body)?;
            core.state = body.state;
            core.applied = body.applied;
            core.membership = body.membership;
            tracing::info!(applied = ?core.applied, "snapshot loaded");
        }
        let core = Arc::new(Mutex::new(core));
        Ok((
            Machine {
                core: Arc::clone(&core),
                dir: dir.to_path_buf(),
                built: Arc::default(),
            },
            core,
        ))
    }

    /// Whether a snapshot file exists in `dir`.
    pub fn has_snapshot(dir: &Path) -> bool {
        dir.join(SNAPSHOT_FILE).exists()
    }
}

/// Applies one committed command: the only way the state changes.
pub fn apply_entry(core: &mut Core, entry: &Entry) -> Applied {
    core.applied = Some(entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => Applied(Ok(Reply::Done)),
        EntryPayload::Normal(cmd) => Applied(apply(&mut core.state, cmd)),
        EntryPayload::Membership(m) => {
            core.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            Applied(Ok(Reply::Done))
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (applied, membership, state) = {
            let g = lock(&self.core);
            (g.applied, g.membership.clone(), g.state.clone())
        };
        let n = self
            .built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.clone();
        let build = move || -> Result<Stored, MetaError> {
            let body = encode(&Body {
                applied,
                membership: membership.clone(),
                state,
            })?;
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id: format!(
                    "{}-{}-{n}",
                    applied.map_or(0, |l| l.leader_id.term),
                    applied.map_or(0, |l| l.index)
                ),
            };
            let stored = Stored { meta, body };
            write_stored(&dir, &stored)?;
            Ok(stored)
        };
        let stored = tokio::task::spawn_blocking(build)
            .await
            .map_err(|e| sio(e, ErrorVerb::Write))?
            .map_err(|e| sio(e, ErrorVerb::Write))?;
        tracing::info!(applied = ?stored.meta.last_log_id, bytes = stored.body.len(), "snapshot written");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.body)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let g = lock(&self.core);
        Ok((g.applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut g = lock(&self.core);
        Ok(entries
            .into_iter()
            .map(|e| apply_entry(&mut g, &e))
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let body_bytes = snapshot.into_inner();
        let body: Body = decode(&body_bytes).map_err(|e| sio(e, ErrorVerb::Read))?;
        let stored = Stored {
            meta: meta.clone(),
            body: body_bytes,
        };
        let dir = self.dir.clone();
        let stored =
            tokio::task::spawn_blocking(move || write_stored(&dir, &stored).map(|()| stored))
                .await
                .map_err(|e| sio(e, ErrorVerb::Write))?
                .map_err(|e| sio(e, ErrorVerb::Write))?;
        let mut g = lock(&self.core);
        g.state = body.state;
        g.applied = body.applied;
        g.membership = body.membership;
        tracing::info!(applied = ?stored.meta.last_log_id, "snapshot installed from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let dir = self.dir.clone();
        let stored = tokio::task::spawn_blocking(move || read_stored(&dir))
            .await
            .map_err(|e| sio(e, ErrorVerb::Read))?
            .map_err(|e| sio(e, ErrorVerb::Read))?;
        // A migrated starting state is not a snapshot of the log: it is
        // offered to nobody (a new member gets one built after it).
        let stored = stored.filter(|s| s.meta.last_log_id.is_some());
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.body)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_body_with_a_forged_length_is_an_error() {
        // fuzz/meta_snapshot's first crash: "capacity overflow" panicked
        // in install_snapshot's decode of 20 bytes from the leader.
        let body = [
            0x00, 0x00, 0x00, 0xe9, 0x00, 0xfd, 0x00, 0x00, 0x00, 0xf9, 0x00, 0x00, 0x00, 0xf9,
            0x0a, 0x00, 0x00, 0x0a, 0x00, 0x00,
        ];
        assert!(decode_snapshot_body(&body).is_err());
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        file.extend_from_slice(&body);
        assert!(decode_snapshot_file(&file).is_err());
        assert!(decode_snapshot_file(b"BIGFSSN").is_err());
    }

    #[test]
    fn a_version_2_snapshot_reads_as_the_state_without_inline_bytes_or_keys() {
        let mut state = State::new();
        state.next_ino = 77;
        let body = encode(&Body {
            applied: None,
            membership: StoredMembership::default(),
            state: state.clone(),
        })
        .unwrap();
        // Version 3 with both new fields empty is version 2 plus the tail.
        assert!(body.ends_with(&V2_TAIL));
        let v2_body = body[..body.len() - V2_TAIL.len()].to_vec();
        let stored = Stored {
            meta: SnapshotMeta::default(),
            body: v2_body,
        };
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&2u32.to_le_bytes());
        file.extend_from_slice(&encode(&stored).unwrap());
        let (_, read) = decode_snapshot_file(&file).unwrap();
        assert_eq!(read, state);
        // Another version is refused with a message.
        file[8..12].copy_from_slice(&9u32.to_le_bytes());
        let e = decode_snapshot_file(&file).unwrap_err();
        assert!(e.to_string().contains("format version 9"), "{e}");
    }
}
