//! Soft node state: heartbeats, usage and failure reports. Never logged;
//! after a restart every node is Down until it is heard from again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bigfs_proto::pb::NodeState;

/// What we last heard from one node.
#[derive(Debug, Clone, Default)]
pub struct Soft {
    pub last_heartbeat: Option<Instant>,
    pub capacity: u64,
    pub used: u64,
    pub chunk_count: u64,
    pub failures: u64,
    /// Each data directory as the node last reported it.
    pub disks: Vec<bigfs_proto::pb::DiskStatus>,
}

/// Heartbeat bookkeeping for every node.
#[derive(Debug, Clone)]
pub struct Liveness {
    suspect_after: Duration,
    down_after: Duration,
    nodes: HashMap<String, Soft>,
    /// When this member last became leader: a node never heard from since
    /// counts as heard then (the new leader's grace period).
    grace_from: Option<Instant>,
}

impl Liveness {
    pub fn new(suspect_after: Duration, down_after: Duration) -> Self {
        Liveness {
            suspect_after,
            down_after,
            nodes: HashMap::new(),
            grace_from: None,
        }
    }

    /// Records a heartbeat (or a registration) at `now`.
    pub fn heard(&mut self, node: &str, capacity: u64, used: u64, chunk_count: u64, now: Instant) {
        let s = self.nodes.entry(node.to_string()).or_default();
        s.last_heartbeat = Some(now);
        s.capacity = capacity;
        s.used = used;
        s.chunk_count = chunk_count;
    }

    /// Records the node's per-disk figures (from a heartbeat or a
    /// registration).
    pub fn heard_disks(&mut self, node: &str, disks: Vec<bigfs_proto::pb::DiskStatus>) {
        self.nodes.entry(node.to_string()).or_default().disks = disks;
    }

    pub fn report_failure(&mut self, node: &str) -> u64 {
        let s = self.nodes.entry(node.to_string()).or_default();
        s.failures += 1;
        s.failures
    }

    /// Starts a grace period at `now` for every node not heard from yet,
    /// including nodes this member learns of later (a new leader).
    pub fn grace_from(&mut self, now: Instant) {
        self.grace_from = Some(now);
    }

    /// Forgets a removed node.
    pub fn remove(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    pub fn get(&self, node: &str) -> Option<&Soft> {
        self.nodes.get(node)
    }

    /// The state of `node` at `now`.
    pub fn state(&self, node: &str, decommissioned: bool, now: Instant) -> NodeState {
        if decommissioned {
            return NodeState::Decommissioned;
        }
        let elapsed = self
            .nodes
            .get(node)
            .and_then(|s| s.last_heartbeat)
            .or(self.grace_from)
            .map(|t| now.saturating_duration_since(t));
        classify(elapsed, self.suspect_after, self.down_after)
    }

    /// Free and total bytes of the nodes among `nodes` that are Up (and
    /// not decommissioned) at `now`: the space new data can go to.
    pub fn up_space<'a>(
        &self,
        nodes: impl IntoIterator<Item = (&'a String, bool)>,
        now: Instant,
    ) -> (u64, u64) {
        nodes
            .into_iter()
            .filter(|(id, decommissioned)| self.state(id, *decommissioned, now) == NodeState::Up)
            .filter_map(|(id, _)| self.nodes.get(id))
            .fold((0u64, 0u64), |(free, cap), s| {
                (
                    free.saturating_add(s.capacity.saturating_sub(s.used)),
                    cap.saturating_add(s.capacity),
                )
            })
    }

    /// Free bytes as last reported, if the node was heard from.
    pub fn free(&self, node: &str) -> Option<u64> {
        self.nodes
            .get(node)
            .filter(|s| s.last_heartbeat.is_some())
            .map(|s| s.capacity.saturating_sub(s.used))
    }
}

/// Up within `suspect_after` of the last heartbeat, Suspect until
/// `down_after`, then Down; never heard from is Down.
pub fn classify(
    elapsed: Option<Duration>,
    suspect_after: Duration,
    down_after: Duration,
) -> NodeState {
    match elapsed {
        None => NodeState::Down,
        Some(e) if e <= suspect_after => NodeState::Up,
        Some(e) if e <= down_after => NodeState::Suspect,
        Some(_) => NodeState::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_heartbeat_age() {
        let (s, d) = (Duration::from_secs(6), Duration::from_secs(20));
        assert_eq!(classify(None, s, d), NodeState::Down);
        assert_eq!(classify(Some(Duration::from_secs(1)), s, d), NodeState::Up);
        assert_eq!(
            classify(Some(Duration::from_secs(7)), s, d),
            NodeState::Suspect
        );
        assert_eq!(
            classify(Some(Duration::from_secs(21)), s, d),
            NodeState::Down
        );
    }

    #[test]
    fn unheard_node_is_down_and_decommission_wins() {
        let mut l = Liveness::new(Duration::from_secs(6), Duration::from_secs(20));
        let now = Instant::now();
        assert_eq!(l.state("a", false, now), NodeState::Down);
        l.heard("a", 100, 40, 3, now);
        assert_eq!(l.state("a", false, now), NodeState::Up);
        assert_eq!(l.state("a", true, now), NodeState::Decommissioned);
        assert_eq!(l.free("a"), Some(60));
        assert_eq!(l.report_failure("a"), 1);
    }
}
