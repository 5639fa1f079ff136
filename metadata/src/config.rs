//! The metadata service's configuration: one TOML file, flags override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bigfs_proto::{DEFAULT_CHUNK_SIZE, DEFAULT_REPLICATION, MAX_CHUNK_SIZE};
use serde::{Deserialize, Serialize};

/// Smallest chunk size accepted: below this the per-chunk overhead (one
/// table entry, one gRPC call, one file per replica) dominates.
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC server. Default `127.0.0.1:9400`.
    pub listen: SocketAddr,
    /// Directory holding `metadata.redb`; created if missing. No default:
    /// must be given (`--data-dir` or `data_dir`).
    pub data_dir: PathBuf,
    /// Bytes per chunk of new files. Default 4 MiB; 64 KiB ..= 64 MiB.
    pub chunk_size: u32,
    /// Copies per chunk of new files (cluster default). Default 3; >= 1.
    pub replication: u32,
    /// A node silent this long is Suspect. Default 6000 ms (three missed
    /// heartbeats at the default interval).
    pub suspect_after_ms: u64,
    /// A node silent this long is Down. Default 20000 ms.
    pub down_after_ms: u64,
    /// Heartbeat interval told to storage nodes. Default 2000 ms.
    pub heartbeat_interval_ms: u32,
    /// Commands between snapshots (the log is truncated at each).
    /// Default 10000: replay after a crash stays well under a second.
    pub snapshot_every: u64,
    /// Address of the admin HTTP server (status page, `/metrics`, `/nodes`,
    /// ...). Default `127.0.0.1:9480`; an empty string disables it.
    pub admin_listen: String,
    /// Bearer token that opens the admin HTTP pages (besides an `admin:`
    /// client certificate); at least 16 characters. Default none: with TLS
    /// only admin certificates get in; with `insecure` every page is open.
    /// Prefer `admin_token_file`, which keeps it out of this file.
    pub admin_token: Option<String>,
    /// File whose first line is the admin token (`--admin-token-file`).
    /// Default none. At most one of this and `admin_token`.
    pub admin_token_file: Option<PathBuf>,
    /// Log level or filter (`info`, `debug`, `bigfs_metadata=debug,info`).
    /// Default `info`; the `RUST_LOG` environment variable overrides it.
    pub log_level: String,
    /// Failure reports kept for the status page and `/failures`. Default 200.
    pub recent_failures: usize,
    /// When logged commands reach the disk: "interval" (default: every
    /// `log_sync_interval_ms` and whenever a client fsyncs; a killed process
    /// loses nothing, a power cut at most that interval) or "always" (an
    /// fdatasync per command: slower metadata operations).
    pub log_sync: crate::store::LogSync,
    /// Background sync period of the command log. Default 20 ms.
    pub log_sync_interval_ms: u64,
    /// How long the answer to a client's mutation is remembered for a
    /// retry of it (exactly once). Default 600000 ms: far longer than a
    /// client retries one request (seconds with the default retry policy)
    /// or a metadata restart takes, short enough that the table of a busy
    /// cluster stays small. A retry arriving later is applied again.
    pub client_reply_ttl_ms: u64,
    /// How long a mount's file locks (fcntl, flock) outlive its last
    /// renewal: a mount that dies or is cut off loses its locks this long
    /// after it was last heard. Mounts renew every third of it. Default
    /// 15000 ms; 1000..=600000.
    pub lock_lease_ms: u64,
    /// How long a deleted file (its last name unlinked, or a file replaced
    /// by a rename) stays in the trash, recoverable with `bigfs trash
    /// restore`; its chunks are kept, so their space is freed only when it
    /// expires or is purged. Default 86400000 ms (24 h); 0 turns the trash
    /// off (deleted files are freed at once). At most
    /// `trash::MAX_TRASH_ENTRIES` files are kept: past that the one closest
    /// to expiry goes.
    pub trash_retention_ms: u64,
    /// Most inodes one `bigfs snapshot` copies (one command, applied under
    /// the state's lock on every member). Default 100000: well under a
    /// second of apply; a larger tree is refused with a message naming
    /// this key (snapshot its subtrees one by one, or raise it).
    pub snapshot_max_inodes: u64,
    /// Files up to this many bytes are kept in the metadata itself, on
    /// every member, instead of in a chunk on storage nodes (see
    /// `bigfs_metadata::inline`). Default 16384; 0 turns it off; at most
    /// 65536. Only for files whose replication is at most the number of
    /// metadata members.
    pub inline_max_bytes: u32,
    /// Most bytes all inline files together may hold (they live in every
    /// member's memory and in each snapshot); past it small files go to
    /// chunks. Default 134217728 (128 MiB).
    pub inline_total_max_bytes: u64,
    /// Repair queue, garbage collection and decommissioning (`[heal]`).
    pub heal: crate::heal::HealConfig,
    /// When a node registration is refused (`[registration]`).
    pub registration: crate::registration::RegistrationConfig,
    /// Directory with `ca.pem`, `cert.pem` and `key.pem` (a `meta:`
    /// certificate) and optionally `revoked.txt`: every gRPC call in and out
    /// uses mutual TLS. No default: this or `insecure` must be set.
    pub tls_dir: Option<PathBuf>,
    /// Run without TLS or authentication (a warning at every start).
    /// Default false.
    pub insecure: bool,
    /// The exports file: which client may mount which subtree, read-only
    /// or read-write, with which squash (see `bigfs_metadata::exports`).
    /// Re-read on SIGHUP. No default: every client may mount everything.
    pub exports_file: Option<PathBuf>,
    /// This member's id in the metadata group. Default 1.
    pub node_id: u64,
    /// The group's members, `1=host:port,2=host:port,3=host:port` (this
    /// member included). Default empty: a group of this member alone.
    pub peers: String,
    /// Start as a new member joining a running group (`bigfs admin meta
    /// add`), instead of forming the group from `peers`. Default false.
    pub join: bool,
    /// Raft timing (`[raft]`).
    pub raft: RaftConfig,
    /// Worker threads of the service's async runtime. Default 0: one per
    /// core (tokio's default, also set by `TOKIO_WORKER_THREADS`).
    pub threads: usize,
}

/// Raft timing. Elections wait long enough that a loaded two-core machine
/// (the test and CI machines) does not mistake a slow heartbeat for a dead
/// leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat period. Default 150 ms.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time between these
    /// starts an election. Defaults 1000 and 2000 ms.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Longest a request waits for a majority before it is answered
    /// UNAVAILABLE (the client then retries, possibly elsewhere).
    /// Default 5000 ms.
    pub wait_ms: u64,
    /// Log entries kept after a snapshot, so a briefly lagging member
    /// catches up from the log instead of a snapshot. Default 1000.
    pub log_kept_after_snapshot: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 150,
            election_min_ms: 1_000,
            election_max_ms: 2_000,
            wait_ms: 5_000,
            log_kept_after_snapshot: 1_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9400)),
            data_dir: PathBuf::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            replication: DEFAULT_REPLICATION,
            suspect_after_ms: 6_000,
            down_after_ms: 20_000,
            heartbeat_interval_ms: 2_000,
            snapshot_every: 10_000,
            admin_listen: "127.0.0.1:9480".into(),
            admin_token: None,
            admin_token_file: None,
            log_level: "info".into(),
            recent_failures: 200,
            log_sync: crate::store::LogSync::Interval,
            log_sync_interval_ms: 20,
            client_reply_ttl_ms: 600_000,
            lock_lease_ms: 15_000,
            trash_retention_ms: 24 * 3600 * 1000,
            snapshot_max_inodes: 100_000,
            inline_max_bytes: 16 * 1024,
            inline_total_max_bytes: 128 << 20,
            heal: crate::heal::HealConfig::default(),
            registration: crate::registration::RegistrationConfig::default(),
            node_id: 1,
            peers: String::new(),
            join: false,
            raft: RaftConfig::default(),
            tls_dir: None,
            insecure: false,
            exports_file: None,
            threads: 0,
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are refused.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks every value; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must be set (--data-dir or data_dir in the config file)".into());
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(format!(
                "chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}, got {}",
                self.chunk_size
            ));
        }
        if self.replication == 0 {
            return Err("replication must be >= 1".into());
        }
        if self.suspect_after_ms == 0 {
            return Err("suspect_after_ms must be > 0".into());
        }
        if self.down_after_ms < self.suspect_after_ms {
            return Err(format!(
                "down_after_ms ({}) must be >= suspect_after_ms ({})",
                self.down_after_ms, self.suspect_after_ms
            ));
        }
        if self.heartbeat_interval_ms == 0
            || u64::from(self.heartbeat_interval_ms) >= self.suspect_after_ms
        {
            return Err(format!(
                "heartbeat_interval_ms must be > 0 and < suspect_after_ms ({}), got {}",
                self.suspect_after_ms, self.heartbeat_interval_ms
            ));
        }
        if self.snapshot_max_inodes == 0 {
            return Err("snapshot_max_inodes must be >= 1".into());
        }
        if self.inline_max_bytes > crate::inline::MAX_INLINE_BYTES {
            return Err(format!(
                "inline_max_bytes must be at most {}, got {}",
                crate::inline::MAX_INLINE_BYTES,
                self.inline_max_bytes
            ));
        }
        if self.log_sync_interval_ms == 0 || self.log_sync_interval_ms > 10_000 {
            return Err("log_sync_interval_ms must be 1..=10000".into());
        }
        if self.snapshot_every == 0 {
            return Err("snapshot_every must be >= 1".into());
        }
        if self.threads > 256 {
            return Err(format!("threads must be 0..=256, got {}", self.threads));
        }
        if self.client_reply_ttl_ms == 0 {
            return Err("client_reply_ttl_ms must be > 0".into());
        }
        if !(1_000..=600_000).contains(&self.lock_lease_ms) {
            return Err("lock_lease_ms must be 1000..=600000".into());
        }
        self.heal.validate()?;
        self.registration.validate()?;
        if self.node_id == 0 {
            return Err("node_id must be >= 1".into());
        }
        let peers = crate::raft::parse_peers(&self.peers).map_err(|e| format!("peers: {e}"))?;
        if !peers.is_empty() && !peers.contains_key(&self.node_id) && !self.join {
            return Err(format!(
                "peers must list this member (node_id {}) unless join = true",
                self.node_id
            ));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms * 2 {
            return Err("raft.election_min_ms must be more than twice raft.heartbeat_ms".into());
        }
        if r.election_max_ms <= r.election_min_ms {
            return Err("raft.election_max_ms must be more than raft.election_min_ms".into());
        }
        if r.wait_ms == 0 {
            return Err("raft.wait_ms must be > 0".into());
        }
        bigfs_proto::daemon::parse_admin_listen(&self.admin_listen)?;
        self.admin_token()?;
        bigfs_proto::daemon::validate_log_level(&self.log_level)?;
        bigfs_proto::tls::check_settings("bigfs-metadata", self.tls_dir.as_deref(), self.insecure)?;
        Ok(())
    }

    /// The admin HTTP's bearer token, read from `admin_token` or
    /// `admin_token_file`.
    pub fn admin_token(&self) -> Result<Option<bigfs_proto::admin_http::AdminToken>, String> {
        bigfs_proto::admin_http::AdminToken::load(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_a_data_dir() {
        let c = Config {
            data_dir: "/tmp/x".into(),
            insecure: true,
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
        let secure_by_default = Config {
            insecure: false,
            ..c.clone()
        };
        assert!(
            secure_by_default
                .validate()
                .unwrap_err()
                .contains("--tls-dir")
        );
        assert!(
            Config::default()
                .validate()
                .unwrap_err()
                .contains("data_dir")
        );
    }

    #[test]
    fn file_values_are_read_and_unknown_keys_refused() {
        let c = Config::from_toml("data_dir = \"/d\"\nreplication = 2\nlisten = \"0.0.0.0:1\"")
            .unwrap();
        assert_eq!(c.replication, 2);
        assert_eq!(c.listen.port(), 1);
        assert!(Config::from_toml("replicaton = 2").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = Config {
            data_dir: "/d".into(),
            insecure: true,
            ..Config::default()
        };
        let bad = Config {
            chunk_size: 1000,
            ..base.clone()
        };
        assert!(bad.validate().unwrap_err().contains("chunk_size"));
        let bad = Config {
            replication: 0,
            ..base.clone()
        };
        assert!(bad.validate().unwrap_err().contains("replication"));
        let bad = Config {
            down_after_ms: 1,
            ..base.clone()
        };
        assert!(bad.validate().unwrap_err().contains("down_after_ms"));
        let bad = Config {
            admin_listen: "localhost".into(),
            ..base
        };
        assert!(bad.validate().unwrap_err().contains("admin_listen"));
    }
}
