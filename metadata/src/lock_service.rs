//! The `Locks` gRPC service (byte-range locks for mounts) and the leader's
//! duty of ending the locks of sessions whose lease ran out.
//!
//! Requests are checked against the state first: a conflicting lock is
//! answered "not granted" without touching the log, and an unlock or a
//! release of nothing is answered at once. Everything else is a
//! [`LockCommand`] through the Raft log, so every member holds the same
//! lock table and a new leader keeps it. Waiting (F_SETLKW) is the mount's:
//! it asks again until granted (see the client's `locks` module).

use std::time::{Duration, Instant};

use bigfs_proto::pb::{self, locks_server::Locks as LocksRpc};
use bigfs_proto::{errno, errno_of};
use tonic::{Request, Response, Status};

use crate::error::MetaError;
use crate::locks::{Held, LockCommand, LockKind, Owner, check_range};
use crate::service::MetadataService;
use crate::state::Command;

/// The Locks service, over the metadata service's state.
#[derive(Clone)]
pub struct LockService {
    svc: MetadataService,
}

impl LockService {
    pub fn new(svc: MetadataService) -> Self {
        LockService { svc }
    }

    pub fn server(self) -> pb::locks_server::LocksServer<Self> {
        pb::locks_server::LocksServer::new(self)
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::from(MetaError::ns(errno::EINVAL, msg))
}

/// The lock kind of a request: Some for read/write, None for unlock.
fn kind_of(typ: i32) -> Result<Option<LockKind>, Status> {
    match pb::LockType::try_from(typ) {
        Ok(pb::LockType::Read) => Ok(Some(LockKind::Read)),
        Ok(pb::LockType::Write) => Ok(Some(LockKind::Write)),
        Ok(pb::LockType::Unlock) => Ok(None),
        _ => Err(invalid(format!(
            "lock type {typ} is not read, write or unlock"
        ))),
    }
}

fn owner_of(session: u64, owner: u64) -> Result<Owner, Status> {
    if session == 0 {
        return Err(invalid("lock request without a session id"));
    }
    Ok(Owner { session, owner })
}

fn conflict_pb(h: &Held) -> pb::LockConflict {
    pb::LockConflict {
        start: h.start,
        end: h.end,
        typ: match h.kind {
            LockKind::Read => pb::LockType::Read,
            LockKind::Write => pb::LockType::Write,
        } as i32,
        pid: h.pid,
    }
}

#[tonic::async_trait]
impl LocksRpc for LockService {
    async fn set_lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::SetLockReply>, Status> {
        let scope = self.svc.scope(&request)?;
        let r = request.into_inner();
        let kind = kind_of(r.typ)?;
        let owner = owner_of(r.session, r.owner)?;
        check_range(r.start, r.end)?;
        let [ino] = self.svc.confine(&scope, false, [r.ino]).await?;
        let lease_ms = self.svc.config().lock_lease_ms;
        let until_ms = bigfs_proto::now_ms().saturating_add(lease_ms);
        let (start, end, pid) = (r.start, r.end, r.pid);
        let outcome = self
            .svc
            .with(move |core, _, _| {
                let locks = &core.state.locks;
                match kind {
                    Some(k) => {
                        if let Some(c) = locks.conflict(ino, owner, k, start, end) {
                            return Ok(Some(c));
                        }
                    }
                    // Nothing of this owner's to unlock: no log entry.
                    None if !locks.on(ino).iter().any(|h| h.owner == owner) => return Ok(None),
                    None => {}
                }
                core.propose(Command::Lock(LockCommand::Set {
                    ino,
                    owner,
                    kind,
                    start,
                    end,
                    pid,
                    until_ms,
                }));
                Ok(None)
            })
            .await;
        let (granted, conflict) = match outcome {
            Ok(None) => (true, None),
            Ok(Some(c)) => (false, Some(conflict_pb(&c))),
            // Taken between the check and the apply.
            Err(s) if errno_of(&s) == errno::EAGAIN => (false, None),
            Err(s) => return Err(s),
        };
        Ok(Response::new(pb::SetLockReply {
            granted,
            conflict,
            lease_ms,
        }))
    }

    async fn get_lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::GetLockReply>, Status> {
        let scope = self.svc.scope(&request)?;
        let r = request.into_inner();
        let Some(kind) = kind_of(r.typ)? else {
            return Err(invalid("F_GETLK asks about a read or write lock"));
        };
        let owner = owner_of(r.session, r.owner)?;
        check_range(r.start, r.end)?;
        let [ino] = self.svc.confine(&scope, false, [r.ino]).await?;
        let (start, end) = (r.start, r.end);
        let conflict = self
            .svc
            .with(move |core, _, _| {
                Ok(core
                    .state
                    .locks
                    .conflict(ino, owner, kind, start, end)
                    .map(|c| conflict_pb(&c)))
            })
            .await?;
        Ok(Response::new(pb::GetLockReply { conflict }))
    }

    async fn release_locks(
        &self,
        request: Request<pb::ReleaseLocksRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let scope = self.svc.scope(&request)?;
        let r = request.into_inner();
        let owner = owner_of(r.session, r.owner)?;
        let [ino] = self.svc.confine(&scope, false, [r.ino]).await?;
        self.svc
            .with(move |core, _, _| {
                if core.state.locks.on(ino).iter().any(|h| h.owner == owner) {
                    core.propose(Command::Lock(LockCommand::Release { ino, owner }));
                }
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn renew_locks(
        &self,
        request: Request<pb::RenewLocksRequest>,
    ) -> Result<Response<pb::RenewLocksReply>, Status> {
        let session = request.into_inner().session;
        owner_of(session, 0)?;
        let lease_ms = self.svc.config().lock_lease_ms;
        let until_ms = bigfs_proto::now_ms().saturating_add(lease_ms);
        let held = self
            .svc
            .with(move |core, _, _| {
                let held = core.state.locks.held_by(session);
                if held > 0 {
                    core.propose(Command::Lock(LockCommand::Renew { session, until_ms }));
                }
                Ok(held as u64)
            })
            .await?;
        Ok(Response::new(pb::RenewLocksReply { held, lease_ms }))
    }
}

/// How often the leader looks for ended leases: a fifteenth of the lease
/// (a second at the default), so locks outlive their lease by little.
fn check_interval(lease: Duration) -> Duration {
    (lease / 15).max(Duration::from_millis(100))
}

/// Ends the locks of sessions whose lease ran out, on the leader, until the
/// task is dropped. A member that just became leader first waits one lease:
/// mounts that could not renew while there was no leader get to renew.
pub async fn run_expiry(svc: MetadataService) {
    let lease = Duration::from_millis(svc.config().lock_lease_ms);
    let mut leading_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(check_interval(lease)).await;
        if !svc.consensus().is_leader() {
            leading_since = None;
            continue;
        }
        if leading_since.get_or_insert_with(Instant::now).elapsed() < lease {
            continue;
        }
        let r = svc
            .with(move |core, _, _| {
                let now_ms = bigfs_proto::now_ms();
                if core.state.locks.any_expired(now_ms) {
                    core.propose(Command::Lock(LockCommand::Expire { now_ms }));
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e.message(), "ending expired lock leases failed");
        }
    }
}
