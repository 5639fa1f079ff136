//! `bigfs admin ...`: operator commands on the metadata service's Admin
//! and Ops services (node states, the repair queue, recovery,
//! decommissioning, files and their replica health, fsck).

use bigfs_client::admin::{AdminConn, render_files, render_meta, render_nodes, render_queue};
use clap::Subcommand;

use crate::failure::Failure;
use crate::fsck;
use crate::output::{out, outln};

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Node states, under-replicated and lost chunks, queue, GC backlog.
    Nodes,
    /// The repair queue (entries waiting, running and failed).
    Queue {
        /// Only entries whose target or source is this node.
        #[arg(long, default_value = "")]
        node: String,
        /// Include completed entries.
        #[arg(long)]
        all: bool,
        /// At most this many entries (0 = 1000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Files whose path starts with PREFIX, with the health of their
    /// replicas (healthy, under_replicated, lost), sorted by path, a page
    /// at a time.
    Files {
        #[arg(default_value = "")]
        prefix: String,
        /// Skip this many files (to see the next page).
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many files (0 = 1000; the server caps it at 10000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Run NODE's pending repair entries now; reports successes and failures.
    Recover { node: String },
    /// Check the namespace and chunk table against the nodes: missing
    /// chunks and replicas, refcount drift, orphans. Exit 1 if problems remain.
    Fsck {
        /// Fix refcounts, drop replicas whose files are gone, copy
        /// under-replicated chunks from a surviving copy.
        #[arg(long)]
        repair: bool,
        /// Per-node probe deadline in milliseconds.
        #[arg(long, default_value_t = 5000)]
        probe_timeout_ms: u32,
    },
    /// Move every chunk off NODE; it is never chosen for new data meanwhile.
    Decommission {
        node: String,
        /// Take the node back into service instead.
        #[arg(long)]
        cancel: bool,
    },
    /// Forget NODE for good once it is stopped and holds nothing (after a
    /// decommission has drained it).
    RemoveNode { node: String },
    /// The metadata group: members, leader, term, log indexes, lag.
    Meta {
        #[command(subcommand)]
        cmd: MetaCmd,
    },
    /// The cluster CA and certificates (local files; no connection).
    #[command(flatten)]
    Certs(crate::certs::CertsCmd),
}

#[derive(Subcommand)]
pub enum MetaCmd {
    /// Members, leader, term, commit and applied index, each one's lag.
    Status,
    /// Add member ID at ADDRESS (started with `--join`); it catches up
    /// from a snapshot, then votes.
    Add { id: u64, address: String },
    /// Remove member ID from the group.
    Remove { id: u64 },
}

pub async fn run(metadata: &str, cmd: &AdminCmd, json: bool) -> Result<(), Failure> {
    let mut conn = AdminConn::new(metadata)?;
    match cmd {
        AdminCmd::Certs(c) => crate::certs::run(c, json)?,
        AdminCmd::Fsck {
            repair,
            probe_timeout_ms,
        } => fsck::run(metadata, *repair, *probe_timeout_ms, json).await?,
        AdminCmd::Nodes => out!("{}", render_nodes(&conn.nodes().await?, json)),
        AdminCmd::Queue { node, all, limit } => {
            out!(
                "{}",
                render_queue(&conn.queue(node, *all, *limit).await?, json)
            )
        }
        AdminCmd::Files {
            prefix,
            offset,
            limit,
        } => out!(
            "{}",
            render_files(&conn.files(prefix, *offset, *limit).await?, json)
        ),
        AdminCmd::Recover { node } => {
            let r = conn.recover(node).await?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"attempted": r.attempted, "succeeded": r.succeeded,
                        "failed": r.failed, "errors": r.errors})
                );
            } else {
                outln!(
                    "recover {node}: {} attempted, {} succeeded, {} failed",
                    r.attempted,
                    r.succeeded,
                    r.failed
                );
                for e in &r.errors {
                    outln!("  {e}");
                }
            }
            if r.failed > 0 {
                return Err(Failure::new(format!(
                    "{} of {} copies failed",
                    r.failed, r.attempted
                )));
            }
        }
        AdminCmd::Decommission { node, cancel } => {
            let r = conn.decommission(node, *cancel).await?;
            let state = bigfs_client::admin::node_state(r.state);
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"node_id": node, "state": state,
                        "replicas_left": r.replicas_left, "trash_left": r.trash_left})
                );
            } else {
                outln!(
                    "{node}: {state}; {} replicas and {} deletions left to drain",
                    r.replicas_left,
                    r.trash_left
                );
            }
        }
        AdminCmd::Meta { cmd } => {
            let r = match cmd {
                MetaCmd::Status => conn.meta_status().await?,
                MetaCmd::Add { id, address } => conn.meta_add(*id, address).await?,
                MetaCmd::Remove { id } => conn.meta_remove(*id).await?,
            };
            out!("{}", render_meta(&r, json));
        }
        AdminCmd::RemoveNode { node } => {
            conn.remove_node(node).await?;
            if json {
                outln!("{}", serde_json::json!({"node_id": node, "removed": true}));
            } else {
                outln!("{node}: removed");
            }
        }
    }
    Ok(())
}
