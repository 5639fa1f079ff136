//! A flood of random and malformed requests against a running cluster:
//! the metadata service, three storage nodes and their admin HTTP ports.
//! Every daemon must survive it, `bigfs admin fsck` must stay clean and
//! the files written before must read back byte for byte.
//!
//! Per gRPC service, `PER_SERVICE` requests, mixed: raw garbage bodies,
//! well-framed random protobuf, truncated frames, frames claiming a huge
//! length, compressed-flag frames, and valid protobuf with hostile values
//! (u64::MAX or far-away inodes, `u32::MAX` limits, names with `/`, NUL,
//! `..`, very long strings, empty or short ids), on every method path and
//! some unknown ones, as a `client:`, a `node:` and an `admin:` caller in
//! turn, so validation runs and not only the role check. Per admin HTTP
//! port, `PER_HTTP_PORT` raw HTTP requests, most inside TLS sessions:
//! garbage, bad methods, long and odd paths, bad headers.
//!
//! The files written before must not be touched by a request that is
//! legitimately allowed, so the flood never aims at them: hostile inodes
//! are 0 or at least `FAR` (the cluster allocates a few dozen), hostile
//! names never start with `keep-` (the kept files' prefix), and
//! [`harmless`] decodes every well-formed body before it is sent and
//! redraws one that could act on an allocated inode, a kept name, a real
//! node, the metadata membership or an fsck repair.
//!
//! The seed is printed; `BIGFS_MALFORMED_SEED` replays a run.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bigfs_proto::pb;
use bigfs_tests::{AdminAuth, Cluster, certs, deadline, random_bytes, read_file, write_file};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tower::Service;

/// Requests per gRPC service.
const PER_SERVICE: usize = 10_000;
/// Requests per admin HTTP port: 10,000 over the four ports. Each is a new
/// TLS session (the server closes after a bad request), and a handshake
/// costs far more than a gRPC call on an open channel.
const PER_HTTP_PORT: usize = 2_500;
/// Requests in flight per service.
const IN_FLIGHT: usize = 24;
/// Lowest hostile inode: far above anything a test cluster allocates.
const FAR: u64 = 1 << 40;
/// Prefix of the files written before the flood; no hostile name has it.
const KEPT: &str = "keep-";
/// The storage node identity the `node:` caller has: no node of the
/// cluster has it, so it can never act on a real node's behalf.
const FAKE_NODE: &str = "flood-node";
/// One request's longest wait: a daemon that stops answering is a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

const METADATA: &[&str] = &[
    "/bigfs.Metadata/Lookup",
    "/bigfs.Metadata/ResolvePath",
    "/bigfs.Metadata/GetAttr",
    "/bigfs.Metadata/SetAttr",
    "/bigfs.Metadata/Create",
    "/bigfs.Metadata/Link",
    "/bigfs.Metadata/Unlink",
    "/bigfs.Metadata/Rmdir",
    "/bigfs.Metadata/Rename",
    "/bigfs.Metadata/ReadDir",
    "/bigfs.Metadata/SetXattr",
    "/bigfs.Metadata/GetXattr",
    "/bigfs.Metadata/ListXattr",
    "/bigfs.Metadata/RemoveXattr",
    "/bigfs.Metadata/KeepInodes",
    "/bigfs.Metadata/ReleaseInode",
    "/bigfs.Metadata/GetLayout",
    "/bigfs.Metadata/CommitLayout",
    "/bigfs.Metadata/PlaceChunk",
    "/bigfs.Metadata/RegisterChunk",
    "/bigfs.Metadata/ConfirmReplica",
    "/bigfs.Metadata/ReportFailure",
    "/bigfs.Metadata/RegisterNode",
    "/bigfs.Metadata/Heartbeat",
    "/bigfs.Metadata/Status",
    "/bigfs.Metadata/Sync",
    "/bigfs.Metadata/SetReplication",
    "/bigfs.Metadata/SetQuota",
    "/bigfs.Metadata/GetQuota",
    "/bigfs.Metadata/ListQuotas",
    "/bigfs.Admin/Nodes",
    "/bigfs.Admin/Queue",
    "/bigfs.Admin/Recover",
    "/bigfs.Admin/Decommission",
    "/bigfs.Admin/RemoveNode",
    "/bigfs.Admin/Files",
    "/bigfs.Admin/MetaStatus",
    "/bigfs.Admin/MetaAdd",
    "/bigfs.Admin/MetaRemove",
    "/bigfs.Ops/Fsck",
    "/bigfs.Raft/AppendEntries",
    "/bigfs.Raft/Vote",
    "/bigfs.Raft/InstallSnapshot",
    "/bigfs.Metadata/NoSuchMethod",
    "/no.Such/Service",
];

const STORAGE: &[&str] = &[
    "/bigfs.Storage/PutChunk",
    "/bigfs.Storage/GetChunk",
    "/bigfs.Storage/HasChunks",
    "/bigfs.Storage/DeleteChunk",
    "/bigfs.Storage/ReplicateChunk",
    "/bigfs.Storage/NoSuchMethod",
    "/bigfs.Metadata/Lookup",
];

/// What the flood saw from one service.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    /// gRPC status OK.
    ok: AtomicU64,
    /// A gRPC status other than OK (or an HTTP status for the admin ports).
    refused: AtomicU64,
    /// The connection failed or was reset (an oversize frame may do that).
    transport: AtomicU64,
    /// Refusals by gRPC code (0-16), to show validation ran, not only the
    /// role check.
    codes: [AtomicU64; 17],
}

impl Tally {
    fn line(&self, what: &str) -> String {
        let codes: Vec<String> = (1..17)
            .filter_map(|c| {
                let n = self.codes[c].load(Ordering::Relaxed);
                (n > 0).then(|| format!("{:?} {n}", tonic::Code::from(c as i32)))
            })
            .collect();
        format!(
            "{what}: {} sent, {} ok, {} refused, {} transport errors{}",
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.transport.load(Ordering::Relaxed),
            if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", codes.join(", "))
            }
        )
    }
}

// ---------------------------------------------------------------- values

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// An inode no file of the test has.
fn far_ino(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..4) {
        0 => u64::MAX,
        1 => 0,
        _ => rng.random_range(FAR..u64::MAX),
    }
}

fn junk_string(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..max);
    (0..len)
        .map(|_| char::from_u32(rng.random_range(1..0x2FFF)).unwrap_or('?'))
        .collect()
}

/// A name no kept file has: bad, long or odd.
fn hostile_name(rng: &mut StdRng) -> String {
    let name = match rng.random_range(0..12) {
        0 => String::new(),
        1 => ".".into(),
        2 => "..".into(),
        3 => "a/b".into(),
        4 => "/".into(),
        5 => "nul\0inside".into(),
        6 => "x".repeat(256),
        7 => "y".repeat(rng.random_range(1000..200_000)),
        8 => "../../etc/passwd".into(),
        9 => "line\nbreak\"quote".into(),
        10 => "\u{FEFF}\u{202E}bidi".into(),
        _ => junk_string(rng, 64),
    };
    if name.starts_with(KEPT) {
        format!("x{name}")
    } else {
        name
    }
}

fn hostile_u32(rng: &mut StdRng) -> u32 {
    let any = rng.random();
    *pick(rng, &[0, 1, u32::MAX, u32::MAX - 1, 1 << 31, any])
}

fn hostile_u64(rng: &mut StdRng) -> u64 {
    let any = rng.random();
    *pick(rng, &[0, 1, u64::MAX, i64::MAX as u64 + 1, any])
}

/// A chunk id: empty, short, long, or 32 random bytes (never a stored one).
fn hostile_id(rng: &mut StdRng) -> Vec<u8> {
    let len = *pick(rng, &[0, 1, 31, 32, 32, 33, 64, 4096]);
    (0..len).map(|_| rng.random()).collect()
}

fn hostile_node(rng: &mut StdRng) -> String {
    match rng.random_range(0..7) {
        0 => String::new(),
        1 => "n\nbigfs_fake 1".into(),
        2 => "x".repeat(10_000),
        3 => "../node".into(),
        4 => "nul\0node".into(),
        5 => FAKE_NODE.into(),
        _ => format!("ghost-{}", rng.random::<u32>()),
    }
}

fn hostile_nodes(rng: &mut StdRng) -> Vec<String> {
    let n = *pick(rng, &[0, 1, 3, 65, 1000]);
    (0..n).map(|_| hostile_node(rng)).collect()
}

fn hostile_disks(rng: &mut StdRng) -> Vec<pb::DiskStatus> {
    let n = *pick(rng, &[0, 1, 300]);
    (0..n)
        .map(|_| pb::DiskStatus {
            path: hostile_node(rng),
            bad: rng.random(),
            reason: hostile_name(rng),
            capacity: hostile_u64(rng),
            used: hostile_u64(rng),
            chunks: hostile_u64(rng),
            io_errors: hostile_u64(rng),
        })
        .collect()
}

fn hostile_address(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => String::new(),
        1 => "a b:1".into(),
        2 => "host\0:1".into(),
        3 => ":".repeat(5000),
        4 => "127.0.0.1:1\nX-Injected: 1".into(),
        _ => junk_string(rng, 40),
    }
}

fn time(rng: &mut StdRng) -> Option<pb::Timestamp> {
    rng.random_bool(0.5).then(|| pb::Timestamp {
        secs: *pick(rng, &[i64::MIN, -1, i64::MAX, 0]),
        nanos: hostile_u32(rng),
    })
}

fn request_id(rng: &mut StdRng) -> Option<pb::RequestId> {
    rng.random_bool(0.3).then(|| pb::RequestId {
        client: rng.random(),
        seq: rng.random(),
        slot: rng.random(),
    })
}

/// A valid protobuf body of `path`'s request type with hostile values.
fn hostile(path: &str, rng: &mut StdRng) -> Vec<u8> {
    let m = path.rsplit('/').next().unwrap_or("");
    match m {
        "Lookup" => pb::LookupRequest {
            parent: far_ino(rng),
            name: hostile_name(rng),
        }
        .encode_to_vec(),
        "ResolvePath" => pb::ResolvePathRequest {
            path: format!("/{}/{}", hostile_name(rng), hostile_name(rng)),
        }
        .encode_to_vec(),
        "GetAttr" | "ListXattr" | "ReleaseInode" | "GetLayout" => {
            pb::InodeRequest { ino: far_ino(rng) }.encode_to_vec()
        }
        "SetAttr" => pb::SetAttrRequest {
            ino: far_ino(rng),
            mode: Some(hostile_u32(rng)),
            uid: Some(hostile_u32(rng)),
            gid: Some(hostile_u32(rng)),
            size: Some(hostile_u64(rng)),
            atime: time(rng),
            mtime: time(rng),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "Create" => pb::CreateRequest {
            parent: far_ino(rng),
            name: hostile_name(rng),
            kind: rng.random_range(-1..9),
            mode: hostile_u32(rng),
            uid: hostile_u32(rng),
            gid: hostile_u32(rng),
            symlink_target: hostile_name(rng),
            exclusive: rng.random(),
            rdev: hostile_u32(rng),
            umask: None,
            id: request_id(rng),
        }
        .encode_to_vec(),
        "Link" => pb::LinkRequest {
            ino: far_ino(rng),
            new_parent: far_ino(rng),
            new_name: hostile_name(rng),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "Unlink" | "Rmdir" => pb::NameRequest {
            parent: far_ino(rng),
            name: hostile_name(rng),
            open_lease_ms: hostile_u64(rng),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "Rename" => pb::RenameRequest {
            parent: far_ino(rng),
            name: hostile_name(rng),
            new_parent: far_ino(rng),
            new_name: hostile_name(rng),
            noreplace: rng.random(),
            exchange: rng.random(),
            open_lease_ms: hostile_u64(rng),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "ReadDir" => pb::ReadDirRequest {
            ino: far_ino(rng),
            offset: hostile_u64(rng),
            limit: hostile_u32(rng),
        }
        .encode_to_vec(),
        "SetXattr" => pb::SetXattrRequest {
            ino: far_ino(rng),
            name: hostile_name(rng),
            value: vec![0; *pick(rng, &[0, 1, 65_537, 300_000])],
            flags: hostile_u32(rng),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "SetReplication" => pb::SetReplicationRequest {
            ino: far_ino(rng),
            replication: hostile_u32(rng),
            recursive: rng.random(),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "SetQuota" => pb::SetQuotaRequest {
            ino: far_ino(rng),
            max_bytes: Some(hostile_u64(rng)),
            max_inodes: Some(hostile_u64(rng)),
            clear: rng.random(),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "GetQuota" => pb::QuotaRequest {
            ino: far_ino(rng),
            nearest: rng.random(),
        }
        .encode_to_vec(),
        "GetXattr" | "RemoveXattr" => pb::XattrNameRequest {
            ino: far_ino(rng),
            name: hostile_name(rng),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "KeepInodes" => pb::KeepInodesRequest {
            inos: (0..*pick(rng, &[0, 1, 100, 70_000]))
                .map(|_| far_ino(rng))
                .collect(),
            lease_ms: hostile_u64(rng),
        }
        .encode_to_vec(),
        "CommitLayout" => pb::CommitLayoutRequest {
            ino: far_ino(rng),
            chunks: (0..*pick(rng, &[0, 1, 5000]))
                .map(|_| pb::ChunkRef {
                    index: hostile_u64(rng),
                    id: hostile_id(rng),
                    len: hostile_u32(rng),
                })
                .collect(),
            size: hostile_u64(rng),
            mtime: time(rng),
            inline_data: pick(rng, &[None, Some(vec![7u8; 100]), Some(vec![0u8; 70_000])])
                .clone()
                .map(Into::into),
            id: request_id(rng),
        }
        .encode_to_vec(),
        "PlaceChunk" => pb::PlaceChunkRequest {
            id: hostile_id(rng),
            len: hostile_u32(rng),
            replication: hostile_u32(rng),
            exclude_nodes: hostile_nodes(rng),
        }
        .encode_to_vec(),
        "RegisterChunk" => pb::RegisterChunkRequest {
            id: hostile_id(rng),
            len: hostile_u32(rng),
            node_id: hostile_node(rng),
            replication: hostile_u32(rng),
            confirmed: hostile_nodes(rng),
            pending: hostile_nodes(rng),
            receipts: hostile_nodes(rng)
                .into_iter()
                .map(|node_id| pb::Receipt {
                    node_id,
                    mac: hostile_id(rng),
                })
                .collect(),
        }
        .encode_to_vec(),
        "ConfirmReplica" => pb::ConfirmReplicaRequest {
            id: hostile_id(rng),
            node_id: hostile_node(rng),
            receipt: hostile_id(rng),
        }
        .encode_to_vec(),
        "ReportFailure" => pb::ReportFailureRequest {
            node_id: hostile_node(rng),
            chunk_id: hostile_id(rng),
            operation: hostile_name(rng),
            error: hostile_name(rng),
            reporter: hostile_node(rng),
        }
        .encode_to_vec(),
        "RegisterNode" => pb::RegisterNodeRequest {
            node_id: hostile_node(rng),
            address: hostile_address(rng),
            capacity: hostile_u64(rng),
            used: hostile_u64(rng),
            chunks: (0..*pick(rng, &[0, 1, 1000]))
                .map(|_| hostile_id(rng))
                .collect(),
            accept_inventory: rng.random(),
            disks: hostile_disks(rng),
        }
        .encode_to_vec(),
        "Heartbeat" => pb::HeartbeatRequest {
            node_id: hostile_node(rng),
            capacity: hostile_u64(rng),
            used: hostile_u64(rng),
            chunk_count: hostile_u64(rng),
            disks: hostile_disks(rng),
        }
        .encode_to_vec(),
        "Queue" => pb::QueueRequest {
            node_id: hostile_node(rng),
            all: rng.random(),
            limit: hostile_u32(rng),
        }
        .encode_to_vec(),
        "Recover" | "RemoveNode" => pb::NodeRequest {
            node_id: hostile_node(rng),
        }
        .encode_to_vec(),
        "Decommission" => pb::DecommissionRequest {
            node_id: hostile_node(rng),
            cancel: rng.random(),
        }
        .encode_to_vec(),
        "Files" => pb::FilesRequest {
            prefix: hostile_name(rng),
            offset: hostile_u64(rng),
            limit: hostile_u32(rng),
        }
        .encode_to_vec(),
        "Fsck" => pb::FsckRequest {
            repair: false,
            ..Default::default()
        }
        .encode_to_vec(),
        "PutChunk" => pb::PutChunkRequest {
            id: hostile_id(rng),
            data: vec![7; *pick(rng, &[0, 1, 4096])].into(),
            is_replica: rng.random(),
            primary_registers: rng.random(),
            forward_to: (0..*pick(rng, &[0, 1, 100]))
                .map(|_| pb::ReplicaLocation {
                    node_id: hostile_node(rng),
                    address: hostile_address(rng),
                    ..Default::default()
                })
                .collect(),
        }
        .encode_to_vec(),
        "GetChunk" => pb::GetChunkRequest {
            id: hostile_id(rng),
            offset: hostile_u64(rng),
            len: hostile_u64(rng),
            caller_verifies: rng.random(),
        }
        .encode_to_vec(),
        "HasChunks" => pb::HasChunksRequest {
            ids: (0..*pick(rng, &[0, 1, 1000]))
                .map(|_| hostile_id(rng))
                .collect(),
        }
        .encode_to_vec(),
        "DeleteChunk" => pb::DeleteChunkRequest {
            id: hostile_id(rng),
        }
        .encode_to_vec(),
        "ReplicateChunk" => pb::ReplicateChunkRequest {
            id: hostile_id(rng),
            target_node_id: hostile_node(rng),
            target_address: hostile_address(rng),
        }
        .encode_to_vec(),
        // Raft payloads, Status, Sync, Nodes, MetaStatus, MetaAdd,
        // MetaRemove and unknown methods: random bytes.
        _ => random_payload(rng),
    }
}

fn random_payload(rng: &mut StdRng) -> Vec<u8> {
    let len = *pick(rng, &[0, 1, 7, 64, 1024, 16_384]);
    (0..len).map(|_| rng.random()).collect()
}

/// Whether the service, if it decodes `payload` as `path`'s request, could
/// act on something the test keeps: an allocated inode, a kept name, a
/// real node, the metadata membership, an fsck repair. Bodies that do not
/// decode are harmless.
fn harmless(path: &str, payload: &[u8], real_nodes: &[String]) -> bool {
    let near = |ino: u64| ino != 0 && ino < FAR;
    let kept = |name: &str| name.starts_with(KEPT);
    let real = |node: &str| real_nodes.iter().any(|n| n == node);
    macro_rules! decoded {
        ($ty:ty, |$r:ident| $ok:expr) => {
            match <$ty>::decode(payload) {
                Ok($r) => $ok,
                Err(_) => true,
            }
        };
    }
    match path.rsplit('/').next().unwrap_or("") {
        "SetAttr" => decoded!(pb::SetAttrRequest, |r| !near(r.ino)),
        "Create" => decoded!(pb::CreateRequest, |r| !kept(&r.name)),
        "Link" => decoded!(pb::LinkRequest, |r| !near(r.ino) && !kept(&r.new_name)),
        "Unlink" | "Rmdir" => decoded!(pb::NameRequest, |r| !kept(&r.name)),
        "Rename" => decoded!(pb::RenameRequest, |r| !kept(&r.name) && !kept(&r.new_name)),
        "CommitLayout" => decoded!(pb::CommitLayoutRequest, |r| !near(r.ino)),
        "SetXattr" => decoded!(pb::SetXattrRequest, |r| !near(r.ino)),
        "RemoveXattr" => decoded!(pb::XattrNameRequest, |r| !near(r.ino)),
        "SetReplication" => decoded!(pb::SetReplicationRequest, |r| !near(r.ino)),
        "SetQuota" => decoded!(pb::SetQuotaRequest, |r| !near(r.ino)),
        "ReportFailure" => decoded!(pb::ReportFailureRequest, |r| !real(&r.node_id)),
        // As the fake node itself, only a registration validation refuses
        // (a bad address or chunk id): a fake node must not join.
        "RegisterNode" => decoded!(pb::RegisterNodeRequest, |r| r.node_id != FAKE_NODE
            || bigfs_proto::check_node_address(&r.address).is_err()
            || r.chunks.iter().any(|c| c.len() != 32)),
        "Recover" | "RemoveNode" => decoded!(pb::NodeRequest, |r| !real(&r.node_id)),
        "Decommission" => decoded!(pb::DecommissionRequest, |r| !real(&r.node_id)),
        "Fsck" => decoded!(pb::FsckRequest, |r| !r.repair),
        // Membership changes: only what does not decode.
        "MetaAdd" | "MetaRemove" => pb::MetaMemberRequest::decode(payload).is_err(),
        _ => true,
    }
}

/// A gRPC frame of `payload`: compressed flag, big-endian length, bytes.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A request body for `path`: one of the malformed shapes, or a hostile
/// well-formed one; `None` when `harmless` refused the draw.
fn body(path: &str, rng: &mut StdRng, real_nodes: &[String]) -> Option<Vec<u8>> {
    let shape = rng.random_range(0..10);
    let (payload, body) = match shape {
        // Raw garbage, no framing.
        0 => (None, random_payload(rng)),
        // A frame cut short.
        1 => {
            let mut f = frame(&hostile(path, rng));
            let keep = rng.random_range(0..f.len().max(1));
            f.truncate(keep);
            (None, f)
        }
        // A frame claiming far more than it carries (or than any limit).
        2 => {
            let mut f = vec![0];
            f.extend_from_slice(&rng.random_range(1u32 << 20..u32::MAX).to_be_bytes());
            f.extend_from_slice(&random_payload(rng));
            (None, f)
        }
        // The compressed flag with no compression agreed.
        3 => {
            let mut f = frame(&random_payload(rng));
            f[0] = rng.random_range(1..=255);
            (None, f)
        }
        // Two frames for a unary call.
        4 => {
            let p = hostile(path, rng);
            let mut f = frame(&p);
            f.extend_from_slice(&frame(&p));
            (Some(p), f)
        }
        // Random protobuf bytes, framed.
        5 => {
            let p = random_payload(rng);
            (Some(p.clone()), frame(&p))
        }
        // Valid protobuf with hostile values.
        _ => {
            let p = hostile(path, rng);
            (Some(p.clone()), frame(&p))
        }
    };
    match payload {
        Some(p) if !harmless(path, &p, real_nodes) => None,
        _ => Some(body),
    }
}

// ---------------------------------------------------------------- senders

/// Sends one raw gRPC request and records how it ended.
async fn send_grpc(channel: &mut Channel, path: &str, body: Vec<u8>, tally: &Tally) {
    let request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .expect("a request");
    let call = async {
        poll_fn(|cx| channel.poll_ready(cx)).await?;
        let response = channel.call(request).await?;
        let grpc_status = response
            .headers()
            .get("grpc-status")
            .map(|v| v.as_bytes().to_vec());
        let collected = response.into_body().collect().await?;
        let status = grpc_status.or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.as_bytes().to_vec())
        });
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
    };
    tally.sent.fetch_add(1, Ordering::Relaxed);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(Some(s))) if s == b"0" => tally.ok.fetch_add(1, Ordering::Relaxed),
        Ok(Ok(s)) => {
            let code = s
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<usize>().ok())
                .filter(|c| *c < 17);
            if let Some(c) = code {
                tally.codes[c].fetch_add(1, Ordering::Relaxed);
            }
            tally.refused.fetch_add(1, Ordering::Relaxed)
        }
        Ok(Err(_)) => tally.transport.fetch_add(1, Ordering::Relaxed),
        Err(_) => panic!("{path}: no answer in {CALL_TIMEOUT:?}"),
    };
}

/// Floods one gRPC service at `addr` with `PER_SERVICE` requests.
async fn flood_grpc(
    addr: String,
    paths: &'static [&'static str],
    callers: Vec<tonic::transport::ClientTlsConfig>,
    seed: u64,
    real_nodes: Arc<Vec<String>>,
    tally: Arc<Tally>,
) {
    let channels: Vec<Channel> = callers
        .into_iter()
        .map(|tls| bigfs_proto::channel_with(&addr, Some(tls)).expect("channel"))
        .collect();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT {
        let channels = channels.clone();
        let (real_nodes, tally) = (real_nodes.clone(), tally.clone());
        workers.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9E37_79B9));
            let mut channels = channels;
            for i in (w..PER_SERVICE).step_by(IN_FLIGHT) {
                let path = *pick(&mut rng, paths);
                let body = loop {
                    if let Some(b) = body(path, &mut rng, &real_nodes) {
                        break b;
                    }
                };
                let caller = i % channels.len();
                send_grpc(&mut channels[caller], path, body, &tally).await;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.expect("flood worker");
    }
}

/// One raw HTTP/1 request: a bad request line, headers or body.
fn http_request(rng: &mut StdRng) -> Vec<u8> {
    let method = *pick(
        rng,
        &["GET", "POST", "DELETE", "PUT", "HEAD", "BREW", "G\0ET", ""],
    );
    let path = match rng.random_range(0..8) {
        0 => "/".to_string(),
        1 => "/metrics".into(),
        2 => format!("/{}", "a".repeat(rng.random_range(1000..100_000))),
        3 => "/../../etc/passwd".into(),
        4 => "/status?x=%ZZ&&==".into(),
        5 => "/files?offset=18446744073709551616&limit=-1".into(),
        6 => "/failures\r\nX: y".into(),
        _ => format!("/{}", junk_string(rng, 30)),
    };
    let mut out = match rng.random_range(0..4) {
        0 => random_payload(rng),
        _ => format!("{method} {path} HTTP/1.1\r\nHost: x\r\n").into_bytes(),
    };
    match rng.random_range(0..5) {
        0 => out.extend_from_slice(b"Content-Length: 99999999999\r\n\r\nshort"),
        1 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
        2 => out.extend_from_slice(format!("X-Long: {}\r\n\r\n", "h".repeat(100_000)).as_bytes()),
        3 => out.extend_from_slice(b"Authorization: Bearer \0\xff\r\n\r\n"),
        _ => out.extend_from_slice(b"\r\n"),
    }
    out
}

/// A connection, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// How a raw HTTP request reaches an admin port (which speaks HTTPS).
#[derive(Clone, Copy)]
enum Via<'a> {
    /// Plain TCP: the bytes hit the TLS listener as a bogus handshake.
    Plain,
    /// Inside a TLS session with this client setting (an admin's or a
    /// client's certificate, or none).
    Tls(&'a Arc<tokio_rustls::rustls::ClientConfig>),
}

/// Sends one raw HTTP request on a new connection; reads what comes back.
fn send_http(addr: &str, request: &[u8], via: Via<'_>, tally: &Tally) {
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let exchange = |s: &mut dyn ReadWrite| -> std::io::Result<Vec<u8>> {
        s.write_all(request)?;
        s.flush()?;
        let mut head = vec![0; 64];
        let n = s.read(&mut head)?;
        head.truncate(n);
        Ok(head)
    };
    let outcome = (|| -> std::io::Result<Vec<u8>> {
        let tcp_timeouts = |s: &std::net::TcpStream| -> std::io::Result<()> {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))
        };
        match via {
            Via::Plain => {
                let mut s = std::net::TcpStream::connect(addr)?;
                tcp_timeouts(&s)?;
                exchange(&mut s)
            }
            Via::Tls(config) => {
                let mut s = bigfs_tests::https_connect(addr, config)?;
                tcp_timeouts(&s.sock)?;
                exchange(&mut s)
            }
        }
    })();
    match outcome {
        Ok(head) if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") => {
            tally.ok.fetch_add(1, Ordering::Relaxed)
        }
        Ok(head) if !head.is_empty() => tally.refused.fetch_add(1, Ordering::Relaxed),
        _ => tally.transport.fetch_add(1, Ordering::Relaxed),
    };
}

/// Floods one admin HTTP port with `PER_HTTP_PORT` raw requests: most inside
/// TLS sessions (as an admin, as a client, with no certificate), so they
/// reach the HTTP layer and its authentication, some as plain bytes.
async fn flood_http(addr: String, tls: std::path::PathBuf, seed: u64, tally: Arc<Tally>) {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT / 2 {
        let (addr, tally, tls) = (addr.clone(), tally.clone(), tls.clone());
        workers.spawn_blocking(move || {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x4854_5450 ^ w as u64);
            let (ca, client, admin) = (
                tls.join("cli"),
                tls.join("flood-client"),
                tls.join("flood-admin"),
            );
            let config = |auth| bigfs_tests::https_config(&ca, &auth).expect("TLS setting");
            let anonymous = config(AdminAuth::Nothing);
            let client = config(AdminAuth::Cert(&client));
            let admin = config(AdminAuth::Cert(&admin));
            for _ in (w..PER_HTTP_PORT).step_by(IN_FLIGHT / 2) {
                let via = match rng.random_range(0..8) {
                    0 => Via::Plain,
                    1 => Via::Tls(&anonymous),
                    2 | 3 => Via::Tls(&client),
                    _ => Via::Tls(&admin),
                };
                send_http(&addr, &http_request(&mut rng), via, &tally);
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.expect("http flood worker");
    }
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_and_malformed_requests_leave_every_daemon_up_and_the_files_intact() {
    let _deadline = deadline(Duration::from_secs(240));
    let started = Instant::now();
    let seed = std::env::var("BIGFS_MALFORMED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_B16F);
    println!("malformed: seed {seed} (set BIGFS_MALFORMED_SEED={seed} to replay)");

    let mut c = Cluster::start(3).await;
    let client = c.client().await;
    let mut kept = BTreeMap::new();
    for (i, len) in [0usize, 1, 5000, 3 << 20].into_iter().enumerate() {
        let path = format!("/{KEPT}{i}");
        let data = random_bytes(len, seed ^ i as u64);
        write_file(&client, &path, &data).await;
        kept.insert(path, data);
    }
    client
        .mkdir(1, &format!("{KEPT}dir"), 0o755)
        .await
        .expect("mkdir");

    c.issue("client:flood", "flood-client");
    c.issue(&format!("node:{FAKE_NODE}"), "flood-node");
    c.issue("admin:flood", "flood-admin");
    let callers: Vec<_> = ["flood-client", "flood-node", "flood-admin"]
        .iter()
        .map(|n| certs::client_tls(&c.tls_dir(n)))
        .collect();
    let real_nodes = Arc::new(c.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>());

    let mut grpc = vec![("metadata".to_string(), c.meta_addr.clone(), METADATA)];
    let mut http = vec![("metadata admin".to_string(), c.meta_admin_addr.clone())];
    for n in &c.nodes {
        grpc.push((n.id.clone(), n.addr.clone(), STORAGE));
        http.push((format!("{} admin", n.id), n.admin_addr.clone()));
    }
    let mut floods = tokio::task::JoinSet::new();
    let mut tallies = Vec::new();
    for (i, (name, addr, paths)) in grpc.into_iter().enumerate() {
        let tally = Arc::new(Tally::default());
        tallies.push((format!("{name} gRPC"), tally.clone()));
        floods.spawn(flood_grpc(
            addr,
            paths,
            callers.clone(),
            seed.wrapping_add(i as u64),
            real_nodes.clone(),
            tally,
        ));
    }
    for (i, (name, addr)) in http.into_iter().enumerate() {
        let tally = Arc::new(Tally::default());
        tallies.push((format!("{name} HTTP"), tally.clone()));
        floods.spawn(flood_http(
            addr,
            c.tls.clone(),
            seed.wrapping_add(100 + i as u64),
            tally,
        ));
    }
    let flood_start = Instant::now();
    while let Some(r) = floods.join_next().await {
        r.expect("flood");
    }
    println!("malformed: flood took {:?}", flood_start.elapsed());
    for (what, t) in &tallies {
        println!("malformed: {}", t.line(what));
        let wanted = if what.contains("HTTP") {
            PER_HTTP_PORT
        } else {
            PER_SERVICE
        };
        assert!(
            t.sent.load(Ordering::Relaxed) >= wanted as u64,
            "{}",
            t.line(what)
        );
    }

    // Every daemon still runs, panicked nowhere (a handler's panic only
    // drops its connection, the process lives on), and answers.
    let mut problems: Vec<String> = c
        .exited()
        .into_iter()
        .map(|d| format!("{d} exited"))
        .collect();
    let names =
        std::iter::once("metadata".to_string()).chain(c.nodes.iter().map(|n| n.name.clone()));
    for name in names {
        let log = std::fs::read_to_string(c.log_path(&name)).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
            problems.push(format!("{name} panicked: {line}"));
        }
    }
    assert!(problems.is_empty(), "after the flood: {problems:#?}");
    c.status().await;
    for n in &c.nodes {
        bigfs_proto::storage_client(&n.addr)
            .expect("storage client")
            .has_chunks(pb::HasChunksRequest { ids: vec![] })
            .await
            .unwrap_or_else(|s| panic!("{} does not answer: {s}", n.id));
    }
    for addr in std::iter::once(&c.meta_admin_addr).chain(c.nodes.iter().map(|n| &n.admin_addr)) {
        let (code, body) = c.admin_get(addr, "/healthz").expect("healthz");
        assert!(code > 0, "{addr}: no HTTP answer: {body}");
    }
    c.wait_nodes_up(3).await;

    // The file system is consistent and the files are unchanged.
    let fsck = c.cli(&["admin", "fsck"]);
    assert!(
        fsck.status.success(),
        "fsck after the flood: {}\n{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    for (path, data) in &kept {
        assert!(read_file(&client, path).await == *data, "{path} changed");
    }
    let dead = c.exited();
    assert!(dead.is_empty(), "daemons exited: {dead:?}");
    println!("malformed: wall time {:?}", started.elapsed());
}
