//! The background healing worker of the metadata service: every
//! `heal.interval_ms` it records finished copies, plans repairs
//! ([`crate::repair`]), starts due copies (storage node to storage node via
//! `Storage.ReplicateChunk`; the target confirms its replica), and runs both
//! phases of garbage collection ([`crate::gc`]). Stops on shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bigfs_proto::pb::{self, NodeState};
use bigfs_proto::{ChunkId, now_ms};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::config::Config;
use crate::gc;
use crate::heal::{HealCommand, RepairOutcome};
use crate::liveness::Liveness;
use crate::machine::Core;
use crate::repair::{self, Job, NodeView, Nodes, Presence};
use crate::service::MetadataService;
use crate::state::{Command, ReplicaStatus, State};

/// A copy to run, with the addresses it needs.
#[derive(Debug, Clone)]
struct Copy {
    job: Job,
    source_addr: String,
    target_addr: String,
}

/// What a finished copy reports back.
#[derive(Debug)]
struct Finished {
    id: ChunkId,
    target: String,
    source: String,
    result: Result<(), Status>,
}

/// Copies in flight (chunk, target) and their count per node.
type Running = (BTreeSet<(ChunkId, String)>, BTreeMap<String, usize>);

/// The healing worker. Shared by the background loop and the Admin service.
pub struct Worker {
    svc: MetadataService,
    started: Instant,
    /// Copies in flight, and per node (as source or target).
    running: Mutex<Running>,
    done_tx: mpsc::UnboundedSender<Finished>,
    done_rx: Mutex<mpsc::UnboundedReceiver<Finished>>,
    clients: bigfs_proto::StoragePool,
    /// Replica audit: when the last pass ran, and per node the last chunk
    /// id checked (the next pass goes on after it).
    audit: Mutex<(Option<Instant>, BTreeMap<String, ChunkId>)>,
    /// Where the next tick's slice of the chunk table starts (see
    /// [`repair::Window`]).
    scan: Mutex<Option<ChunkId>>,
}

/// One node's share of an audit pass: its address and the ids to check.
type AuditWork = Vec<(String, String, Vec<ChunkId>)>;

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the planner sees every registered node at `now`. A node never heard
/// from since this service started counts from `started`.
pub fn node_views(
    state: &State,
    live: &Liveness,
    config: &Config,
    started: Instant,
    now: Instant,
) -> Nodes {
    let gone_after = Duration::from_millis(
        config
            .down_after_ms
            .saturating_add(config.heal.repair_delay_ms),
    );
    state
        .nodes
        .iter()
        .map(|(id, n)| {
            let presence = if live.state(id, false, now) == NodeState::Up {
                Presence::Up
            } else {
                let last = live
                    .get(id)
                    .and_then(|s| s.last_heartbeat)
                    .unwrap_or(started);
                if now.saturating_duration_since(last) >= gone_after {
                    Presence::Gone
                } else {
                    Presence::Away
                }
            };
            let view = NodeView {
                presence,
                decommissioned: n.decommissioned,
                free: live.free(id).unwrap_or(0),
            };
            (id.clone(), view)
        })
        .collect()
}

fn address(state: &State, node: &str) -> String {
    state
        .nodes
        .get(node)
        .map(|n| n.address.clone())
        .unwrap_or_default()
}

fn heal(core: &mut Core, cmd: HealCommand) {
    core.propose_or_warn(Command::Heal(cmd), "healing command");
}

impl Worker {
    pub fn new(svc: MetadataService) -> Arc<Self> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Arc::new(Worker {
            svc,
            started: Instant::now(),
            running: Mutex::new((BTreeSet::new(), BTreeMap::new())),
            done_tx,
            done_rx: Mutex::new(done_rx),
            clients: bigfs_proto::StoragePool::default(),
            audit: Mutex::new((None, BTreeMap::new())),
            scan: Mutex::new(None),
        })
    }

    /// Ticks until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.svc.config().heal.interval_ms);
        tracing::info!(?interval, "healing worker started");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
            // Healing, GC and the audit are the leader's duties.
            if !self.svc.consensus().is_leader() {
                continue;
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e.message(), "healing tick failed");
            }
        }
        tracing::info!("healing worker stopped");
    }

    fn storage(
        &self,
        addr: &str,
    ) -> Result<pb::storage_client::StorageClient<tonic::transport::Channel>, Status> {
        self.clients
            .get(addr)
            .map_err(|e| Status::invalid_argument(format!("bad node address {addr:?}: {e}")))
    }

    /// Records finished copies: success, or a failure with backoff.
    async fn record(&self, done: Vec<Finished>) -> Result<(), Status> {
        if done.is_empty() {
            return Ok(());
        }
        self.svc
            .with(move |core, _, config| {
                let now = now_ms();
                let retry = &config.heal.retry;
                let mut outcomes = Vec::with_capacity(done.len());
                let mut lost_sources = Vec::new();
                for f in done {
                    let attempts = core
                        .state
                        .heal
                        .queue
                        .get(&(f.id, f.target.clone()))
                        .map_or(0, |e| e.attempts);
                    let error = f.result.err().map(|s| {
                        // The source's own NOT_FOUND (not one relayed from
                        // the target): its listed replica is gone.
                        if s.code() == tonic::Code::NotFound && !s.message().contains("copy of") {
                            lost_sources.push((f.id, f.source.clone()));
                        }
                        format!("{:?}: {}", s.code(), s.message())
                    });
                    match &error {
                        None => {
                            tracing::info!(chunk = %f.id.short(), target = %f.target, source = %f.source, "repair copy done")
                        }
                        Some(e) => {
                            tracing::warn!(chunk = %f.id.short(), target = %f.target, source = %f.source, attempts = attempts + 1, error = %e, "repair copy failed")
                        }
                    }
                    let backoff = u64::try_from(retry.backoff(attempts).as_millis()).unwrap_or(u64::MAX);
                    outcomes.push(RepairOutcome {
                        id: f.id,
                        target: f.target,
                        error,
                        next_try_ms: now.saturating_add(backoff),
                        give_up: attempts >= retry.max_retries,
                    });
                }
                heal(core, HealCommand::Finish { outcomes, now_ms: now });
                for (id, node) in lost_sources {
                    tracing::warn!(chunk = %id.short(), node = %node, "source lacks a listed replica; unlisting it");
                    core.propose_or_warn(
                        Command::RemoveReplica { id, node },
                        "unlisting a lost replica",
                    );
                }
                Ok(())
            })
            .await
    }

    fn mark_running(&self, jobs: &[Job], on: bool) {
        let mut g = guard(&self.running);
        let (set, busy) = &mut *g;
        for j in jobs {
            if on {
                set.insert((j.id, j.target.clone()));
            } else {
                set.remove(&(j.id, j.target.clone()));
                for n in [&j.source, &j.target] {
                    if let Some(b) = busy.get_mut(n) {
                        *b = b.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// Asks the source to copy the chunk to the target.
    async fn copy(&self, c: &Copy, timeout: Duration) -> Result<(), Status> {
        let mut s = self.storage(&c.source_addr)?;
        let req = pb::ReplicateChunkRequest {
            id: c.job.id.to_vec(),
            target_node_id: c.job.target.clone(),
            target_address: c.target_addr.clone(),
        };
        match tokio::time::timeout(timeout, s.replicate_chunk(req)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer from {} within {timeout:?}",
                c.job.source
            ))),
        }
    }

    /// Plans and starts copies; `only_node` selects every active entry of
    /// that node regardless of backoff (`admin recover`).
    async fn start(self: &Arc<Self>, only_node: Option<String>) -> Result<Vec<Copy>, Status> {
        let me = self.clone();
        self.svc
            .with(move |core, live, config| {
                let now = Instant::now();
                let nodes = node_views(&core.state, live, config, me.started, now);
                if let Some(n) = &only_node
                    && !nodes.contains_key(n)
                {
                    return Err(crate::MetaError::NotFound(format!(
                        "node {n:?} is not registered"
                    )));
                }
                let (running, mut busy) = {
                    let g = guard(&me.running);
                    (g.0.clone(), g.1.clone())
                };
                let h = &config.heal;
                let jobs = repair::due_jobs(
                    &core.state,
                    &nodes,
                    now_ms(),
                    only_node.as_deref(),
                    &running,
                    &mut busy,
                    h.max_copies_per_node,
                    if only_node.is_some() {
                        usize::MAX
                    } else {
                        h.max_copies
                    },
                );
                guard(&me.running).1 = busy;
                if jobs.is_empty() {
                    return Ok(Vec::new());
                }
                me.mark_running(&jobs, true);
                heal(
                    core,
                    HealCommand::Start {
                        items: jobs
                            .iter()
                            .map(|j| (j.id, j.target.clone(), j.source.clone()))
                            .collect(),
                    },
                );
                Ok(jobs
                    .into_iter()
                    .map(|job| Copy {
                        source_addr: address(&core.state, &job.source),
                        target_addr: address(&core.state, &job.target),
                        job,
                    })
                    .collect())
            })
            .await
    }

    /// One pass: record, plan, start copies, collect garbage.
    pub async fn tick(self: &Arc<Self>) -> Result<(), Status> {
        let done: Vec<Finished> = {
            let mut rx = guard(&self.done_rx);
            std::iter::from_fn(|| rx.try_recv().ok()).collect()
        };
        self.record(done).await?;

        let me = self.clone();
        let sweep = self
            .svc
            .with(move |core, live, config| {
                let h = &config.heal;
                let nodes = node_views(&core.state, live, config, me.started, Instant::now());
                let now = now_ms();
                let window = {
                    let mut cursor = guard(&me.scan);
                    let (window, next) = repair::Window::next(&core.state, *cursor, h.scan_batch);
                    *cursor = next;
                    window
                };
                let plan = repair::plan(
                    &core.state,
                    window,
                    &nodes,
                    config.replication as usize,
                    now,
                    (h.pending_timeout_ms, h.retry.max_delay_ms),
                    &mut rand::rng(),
                );
                if !plan.done.is_empty() {
                    tracing::info!(
                        entries = plan.done.len(),
                        "repair entries done: the copy is listed on its target"
                    );
                    let outcomes = plan
                        .done
                        .into_iter()
                        .map(|(id, target)| RepairOutcome {
                            id,
                            target,
                            error: None,
                            next_try_ms: now,
                            give_up: false,
                        })
                        .collect();
                    heal(
                        core,
                        HealCommand::Finish {
                            outcomes,
                            now_ms: now,
                        },
                    );
                }
                if !plan.unqueue.is_empty() {
                    tracing::info!(
                        entries = plan.unqueue.len(),
                        "repair entries dropped: nothing left to copy"
                    );
                    heal(
                        core,
                        HealCommand::Unqueue {
                            items: plan.unqueue,
                        },
                    );
                }
                let mut cancel: BTreeMap<&str, Vec<(ChunkId, String)>> = BTreeMap::new();
                for (id, target, why) in plan.cancel {
                    cancel.entry(why).or_default().push((id, target));
                }
                for (why, items) in cancel {
                    tracing::info!(
                        entries = items.len(),
                        reason = why,
                        "repair entries cancelled"
                    );
                    heal(
                        core,
                        HealCommand::Cancel {
                            items,
                            reason: why.into(),
                            now_ms: now,
                        },
                    );
                }
                if !plan.drain.is_empty() {
                    tracing::info!(replicas = plan.drain.len(), "replicas drained");
                    heal(core, HealCommand::Drain { items: plan.drain });
                }
                if !plan.enqueue.is_empty() {
                    tracing::info!(copies = plan.enqueue.len(), "repair copies queued");
                    heal(
                        core,
                        HealCommand::Enqueue {
                            items: plan.enqueue,
                            now_ms: now,
                        },
                    );
                }
                let grace = crate::status::gc_grace(&core.state, live, config);
                let marks = gc::mark_candidates(&core.state, window, now, grace, h.gc_batch);
                if !marks.is_empty() {
                    tracing::info!(
                        chunks = marks.len(),
                        "garbage collection: chunks marked Deleting"
                    );
                    heal(
                        core,
                        HealCommand::GcMark {
                            ids: marks,
                            now_ms: now,
                            grace_ms: grace.release_ms,
                        },
                    );
                }
                let mut sweep = gc::deletions(&core.state, window, &nodes, h.gc_batch);
                if !sweep.forget.is_empty() {
                    heal(
                        core,
                        HealCommand::GcDeleted {
                            items: std::mem::take(&mut sweep.forget),
                        },
                    );
                }
                if !sweep.drop_trash.is_empty() {
                    heal(
                        core,
                        HealCommand::TrashDone {
                            items: std::mem::take(&mut sweep.drop_trash),
                        },
                    );
                }
                let addressed: Vec<(gc::Deletion, String)> = sweep
                    .delete
                    .into_iter()
                    .map(|d| {
                        let a = address(&core.state, &d.node);
                        (d, a)
                    })
                    .collect();
                Ok(addressed)
            })
            .await?;

        let copies = self.start(None).await?;
        let timeout = self.svc.config().heal.retry.attempt_timeout();
        for c in copies {
            let me = self.clone();
            tokio::spawn(async move {
                let result = me.copy(&c, timeout).await;
                me.mark_running(std::slice::from_ref(&c.job), false);
                let _ = me.done_tx.send(Finished {
                    id: c.job.id,
                    target: c.job.target,
                    source: c.job.source,
                    result,
                });
            });
        }
        self.sweep(sweep).await?;
        self.audit_if_due().await
    }

    /// Every `heal.audit_interval_ms`: asks each Up node whether it still
    /// holds the copies listed as Available on it. A copy whose file is gone
    /// (deleted or lost behind the cluster's back) is unlisted, and repair
    /// makes it again elsewhere. A listed copy was registered only once its
    /// file was durable, and every deletion unlists it first, so "absent"
    /// here means lost.
    async fn audit_if_due(&self) -> Result<(), Status> {
        let h = &self.svc.config().heal;
        let (interval, batch) = (h.audit_interval_ms, h.audit_batch);
        let cursors = {
            let mut a = guard(&self.audit);
            let now = Instant::now();
            if interval == 0
                || a.0
                    .is_some_and(|t| now - t < Duration::from_millis(interval))
            {
                return Ok(());
            }
            a.0 = Some(now);
            a.1.clone()
        };
        let started = self.started;
        let work: AuditWork = self
            .svc
            .with(move |core, live, config| {
                let nodes = node_views(&core.state, live, config, started, Instant::now());
                let mut per_node: BTreeMap<&String, Vec<ChunkId>> = BTreeMap::new();
                for (id, c) in &core.state.chunks {
                    for (n, st) in &c.replicas {
                        if *st == ReplicaStatus::Available
                            && nodes.get(n).is_some_and(|v| v.presence == Presence::Up)
                        {
                            per_node.entry(n).or_default().push(*id);
                        }
                    }
                }
                // Chunk ids come sorted (a BTreeMap): continue after the
                // cursor, from the start once the end is reached.
                Ok(per_node
                    .into_iter()
                    .map(|(n, ids)| {
                        let from = cursors
                            .get(n)
                            .map_or(0, |after| ids.partition_point(|i| i <= after));
                        let from = if from >= ids.len() { 0 } else { from };
                        let take = ids[from..].iter().take(batch).copied().collect();
                        (n.clone(), address(&core.state, n), take)
                    })
                    .collect())
            })
            .await?;
        let timeout = h.retry.attempt_timeout();
        let probes = work.into_iter().map(|(node, addr, ids)| async move {
            let present = crate::fsck::probe(&addr, &ids, timeout).await;
            (node, ids, present)
        });
        let mut missing = Vec::new();
        for (node, ids, present) in futures::future::join_all(probes).await {
            let present = match present {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "replica audit: node did not answer");
                    continue;
                }
            };
            if let Some(last) = ids.last() {
                guard(&self.audit).1.insert(node.clone(), *last);
            }
            for (id, here) in ids.iter().zip(present) {
                if !here {
                    missing.push((*id, node.clone()));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.svc
            .with(move |core, _, _| {
                for (id, node) in missing {
                    let still_listed = core
                        .state
                        .chunks
                        .get(&id)
                        .is_some_and(|c| c.replicas.get(&node) == Some(&ReplicaStatus::Available));
                    if !still_listed {
                        continue;
                    }
                    tracing::warn!(chunk = %id.short(), node = %node, "replica audit: the node no longer has this copy; unlisted, it will be made again");
                    core.propose_or_warn(
                        Command::RemoveReplica { id, node },
                        "unlisting a lost replica",
                    );
                }
                Ok(())
            })
            .await
    }

    /// Phase two of garbage collection: DeleteChunk on each node.
    async fn sweep(&self, work: Vec<(gc::Deletion, String)>) -> Result<(), Status> {
        if work.is_empty() {
            return Ok(());
        }
        let timeout = self.svc.config().heal.retry.attempt_timeout();
        let parallel = self.svc.config().heal.gc_parallel;
        let results: Vec<(gc::Deletion, bool)> = futures::stream::iter(work)
            .map(|(d, addr)| async move {
                let ok = match self.storage(&addr) {
                    Ok(mut s) => {
                        let req = pb::DeleteChunkRequest { id: d.id.to_vec() };
                        match tokio::time::timeout(timeout, s.delete_chunk(req)).await {
                            Ok(Ok(_)) => true,
                            // Not there: the node is up and answering, so
                            // it is deleted as far as anyone can tell.
                            Ok(Err(s)) if s.code() == tonic::Code::NotFound => true,
                            Ok(Err(s)) => {
                                tracing::debug!(chunk = %d.id.short(), node = %d.node, error = %s.message(), "delete failed");
                                false
                            }
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                };
                (d, ok)
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut deleted = Vec::new();
        let mut trashed = Vec::new();
        for (d, ok) in results {
            if !ok {
                continue;
            }
            if d.trash {
                trashed.push((d.node, d.id));
            } else {
                deleted.push((d.id, d.node));
            }
        }
        tracing::info!(
            replicas = deleted.len(),
            trash = trashed.len(),
            "garbage collection: copies deleted"
        );
        self.svc
            .with(move |core, _, _| {
                if !deleted.is_empty() {
                    heal(core, HealCommand::GcDeleted { items: deleted });
                }
                if !trashed.is_empty() {
                    heal(core, HealCommand::TrashDone { items: trashed });
                }
                Ok(())
            })
            .await
    }

    /// Runs every active entry of `node` now (`bigfs admin recover`).
    pub async fn recover(self: &Arc<Self>, node: String) -> Result<pb::RecoverReply, Status> {
        let copies = self.start(Some(node.clone())).await?;
        let timeout = self.svc.config().heal.retry.attempt_timeout();
        let per_node = self.svc.config().heal.max_copies_per_node;
        let done: Vec<Finished> = futures::stream::iter(copies)
            .map(|c| async move {
                let result = self.copy(&c, timeout).await;
                self.mark_running(std::slice::from_ref(&c.job), false);
                Finished {
                    id: c.job.id,
                    target: c.job.target,
                    source: c.job.source,
                    result,
                }
            })
            .buffer_unordered(per_node)
            .collect()
            .await;
        let mut reply = pb::RecoverReply {
            attempted: done.len() as u32,
            ..Default::default()
        };
        for f in &done {
            match &f.result {
                Ok(()) => reply.succeeded += 1,
                Err(s) => {
                    reply.failed += 1;
                    reply
                        .errors
                        .push(format!("{} -> {}: {}", f.id.short(), f.target, s.message()));
                }
            }
        }
        tracing::info!(node = %node, attempted = reply.attempted, succeeded = reply.succeeded, failed = reply.failed, "recover ran");
        self.record(done).await?;
        Ok(reply)
    }
}
