//! The state machine as the service runs it: the in-memory state and its
//! durable log, changed only through `execute`.

use crate::error::MetaError;
use crate::state::{Command, Reply, State, apply};
use crate::store::Store;

/// The persisted state and its store, behind one lock: a mutation holds it
/// from apply to durable append, so nobody sees an unlogged change.
pub struct Core {
    pub state: State,
    store: Store,
    /// Set when an append failed and the state could not be reloaded.
    broken: bool,
    #[cfg(debug_assertions)]
    drop_replies: Option<crate::fault::DropReplies>,
}

impl Core {
    pub fn new(state: State, store: Store) -> Self {
        Core {
            state,
            store,
            broken: false,
            #[cfg(debug_assertions)]
            drop_replies: crate::fault::DropReplies::from_env(),
        }
    }

    /// Applies `cmd` and makes it durable; an error changes nothing.
    ///
    /// Applying first means refused commands never reach the log, except a
    /// client's named command, whose refusal is its remembered answer. A
    /// retry of a named command is answered from the clients table without
    /// touching the log. If the append fails, the state is rebuilt from
    /// disk, undoing the change.
    pub fn execute(&mut self, cmd: Command) -> Result<Reply, MetaError> {
        if self.broken {
            return Err(MetaError::Store(
                "the store failed earlier; restart the service".into(),
            ));
        }
        if let Command::Once(once) = &cmd
            && let Some(answer) = self.state.clients.answered(once.id)
        {
            tracing::info!(
                client = %format_args!("{:016x}", once.id.client),
                slot = once.id.slot,
                seq = once.id.seq,
                "retried request answered from the clients table"
            );
            return answer;
        }
        let outcome = apply(&mut self.state, &cmd);
        if outcome.is_err() && !cmd.logged_when_refused() {
            return outcome;
        }
        if let Err(e) = self.store.append(&cmd) {
            tracing::error!(error = %e, "appending to the metadata log failed; reloading");
            match self.store.load() {
                Ok(s) => self.state = s,
                Err(e2) => {
                    tracing::error!(error = %e2, "reloading the metadata state failed");
                    self.broken = true;
                }
            }
            return Err(e);
        }
        if let Err(e) = self.store.maybe_snapshot(&self.state) {
            // The log still has everything; try again at the next command.
            tracing::warn!(error = %e, "metadata snapshot failed");
        }
        #[cfg(debug_assertions)]
        if matches!(cmd, Command::Once(_))
            && outcome.is_ok()
            && self.drop_replies.as_mut().is_some_and(|d| d.drop_this())
        {
            return Err(MetaError::Store(
                "test fault: reply dropped after the command was applied".into(),
            ));
        }
        outcome
    }
}
