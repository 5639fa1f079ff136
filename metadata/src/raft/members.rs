//! The group as an operator sees and changes it: `bigfs admin meta
//! status|add|remove`.

use std::collections::BTreeSet;

use bigfs_proto::pb;
use openraft::{BasicNode, ChangeMembers};
use tonic::Status;

use super::{Consensus, NodeId};

impl Consensus {
    /// This member's view of the group.
    pub fn meta_status(&self) -> pb::MetaStatusReply {
        let m = self.raft.metrics();
        let m = m.borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .and_then(|l| l.as_ref().map(|l| l.index));
                pb::MetaMember {
                    id: *id,
                    address: node.addr.clone(),
                    voter: voters.contains(id),
                    matched: matched.unwrap_or(0),
                    has_matched: matched.is_some(),
                    lag: matched.map_or(0, |x| last.saturating_sub(x)),
                }
            })
            .collect();
        let leader_address = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        pb::MetaStatusReply {
            id: self.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader.unwrap_or(0),
            leader_address,
            term: m.current_term,
            last_log_index: last,
            commit_index: self.committed_index(),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            members,
            proposals_per_sec: self.proposal_rate(),
        }
    }

    /// Adds member `id` at `address`: it first catches up as a learner (a
    /// snapshot, then the log), then joins the voters.
    pub async fn add_member(&self, id: NodeId, address: String) -> Result<(), Status> {
        if id == 0 {
            return Err(Status::invalid_argument("member ids start at 1"));
        }
        if address.is_empty() || !address.contains(':') {
            return Err(Status::invalid_argument(format!(
                "member address {address:?} is not HOST:PORT"
            )));
        }
        tracing::info!(member = id, %address, "adding a metadata member (as a learner first)");
        self.raft
            .add_learner(id, BasicNode { addr: address }, true)
            .await
            .map_err(super::write_error)?;
        tracing::info!(member = id, "learner caught up; making it a voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(super::write_error)?;
        Ok(())
    }

    /// Removes member `id` from the group.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), Status> {
        let voters: BTreeSet<NodeId> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().voter_ids().collect()
        };
        if !voters.contains(&id) {
            return Err(Status::not_found(format!("member {id} is not a voter")));
        }
        if voters.len() == 1 {
            return Err(Status::failed_precondition(
                "cannot remove the last member of the group",
            ));
        }
        tracing::info!(member = id, "removing a metadata member");
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(super::write_error)?;
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(super::write_error)?;
        Ok(())
    }
}

/// The group's figures for `/metrics`, as this member sees them.
pub fn gauges(s: &pb::MetaStatusReply) -> String {
    use bigfs_proto::daemon::push_gauge;
    let mut out = String::new();
    let leader = if s.state == "Leader" { 1.0 } else { 0.0 };
    let figures: [(&str, &str, f64); 7] = [
        (
            "bigfs_metadata_raft_leader",
            "1 if this member leads the metadata group.",
            leader,
        ),
        (
            "bigfs_metadata_raft_term",
            "Current Raft term.",
            s.term as f64,
        ),
        (
            "bigfs_metadata_raft_last_log_index",
            "Last index in this member's Raft log.",
            s.last_log_index as f64,
        ),
        (
            "bigfs_metadata_raft_commit_index",
            "Highest index this member knows committed.",
            s.commit_index as f64,
        ),
        (
            "bigfs_metadata_raft_applied_index",
            "Highest index applied to this member's state.",
            s.applied_index as f64,
        ),
        (
            "bigfs_metadata_raft_members",
            "Members of the metadata group.",
            s.members.len() as f64,
        ),
        (
            "bigfs_metadata_raft_proposals_per_second",
            "Proposals over the last minute, per second.",
            s.proposals_per_sec,
        ),
    ];
    for (name, help, v) in figures {
        push_gauge(&mut out, name, help, &[], v);
    }
    for m in s.members.iter().filter(|m| m.has_matched) {
        let id = m.id.to_string();
        push_gauge(
            &mut out,
            "bigfs_metadata_raft_member_lag",
            "Entries a member is behind the leader's log (leader only).",
            &[("member", &id)],
            m.lag as f64,
        );
    }
    out
}
