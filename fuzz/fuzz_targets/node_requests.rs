//! Every request a storage node serves, decoded from arbitrary bytes with
//! prost and handed to the real handler of an in-process `StorageService`
//! over a store in a temporary directory. The method is picked by the
//! first byte, a second byte steers the ids (see [`steer`]), the body is
//! the rest.
//!
//! The node's metadata service is an address nothing listens on, so every
//! call the node makes to it fails at once (with no retry); peer addresses
//! in requests are pointed there too, so the harness never connects out
//! or resolves a name.
//!
//! Properties: a body that does not decode is an `Err` from prost; no
//! handler panics, allocates hugely or takes more than `DEADLINE`; a read
//! answers at most what was asked and only bytes of the chunk asked for.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bigfs_fuzz::{CappedAlloc, runtime};
use bigfs_proto::pb::storage_server::Storage;
use bigfs_proto::{ChunkId, MetaChannel, MetaClient, RetryConfig, pb};
use bigfs_storagenode::chunk_store::{ChunkStore, StoreLimits};
use bigfs_storagenode::replication::Replicator;
use bigfs_storagenode::service::StorageService;
use bigfs_storagenode::uploads::PendingUploads;
use prost::Message;
use tonic::Request;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

const DEADLINE: Duration = Duration::from_secs(10);

/// Where the node's metadata service and every peer "are": a port on
/// loopback nothing listens on, refused at once.
const NOWHERE: &str = "127.0.0.1:1";

struct Node {
    svc: StorageService,
    /// Ids stored so far, for requests steered at real chunks.
    stored: Mutex<Vec<ChunkId>>,
    _dir: tempfile::TempDir,
}

fn node() -> &'static Node {
    static N: OnceLock<Node> = OnceLock::new();
    N.get_or_init(|| {
        runtime().block_on(async {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let limits = StoreLimits {
                reserve_bytes: 0,
                capacity_bytes: 1 << 30,
            };
            let store = ChunkStore::open(dir.path(), limits)
                .await
                .expect("the store opens");
            let retry = RetryConfig {
                max_retries: 0,
                base_delay_ms: 1,
                max_delay_ms: 1,
                multiplier: 1.0,
                attempt_timeout_ms: 500,
            };
            let meta = MetaClient::new(MetaChannel::new(NOWHERE).expect("an address"));
            let replicator = Replicator::new("fuzz-node".into(), retry, meta);
            let pending = std::sync::Arc::new(PendingUploads::new(256 << 20));
            Node {
                svc: StorageService::new(store, replicator, 4, pending),
                stored: Mutex::new(Vec::new()),
                _dir: dir,
            }
        })
    })
}

/// With `steer`'s low bit set, a request's id becomes one of a chunk
/// stored earlier (a random id almost never names one); with the next
/// bit, a `PutChunk` id becomes the hash of its data (so the store path
/// runs, not only the hash refusal).
fn steer(n: &Node, steer: u8, id: &mut Vec<u8>) {
    if steer & 1 == 1 {
        let stored = n.stored.lock().unwrap_or_else(|p| p.into_inner());
        if !stored.is_empty() {
            *id = stored[usize::from(steer >> 2) % stored.len()].to_vec();
        }
    }
}

async fn dispatch(n: &Node, which: u8, how: u8, body: &[u8]) {
    let svc = &n.svc;
    match which % 5 {
        0 => {
            let Ok(mut r) = pb::PutChunkRequest::decode(body) else {
                return;
            };
            if how & 2 == 2 {
                r.id = ChunkId::of(&r.data).to_vec();
            }
            for f in &mut r.forward_to {
                f.address = NOWHERE.into();
            }
            let id = ChunkId::from_slice(&r.id).ok();
            if svc.put_chunk(Request::new(r)).await.is_ok()
                && let Some(id) = id
            {
                let mut stored = n.stored.lock().unwrap_or_else(|p| p.into_inner());
                if stored.len() < 64 && !stored.contains(&id) {
                    stored.push(id);
                }
            }
        }
        1 => {
            let Ok(mut r) = pb::GetChunkRequest::decode(body) else {
                return;
            };
            steer(n, how, &mut r.id);
            let (offset, len, id) = (r.offset, r.len, r.id.clone());
            if let Ok(reply) = svc.get_chunk(Request::new(r)).await {
                let reply = reply.into_inner();
                assert!(offset <= u64::from(reply.stored_len), "read past the end");
                if len > 0 {
                    assert!(reply.data.len() as u64 <= len, "more than asked");
                }
                if offset == 0
                    && len == 0
                    && let Ok(id) = ChunkId::from_slice(&id)
                {
                    assert_eq!(ChunkId::of(&reply.data), id, "wrong bytes served");
                }
            }
        }
        2 => {
            let Ok(mut r) = pb::HasChunksRequest::decode(body) else {
                return;
            };
            if let Some(first) = r.ids.first_mut() {
                steer(n, how, first);
            }
            let asked = r.ids.len();
            if let Ok(reply) = svc.has_chunks(Request::new(r)).await {
                assert_eq!(reply.into_inner().present.len(), asked, "one answer per id");
            }
        }
        3 => {
            let Ok(mut r) = pb::DeleteChunkRequest::decode(body) else {
                return;
            };
            steer(n, how, &mut r.id);
            let _ = svc.delete_chunk(Request::new(r)).await;
        }
        _ => {
            let Ok(mut r) = pb::ReplicateChunkRequest::decode(body) else {
                return;
            };
            steer(n, how, &mut r.id);
            if !r.target_address.is_empty() {
                r.target_address = NOWHERE.into();
            }
            let _ = svc.replicate_chunk(Request::new(r)).await;
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [which, how, body @ ..] = data else {
        return;
    };
    let path = [
        "/bigfs.Storage/PutChunk",
        "/bigfs.Storage/GetChunk",
        "/bigfs.Storage/HasChunks",
        "/bigfs.Storage/DeleteChunk",
        "/bigfs.Storage/ReplicateChunk",
    ][usize::from(*which % 5)];
    assert!(bigfs_storagenode::uploads::request_limit(path).is_some());
    let n = node();
    let outcome = runtime()
        .block_on(async { tokio::time::timeout(DEADLINE, dispatch(n, *which, *how, body)).await });
    assert!(outcome.is_ok(), "{path} took longer than {DEADLINE:?}");
});
