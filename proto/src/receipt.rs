//! Replica receipts: a storage node's proof that it durably stored a copy.
//!
//! The metadata service gives each storage node a secret receipt key when
//! it registers (kept in the replicated state, so every member knows it).
//! A node that stores a copy for someone else (a primary's forward, a
//! healing push) answers with `HMAC-SHA256(key, "bigfs-copy-v1" || chunk
//! id || len || node id)`; the pusher hands that receipt to the metadata
//! service, which marks the copy Available only if the receipt verifies
//! under the named node's key. So a caller holding one node's certificate
//! cannot vouch for copies on other nodes: it does not know their keys.
//!
//! The chunk id and the length are fixed-size, so the node id after them
//! needs no delimiter. The crypto is ring's (`ring::hmac`), and its
//! verification runs in constant time.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::ChunkId;

/// Bytes of a receipt key.
pub const KEY_LEN: usize = 32;

/// What every receipt signs first: the purpose and its version, so a MAC
/// made for anything else under the same key never passes as a receipt.
const CONTEXT: &[u8] = b"bigfs-copy-v1";

/// A node's secret receipt key.
pub type ReceiptKey = [u8; KEY_LEN];

/// A fresh random key from the system's secure random source.
pub fn new_key() -> Result<ReceiptKey, String> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(key)
}

/// A key as it travels in `RegisterNodeReply.receipt_key`; None unless it
/// is exactly [`KEY_LEN`] bytes.
pub fn key_from_slice(bytes: &[u8]) -> Option<ReceiptKey> {
    bytes.try_into().ok()
}

fn message(id: ChunkId, len: u32, node: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 32 + 4 + node.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&id.0);
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(node.as_bytes());
    m
}

/// The receipt of `node` for its copy of chunk `id` (`len` bytes).
pub fn sign(key: &ReceiptKey, id: ChunkId, len: u32, node: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, &message(id, len, node)).as_ref().to_vec()
}

/// Whether `mac` is `node`'s receipt for chunk `id` of `len` bytes under
/// `key` (compared in constant time).
pub fn verify(key: &ReceiptKey, id: ChunkId, len: u32, node: &str, mac: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, &message(id, len, node), mac).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_verifies_only_for_its_key_chunk_length_and_node() {
        let key = new_key().unwrap();
        let other = new_key().unwrap();
        assert_ne!(key, other);
        let id = ChunkId::of(b"data");
        let mac = sign(&key, id, 4, "node-2");
        assert_eq!(mac.len(), 32);
        assert!(verify(&key, id, 4, "node-2", &mac));
        assert!(!verify(&other, id, 4, "node-2", &mac), "another key");
        assert!(
            !verify(&key, ChunkId::of(b"x"), 4, "node-2", &mac),
            "another chunk"
        );
        assert!(!verify(&key, id, 5, "node-2", &mac), "another length");
        assert!(!verify(&key, id, 4, "node-3", &mac), "another node");
        assert!(!verify(&key, id, 4, "node-2", &[]), "no receipt");
        assert!(
            !verify(&key, id, 4, "node-2", &mac[..31]),
            "a truncated one"
        );
        let mut flipped = mac.clone();
        flipped[0] ^= 1;
        assert!(!verify(&key, id, 4, "node-2", &flipped), "one bit off");
    }

    #[test]
    fn the_mac_is_hmac_sha256_of_the_documented_message() {
        // The message spelt out byte by byte, so the format cannot drift
        // silently between the nodes and the service.
        let key = [7u8; KEY_LEN];
        let id = ChunkId([1u8; 32]);
        let mut m = b"bigfs-copy-v1".to_vec();
        m.extend_from_slice(&[1u8; 32]);
        m.extend_from_slice(&3u32.to_le_bytes());
        m.extend_from_slice(b"n");
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &m);
        assert_eq!(sign(&key, id, 3, "n"), expected.as_ref());
    }

    #[test]
    fn keys_travel_as_exactly_32_bytes() {
        assert!(key_from_slice(&[0u8; 32]).is_some());
        assert!(key_from_slice(&[0u8; 31]).is_none());
        assert!(key_from_slice(&[]).is_none());
    }
}
