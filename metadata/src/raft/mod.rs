//! The Raft glue: the metadata state machine replicated over a group of
//! members with openraft ("Metadata is a replicated state machine" in
//! DESIGN.md).
//!
//! - [`log`]: the Raft log and the vote on disk;
//! - [`machine`]: the state machine openraft applies committed entries to,
//!   and its snapshots;
//! - [`network`]: Raft's RPCs over BigFS's gRPC port, both ends;
//! - [`members`]: the group as `bigfs admin meta` shows and changes it;
//! - [`Consensus`]: what the services use: propose a command, wait for a
//!   linearizable read, know the leader.
//!
//! A single member with no peers is a group of one: the same code path,
//! with every quorum reached at once.

pub mod log;
pub mod machine;
pub mod members;
pub mod network;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::MetaError;
use crate::machine::Core;
use crate::state::{Command, Reply, State};

/// A member's id in the group (`--node-id`).
pub type NodeId = u64;

/// What applying one committed entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Result<Reply, MetaError>);

openraft::declare_raft_types!(
    /// openraft's type parameters for the metadata group.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;

/// Parses `--peers`: `1=host:port,2=host:port,...` (empty: no peers).
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer {part:?} is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("peer id {id:?} is not a number"))?;
        if id == 0 {
            return Err("peer ids start at 1".into());
        }
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!("peer {id} address {addr:?} is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer {id} is listed twice"));
        }
    }
    Ok(peers)
}

/// A not-leader refusal: UNAVAILABLE, with the leader's address when known
/// (the `bigfs-leader` header of [`bigfs_proto::leader`]) so the client can
/// go there; without one, a `no leader` refusal.
pub fn not_leader(hint: Option<&str>) -> tonic::Status {
    match hint {
        Some(addr) => bigfs_proto::leader::not_leader(Some(addr)),
        None => tonic::Status::unavailable(format!(
            "{}: this member cannot reach a majority now",
            bigfs_proto::leader::NO_LEADER
        )),
    }
}

fn forward_status(f: &ForwardToLeader<NodeId, BasicNode>) -> tonic::Status {
    not_leader(f.leader_node.as_ref().map(|n| n.addr.as_str()))
}

/// The answer to a write (a proposal or a membership change) openraft
/// refused.
pub(crate) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> tonic::Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward_status(&f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            tonic::Status::failed_precondition(format!("membership change refused: {c}"))
        }
        e => tonic::Status::unavailable(format!("{}: {e}", bigfs_proto::leader::NO_LEADER)),
    }
}

/// The running Raft member and the state it applies to.
#[derive(Clone)]
pub struct Consensus {
    pub raft: Raft,
    pub id: NodeId,
    pub core: Arc<Mutex<Core>>,
    log: log::LogStore,
    /// The data directory (its free space is checked per proposal).
    dir: std::path::PathBuf,
    /// Longest a proposal or a read barrier waits for a majority.
    wait: Duration,
    /// A leader that heard from a majority this recently serves reads
    /// without another round trip (a leader lease): shorter than the
    /// election timeout, so no other member can have been elected since.
    lease: Duration,
    /// Proposals per second over the last minute: (second, count).
    rate: Arc<Mutex<VecDeque<(u64, u64)>>>,
}

/// Bytes always kept free on the metadata disk beyond the log and snapshot
/// (a batch of entries, the vote file, a snapshot's temporary copy header).
pub const DISK_RESERVE: u64 = 64 * 1024;

/// Free bytes (for unprivileged writers) on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is written by
    // statvfs before it is read, only when it returns 0.
    let r = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Seconds of proposal counts kept for the rate.
const RATE_WINDOW_SECS: u64 = 60;

/// Starts this member: opens its log and state machine in
/// `config.data_dir` (starting from `initial` when there is no snapshot),
/// and on a first start with an empty log, forms the group of
/// `config.peers` (or of this member alone).
pub async fn start(
    config: &Config,
    legacy: Option<State>,
    my_addr: String,
) -> Result<Consensus, MetaError> {
    let dir = &config.data_dir;
    let log = log::LogStore::open(
        dir,
        config.log_sync,
        Duration::from_millis(config.log_sync_interval_ms),
    )?;
    let fresh = log.is_empty();
    let migrated = legacy.is_some();
    let (machine, core) = machine::Machine::open(dir, legacy)?;
    if migrated {
        crate::store::retire_legacy(dir)?;
    }
    let raft_config = openraft::Config {
        cluster_name: "bigfs-metadata".into(),
        heartbeat_interval: config.raft.heartbeat_ms,
        election_timeout_min: config.raft.election_min_ms,
        election_timeout_max: config.raft.election_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: config.raft.log_kept_after_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| MetaError::InvalidArgument(format!("raft settings: {e}")))?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        network::Network::default(),
        log.clone(),
        machine,
    )
    .await
    .map_err(|e| MetaError::Store(format!("starting Raft: {e}")))?;
    let peers = parse_peers(&config.peers).map_err(MetaError::InvalidArgument)?;
    if fresh && !config.join && group_exists(config.node_id, &peers).await {
        tracing::warn!(
            "this member has no log but its peers already form a group: waiting to be \
             brought up to date by the leader (a snapshot) instead of forming a new group"
        );
    } else if fresh && !config.join {
        let members: BTreeMap<NodeId, BasicNode> = if peers.is_empty() {
            BTreeMap::from([(config.node_id, BasicNode { addr: my_addr })])
        } else {
            peers
                .iter()
                .map(|(id, a)| (*id, BasicNode { addr: a.clone() }))
                .collect()
        };
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "forming the metadata group");
        if let Err(e) = raft.initialize(members).await {
            // Another member initialized first, or this one already has a
            // log: both are fine.
            tracing::info!(error = %e, "group already formed");
        }
    }
    if migrated {
        // Followers must start from a snapshot that includes the migrated
        // state, never from the log alone: snapshot now, drop the log.
        let r = raft.clone();
        tokio::spawn(async move {
            let wait = r
                .wait(Some(Duration::from_secs(30)))
                .applied_index_at_least(Some(0), "migration")
                .await;
            if wait.is_ok() && r.trigger().snapshot().await.is_ok() {
                let _ = r
                    .wait(Some(Duration::from_secs(30)))
                    .metrics(|m| m.snapshot.is_some(), "snapshot after migration")
                    .await;
                let snapshot = r.metrics().borrow().snapshot;
                if let Some(s) = snapshot {
                    let _ = r.trigger().purge_log(s.index).await;
                }
            }
        });
    }
    Ok(Consensus {
        raft,
        id: config.node_id,
        core,
        log,
        dir: dir.clone(),
        wait: Duration::from_millis(config.raft.wait_ms),
        lease: Duration::from_millis(config.raft.election_min_ms / 2),
        rate: Arc::default(),
    })
}

/// Whether a peer other than `me` answers with a log or a leader: the
/// group exists, and a member with an empty log (new, or wiped) must not
/// form it again.
async fn group_exists(me: NodeId, peers: &BTreeMap<NodeId, String>) -> bool {
    for (id, addr) in peers {
        if *id == me {
            continue;
        }
        let Ok(ch) = bigfs_proto::channel(addr) else {
            continue;
        };
        let mut c = bigfs_proto::pb::admin_client::AdminClient::new(ch);
        let fut = c.meta_status(bigfs_proto::pb::Empty {});
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), fut).await {
            let r = r.into_inner();
            if r.last_log_index > 0 || r.leader != 0 {
                return true;
            }
        }
    }
    false
}

impl Consensus {
    /// A handle that makes the Raft log durable now.
    pub fn syncer(&self) -> crate::store::Syncer {
        self.log.syncer()
    }

    /// The highest log index this member knows to be committed.
    pub fn committed_index(&self) -> u64 {
        self.log.committed().map_or(0, |l| l.index)
    }

    fn count_proposal(&self) {
        let now = bigfs_proto::now_ms() / 1000;
        let mut g = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        match g.back_mut() {
            Some((s, n)) if *s == now => *n += 1,
            _ => g.push_back((now, 1)),
        }
        while g.front().is_some_and(|(s, _)| *s + RATE_WINDOW_SECS <= now) {
            g.pop_front();
        }
    }

    /// Proposals per second over the last minute.
    pub fn proposal_rate(&self) -> f64 {
        let now = bigfs_proto::now_ms() / 1000;
        let g = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let n: u64 = g
            .iter()
            .filter(|(s, _)| *s + RATE_WINDOW_SECS > now)
            .map(|(_, n)| n)
            .sum();
        n as f64 / RATE_WINDOW_SECS as f64
    }

    /// Proposes `cmd` and waits until it is committed and applied here;
    /// answers what apply answered.
    pub async fn propose(&self, cmd: Command) -> Result<Reply, tonic::Status> {
        self.check_space()?;
        self.count_proposal();
        metrics::counter!("bigfs_metadata_proposals_total").increment(1);
        let fut = self.raft.client_write(cmd);
        match tokio::time::timeout(self.wait, fut).await {
            Err(_) => Err(tonic::Status::unavailable(
                "no leader: the proposal was not committed in time (no majority reachable)",
            )),
            Ok(Ok(resp)) => resp.data.0.map_err(tonic::Status::from),
            Ok(Err(e)) => Err(write_error(e)),
        }
    }

    /// Refuses a proposal when the data directory's file system has less
    /// free space than the log and the next snapshot may need: openraft
    /// treats a failed log write as fatal and stops the member, so a full
    /// disk must be an ENOSPC answer before the write, not an I/O error
    /// during it. Kept free: [`DISK_RESERVE`], plus twice the last
    /// snapshot and the log since it (the next snapshot is about their size).
    fn check_space(&self) -> Result<(), tonic::Status> {
        let dir = &self.dir;
        let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        let needed = DISK_RESERVE + 2 * (size(machine::SNAPSHOT_FILE) + size(log::LOG_FILE));
        match free_bytes(dir) {
            Some(free) if free < needed => {
                metrics::counter!("bigfs_metadata_disk_full_refusals_total").increment(1);
                Err(tonic::Status::from(MetaError::ResourceExhausted(format!(
                    "the metadata disk is full ({free} bytes free, {needed} kept for the log and \
                     snapshots); free space on it"
                ))))
            }
            _ => Ok(()),
        }
    }

    /// Returns once this member has confirmed with a majority that it
    /// leads and has applied everything committed before the call: a read
    /// of the local state after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), tonic::Status> {
        if self.holds_lease() {
            return Ok(());
        }
        match tokio::time::timeout(self.wait, self.raft.ensure_linearizable()).await {
            Err(_) => Err(tonic::Status::unavailable(
                "no leader: leadership could not be confirmed with a majority in time",
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(forward_status(&f))
            }
            Ok(Err(e)) => Err(tonic::Status::unavailable(format!("no leader: {e}"))),
        }
    }

    /// Whether this member leads, a majority acknowledged it within the
    /// lease, and it has applied an entry of its own term (so everything
    /// committed before it took over is applied here).
    fn holds_lease(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && m.current_leader == Some(self.id)
            && m.millis_since_quorum_ack
                .is_some_and(|ms| u128::from(ms) < self.lease.as_millis())
            && m.last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// Whether this member believes it leads (no round trip): for the
    /// leader-only background duties, which re-check through proposals.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// How many voting members the group has: each holds a copy of the
    /// state, and so of the bytes kept inline.
    pub fn voters(&self) -> usize {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().voter_ids().count()
    }

    /// The leader's address as this member knows it.
    pub fn leader_address(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }
}
