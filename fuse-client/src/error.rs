//! The client library's error type. Every error knows its errno, so the FUSE
//! layer and the CLI can answer precisely.

use bigfs_proto::{ChunkId, errno, errno_of};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The metadata service or a storage node answered with an error status.
    #[error("{op}: {message}")]
    Remote {
        op: &'static str,
        errno: i32,
        code: tonic::Code,
        message: String,
    },
    /// Every replica of a chunk failed within the retry budget.
    #[error("chunk {chunk}: no replica could serve it after {attempts} attempts: {last_error}")]
    ChunkUnavailable {
        chunk: String,
        attempts: u32,
        last_error: String,
    },
    /// A chunk could not be stored on enough nodes within the retry budget.
    #[error("chunk {chunk}: upload failed after {attempts} attempts: {last_error}")]
    UploadFailed {
        chunk: String,
        attempts: u32,
        last_error: String,
        errno: i32,
    },
    /// The caller passed something invalid.
    #[error("{0}")]
    Invalid(String),
    /// A local I/O error (CLI side).
    #[error("{context}: {message}")]
    Io {
        context: String,
        message: String,
        errno: i32,
    },
    /// Could not reach the metadata service at all.
    #[error("cannot reach the metadata service at {addr}: {message}")]
    Connect { addr: String, message: String },
}

impl ClientError {
    pub fn remote(op: &'static str, status: tonic::Status) -> Self {
        ClientError::Remote {
            op,
            errno: errno_of(&status),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    pub fn unavailable(chunk: &ChunkId, attempts: u32, last_error: String) -> Self {
        ClientError::ChunkUnavailable {
            chunk: chunk.short(),
            attempts,
            last_error,
        }
    }

    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            message: e.to_string(),
            errno: e.raw_os_error().unwrap_or(errno::EIO),
        }
    }

    /// The Linux errno this error maps to.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Remote { errno, .. } => *errno,
            ClientError::ChunkUnavailable { .. } => errno::EIO,
            ClientError::UploadFailed { errno, .. } => *errno,
            ClientError::Invalid(_) => errno::EINVAL,
            ClientError::Io { errno, .. } => *errno,
            ClientError::Connect { .. } => errno::EIO,
        }
    }

    /// The gRPC code, when the error came from a remote status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
