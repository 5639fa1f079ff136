//! Whether the process behind a waiting FUSE request was interrupted.
//!
//! fuser 0.18 answers the kernel's FUSE_INTERRUPT itself (ENOSYS, after
//! which the kernel sends no more), so a request that waits (a blocked
//! F_SETLKW) learns of a signal by looking at its caller instead: the
//! signal stays pending on the sleeping thread, and `/proc/TID/status`
//! shows it. A waiting lock polls this and answers EINTR, so Ctrl-C, a
//! timer signal or SIGKILL end the wait as on a local file system.

/// Whether thread `tid` has a signal pending that it does not block, or no
/// longer exists. False for `tid` 0 (a request from outside our pid
/// namespace: nothing to look at).
pub fn interrupted(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => pending_unblocked(&status),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Whether thread `tid` still exists.
pub fn alive(tid: u32) -> bool {
    tid == 0 || std::path::Path::new(&format!("/proc/{tid}")).exists()
}

/// Whether a `/proc/TID/status` text shows a pending (thread or process)
/// signal outside the blocked mask.
fn pending_unblocked(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_signal_counts_unless_blocked() {
        let status = "Name:\tx\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000002\n\
                      SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n";
        assert!(pending_unblocked(status));
        let blocked = status.replace("SigBlk:\t0000000000000000", "SigBlk:\t0000000000000002");
        assert!(!pending_unblocked(&blocked));
        let none = status.replace("ShdPnd:\t0000000000000002", "ShdPnd:\t0000000000000000");
        assert!(!pending_unblocked(&none));
    }

    #[test]
    fn this_thread_is_not_interrupted_and_a_missing_one_is() {
        let me = std::process::id();
        assert!(!interrupted(me));
        assert!(alive(me));
        assert!(interrupted(u32::MAX - 1));
        assert!(!interrupted(0));
    }
}
