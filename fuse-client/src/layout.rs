//! A file's layout as the client uses it: chunk index -> chunk and replicas.

use std::collections::BTreeMap;

use bigfs_proto::{ChunkId, pb};
use bytes::Bytes;

use crate::error::{ClientError, Result};

/// Where a chunk can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub node_id: String,
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct LayoutChunk {
    pub id: ChunkId,
    /// Bytes of the chunk the file uses (a prefix of the stored chunk).
    pub len: u32,
    pub replicas: Vec<Replica>,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub attr: pb::Attr,
    pub chunks: BTreeMap<u64, LayoutChunk>,
    /// Chunk index 0's bytes when the metadata service keeps them inline
    /// (then `chunks` has no index 0).
    pub inline: Option<Bytes>,
}

/// What a file holds at one chunk index.
#[derive(Debug, Clone)]
pub enum Held {
    Chunk(LayoutChunk),
    Inline(Bytes),
}

impl Layout {
    /// What the file holds at chunk `idx` (None: a hole).
    pub fn held(&self, idx: u64) -> Option<Held> {
        match (idx, &self.inline) {
            (0, Some(data)) => Some(Held::Inline(data.clone())),
            _ => self.chunks.get(&idx).cloned().map(Held::Chunk),
        }
    }

    pub fn from_reply(reply: pb::LayoutReply) -> Result<Self> {
        let attr = reply
            .attr
            .ok_or_else(|| ClientError::Invalid("layout reply without attr".into()))?;
        let mut chunks = BTreeMap::new();
        for loc in reply.chunks {
            let Some(c) = loc.chunk else { continue };
            let id = ChunkId::from_slice(&c.id).map_err(|e| ClientError::Invalid(e.to_string()))?;
            let replicas = loc
                .replicas
                .into_iter()
                .map(|r| Replica {
                    node_id: r.node_id,
                    address: r.address,
                })
                .collect();
            chunks.insert(
                c.index,
                LayoutChunk {
                    id,
                    len: c.len,
                    replicas,
                },
            );
        }
        Ok(Layout {
            attr,
            chunks,
            inline: reply.inline_data,
        })
    }
}
