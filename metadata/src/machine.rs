//! The state machine as a member holds it: the state, and how far into the
//! Raft log it has applied. Changed only by [`crate::raft::machine`], which
//! applies committed entries; the services read it under its lock.

use openraft::{BasicNode, LogId, StoredMembership};

use crate::raft::NodeId;
use crate::state::{Command, State};

pub struct Core {
    pub state: State,
    /// The last log entry applied to `state`.
    pub applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// Commands a service closure decided on, proposed in order once it
    /// returns and the lock is released (see `MetadataService::with`).
    pub(crate) queued: Vec<Queued>,
}

/// A command to propose, and what to do if it is refused.
pub(crate) struct Queued {
    pub cmd: Command,
    /// `None`: the refusal is the request's answer. `Some(what)`: a
    /// background duty's command; a refusal is logged as failing `what`.
    pub warn: Option<&'static str>,
}

impl Core {
    pub fn new(state: State) -> Self {
        Core {
            state,
            applied: None,
            membership: StoredMembership::default(),
            queued: Vec::new(),
        }
    }

    /// Proposes `cmd` once the caller's closure returns; a refusal becomes
    /// the request's error. The state seen inside the closure does not
    /// include it yet.
    pub fn propose(&mut self, cmd: Command) {
        self.queued.push(Queued { cmd, warn: None });
    }

    /// As [`Core::propose`] for a background duty: a refusal is logged as
    /// failing `what` and the remaining commands go on.
    pub fn propose_or_warn(&mut self, cmd: Command, what: &'static str) {
        self.queued.push(Queued {
            cmd,
            warn: Some(what),
        });
    }
}
