//! Who may call what on the metadata service.
//!
//! [`policy`] gives the roles allowed per method (checked for every request
//! by [`bigfs_proto::auth::AuthLayer`] before a handler runs); a method it
//! does not list is refused, so a new RPC stays closed until it is added
//! here. The handlers then check what depends on the request:
//! - a storage node registers, heartbeats and registers chunks only as
//!   itself ([`bigfs_proto::auth::require_node`]);
//! - it confirms a copy on another node, and names other nodes in
//!   `RegisterChunk.confirmed`, only with that node's receipt: an HMAC
//!   under the node's own secret key, which the caller cannot make
//!   ([`check_receipt`], [`crate::receipts`]); a confirmed node without a
//!   valid receipt is designated Pending instead;
//! - it reports failures only as itself, and only a node may report its
//!   own copy lost ([`check_report`]).
//!
//! Under `--insecure` every caller is anonymous and every role check
//! passes; receipts are still required, so even there a copy is Available
//! only on its node's word.

use bigfs_proto::ChunkId;
use bigfs_proto::auth::{Caller, Role, caller};
use bigfs_proto::pb;
use tonic::{Request, Status};

use crate::receipts::{self, Rejection};
use crate::service::MetadataService;

/// Storage nodes only.
const NODE: &[Role] = &[Role::Node];
/// Operators only.
const ADMIN: &[Role] = &[Role::Admin];
/// File system users: mounts and CLIs, operators, and metadata members
/// (which will forward to their leader).
const NAMESPACE: &[Role] = &[Role::Client, Role::Admin, Role::Meta];
/// Metadata members only (Raft traffic between them).
const MEMBERS: &[Role] = &[Role::Meta];
/// Operators, and members asking each other whether a group already runs.
const GROUP_STATUS: &[Role] = &[Role::Admin, Role::Meta];
/// Operators (quota limits are theirs to set), and members forwarding.
const OPERATORS: &[Role] = &[Role::Admin, Role::Meta];
/// Anyone in the cluster may report a failing node.
const REPORTERS: &[Role] = &[Role::Node, Role::Client, Role::Admin, Role::Meta];

/// The roles allowed to call `method` (`/bigfs.Metadata/Lookup`).
pub fn policy(method: &str) -> Option<&'static [Role]> {
    let (service, name) = method.strip_prefix('/')?.split_once('/')?;
    match service {
        "bigfs.Raft" => Some(MEMBERS),
        "bigfs.Admin" if name == "MetaStatus" => Some(GROUP_STATUS),
        // Trash and snapshots span exports: admins only.
        "bigfs.Admin" | "bigfs.Ops" | "bigfs.Snapshots" => Some(ADMIN),
        // Mounts lock files; operators may too (tests, debugging).
        "bigfs.Locks" => Some(NAMESPACE),
        "bigfs.Metadata" => match name {
            "RegisterNode" | "Heartbeat" | "RegisterChunk" | "ConfirmReplica" => Some(NODE),
            "ReportFailure" => Some(REPORTERS),
            "Lookup" | "ResolvePath" | "GetAttr" | "SetAttr" | "Create" | "TmpFile" | "Link"
            | "Unlink" | "Rmdir" | "Rename" | "ReadDir" | "SetXattr" | "GetXattr" | "ListXattr"
            | "RemoveXattr" | "KeepInodes" | "ReleaseInode" | "RecordAccess" | "GetLayout"
            | "CommitLayout" | "PlaceChunk" | "Status" | "Sync" | "Export" | "SetReplication"
            | "GetQuota" | "ListQuotas" => Some(NAMESPACE),
            "SetQuota" => Some(OPERATORS),
            _ => None,
        },
        _ => None,
    }
}

/// The metadata service's own certificate must name a `meta:` identity:
/// storage nodes take deletions and copy orders only from that role.
pub fn check_own_identity(security: &bigfs_proto::tls::Security) -> anyhow::Result<()> {
    match security.identity() {
        Some(id) if id.role != Role::Meta => anyhow::bail!(
            "bigfs-metadata: its certificate names {id}; it needs a meta: certificate \
             (`bigfs admin cert issue --role meta NAME`)"
        ),
        _ => Ok(()),
    }
}

/// The node name of a `node:` caller.
fn node_caller<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    Ok(match caller(request)? {
        Caller::Peer(id) if id.role == Role::Node => Some(id.name.clone()),
        _ => None,
    })
}

/// Who made a request, for logs: `ROLE:NAME`, or "anonymous".
pub fn caller_name<T>(request: &Request<T>) -> String {
    match caller(request) {
        Ok(Caller::Peer(id)) => id.to_string(),
        _ => "anonymous".to_string(),
    }
}

/// Whether a `ConfirmReplica` comes from the node that holds the copy: its
/// `node:` certificate names the node it confirms. Anyone else (another
/// node, or every caller under `--insecure`, where nobody is known) must
/// bring that node's receipt ([`check_receipt`]).
pub fn confirms_own_copy(request: &Request<pb::ConfirmReplicaRequest>) -> Result<bool, Status> {
    Ok(node_caller(request)?.is_some_and(|me| me == request.get_ref().node_id))
}

/// A `ConfirmReplica` for a copy on another node carries that node's
/// valid receipt; without one the copy stays as it is (Pending) and the
/// call is refused (see [`crate::receipts`]).
pub async fn check_receipt(
    svc: &MetadataService,
    r: &pb::ConfirmReplicaRequest,
    by: &str,
) -> Result<(), Status> {
    let id = ChunkId::from_slice(&r.id)?;
    let node = r.node_id.clone();
    let mac = r.receipt.clone();
    let checked = svc
        .inspect(move |state, _, _, _| {
            if mac.is_empty() {
                return Ok(Err(Rejection::Missing));
            }
            let Some(c) = state.chunks.get(&id) else {
                return Err(Status::not_found(format!("chunk {id} is not registered")));
            };
            let now_ms = bigfs_proto::now_ms();
            Ok(receipts::check(state, &node, id, c.len, &mac, now_ms))
        })
        .await??;
    checked.map_err(|why| {
        receipts::rejected(&r.node_id, id, by, why);
        Status::permission_denied(format!(
            "no valid receipt from node {:?} for its copy of chunk {id} ({}): only the \
             node itself, or a caller holding its receipt, confirms its copy",
            r.node_id,
            why.reason()
        ))
    })
}

/// A node reports failures as itself; a report naming its subject as the
/// reporter (a copy lost on the reporting node) comes only from that node.
pub fn check_report(request: &Request<pb::ReportFailureRequest>) -> Result<(), Status> {
    let r = request.get_ref();
    match (caller(request)?, node_caller(request)?) {
        (Caller::Anonymous, _) => Ok(()),
        (_, Some(me)) if r.reporter != me => Err(Status::permission_denied(format!(
            "node:{me} may report failures only as {me:?}, not as {:?}",
            r.reporter
        ))),
        (Caller::Peer(id), None) if r.reporter == r.node_id => {
            Err(Status::permission_denied(format!(
                "{id} may not report a loss on behalf of node {:?}",
                r.node_id
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_classified_and_unknown_ones_are_refused() {
        assert_eq!(policy("/bigfs.Metadata/RegisterNode"), Some(NODE));
        assert_eq!(policy("/bigfs.Metadata/Lookup"), Some(NAMESPACE));
        assert_eq!(policy("/bigfs.Admin/Decommission"), Some(ADMIN));
        assert_eq!(policy("/bigfs.Ops/Fsck"), Some(ADMIN));
        assert_eq!(policy("/bigfs.Snapshots/TrashRestore"), Some(ADMIN));
        assert_eq!(policy("/bigfs.Metadata/NoSuchCall"), None);
        assert_eq!(policy("/bigfs.Storage/PutChunk"), None);
        assert_eq!(policy("garbage"), None);
    }

    fn report(by: Caller, node: &str, reporter: &str) -> Request<pb::ReportFailureRequest> {
        let mut r = Request::new(pb::ReportFailureRequest {
            node_id: node.into(),
            reporter: reporter.into(),
            ..Default::default()
        });
        r.extensions_mut().insert(by);
        r
    }

    #[test]
    fn reports_name_their_true_reporter() {
        let node = |n: &str| Caller::Peer(bigfs_proto::auth::Identity::new(Role::Node, n).unwrap());
        let client = Caller::Peer(bigfs_proto::auth::Identity::new(Role::Client, "c").unwrap());
        assert!(check_report(&report(node("a"), "a", "a")).is_ok());
        assert!(check_report(&report(node("a"), "b", "a")).is_ok());
        assert!(check_report(&report(node("a"), "b", "b")).is_err());
        assert!(check_report(&report(client.clone(), "b", "c")).is_ok());
        assert!(check_report(&report(client, "b", "b")).is_err());
        assert!(check_report(&report(Caller::Anonymous, "b", "b")).is_ok());
    }
}
