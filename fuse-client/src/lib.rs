//! The BigFS client library: namespace operations, file handles with a
//! bounded write buffer and background uploads, a verified LRU chunk cache,
//! reads with failover across replicas, and the retry policy with metrics.
//!
//! The `bigfs` CLI and the `bigfs-mount` FUSE daemon are thin shells over it.

pub mod admin;
pub mod atime;
pub mod chunk_cache;
pub mod chunk_io;
pub mod client;
pub mod config;
pub mod copy;
pub mod error;
pub mod file;
pub mod fresh_dirs;
pub mod fresh_inodes;
pub mod fuse_fs;
pub mod fuse_locks;
pub mod interrupt;
pub mod known_names;
pub mod layout;
pub mod locks;
pub mod meta;
pub mod meta_wait;
pub mod metrics;
pub mod metrics_http;
pub mod mount_config;
pub mod open_dirs;
pub mod open_files;
pub mod permissions;
pub mod request_ids;
pub mod statfs;
pub mod trash_view;
pub mod write_buffer;

pub use client::Client;
pub use config::ClientConfig;
pub use error::{ClientError, Result};
pub use file::FileHandle;
