//! Typed errors of the storage node and their gRPC statuses.

use bigfs_proto::{ChunkId, MAX_CHUNK_SIZE};

/// What went wrong in the chunk store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {id} is {len} bytes, the limit is {MAX_CHUNK_SIZE}")]
    TooLarge { id: ChunkId, len: usize },
    #[error("data of {len} bytes hashes to {actual}, not to the chunk id {expected}")]
    HashMismatch {
        expected: ChunkId,
        actual: ChunkId,
        len: usize,
    },
    #[error(
        "disk full: storing {needed} bytes would leave less than the reserve of {reserve} bytes \
         ({available} bytes available)"
    )]
    DiskFull {
        needed: u64,
        available: u64,
        reserve: u64,
    },
    #[error("capacity reached: {used} of {capacity} bytes used, {needed} more needed")]
    CapacityReached {
        used: u64,
        capacity: u64,
        needed: u64,
    },
    #[error("chunk {0} not found")]
    NotFound(ChunkId),
    #[error("chunk {0} is corrupt on disk (hash mismatch); it has been quarantined")]
    Corrupt(ChunkId),
    #[error("offset {offset} is beyond the end of chunk {id} ({stored_len} bytes)")]
    OutOfRange {
        id: ChunkId,
        offset: u64,
        stored_len: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable data directory: {0}")]
    NoDisk(String),
    #[error("a blocking file task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Wraps an IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        use tonic::Status;
        let msg = e.to_string();
        match e {
            StoreError::TooLarge { .. } => Status::invalid_argument(msg),
            // The contract maps every hash mismatch to DATA_LOSS, whether the
            // bytes came over the wire or from our disk.
            StoreError::HashMismatch { .. } => Status::data_loss(msg),
            StoreError::DiskFull { .. } | StoreError::CapacityReached { .. } => {
                Status::resource_exhausted(msg)
            }
            StoreError::NotFound(_) => Status::not_found(msg),
            StoreError::Corrupt(_) => Status::data_loss(msg),
            StoreError::OutOfRange { .. } => Status::out_of_range(msg),
            StoreError::NoDisk(_) => Status::unavailable(msg),
            StoreError::Io { .. } | StoreError::Task(_) => Status::internal(msg),
        }
    }
}

/// Why the node stopped instead of serving.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("the metadata service refused the registration of node {node}: {reason}")]
    Refused { node: String, reason: String },
}

/// A configuration value that was refused; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl ConfigError {
    pub fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            reason: reason.into(),
        }
    }
}
