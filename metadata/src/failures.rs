//! The recent failure reports (from clients and storage nodes), kept in a
//! bounded ring for the status page and `/failures`. Soft state: lost on
//! restart, like liveness.

use std::collections::VecDeque;

use serde::Serialize;

/// One `ReportFailure` as received.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailureReport {
    /// Wall-clock milliseconds since the epoch when it was received.
    pub at_ms: u64,
    pub node_id: String,
    /// Short chunk id; empty when the failure was not about one chunk.
    pub chunk: String,
    pub operation: String,
    pub error: String,
    pub reporter: String,
}

/// The newest `capacity` reports, oldest dropped first.
#[derive(Debug, Clone)]
pub struct FailureLog {
    capacity: usize,
    total: u64,
    recent: VecDeque<FailureReport>,
}

impl FailureLog {
    pub fn new(capacity: usize) -> Self {
        FailureLog {
            capacity,
            total: 0,
            recent: VecDeque::with_capacity(capacity),
        }
    }

    pub fn push(&mut self, report: FailureReport) {
        self.total += 1;
        if self.capacity == 0 {
            return;
        }
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(report);
    }

    /// Newest first.
    pub fn newest(&self, limit: usize) -> Vec<FailureReport> {
        self.recent.iter().rev().take(limit).cloned().collect()
    }

    /// Reports received since start, including those dropped from the ring.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: u64) -> FailureReport {
        FailureReport {
            at_ms: n,
            node_id: format!("node-{n}"),
            chunk: String::new(),
            operation: "read".into(),
            error: "timeout".into(),
            reporter: "client".into(),
        }
    }

    #[test]
    fn ring_keeps_the_newest_and_counts_all() {
        let mut log = FailureLog::new(3);
        for n in 1..=5 {
            log.push(report(n));
        }
        let at: Vec<u64> = log.newest(10).iter().map(|r| r.at_ms).collect();
        assert_eq!(at, vec![5, 4, 3]);
        assert_eq!(log.total(), 5);
        assert_eq!(log.newest(1)[0].node_id, "node-5");
    }
}
