//! Who may call what on a storage node.
//!
//! [`policy`] gives the roles allowed per method, checked for every request
//! by [`bigfs_proto::auth::AuthLayer`]; a method it does not list is
//! refused. Chunk reads and writes come from clients (mounts, CLIs),
//! operators, peers (a primary pushing a replica) and the metadata service
//! (fsck probes, repair reads). Deleting a chunk and ordering a copy to
//! another host come only from the metadata service.

use bigfs_proto::auth::Role;
use bigfs_proto::tls::Security;

/// Whoever moves chunk data.
const DATA: &[Role] = &[Role::Client, Role::Node, Role::Meta, Role::Admin];
/// The metadata service only.
const META: &[Role] = &[Role::Meta];

/// The roles allowed to call `method` (`/bigfs.Storage/PutChunk`).
pub fn policy(method: &str) -> Option<&'static [Role]> {
    match method.strip_prefix("/bigfs.Storage/")? {
        "PutChunk" | "GetChunk" | "HasChunks" => Some(DATA),
        "DeleteChunk" | "ReplicateChunk" => Some(META),
        _ => None,
    }
}

/// With TLS the node's certificate must be `node:<node_id>`: the metadata
/// service accepts its registration and heartbeats only under that id.
pub fn check_own_identity(security: &Security, node_id: &str) -> anyhow::Result<()> {
    match security.identity() {
        Some(id) if id.role != Role::Node || id.name != node_id => anyhow::bail!(
            "bigfs-storage: its certificate names {id} but the node id is {node_id:?}; \
             issue it a certificate for node:{node_id} (`bigfs admin cert issue --role node \
             {node_id}`) or start it with --node-id matching its certificate"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_and_copy_orders_come_only_from_meta() {
        assert_eq!(policy("/bigfs.Storage/DeleteChunk"), Some(META));
        assert_eq!(policy("/bigfs.Storage/ReplicateChunk"), Some(META));
        assert_eq!(policy("/bigfs.Storage/PutChunk"), Some(DATA));
        assert_eq!(policy("/bigfs.Storage/Wipe"), None);
        assert_eq!(policy("/bigfs.Metadata/Lookup"), None);
    }
}
