//! The tonic `Admin` service (admin.proto): node states, the repair queue,
//! recovering one node by hand, decommissioning, files with their replica
//! health (the view the admin page's `/files` serves).

use std::sync::Arc;

use bigfs_proto::pb::{self, NodeState, admin_server::Admin};
use tonic::{Request, Response, Status};

use crate::MetaError;
use crate::heal::{HealCommand, RepairStatus};
use crate::service::MetadataService;
use crate::state::Command;
use crate::validate::node_field;
use crate::worker::Worker;

/// Entries answered by `Queue` when the request sets no limit.
const DEFAULT_QUEUE_LIMIT: usize = 1000;

#[derive(Clone)]
pub struct AdminService {
    svc: MetadataService,
    worker: Arc<Worker>,
}

impl AdminService {
    pub fn new(svc: MetadataService, worker: Arc<Worker>) -> Self {
        AdminService { svc, worker }
    }
}

impl From<crate::views::FileView> for pb::FileHealth {
    fn from(v: crate::views::FileView) -> Self {
        pb::FileHealth {
            path: v.path,
            ino: v.ino,
            size: v.size,
            chunks: v.chunks,
            replication: v.replication,
            healthy_chunks: v.healthy_chunks,
            under_replicated_chunks: v.under_replicated_chunks,
            lost_chunks: v.lost_chunks,
            status: v.status.to_string(),
            wanted: v.wanted,
            copies: v.copies,
        }
    }
}

/// Replicas the table lists on `node` and trash entries it still holds.
pub fn drain_progress(state: &crate::state::State, node: &str) -> (u64, u64) {
    let listed = state
        .chunks
        .values()
        .filter(|c| c.replicas.contains_key(node))
        .count() as u64;
    let trash = state.heal.trash.iter().filter(|(n, _)| n == node).count() as u64;
    (listed, trash)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn nodes(&self, _r: Request<pb::Empty>) -> Result<Response<pb::StatusReply>, Status> {
        self.svc.status_report().await.map(Response::new)
    }

    async fn queue(
        &self,
        request: Request<pb::QueueRequest>,
    ) -> Result<Response<pb::QueueReply>, Status> {
        let r = request.into_inner();
        let limit = if r.limit == 0 {
            DEFAULT_QUEUE_LIMIT
        } else {
            (r.limit as usize).min(crate::limits::MAX_QUEUE_PAGE)
        };
        self.svc
            .with(move |core, _, _| {
                let mut out = pb::QueueReply::default();
                for ((id, target), e) in &core.state.heal.queue {
                    match e.status {
                        RepairStatus::Pending => out.pending += 1,
                        RepairStatus::InProgress => out.in_progress += 1,
                        RepairStatus::Completed => out.completed += 1,
                        RepairStatus::Failed => out.failed += 1,
                    }
                    if !r.node_id.is_empty() && r.node_id != *target && r.node_id != e.source {
                        continue;
                    }
                    if (!r.all && e.status == RepairStatus::Completed) || out.entries.len() >= limit
                    {
                        continue;
                    }
                    out.entries.push(pb::RepairEntry {
                        chunk_id: id.to_vec(),
                        target: target.clone(),
                        source: e.source.clone(),
                        status: e.status.to_pb() as i32,
                        attempts: e.attempts,
                        last_error: e.last_error.clone(),
                        next_try_ms: e.next_try_ms,
                        created_ms: e.created_ms,
                    });
                }
                Ok(out)
            })
            .await
            .map(Response::new)
    }

    async fn recover(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::RecoverReply>, Status> {
        let node = request.into_inner().node_id;
        node_field("node_id", &node)?;
        self.worker.recover(node).await.map(Response::new)
    }

    async fn decommission(
        &self,
        request: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionReply>, Status> {
        let r = request.into_inner();
        node_field("node_id", &r.node_id)?;
        self.svc
            .with(move |core, live, _| {
                let known = core.state.nodes.get(&r.node_id).ok_or_else(|| {
                    MetaError::NotFound(format!("node {:?} is not registered", r.node_id))
                })?;
                if known.decommissioned == r.cancel {
                    core.propose(Command::Heal(HealCommand::Decommission {
                        node: r.node_id.clone(),
                        on: !r.cancel,
                    }));
                    tracing::info!(node = %r.node_id, on = !r.cancel, "decommission changed");
                }
                let decom = !r.cancel;
                let state: NodeState = live.state(&r.node_id, decom, std::time::Instant::now());
                let (replicas_left, trash_left) = drain_progress(&core.state, &r.node_id);
                Ok(pb::DecommissionReply {
                    state: state as i32,
                    replicas_left,
                    trash_left,
                })
            })
            .await
            .map(Response::new)
    }

    async fn files(
        &self,
        request: Request<pb::FilesRequest>,
    ) -> Result<Response<pb::FilesReply>, Status> {
        let r = request.into_inner();
        // proto3 cannot tell 0 from unset: 0 asks for the default page.
        let limit = crate::views::files_limit((r.limit > 0).then_some(r.limit as usize));
        let offset = usize::try_from(r.offset).unwrap_or(usize::MAX);
        let page = self
            .svc
            .inspect(move |st, live, _, _| crate::views::files(st, live, &r.prefix, offset, limit))
            .await?;
        Ok(Response::new(pb::FilesReply {
            total: page.total as u64,
            offset: page.offset as u64,
            limit: page.limit as u32,
            files: page.files.into_iter().map(pb::FileHealth::from).collect(),
        }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let node = request.into_inner().node_id;
        node_field("node_id", &node)?;
        self.svc
            .with(move |core, live, _| {
                if !core.state.nodes.contains_key(&node) {
                    return Err(MetaError::NotFound(format!(
                        "node {node:?} is not registered"
                    )));
                }
                // A running node would only register again.
                let now = std::time::Instant::now();
                if live.state(&node, false, now) != NodeState::Down {
                    return Err(MetaError::FailedPrecondition(format!(
                        "node {node} is still running: move its data off with \
                         `bigfs admin decommission {node}`, stop it, then remove it"
                    )));
                }
                let (replicas_left, trash_left) = drain_progress(&core.state, &node);
                if replicas_left > 0 || trash_left > 0 {
                    return Err(MetaError::FailedPrecondition(format!(
                        "node {node} still holds {replicas_left} listed replicas and \
                         {trash_left} copies to delete; wait for the drain to finish"
                    )));
                }
                core.propose(Command::Heal(HealCommand::RemoveNode {
                    node: node.clone(),
                }));
                live.remove(&node);
                tracing::info!(node = %node, "node removed");
                Ok(pb::Empty {})
            })
            .await
            .map(Response::new)
    }
    async fn meta_status(
        &self,
        _r: Request<pb::Empty>,
    ) -> Result<Response<pb::MetaStatusReply>, Status> {
        Ok(Response::new(self.svc.consensus().meta_status()))
    }

    async fn meta_add(
        &self,
        r: Request<pb::MetaMemberRequest>,
    ) -> Result<Response<pb::MetaStatusReply>, Status> {
        let r = r.into_inner();
        let c = self.svc.consensus();
        c.add_member(r.id, r.address).await?;
        Ok(Response::new(c.meta_status()))
    }

    async fn meta_remove(
        &self,
        r: Request<pb::MetaMemberRequest>,
    ) -> Result<Response<pb::MetaStatusReply>, Status> {
        let c = self.svc.consensus();
        c.remove_member(r.into_inner().id).await?;
        Ok(Response::new(c.meta_status()))
    }
}
