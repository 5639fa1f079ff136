//! The metadata service's error type and its one mapping to a gRPC status.

use bigfs_proto::errno;
use tonic::Code;

/// Everything a metadata operation can refuse or fail with. Serializable:
/// the clients table remembers refusals as answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MetaError {
    /// A namespace error that the client turns into exactly this errno.
    #[error("{msg}")]
    Namespace { errno: i32, msg: String },
    /// A chunk, node or other non-namespace object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is malformed (bad id, size, length).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is well formed but the state does not allow it now
    /// (e.g. a layout commit naming a chunk that is not Available).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No node can take the data.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The persistent store failed; the mutation was not applied.
    #[error("metadata store: {0}")]
    Store(String),
    /// A retry of a request older than the last one its client slot sent:
    /// its caller has moved on, so it is not applied.
    #[error(
        "request {seq} on slot {slot} of client {client:016x} is older than the last one \
         answered there ({last}): a stale retry, not applied"
    )]
    StaleRequest {
        client: u64,
        slot: u32,
        seq: u64,
        last: u64,
    },
    /// A bug or an impossible state.
    #[error("internal: {0}")]
    Internal(String),
}

impl MetaError {
    /// A namespace error carrying `errno`.
    pub fn ns(errno: i32, msg: impl Into<String>) -> Self {
        MetaError::Namespace {
            errno,
            msg: msg.into(),
        }
    }

    /// The errno of a namespace error, if it is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MetaError::Namespace { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The gRPC code a namespace errno travels under.
fn code_of_errno(e: i32) -> Code {
    match e {
        errno::ENOENT => Code::NotFound,
        errno::EEXIST => Code::AlreadyExists,
        errno::ENOTEMPTY | errno::ENOTDIR | errno::EISDIR => Code::FailedPrecondition,
        errno::EINVAL | errno::ENAMETOOLONG => Code::InvalidArgument,
        errno::EPERM | errno::EACCES | errno::EROFS => Code::PermissionDenied,
        errno::ENOSPC | errno::ENOLCK => Code::ResourceExhausted,
        errno::EAGAIN => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

impl From<MetaError> for tonic::Status {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Namespace { errno, msg } => {
                bigfs_proto::status_with_errno(code_of_errno(errno), errno, msg)
            }
            MetaError::NotFound(m) => tonic::Status::not_found(m),
            MetaError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            MetaError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            MetaError::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
            e @ MetaError::Store(_) => tonic::Status::unavailable(e.to_string()),
            // ABORTED is the sequencer-check failure; clients do not retry it.
            e @ MetaError::StaleRequest { .. } => tonic::Status::aborted(e.to_string()),
            e @ MetaError::Internal(_) => tonic::Status::internal(e.to_string()),
        }
    }
}

impl From<bigfs_proto::NameError> for MetaError {
    fn from(e: bigfs_proto::NameError) -> Self {
        let errno = match e {
            bigfs_proto::NameError::TooLong(_) => errno::ENAMETOOLONG,
            _ => errno::EINVAL,
        };
        MetaError::ns(errno, e.to_string())
    }
}

impl From<redb::Error> for MetaError {
    fn from(e: redb::Error) -> Self {
        MetaError::Store(e.to_string())
    }
}

macro_rules! store_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                MetaError::Store(e.to_string())
            }
        }
    )*};
}

store_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    bincode::error::EncodeError,
    bincode::error::DecodeError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_errors_carry_their_errno_to_the_client() {
        let s: tonic::Status = MetaError::ns(errno::ENOTEMPTY, "dir not empty").into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(bigfs_proto::errno_of(&s), errno::ENOTEMPTY);
        let s: tonic::Status = MetaError::ns(errno::ENOENT, "x").into();
        assert_eq!(s.code(), Code::NotFound);
    }
}
