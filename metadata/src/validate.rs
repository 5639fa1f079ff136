//! Checks of request fields a peer sends, each failing with a message that
//! names what was wrong.

use bigfs_proto::{ChunkId, MAX_CHUNK_SIZE};

use crate::error::MetaError;
use crate::namespace::MAX_FILE_SIZE;

/// Longest node id or address accepted from a node.
const MAX_NODE_FIELD_LEN: usize = 256;

/// A chunk id: exactly 32 bytes.
pub fn chunk_id(bytes: &[u8]) -> Result<ChunkId, MetaError> {
    ChunkId::from_slice(bytes).map_err(|e| MetaError::InvalidArgument(e.to_string()))
}

/// A chunk length: at most `MAX_CHUNK_SIZE`.
pub fn chunk_len(len: u32) -> Result<u32, MetaError> {
    if len > MAX_CHUNK_SIZE {
        return Err(MetaError::InvalidArgument(format!(
            "chunk length {len} exceeds {MAX_CHUNK_SIZE}"
        )));
    }
    Ok(len)
}

/// A file size: at most `i64::MAX`.
pub fn file_size(size: u64) -> Result<u64, MetaError> {
    if size > MAX_FILE_SIZE {
        return Err(MetaError::InvalidArgument(format!(
            "size {size} exceeds {MAX_FILE_SIZE}"
        )));
    }
    Ok(size)
}

/// A node id or address: non-empty and bounded.
pub fn node_field<'a>(what: &str, v: &'a str) -> Result<&'a str, MetaError> {
    if v.is_empty() || v.len() > MAX_NODE_FIELD_LEN {
        return Err(MetaError::InvalidArgument(format!(
            "{what} must be 1..={MAX_NODE_FIELD_LEN} bytes"
        )));
    }
    Ok(v)
}
