//! `fsck`: walks the namespace and the chunk table, asks every node which
//! listed replicas it really holds, and reports (and with `repair` fixes)
//! missing chunks and replicas, reference-count drift and orphan layouts.
//! Unreferenced chunks are listed apart, as garbage collection's pending
//! work: they are not damage.
//!
//! Three steps, so the state lock is never held across a network call:
//! 1. under the lock, a [`Plan`]: what the table claims and what the layouts
//!    reference;
//! 2. without it, a HasChunks probe per node;
//! 3. the findings, and for `repair` one command per fix (set a refcount,
//!    drop a replica that is gone, designate a new copy and have a
//!    surviving holder push it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bigfs_proto::ChunkId;
use bigfs_proto::pb::{self, FsckProblemKind as K, NodeState, ops_server::Ops};
use tonic::{Request, Response, Status};

use crate::MetadataService;
use crate::error::MetaError;
use crate::placement::{self, Candidate};
use crate::state::{Command, ReplicaStatus, State};

/// Default deadline of one node's HasChunks probe.
const DEFAULT_PROBE_TIMEOUT_MS: u32 = 5_000;
/// Ids per HasChunks call: 32 bytes each, 64 Ki ids stay near 2 MiB.
const PROBE_BATCH: usize = 65_536;
/// Paths listed per problem; enough to find the files, short enough to read.
const PATHS_PER_PROBLEM: usize = 3;
/// Chunks waiting for garbage collection listed one by one (all are
/// counted): after deleting a large tree there may be millions.
const PENDING_GC_LISTED: usize = 1000;

/// Sets a chunk's reference count (the fix for drift). Deterministic.
pub(crate) fn set_refcount(state: &mut State, id: ChunkId, refcount: u64, now_ms: u64) {
    if let Some(c) = state.chunks.get_mut(&id) {
        c.refcount = refcount;
        c.zero_since_ms = if refcount == 0 {
            c.zero_since_ms.or(Some(now_ms))
        } else {
            None
        };
    }
}

struct ChunkPlan {
    len: u32,
    refcount: u64,
    /// Until garbage collection may take it (refcount zero only).
    grace_left_ms: u64,
    /// Some replica is already being deleted.
    deleting: bool,
    /// Layout references counted now.
    references: u64,
    /// Largest replication among the files referencing it.
    wanted: u32,
    available: Vec<String>,
    paths: Vec<String>,
}

struct Plan {
    files: u64,
    chunks: BTreeMap<ChunkId, ChunkPlan>,
    /// Referenced chunks the table does not know, with their paths.
    unknown: BTreeMap<ChunkId, Vec<String>>,
    orphan_layouts: Vec<u64>,
    /// Node id -> (address, up).
    nodes: BTreeMap<String, (String, bool)>,
}

fn plan(state: &State, live: &crate::liveness::Liveness, gc_grace_ms: u64) -> Plan {
    let now = Instant::now();
    let now_ms = bigfs_proto::now_ms();
    let mut paths: HashMap<u64, Vec<String>> = HashMap::new();
    for (p, ino) in crate::views::file_paths(state) {
        paths.entry(ino).or_default().push(p);
    }
    let mut chunks: BTreeMap<ChunkId, ChunkPlan> = state
        .chunks
        .iter()
        .map(|(id, c)| {
            let plan = ChunkPlan {
                len: c.len,
                refcount: c.refcount,
                grace_left_ms: c
                    .zero_since_ms
                    .map_or(0, |z| z.saturating_add(gc_grace_ms).saturating_sub(now_ms)),
                deleting: c.replicas.values().any(|s| *s == ReplicaStatus::Deleting),
                references: 0,
                wanted: 0,
                available: c
                    .replicas
                    .iter()
                    .filter(|(_, s)| **s == ReplicaStatus::Available)
                    .map(|(n, _)| n.clone())
                    .collect(),
                paths: Vec::new(),
            };
            (*id, plan)
        })
        .collect();
    let mut unknown: BTreeMap<ChunkId, Vec<String>> = BTreeMap::new();
    let mut orphan_layouts = Vec::new();
    for (ino, layout) in &state.layouts {
        let Some(inode) = state.inodes.get(ino) else {
            orphan_layouts.push(*ino);
            continue;
        };
        let names = paths
            .get(ino)
            .cloned()
            .unwrap_or_else(|| vec![format!("<inode {ino}>")]);
        for r in layout.values() {
            match chunks.get_mut(&r.id) {
                Some(c) => {
                    c.references += 1;
                    c.wanted = c.wanted.max(inode.replication.max(1));
                    for p in &names {
                        if c.paths.len() < PATHS_PER_PROBLEM && !c.paths.contains(p) {
                            c.paths.push(p.clone());
                        }
                    }
                }
                None => unknown
                    .entry(r.id)
                    .or_default()
                    .extend(names.iter().cloned()),
            }
        }
    }
    let nodes = state
        .nodes
        .iter()
        .map(|(id, n)| {
            let up = live.state(id, n.decommissioned, now) == NodeState::Up;
            (id.clone(), (n.address.clone(), up))
        })
        .collect();
    Plan {
        files: paths.len() as u64,
        chunks,
        unknown,
        orphan_layouts,
        nodes,
    }
}

/// Asks `address` which of `ids` it holds; `Err` when it does not answer.
pub(crate) async fn probe(
    address: &str,
    ids: &[ChunkId],
    timeout: Duration,
) -> Result<Vec<bool>, String> {
    let mut client = bigfs_proto::storage_client(address).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(ids.len());
    for batch in ids.chunks(PROBE_BATCH) {
        let req = pb::HasChunksRequest {
            ids: batch.iter().map(ChunkId::to_vec).collect(),
        };
        let reply = tokio::time::timeout(timeout, client.has_chunks(req))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        if reply.present.len() != batch.len() {
            return Err("HasChunks answered the wrong number of flags".into());
        }
        out.extend(reply.present);
    }
    Ok(out)
}

fn problem(
    kind: K,
    chunk: Option<&ChunkId>,
    node: &str,
    paths: &[String],
    detail: String,
) -> pb::FsckProblem {
    pb::FsckProblem {
        kind: kind as i32,
        chunk_id: chunk.map(ChunkId::to_hex).unwrap_or_default(),
        node_id: node.to_string(),
        paths: paths.to_vec(),
        detail,
        repaired: false,
        repair: String::new(),
    }
}

impl MetadataService {
    /// Runs one command for a repair; the error becomes the repair note.
    async fn fix(&self, cmd: Command) -> Result<(), String> {
        self.execute(cmd)
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }

    /// Designates a new copy of `id` on a node the chunk table does not
    /// list for it, and has `source` push it there.
    async fn add_copy(&self, id: ChunkId, source: &str) -> Result<String, String> {
        let src = source.to_string();
        let (target, target_addr, source_addr) = self
            .with(move |core, live, _| {
                let st = &core.state;
                let now = Instant::now();
                let len = st.chunks.get(&id).map_or(0, |c| c.len);
                let cands: Vec<Candidate> = st
                    .nodes
                    .iter()
                    .map(|(n, x)| Candidate {
                        node_id: n.clone(),
                        usable: live.state(n, x.decommissioned, now) == NodeState::Up,
                        free: live.free(n).unwrap_or(0),
                    })
                    .collect();
                let exclude: BTreeSet<String> = st
                    .chunks
                    .get(&id)
                    .map(|c| c.replicas.keys().cloned().collect())
                    .unwrap_or_default();
                let Some(target) =
                    placement::choose(&cands, 1, u64::from(len), &exclude, &mut rand::rng())
                        .into_iter()
                        .next()
                else {
                    return Err(MetaError::ResourceExhausted(
                        "no other node is up with room for a copy".into(),
                    ));
                };
                core.propose(Command::RegisterChunk {
                    confirmed: vec![],
                    id,
                    len,
                    node: src.clone(),
                    designated: vec![target.clone()],
                    now_ms: bigfs_proto::now_ms(),
                });
                let addr = |n: &str| {
                    core.state
                        .nodes
                        .get(n)
                        .map(|x| x.address.clone())
                        .unwrap_or_default()
                };
                Ok((target.clone(), addr(&target), addr(&src)))
            })
            .await
            .map_err(|s| s.message().to_string())?;
        let mut client = bigfs_proto::storage_client(&source_addr).map_err(|e| e.to_string())?;
        client
            .replicate_chunk(pb::ReplicateChunkRequest {
                id: id.to_vec(),
                target_node_id: target.clone(),
                target_address: target_addr,
            })
            .await
            .map_err(|s| format!("copy from {source} to {target} failed: {}", s.message()))?;
        Ok(target)
    }

    pub async fn run_fsck(
        &self,
        repair: bool,
        probe_timeout: Duration,
    ) -> Result<pb::FsckReply, Status> {
        let plan = self
            .inspect(|st, live, config, _| plan(st, live, config.heal.gc_grace_ms))
            .await?;
        let mut reply = pb::FsckReply {
            files: plan.files,
            chunks: plan.chunks.len() as u64,
            ..Default::default()
        };

        // Which listed replicas really exist, node by node.
        let mut per_node: BTreeMap<&str, Vec<ChunkId>> = BTreeMap::new();
        for (id, c) in &plan.chunks {
            for n in &c.available {
                per_node.entry(n.as_str()).or_default().push(*id);
            }
        }
        let mut probes = tokio::task::JoinSet::new();
        for (node, ids) in per_node {
            let address = plan
                .nodes
                .get(node)
                .map(|(a, _)| a.clone())
                .unwrap_or_default();
            let node = node.to_string();
            probes.spawn(async move {
                let r = probe(&address, &ids, probe_timeout).await;
                (node, ids, r)
            });
        }
        // (chunk, node) -> present; absent from the map = unchecked.
        let mut present: HashMap<(ChunkId, String), bool> = HashMap::new();
        for (node, ids, result) in probes.join_all().await {
            match result {
                Ok(flags) => {
                    reply.replicas_checked += ids.len() as u64;
                    for (id, p) in ids.into_iter().zip(flags) {
                        present.insert((id, node.clone()), p);
                    }
                }
                Err(e) => reply.problems.push(problem(
                    K::NodeUnreachable,
                    None,
                    &node,
                    &[],
                    format!("{} replicas unchecked: {e}", ids.len()),
                )),
            }
        }

        for ino in &plan.orphan_layouts {
            reply.problems.push(problem(
                K::OrphanLayout,
                None,
                "",
                &[],
                format!("a layout exists for inode {ino}, which does not"),
            ));
        }
        for (id, paths) in &plan.unknown {
            reply.problems.push(problem(
                K::MissingChunk,
                Some(id),
                "",
                paths,
                "referenced by a layout but absent from the chunk table".into(),
            ));
        }

        for (id, c) in &plan.chunks {
            if c.refcount != c.references {
                let mut p = problem(
                    K::RefcountDrift,
                    Some(id),
                    "",
                    &c.paths,
                    format!(
                        "refcount {} but {} layout references",
                        c.refcount, c.references
                    ),
                );
                if repair {
                    match self
                        .fix(Command::SetRefcount {
                            id: *id,
                            refcount: c.references,
                            now_ms: bigfs_proto::now_ms(),
                        })
                        .await
                    {
                        Ok(()) => {
                            p.repaired = true;
                            p.repair = format!("refcount set to {}", c.references);
                        }
                        Err(e) => p.repair = e,
                    }
                }
                reply.problems.push(p);
            }
            if c.references == 0 {
                // GC's to delete once the refcount is zero; a drifted one
                // was reported above.
                if c.refcount == 0 {
                    reply.pending_gc += 1;
                    reply.pending_gc_bytes += u64::from(c.len);
                    if reply.pending_gc_chunks.len() < PENDING_GC_LISTED {
                        reply.pending_gc_chunks.push(pb::PendingGc {
                            chunk_id: id.to_hex(),
                            len: c.len,
                            grace_left_ms: c.grace_left_ms,
                            deleting: c.deleting,
                        });
                    }
                }
                continue;
            }

            let mut good: Vec<String> = Vec::new();
            for n in &c.available {
                match present.get(&(*id, n.clone())) {
                    Some(false) => {
                        let mut p = problem(
                            K::MissingReplica,
                            Some(id),
                            n,
                            &c.paths,
                            format!("listed as available on {n}, but the node does not have it"),
                        );
                        if repair {
                            match self
                                .fix(Command::RemoveReplica {
                                    id: *id,
                                    node: n.clone(),
                                })
                                .await
                            {
                                Ok(()) => {
                                    p.repaired = true;
                                    p.repair = format!("replica record on {n} dropped");
                                }
                                Err(e) => p.repair = e,
                            }
                        }
                        reply.problems.push(p);
                    }
                    Some(true) if plan.nodes.get(n).is_some_and(|(_, up)| *up) => {
                        good.push(n.clone())
                    }
                    _ => {}
                }
            }
            if good.is_empty() {
                let unchecked = c
                    .available
                    .iter()
                    .any(|n| !present.contains_key(&(*id, n.clone())));
                reply.problems.push(problem(
                    K::MissingChunk,
                    Some(id),
                    "",
                    &c.paths,
                    if unchecked {
                        "no verified copy on an up node (some holders did not answer)".into()
                    } else {
                        "no copy left on any node: the bytes are lost".into()
                    },
                ));
            } else if (good.len() as u32) < c.wanted {
                let mut p = problem(
                    K::UnderReplicated,
                    Some(id),
                    "",
                    &c.paths,
                    format!(
                        "{} verified copies on up nodes, {} wanted",
                        good.len(),
                        c.wanted
                    ),
                );
                if repair {
                    let mut added = Vec::new();
                    let mut failure = None;
                    for _ in good.len() as u32..c.wanted {
                        match self.add_copy(*id, &good[0]).await {
                            Ok(t) => added.push(t),
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                    p.repaired = failure.is_none();
                    p.repair = match failure {
                        None => format!("copied from {} to {}", good[0], added.join(", ")),
                        Some(e) if added.is_empty() => e,
                        Some(e) => format!("copied to {}; then: {e}", added.join(", ")),
                    };
                }
                reply.problems.push(p);
            }
        }
        reply.repaired = reply.problems.iter().filter(|p| p.repaired).count() as u64;
        for p in &reply.problems {
            tracing::info!(
                kind = ?K::try_from(p.kind).unwrap_or(K::Unspecified),
                chunk = %p.chunk_id.get(..12).unwrap_or(""),
                node = %p.node_id,
                repaired = p.repaired,
                detail = %p.detail,
                "fsck finding"
            );
        }
        Ok(reply)
    }
}

#[tonic::async_trait]
impl Ops for MetadataService {
    async fn fsck(
        &self,
        request: Request<pb::FsckRequest>,
    ) -> Result<Response<pb::FsckReply>, Status> {
        let r = request.into_inner();
        let timeout_ms = if r.probe_timeout_ms == 0 {
            DEFAULT_PROBE_TIMEOUT_MS
        } else {
            r.probe_timeout_ms
        };
        tracing::info!(repair = r.repair, "fsck started");
        self.run_fsck(r.repair, Duration::from_millis(u64::from(timeout_ms)))
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_refcount_restarts_or_ends_the_grace_period() {
        let mut s = State::new();
        let id = ChunkId::of(b"a");
        s.chunks.insert(
            id,
            crate::state::Chunk {
                len: 1,
                refcount: 3,
                zero_since_ms: None,
                created_ms: 0,
                replicas: BTreeMap::new(),
                wants: Default::default(),
            },
        );
        set_refcount(&mut s, id, 0, 42);
        assert_eq!(s.chunks[&id].zero_since_ms, Some(42));
        set_refcount(&mut s, id, 1, 50);
        assert_eq!(
            (s.chunks[&id].refcount, s.chunks[&id].zero_since_ms),
            (1, None)
        );
    }
}
