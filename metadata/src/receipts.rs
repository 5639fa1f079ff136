//! Replica receipts on the metadata side: each storage node's receipt key
//! (made at registration, kept in the replicated state) and the check that
//! a copy named by someone other than its holder comes with the holder's
//! receipt (see `bigfs_proto::receipt`).
//!
//! A copy is made Available on evidence from the node that holds it: the
//! node's own call (`RegisterChunk` as itself, `ConfirmReplica` as itself
//! under mutual TLS), or its receipt. A confirmation without a valid receipt
//! leaves the copy Pending; the node's next registration (its inventory
//! lists the copy) or repair's grace period for unconfirmed Pending copies
//! settles it. The keys are in the Raft log and snapshots, which stay on
//! the members' trusted data directories.

use bigfs_proto::ChunkId;
use bigfs_proto::receipt::{self, ReceiptKey};
use serde::{Deserialize, Serialize};

use crate::state::State;

/// How long after a node registers again its previous key still verifies:
/// receipts made just before the new registration (forwards in flight)
/// still count. Longer than any forward's retries; the previous key of a
/// node that registers every few seconds would otherwise never retire.
pub const PREVIOUS_KEY_GRACE_MS: u64 = 60_000;

/// A node's receipt keys as the state holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKey {
    pub key: ReceiptKey,
    /// The key before the last registration, if any.
    pub previous: Option<ReceiptKey>,
    /// When `key` was made (ms since the epoch, the leader's clock).
    pub since_ms: u64,
}

/// Applies `Command::SetReceiptKey`: `key` becomes the node's key, the old
/// one its previous key.
pub(crate) fn set_key(state: &mut State, node: &str, key: ReceiptKey, now_ms: u64) {
    let previous = state.receipt_keys.get(node).map(|k| k.key);
    state.receipt_keys.insert(
        node.to_string(),
        NodeKey {
            key,
            previous,
            since_ms: now_ms,
        },
    );
}

/// Why a receipt did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The caller sent none.
    Missing,
    /// The node has no key (never registered since receipts exist).
    NoKey,
    /// It did not verify under the node's key (nor, within the grace, its
    /// previous one).
    Invalid,
}

impl Rejection {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::NoKey => "no_key",
            Rejection::Invalid => "invalid",
        }
    }
}

/// Whether `mac` is `node`'s receipt for its copy of `id` (`len` bytes),
/// at wall-clock time `now_ms`.
pub fn check(
    state: &State,
    node: &str,
    id: ChunkId,
    len: u32,
    mac: &[u8],
    now_ms: u64,
) -> Result<(), Rejection> {
    if mac.is_empty() {
        return Err(Rejection::Missing);
    }
    let keys = state.receipt_keys.get(node).ok_or(Rejection::NoKey)?;
    if receipt::verify(&keys.key, id, len, node, mac) {
        return Ok(());
    }
    let previous_valid = now_ms.saturating_sub(keys.since_ms) < PREVIOUS_KEY_GRACE_MS;
    match keys.previous {
        Some(prev) if previous_valid && receipt::verify(&prev, id, len, node, mac) => Ok(()),
        _ => Err(Rejection::Invalid),
    }
}

/// Logs and counts a confirmation that named `node` without a valid
/// receipt; `by` says who sent it.
pub fn rejected(node: &str, id: ChunkId, by: &str, why: Rejection) {
    metrics::counter!("bigfs_metadata_receipts_rejected_total", "reason" => why.reason())
        .increment(1);
    tracing::warn!(
        node,
        chunk = %id.short(),
        by,
        reason = why.reason(),
        "a copy was confirmed without a valid receipt from its node; it stays Pending"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_verify_under_the_nodes_key_and_briefly_its_previous_one() {
        let mut s = State::new();
        let id = ChunkId::of(b"c");
        let k1 = receipt::new_key().unwrap();
        assert_eq!(
            check(&s, "a", id, 1, &receipt::sign(&k1, id, 1, "a"), 0),
            Err(Rejection::NoKey)
        );
        set_key(&mut s, "a", k1, 1_000);
        let old = receipt::sign(&k1, id, 1, "a");
        assert_eq!(check(&s, "a", id, 1, &old, 1_000), Ok(()));
        assert_eq!(check(&s, "a", id, 1, &[], 1_000), Err(Rejection::Missing));
        // Another node's key signs nothing for "a".
        let kb = receipt::new_key().unwrap();
        set_key(&mut s, "b", kb, 1_000);
        let forged = receipt::sign(&kb, id, 1, "a");
        assert_eq!(
            check(&s, "a", id, 1, &forged, 1_000),
            Err(Rejection::Invalid)
        );
        // "a" registers again: its old receipts count for the grace only.
        let k2 = receipt::new_key().unwrap();
        set_key(&mut s, "a", k2, 2_000);
        assert_eq!(check(&s, "a", id, 1, &old, 2_000), Ok(()));
        assert_eq!(
            check(&s, "a", id, 1, &old, 2_000 + PREVIOUS_KEY_GRACE_MS),
            Err(Rejection::Invalid)
        );
        let new = receipt::sign(&k2, id, 1, "a");
        assert_eq!(check(&s, "a", id, 1, &new, u64::MAX), Ok(()));
    }
}
