//! Client configuration: one struct, documented defaults, loadable from TOML.

use std::time::Duration;

use bigfs_proto::RetryConfig;
use serde::{Deserialize, Serialize};

use crate::meta_wait::MetaWait;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Addresses of the metadata members: "host:port", "a:9400,b:9400,c:9400"
    /// or a TOML list; calls go to whichever leads. Default 127.0.0.1:9400.
    #[serde(deserialize_with = "bigfs_proto::leader::addr_list")]
    pub metadata: String,
    /// Retry policy for chunk transfers and metadata calls.
    pub retry: RetryConfig,
    /// How long a metadata call waits for the service through transient
    /// failures. Not a file key: the CLI keeps the retry budget
    /// ([`MetaWait::Retries`]); the mount sets it from `meta_wait`/`hard`.
    #[serde(skip)]
    pub meta_wait: MetaWait,
    /// Bytes of verified chunks kept in the LRU chunk cache. Default 256 MiB.
    pub cache_bytes: u64,
    /// Bytes one open file may hold in its write buffer (dirty chunks and
    /// chunks being uploaded) before `write` waits. Default 64 MiB.
    pub write_buffer_bytes: u64,
    /// Chunk transfers (uploads and downloads) in flight at once for the
    /// whole client. Default 8: enough to keep three nodes busy.
    pub parallel_transfers: usize,
    /// Chunks fetched ahead of a sequential reader. Default 8 (32 MiB with
    /// the default chunk size: keeps every node busy on a cold read).
    pub readahead_chunks: u32,
    /// Committed-but-unflushed chunks after which a writer commits its layout
    /// even before `flush`, so long writes become visible and bounded.
    /// Default 64 chunks.
    pub commit_every_chunks: usize,
    /// How long a node that failed is skipped when another replica exists,
    /// in milliseconds. Default 10 s.
    pub node_penalty_ms: u64,
    /// Name reported to the metadata service with failure reports.
    pub client_name: String,
    /// Subtree of the cluster (or of this client's export) that becomes
    /// the root (`-o subdir=/path`, MooseFS `mfssubfolder`). The metadata
    /// service confines every call to it, as it confines an export. Default
    /// empty: everything.
    pub subdir: String,
    /// How long a directory's attrs as this client's own change left them
    /// answer a getattr (see `fresh_dirs`). Not a file key: the mount sets
    /// its attribute TTL. Default 1 s.
    #[serde(skip)]
    pub fresh_dir_ttl: Duration,
    /// Answer a lookup of a name that is not in a directory this client
    /// made, and changed alone since, without asking the service
    /// (`-o negative_lookups`; see `fresh_dirs`). Saves the lookup before
    /// each create in a directory being filled, but a name another client
    /// just made there can read as absent for up to the attribute TTL.
    /// Default false (MooseFS and JuiceFS keep no negative entries by
    /// default either).
    pub negative_lookups: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            metadata: "127.0.0.1:9400".into(),
            retry: RetryConfig::default(),
            meta_wait: MetaWait::Retries,
            cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            parallel_transfers: 8,
            readahead_chunks: 8,
            commit_every_chunks: 64,
            node_penalty_ms: 10_000,
            client_name: format!("client-{}", std::process::id()),
            subdir: String::new(),
            fresh_dir_ttl: Duration::from_secs(1),
            negative_lookups: false,
        }
    }
}

impl ClientConfig {
    /// Checks the values; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        self.retry.validate()?;
        if bigfs_proto::leader::parse_addrs(&self.metadata).is_empty() {
            return Err("metadata: an address is required".into());
        }
        if self.write_buffer_bytes < (1 << 20) {
            return Err("write_buffer_bytes must be at least 1 MiB".into());
        }
        if self.parallel_transfers == 0 {
            return Err("parallel_transfers must be at least 1".into());
        }
        if self.commit_every_chunks == 0 {
            return Err("commit_every_chunks must be at least 1".into());
        }
        if self.commit_every_chunks > bigfs_proto::MAX_COMMIT_LAYOUT_ENTRIES {
            return Err(format!(
                "commit_every_chunks must be at most {} (MAX_COMMIT_LAYOUT_ENTRIES)",
                bigfs_proto::MAX_COMMIT_LAYOUT_ENTRIES
            ));
        }
        Ok(())
    }
}
