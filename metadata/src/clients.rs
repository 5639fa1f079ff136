//! The clients table: the last answer per client request slot, so that a
//! retried mutation is answered as the first time and never applied twice
//! ("Exactly once" in DESIGN.md).
//!
//! A client names each mutation with a [`RequestId`]: its random client id,
//! a slot (one request in flight per slot, so a client with many concurrent
//! requests uses many slots, as NFSv4.1 sessions do) and a sequence number
//! that grows by one per request on the slot. A retry resends the same id.
//! The id travels inside the logged command ([`Once`]), so replaying the log
//! (or, later, a Raft follower applying it) rebuilds the same table.
//!
//! Per slot the table keeps the last sequence number applied and its
//! outcome, success or refusal. The same number again gets that outcome
//! without applying anything; a smaller one is a stale retry and refused.
//! Entries expire at a time the service put in the command from its clock
//! (apply never reads one), and the table never holds more than
//! [`MAX_ENTRIES`]: past that the entry closest to expiry goes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::state::{Command, Reply, State};

/// Entries kept at most. One is a few dozen bytes (plus an error message),
/// so the table stays around ten megabytes in memory and in a snapshot. A
/// mount uses one entry per request it had in flight at once (slots are
/// reused lowest first), so this serves thousands of busy clients. A
/// constant, not a setting: every replica must evict the same entries.
pub const MAX_ENTRIES: usize = 100_000;

/// Names one mutating request: `seq` on `slot` of `client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub slot: u32,
    pub seq: u64,
}

/// A client's mutation with its id and the times the service chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Once {
    pub id: RequestId,
    /// The service's clock when it proposed the command: entries that
    /// expired by then are dropped.
    pub now_ms: u64,
    /// When this answer may be forgotten (ms since the epoch).
    pub expires_ms: u64,
    pub cmd: Box<Command>,
}

/// The table key: one client's slot.
type Slot = (u64, u32);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Answer {
    seq: u64,
    expires_ms: u64,
    outcome: Result<Reply, MetaError>,
}

/// The last answer per client slot, with an index by expiry so that
/// expiring costs nothing proportional to the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clients {
    answers: BTreeMap<Slot, Answer>,
    by_expiry: BTreeSet<(u64, Slot)>,
}

impl Clients {
    /// The answer to `id` if its slot has seen it (the remembered outcome)
    /// or a later request (a stale-retry refusal); `None` if it is new.
    pub fn answered(&self, id: RequestId) -> Option<Result<Reply, MetaError>> {
        let last = self.answers.get(&(id.client, id.slot))?;
        match id.seq.cmp(&last.seq) {
            std::cmp::Ordering::Equal => Some(last.outcome.clone()),
            std::cmp::Ordering::Less => Some(Err(MetaError::StaleRequest {
                client: id.client,
                slot: id.slot,
                seq: id.seq,
                last: last.seq,
            })),
            std::cmp::Ordering::Greater => None,
        }
    }

    /// Slots remembered.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Drops the answers that expired at or before `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, slot)) = self.by_expiry.first()
            && at <= now_ms
        {
            self.by_expiry.pop_first();
            self.answers.remove(&slot);
        }
    }

    /// Remembers `outcome` as the answer to `id`, replacing the slot's
    /// previous one; makes room by dropping the answer closest to expiry.
    fn remember(&mut self, id: RequestId, expires_ms: u64, outcome: Result<Reply, MetaError>) {
        let slot = (id.client, id.slot);
        if let Some(old) = self.answers.remove(&slot) {
            self.by_expiry.remove(&(old.expires_ms, slot));
        }
        while self.answers.len() >= MAX_ENTRIES {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.answers.remove(&oldest);
        }
        self.by_expiry.insert((expires_ms, slot));
        self.answers.insert(
            slot,
            Answer {
                seq: id.seq,
                expires_ms,
                outcome,
            },
        );
    }
}

/// Applies a named command: the remembered answer for a retry, a refusal
/// for a stale one, otherwise the command, whose outcome (success or
/// refusal) is remembered. A refusal of the command itself changes the
/// clients table, so unlike other refused commands it is logged
/// ([`Command::logged_when_refused`]).
pub fn apply(state: &mut State, once: &Once) -> Result<Reply, MetaError> {
    if let Some(answer) = state.clients.answered(once.id) {
        return answer;
    }
    let outcome = crate::state::apply(state, &once.cmd);
    state.clients.expire(once.now_ms);
    state
        .clients
        .remember(once.id, once.expires_ms, outcome.clone());
    outcome
}

#[cfg(test)]
#[path = "clients_tests.rs"]
mod tests;
