//! How long a metadata call waits for the metadata service (its leader)
//! through transient failures, and the mount's record of those waits.
//!
//! A mount follows NFS: by default a call waits up to `meta_wait` seconds
//! for the service to come back (a restart, a leader election) before it
//! fails with EIO, and `hard` waits for ever. The CLI keeps a short retry
//! budget, so a command against a dead cluster fails fast.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bigfs_proto::RetryConfig;

/// Shortest deadline given to a retry near the end of a wait, so the last
/// attempt can still reach a service on loopback or a LAN (~1 ms) instead
/// of timing out at once.
const MIN_LAST_ATTEMPT: Duration = Duration::from_millis(100);

/// How long a metadata call retries transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MetaWait {
    /// `retry.max_retries` retries with backoff (the CLI; ~3 s).
    #[default]
    Retries,
    /// Until this long after the call started (`-o meta_wait=SECONDS`).
    For(Duration),
    /// For ever (`-o hard`).
    Forever,
}

impl MetaWait {
    /// The sleep before the next attempt after failed attempt `attempt`
    /// (0-based), `elapsed` into the call; None when the call gives up.
    pub fn next_sleep(
        &self,
        retry: &RetryConfig,
        attempt: u32,
        elapsed: Duration,
    ) -> Option<Duration> {
        let backoff = retry.backoff_jittered(attempt);
        match *self {
            MetaWait::Retries => (attempt < retry.max_retries).then_some(backoff),
            MetaWait::For(limit) => {
                let left = limit.checked_sub(elapsed).filter(|l| !l.is_zero())?;
                Some(backoff.min(left))
            }
            MetaWait::Forever => Some(backoff),
        }
    }

    /// The deadline of attempt `attempt`, `elapsed` into the call: the
    /// retry policy's, cut to what is left of a timed wait for retries.
    pub fn attempt_timeout(
        &self,
        retry: &RetryConfig,
        attempt: u32,
        elapsed: Duration,
    ) -> Duration {
        let full = retry.attempt_timeout();
        match *self {
            MetaWait::For(limit) if attempt > 0 => limit
                .saturating_sub(elapsed)
                .max(MIN_LAST_ATTEMPT)
                .min(full),
            _ => full,
        }
    }

    /// Whether the call retries more than the retry policy's budget
    /// (worth logging as a wait).
    fn is_timed(&self) -> bool {
        !matches!(self, MetaWait::Retries)
    }
}

/// The waits of one client: logged once when the service stops answering
/// (warn) and once when it answers again (info, with how long it took),
/// and counted for `/metrics`.
#[derive(Default)]
pub struct WaitLog {
    /// When the service stopped answering, while it has not answered since.
    outage_since: Mutex<Option<Instant>>,
    waits: AtomicU64,
    wait_ms: AtomicU64,
    gave_up: AtomicU64,
}

/// A point-in-time copy of [`WaitLog`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct WaitCounts {
    /// Calls that retried after a transient failure.
    pub waits: u64,
    /// Seconds those calls spent from their first failure to their end.
    pub wait_seconds: f64,
    /// Calls that gave up (EIO) when their wait ran out.
    pub gave_up: u64,
}

impl WaitLog {
    /// A call's first transient failure: it starts waiting.
    pub fn begin(&self, op: &'static str, wait: MetaWait, error: &str) {
        self.waits.fetch_add(1, Relaxed);
        let mut since = self.outage_since.lock().unwrap_or_else(|p| p.into_inner());
        if since.is_none() {
            *since = Some(Instant::now());
            if wait.is_timed() {
                tracing::warn!(
                    op,
                    ?wait,
                    error,
                    "metadata service not answering; metadata calls wait for it"
                );
            }
        }
    }

    /// A call that waited ended, since `began`: answered (`ok`) or gave up.
    pub fn end(&self, op: &'static str, began: Instant, ok: bool) {
        self.wait_ms
            .fetch_add(began.elapsed().as_millis() as u64, Relaxed);
        if !ok {
            self.gave_up.fetch_add(1, Relaxed);
            return;
        }
        let mut since = self.outage_since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = since.take() {
            tracing::info!(
                op,
                waited_ms = t.elapsed().as_millis() as u64,
                "metadata service answers again"
            );
        }
    }

    pub fn counts(&self) -> WaitCounts {
        WaitCounts {
            waits: self.waits.load(Relaxed),
            wait_seconds: self.wait_ms.load(Relaxed) as f64 / 1000.0,
            gave_up: self.gave_up.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            base_delay_ms: 100,
            max_delay_ms: 400,
            multiplier: 2.0,
            attempt_timeout_ms: 2_000,
        }
    }

    #[test]
    fn retries_stop_after_the_retry_budget() {
        let w = MetaWait::Retries;
        assert!(w.next_sleep(&retry(), 2, Duration::ZERO).is_some());
        assert!(w.next_sleep(&retry(), 3, Duration::ZERO).is_none());
    }

    #[test]
    fn a_timed_wait_outlasts_the_retry_budget_and_ends_on_time() {
        let w = MetaWait::For(Duration::from_secs(60));
        let s = w.next_sleep(&retry(), 50, Duration::from_secs(30)).unwrap();
        assert!(
            s <= Duration::from_millis(480),
            "backoff stays capped: {s:?}"
        );
        // The last sleep ends at the limit, then the call gives up.
        let last = w
            .next_sleep(&retry(), 50, Duration::from_millis(59_900))
            .unwrap();
        assert!(last <= Duration::from_millis(100), "{last:?}");
        assert!(
            w.next_sleep(&retry(), 51, Duration::from_secs(60))
                .is_none()
        );
    }

    #[test]
    fn a_hard_wait_never_gives_up() {
        let w = MetaWait::Forever;
        assert!(
            w.next_sleep(&retry(), 1_000, Duration::from_secs(86_400))
                .is_some()
        );
    }

    #[test]
    fn retries_near_the_end_of_a_wait_get_what_is_left() {
        let w = MetaWait::For(Duration::from_secs(2));
        let r = retry();
        assert_eq!(
            w.attempt_timeout(&r, 0, Duration::ZERO),
            r.attempt_timeout()
        );
        assert_eq!(
            w.attempt_timeout(&r, 3, Duration::from_millis(1_500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            w.attempt_timeout(&r, 4, Duration::from_secs(3)),
            MIN_LAST_ATTEMPT
        );
    }

    #[test]
    fn waits_are_counted_and_the_outage_ends_with_an_answer() {
        let log = WaitLog::default();
        let began = Instant::now();
        log.begin("lookup", MetaWait::Forever, "unavailable");
        log.begin("getattr", MetaWait::Forever, "unavailable");
        assert!(log.outage_since.lock().unwrap().is_some());
        log.end("lookup", began, false);
        assert!(
            log.outage_since.lock().unwrap().is_some(),
            "a give-up does not end it"
        );
        log.end("getattr", began, true);
        assert!(log.outage_since.lock().unwrap().is_none());
        let c = log.counts();
        assert_eq!((c.waits, c.gave_up), (2, 1));
    }
}
