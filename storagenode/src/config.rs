//! The storage node's configuration: a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bigfs_proto::RetryConfig;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Everything `bigfs-storage` can be told. Every key is optional in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the Storage gRPC service listens on. Default `127.0.0.1:9500`.
    pub listen: String,
    /// "host:port" that peers and clients use to reach this node. Default:
    /// the listen address; must be set when listening on 0.0.0.0 / [::].
    pub advertise: Option<String>,
    /// Addresses of the metadata members: `"a:9400,b:9400,c:9400"` or a
    /// list; registration and heartbeats go to whichever leads. Default
    /// `127.0.0.1:9400`.
    #[serde(deserialize_with = "bigfs_proto::leader::addr_list")]
    pub metadata: String,
    /// Directory holding chunk files and the pinned node id, on a node
    /// with one disk. This or `data_dirs` is required.
    pub data_dir: PathBuf,
    /// The node's data directories, one per disk (`["/srv/d1",
    /// "/srv/d2"]`); `--data-dir` may be repeated or comma separated. New
    /// chunks go to the disk with the most free space (weighted at
    /// random); a disk that fails is marked bad and its chunks are healed
    /// elsewhere while the others keep serving. `reserve_bytes` and
    /// `capacity_bytes` apply to each disk. Default empty: `data_dir`.
    pub data_dirs: Vec<PathBuf>,
    /// How often every disk is checked to still be the one opened (its
    /// directory's device and inode, its `.bigfs-disk` marker). Default
    /// 10000 ms: a disk unmounted under a running node is noticed within
    /// seconds, at the cost of one stat and one small read per disk.
    pub disk_check_interval_ms: u64,
    /// Initialise every data directory without a `.bigfs-disk` marker as a
    /// new, empty disk (after adding or replacing a disk). Without it such
    /// a directory, beside marked ones, is a bad disk (not mounted?). Only
    /// the `--init-disks` flag sets it, never the file.
    #[serde(skip)]
    pub init_disks: bool,
    /// This node's id. Default: the id pinned in `<data_dir>/node_id`, else
    /// a generated `node-<8 hex>`.
    pub node_id: Option<String>,
    /// Bytes this node offers. Default 0 = the size of the file system.
    pub capacity_bytes: u64,
    /// Bytes always left free on the file system; puts beyond it fail with
    /// RESOURCE_EXHAUSTED. Default 64 MiB.
    pub reserve_bytes: u64,
    /// Heartbeat interval when the metadata service does not say. Default 2000.
    pub heartbeat_interval_ms: u64,
    /// Chunk uploads and copies held in memory at once. Default 16 (16 x 4
    /// MiB chunks = 64 MiB, at most 16 x 64 MiB with maximal chunks).
    pub max_concurrent_puts: usize,
    /// Retry policy for calls to the metadata service and to peers.
    pub retry: RetryConfig,
    /// Bytes per second the scrubber re-hashes. Default 16 MiB/s (a full
    /// pass over 1 TiB takes ~18 h); 0 disables scrubbing.
    pub scrub_bytes_per_sec: u64,
    /// Pause before each scrub pass. Default 3600000 ms (1 h).
    pub scrub_pause_ms: u64,
    /// Address of the admin HTTP server (`/healthz`, `/metrics`). Default
    /// `127.0.0.1:9580`; an empty string disables it.
    pub admin_listen: String,
    /// Bearer token that opens `/metrics` (besides an `admin:` client
    /// certificate); at least 16 characters. Default none: with TLS only
    /// admin certificates get in; with `insecure` `/metrics` is open.
    /// Prefer `admin_token_file`, which keeps it out of this file.
    pub admin_token: Option<String>,
    /// File whose first line is the admin token (`--admin-token-file`).
    /// Default none. At most one of this and `admin_token`.
    pub admin_token_file: Option<PathBuf>,
    /// Log level or filter (`info`, `debug`, `bigfs_storagenode=debug,info`).
    /// Default `info`; the `RUST_LOG` environment variable overrides it.
    pub log_level: String,
    /// Chunks the metadata service does not list for this node are moved to
    /// `<data_dir>/quarantine/unlisted/` and deleted this long after.
    /// Default 86400000 ms (24 h): a wrong unlisting (a node id taken over,
    /// a table restored from an old backup) is noticed within a working day
    /// or a night's alert, and the copies are still there to recover; a
    /// day's worth of surplus copies is a small share of a disk.
    pub quarantine_grace_ms: u64,
    /// How often quarantined chunks past their grace are deleted. Default
    /// 600000 ms (10 min): deletions are late by at most that, a small
    /// share of the grace, and a sweep lists one directory.
    pub quarantine_sweep_ms: u64,
    /// Accept this start's chunk inventory as the truth even if it lacks
    /// most of the copies the metadata service lists for the node (after a
    /// lost disk was replaced). Only the `--accept-inventory` flag sets it,
    /// never the file: a setting that stays in a config file would turn the
    /// check off for good.
    #[serde(skip)]
    pub accept_inventory: bool,
    /// Bytes of stored uploads that may wait for the metadata service to
    /// list them (a primary's registration, a replica's confirmation);
    /// further uploads get RESOURCE_EXHAUSTED. Default 4 GiB: a thousand
    /// 4 MiB chunks in flight is far past any real burst, and a small share
    /// of a disk.
    pub pending_upload_quota_bytes: u64,
    /// How long a stored upload may stay unlisted before the node asks the
    /// metadata service about it, keeping it if listed and quarantining it
    /// otherwise. Default 600000 ms (10 min): a registration retried
    /// through a metadata failover has long finished by then.
    pub pending_upload_grace_ms: u64,
    /// How often pending uploads past their grace are settled. Default
    /// 60000 ms (1 min), a tenth of the grace.
    pub pending_upload_sweep_ms: u64,
    /// Directory with `ca.pem`, `cert.pem` and `key.pem` (a `node:<id>`
    /// certificate) and optionally `revoked.txt`: every gRPC call in and out
    /// uses mutual TLS. No default: this or `insecure` must be set.
    pub tls_dir: Option<PathBuf>,
    /// Run without TLS or authentication (a warning at every start).
    /// Default false.
    pub insecure: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:9500".into(),
            advertise: None,
            metadata: "127.0.0.1:9400".into(),
            data_dir: PathBuf::new(),
            data_dirs: Vec::new(),
            disk_check_interval_ms: 10_000,
            init_disks: false,
            node_id: None,
            capacity_bytes: 0,
            // Enough for the file system's own bookkeeping and a few chunks
            // in flight, small enough not to matter on a test disk.
            reserve_bytes: 64 * 1024 * 1024,
            heartbeat_interval_ms: 2_000,
            max_concurrent_puts: 16,
            retry: RetryConfig::default(),
            scrub_bytes_per_sec: 16 * 1024 * 1024,
            scrub_pause_ms: 3_600_000,
            admin_listen: "127.0.0.1:9580".into(),
            admin_token: None,
            admin_token_file: None,
            log_level: "info".into(),
            quarantine_grace_ms: 86_400_000,
            quarantine_sweep_ms: 600_000,
            accept_inventory: false,
            pending_upload_quota_bytes: 4 << 30,
            pending_upload_grace_ms: 600_000,
            pending_upload_sweep_ms: 60_000,
            tls_dir: None,
            insecure: false,
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses TOML text; unknown keys are refused.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            ConfigError::invalid(
                "listen",
                format!("{:?} is not an ip:port address: {e}", self.listen),
            )
        })
    }

    /// The address registered with the metadata service.
    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }

    /// The data directories: `data_dirs`, else `data_dir` alone.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        if !self.data_dirs.is_empty() {
            return self.data_dirs.clone();
        }
        if self.data_dir.as_os_str().is_empty() {
            return Vec::new();
        }
        vec![self.data_dir.clone()]
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Refuses values that cannot work; the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let advertise = self.advertise_addr();
        let key = if self.advertise.is_some() {
            "advertise"
        } else {
            "listen"
        };
        let (host, port) = advertise.rsplit_once(':').ok_or_else(|| {
            ConfigError::invalid("advertise", format!("{advertise:?} is not host:port"))
        })?;
        if host.is_empty() || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
            return Err(ConfigError::invalid(
                "advertise",
                format!("{advertise:?} needs a host and a non-zero port"),
            ));
        }
        if let Ok(addr) = advertise.parse::<SocketAddr>()
            && addr.ip().is_unspecified()
        {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "peers cannot reach the unspecified address {advertise}; set advertise to a reachable host:port"
                ),
            ));
        }
        if self.metadata.trim().is_empty() {
            return Err(ConfigError::invalid("metadata", "must be set"));
        }
        let dirs = self.data_dirs();
        if dirs.is_empty() {
            return Err(ConfigError::invalid("data_dir", "must be set"));
        }
        if !self.data_dir.as_os_str().is_empty() && !self.data_dirs.is_empty() {
            return Err(ConfigError::invalid(
                "data_dirs",
                "set data_dir or data_dirs, not both",
            ));
        }
        for (i, d) in dirs.iter().enumerate() {
            if d.as_os_str().is_empty() || dirs[..i].contains(d) {
                return Err(ConfigError::invalid(
                    "data_dirs",
                    format!("{:?} is empty or listed twice", d.display().to_string()),
                ));
            }
        }
        if self.disk_check_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "disk_check_interval_ms",
                "must be > 0",
            ));
        }
        if let Some(id) = &self.node_id {
            crate::registration::validate_node_id(id)?;
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::invalid("heartbeat_interval_ms", "must be > 0"));
        }
        if self.quarantine_sweep_ms == 0 {
            return Err(ConfigError::invalid("quarantine_sweep_ms", "must be > 0"));
        }
        if self.pending_upload_sweep_ms == 0 {
            return Err(ConfigError::invalid(
                "pending_upload_sweep_ms",
                "must be > 0",
            ));
        }
        if self.max_concurrent_puts == 0 {
            return Err(ConfigError::invalid("max_concurrent_puts", "must be > 0"));
        }
        self.retry
            .validate()
            .map_err(|reason| ConfigError::invalid("retry", reason))?;
        bigfs_proto::daemon::parse_admin_listen(&self.admin_listen)
            .map_err(|reason| ConfigError::invalid("admin_listen", reason))?;
        self.admin_token()
            .map_err(|reason| ConfigError::invalid("admin_token", reason))?;
        bigfs_proto::daemon::validate_log_level(&self.log_level)
            .map_err(|reason| ConfigError::invalid("log_level", reason))?;
        bigfs_proto::tls::check_settings("bigfs-storage", self.tls_dir.as_deref(), self.insecure)
            .map_err(|reason| ConfigError::invalid("tls_dir", reason))?;
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

    fn base() -> Config {
        Config {
            data_dir: "/tmp/x".into(),
            insecure: true,
            ..Config::default()
        }
    }

    #[test]
    fn tls_or_insecure_must_be_chosen() {
        let c = Config {
            insecure: false,
            ..base()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--tls-dir") && err.contains("--insecure"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_valid_once_data_dir_is_set() {
        assert!(base().validate().is_ok());
        assert_eq!(base().advertise_addr(), "127.0.0.1:9500");
        let err = Config::default().validate().unwrap_err();
        assert!(err.to_string().contains("data_dir"), "{err}");
    }

    #[test]
    fn file_keys_parse_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str(
            "listen = \"0.0.0.0:9501\"\nadvertise = \"node1:9501\"\ndata_dir = \"/d\"\n\
             reserve_bytes = 5\ntls_dir = \"/etc/bigfs/tls\"\n[retry]\nmax_retries = 2\n",
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9501");
        assert_eq!(c.reserve_bytes, 5);
        assert_eq!(c.retry.max_retries, 2);
        assert_eq!(c.heartbeat_interval_ms, 2_000);
        assert_eq!(c.tls_dir.as_deref(), Some(Path::new("/etc/bigfs/tls")));
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        // The override is a flag only.
        assert!(toml::from_str::<Config>("accept_inventory = true").is_err());
        assert!(toml::from_str::<Config>("[retry]\nbogus = 1").is_err());
    }

    #[test]
    fn data_dirs_is_a_list_and_data_dir_its_one_disk_form() {
        let c: Config = toml::from_str("data_dirs = [\"/a\", \"/b\"]\ninsecure = true").unwrap();
        assert_eq!(
            c.data_dirs(),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert!(c.validate().is_ok());
        assert_eq!(base().data_dirs(), vec![PathBuf::from("/tmp/x")]);
        let both = Config {
            data_dirs: vec!["/a".into()],
            ..base()
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .starts_with("data_dirs")
        );
        let twice = Config {
            data_dir: PathBuf::new(),
            data_dirs: vec!["/a".into(), "/a".into()],
            ..base()
        };
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
        assert!(toml::from_str::<Config>("init_disks = true").is_err());
    }

    #[test]
    fn metadata_members_are_a_comma_list_or_a_toml_list() {
        let one: Config = toml::from_str("metadata = \"a:1,b:2\"").unwrap();
        let list: Config = toml::from_str("metadata = [\"a:1\", \"b:2\"]").unwrap();
        assert_eq!(one.metadata, "a:1,b:2");
        assert_eq!(list.metadata, "a:1,b:2");
    }

    #[test]
    fn unspecified_advertise_is_refused_naming_the_key() {
        let c = Config {
            listen: "0.0.0.0:9500".into(),
            ..base()
        };
        assert!(c.validate().unwrap_err().to_string().starts_with("listen"));
        let c = Config {
            advertise: Some("0.0.0.0:9500".into()),
            ..base()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("advertise")
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (c, key) in [
            (
                Config {
                    listen: "nope".into(),
                    ..base()
                },
                "listen",
            ),
            (
                Config {
                    max_concurrent_puts: 0,
                    ..base()
                },
                "max_concurrent_puts",
            ),
            (
                Config {
                    heartbeat_interval_ms: 0,
                    ..base()
                },
                "heartbeat_interval_ms",
            ),
            (
                Config {
                    quarantine_sweep_ms: 0,
                    ..base()
                },
                "quarantine_sweep_ms",
            ),
            (
                Config {
                    node_id: Some("a b".into()),
                    ..base()
                },
                "node_id",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }
}
