//! A test-only fault: with `BIGFS_TEST_DROP_REPLY=N` in its environment the
//! service drops the reply to every Nth client mutation it applies (a named
//! command applied for the first time, not one answered from the clients
//! table) once the command is logged, and answers UNAVAILABLE instead, as a
//! broken connection would look to the client. The client retries; the
//! integration tests check that it gets the first answer.
//!
//! Compiled into debug builds only: a release binary has no such switch.

/// The environment variable that turns the fault on.
pub const DROP_REPLY_ENV: &str = "BIGFS_TEST_DROP_REPLY";

/// Counts applied client mutations and says which replies to drop.
#[derive(Debug)]
pub struct DropReplies {
    every: u64,
    applied: u64,
}

impl DropReplies {
    /// The fault as `BIGFS_TEST_DROP_REPLY` asks for it, if it is set to a
    /// number above zero.
    pub fn from_env() -> Option<Self> {
        let every: u64 = std::env::var(DROP_REPLY_ENV).ok()?.parse().ok()?;
        if every == 0 {
            return None;
        }
        tracing::warn!(
            every,
            "test fault on: dropping the reply to every Nth client mutation"
        );
        Some(DropReplies { every, applied: 0 })
    }

    /// Counts one applied client mutation; true if its reply is dropped.
    pub fn drop_this(&mut self) -> bool {
        self.applied += 1;
        self.applied.is_multiple_of(self.every)
    }
}
