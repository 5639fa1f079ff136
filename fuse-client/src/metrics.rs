//! Counters about chunk transfers: how often the first try works, how many
//! attempts an operation needs, and which nodes fail; plus the metadata
//! waits ([`WaitCounts`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::meta_wait::WaitCounts;

#[derive(Default)]
pub struct TransferMetrics {
    ops: AtomicU64,
    first_try_ok: AtomicU64,
    attempts: AtomicU64,
    failed_ops: AtomicU64,
    failovers: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    dedup_hits: AtomicU64,
    node_failures: Mutex<HashMap<String, u64>>,
}

/// A point-in-time copy of [`TransferMetrics`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricsSnapshot {
    pub ops: u64,
    pub failed_ops: u64,
    pub first_try_success_rate: f64,
    pub mean_attempts: f64,
    pub failovers: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub dedup_hits: u64,
    /// Nodes by failure count, worst first.
    pub worst_nodes: Vec<(String, u64)>,
    /// Metadata calls that waited for the service (filled by the client).
    pub meta_waits: WaitCounts,
}

impl TransferMetrics {
    /// One transfer finished (`ok` or not) after `attempts` attempts.
    pub fn record_op(&self, attempts: u32, ok: bool) {
        self.ops.fetch_add(1, Relaxed);
        self.attempts.fetch_add(u64::from(attempts), Relaxed);
        if ok && attempts == 1 {
            self.first_try_ok.fetch_add(1, Relaxed);
        }
        if !ok {
            self.failed_ops.fetch_add(1, Relaxed);
        }
    }

    pub fn record_node_failure(&self, node: &str) {
        self.failovers.fetch_add(1, Relaxed);
        if let Ok(mut m) = self.node_failures.lock() {
            *m.entry(node.to_string()).or_default() += 1;
        }
    }

    pub fn add_read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Relaxed);
    }
    pub fn add_written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Relaxed);
    }
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Relaxed);
    }
    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Relaxed);
    }
    pub fn dedup_hit(&self) {
        self.dedup_hits.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let ops = self.ops.load(Relaxed);
        let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let mut worst: Vec<(String, u64)> = self
            .node_failures
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        worst.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        MetricsSnapshot {
            ops,
            failed_ops: self.failed_ops.load(Relaxed),
            first_try_success_rate: if ops == 0 {
                1.0
            } else {
                ratio(self.first_try_ok.load(Relaxed), ops)
            },
            mean_attempts: ratio(self.attempts.load(Relaxed), ops),
            failovers: self.failovers.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            dedup_hits: self.dedup_hits.load(Relaxed),
            worst_nodes: worst,
            meta_waits: WaitCounts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_worst_nodes_follow_the_records() {
        let m = TransferMetrics::default();
        m.record_op(1, true);
        m.record_op(1, true);
        m.record_op(3, true);
        m.record_op(4, false);
        m.record_node_failure("b");
        m.record_node_failure("a");
        m.record_node_failure("b");
        let s = m.snapshot();
        assert_eq!(s.ops, 4);
        assert_eq!(s.failed_ops, 1);
        assert!((s.first_try_success_rate - 0.5).abs() < 1e-9);
        assert!((s.mean_attempts - 2.25).abs() < 1e-9);
        assert_eq!(
            s.worst_nodes,
            vec![("b".to_string(), 2), ("a".to_string(), 1)]
        );
    }
}
