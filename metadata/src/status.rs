//! The cluster status report: nodes, namespace and chunk-table counters.

use std::collections::BTreeMap;
use std::time::Instant;

use bigfs_proto::pb::{self, NodeState};

use crate::config::Config;
use crate::liveness::Liveness;
use crate::state::{Kind, ReplicaStatus, State};

/// Builds the Status reply from the state and liveness at this instant.
pub fn status(state: &State, live: &Liveness, config: &Config) -> pb::StatusReply {
    let now = Instant::now();
    let node_state: BTreeMap<&str, NodeState> = state
        .nodes
        .iter()
        .map(|(id, n)| (id.as_str(), live.state(id, n.decommissioned, now)))
        .collect();
    let up = |n: &str| node_state.get(n) == Some(&NodeState::Up);

    let mut r = pb::StatusReply {
        default_replication: config.replication,
        chunk_size: config.chunk_size,
        inline_files: state.inline.files() as u64,
        inline_bytes: state.inline.total_bytes(),
        ..Default::default()
    };
    for (ino, inode) in &state.inodes {
        match inode.kind {
            Kind::Directory => r.directories += 1,
            Kind::File if state.trash.contains(*ino) => {
                r.trash_files += 1;
                r.trash_bytes += inode.allocated;
            }
            Kind::File => r.files += 1,
            Kind::Symlink | Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice => {}
        }
    }
    let mut listed: BTreeMap<&str, u64> = BTreeMap::new();
    for c in state.chunks.values() {
        r.chunks += 1;
        r.chunk_bytes += u64::from(c.len);
        let mut available_up = 0u32;
        for (n, s) in &c.replicas {
            *listed.entry(n.as_str()).or_default() += 1;
            match s {
                ReplicaStatus::Available => {
                    r.replicas_available += 1;
                    if up(n) {
                        available_up += 1;
                    }
                }
                ReplicaStatus::Pending => r.replicas_pending += 1,
                ReplicaStatus::Deleting => r.replicas_deleting += 1,
            }
        }
        if c.refcount > 0 {
            let wanted = crate::replication::wanted(c, config.replication);
            r.copies_wanted += u64::from(wanted);
            r.copies_good += u64::from(available_up);
            if available_up < wanted {
                r.under_replicated += 1;
            }
            if available_up == 0 {
                r.lost += 1;
            }
        }
    }
    crate::heal::fill_status(
        state,
        &mut r,
        bigfs_proto::now_ms(),
        gc_grace(state, live, config),
    );
    for (id, n) in &state.nodes {
        let soft = live.get(id);
        r.nodes.push(pb::NodeInfo {
            node_id: id.clone(),
            address: n.address.clone(),
            capacity: soft.map_or(n.capacity, |s| s.capacity),
            used: soft.map_or(0, |s| s.used),
            state: node_state
                .get(id.as_str())
                .copied()
                .unwrap_or(NodeState::Down) as i32,
            last_heartbeat_ms_ago: soft.and_then(|s| s.last_heartbeat).map_or(u64::MAX, |t| {
                u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
            }),
            chunk_count: listed.get(id.as_str()).copied().unwrap_or(0),
            failures: soft.map_or(0, |s| s.failures),
            disks: soft.map_or_else(Vec::new, |s| s.disks.clone()),
        });
    }
    r
}

/// The garbage collector's graces now (see [`crate::heal::Grace`]).
pub fn gc_grace(state: &State, live: &Liveness, config: &Config) -> crate::heal::Grace {
    let (free, capacity) = live.up_space(
        state.nodes.iter().map(|(id, n)| (id, n.decommissioned)),
        Instant::now(),
    );
    crate::heal::Grace::now(&config.heal, free, capacity)
}
