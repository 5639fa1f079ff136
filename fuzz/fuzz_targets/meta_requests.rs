//! Every request the metadata service takes from a client, node or admin,
//! decoded from arbitrary bytes with prost and handed to the real handler
//! of an in-process, single-member service (so the validation, the
//! namespace logic and the Raft apply behind it all run). The method is
//! picked by the first byte; its body is the rest.
//!
//! The service keeps its state between runs, as a daemon does: a run can
//! create the directory the next one renames. `MetaAdd`/`MetaRemove` (they
//! change the Raft membership, and a one-member group that loses its only
//! voter stops answering), `Recover` and `Fsck` (they call storage nodes
//! at the addresses nodes registered) and `Sync` are left out.
//!
//! Properties: a body that does not decode is an `Err` from prost; no
//! handler panics, allocates hugely or takes more than `DEADLINE`; every
//! path has a role policy and a request limit.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bigfs_fuzz::{CappedAlloc, runtime};
use bigfs_metadata::MetadataService;
use bigfs_metadata::admin::AdminService;
use bigfs_proto::pb;
use bigfs_proto::pb::admin_server::Admin;
use bigfs_proto::pb::metadata_server::Metadata;
use prost::Message;
use tonic::{Request, Status};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// Longest a handler may take: the in-process calls are memory and log
/// operations, so seconds mean a hang.
const DEADLINE: Duration = Duration::from_secs(10);

struct Services {
    meta: MetadataService,
    admin: AdminService,
    _dir: tempfile::TempDir,
}

fn services() -> &'static Services {
    static S: OnceLock<Services> = OnceLock::new();
    S.get_or_init(|| {
        runtime().block_on(async {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let mut config = bigfs_metadata::Config::from_toml("insecure = true")
                .expect("the fuzz configuration parses");
            config.data_dir = dir.path().to_path_buf();
            config.log_sync = bigfs_metadata::store::LogSync::Interval;
            let listen = "127.0.0.1:9".parse().expect("an address");
            let meta = bigfs_metadata::open_service(config, listen)
                .await
                .expect("the metadata service opens");
            // Wait for this single member to elect itself.
            let t0 = std::time::Instant::now();
            while meta.status(Request::new(pb::Empty {})).await.is_err() {
                assert!(t0.elapsed() < Duration::from_secs(30), "no leader");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let worker = bigfs_metadata::worker::Worker::new(meta.clone());
            let admin = AdminService::new(meta.clone(), worker);
            Services {
                meta,
                admin,
                _dir: dir,
            }
        })
    })
}

/// Decodes `body` as `$ty` and calls `$svc.$method` with it.
macro_rules! call {
    ($svc:expr, $method:ident, $ty:ty, $body:expr) => {{
        match <$ty>::decode($body) {
            Ok(req) => $svc.$method(Request::new(req)).await.map(|_| ()),
            Err(_) => return Ok(()),
        }
    }};
}

/// (gRPC path, handler) by the input's first byte.
const METHODS: &[&str] = &[
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
    "/bigfs.Admin/Nodes",
    "/bigfs.Admin/Queue",
    "/bigfs.Admin/Decommission",
    "/bigfs.Admin/Files",
    "/bigfs.Admin/RemoveNode",
    "/bigfs.Admin/MetaStatus",
];

async fn dispatch(s: &Services, which: usize, body: &[u8]) -> Result<(), Status> {
    let (m, a) = (&s.meta, &s.admin);
    match which {
        0 => call!(m, lookup, pb::LookupRequest, body),
        1 => call!(m, resolve_path, pb::ResolvePathRequest, body),
        2 => call!(m, get_attr, pb::InodeRequest, body),
        3 => call!(m, set_attr, pb::SetAttrRequest, body),
        4 => call!(m, create, pb::CreateRequest, body),
        5 => call!(m, link, pb::LinkRequest, body),
        6 => call!(m, unlink, pb::NameRequest, body),
        7 => call!(m, rmdir, pb::NameRequest, body),
        8 => call!(m, rename, pb::RenameRequest, body),
        9 => call!(m, read_dir, pb::ReadDirRequest, body),
        10 => call!(m, set_xattr, pb::SetXattrRequest, body),
        11 => call!(m, get_xattr, pb::XattrNameRequest, body),
        12 => call!(m, list_xattr, pb::InodeRequest, body),
        13 => call!(m, remove_xattr, pb::XattrNameRequest, body),
        14 => call!(m, keep_inodes, pb::KeepInodesRequest, body),
        15 => call!(m, release_inode, pb::InodeRequest, body),
        16 => call!(m, get_layout, pb::InodeRequest, body),
        17 => call!(m, commit_layout, pb::CommitLayoutRequest, body),
        18 => call!(m, place_chunk, pb::PlaceChunkRequest, body),
        19 => call!(m, register_chunk, pb::RegisterChunkRequest, body),
        20 => call!(m, confirm_replica, pb::ConfirmReplicaRequest, body),
        21 => call!(m, report_failure, pb::ReportFailureRequest, body),
        22 => call!(m, register_node, pb::RegisterNodeRequest, body),
        23 => call!(m, heartbeat, pb::HeartbeatRequest, body),
        24 => call!(m, status, pb::Empty, body),
        25 => call!(a, nodes, pb::Empty, body),
        26 => call!(a, queue, pb::QueueRequest, body),
        27 => call!(a, decommission, pb::DecommissionRequest, body),
        28 => call!(a, files, pb::FilesRequest, body),
        29 => call!(a, remove_node, pb::NodeRequest, body),
        _ => call!(a, meta_status, pb::Empty, body),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let which = usize::from(*first) % METHODS.len();
    let path = METHODS[which];
    assert!(
        bigfs_metadata::auth::policy(path).is_some(),
        "{path} has no policy"
    );
    assert!(
        bigfs_metadata::limits::request_limit(path).is_some(),
        "{path} has no limit"
    );
    let s = services();
    let outcome = runtime()
        .block_on(async { tokio::time::timeout(DEADLINE, dispatch(s, which, body)).await });
    assert!(outcome.is_ok(), "{path} took longer than {DEADLINE:?}");
});
