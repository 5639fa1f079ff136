//! `bigfs-mount` configuration: one struct with documented defaults, read
//! from TOML (`/etc/bigfs/mount.toml`) and overridden by `-o` options.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::atime::AtimeMode;
use crate::config::ClientConfig;
use crate::meta_wait::MetaWait;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MountConfig {
    /// Mount read-only (`-o ro`). Default false.
    pub read_only: bool,
    /// Let other users use the mount (`-o allow_other`). Default false.
    pub allow_other: bool,
    /// Let root use the mount (`-o allow_root`). Default false.
    pub allow_root: bool,
    /// Unmount when the daemon dies (`-o auto_unmount`). Default false.
    pub auto_unmount: bool,
    /// Kernel-side permission checks from mode, uid and gid
    /// (`-o default_permissions`, on by default; `-o nodefault_permissions`
    /// turns them off).
    pub default_permissions: bool,
    /// POSIX ACLs (`-o acl`, the default; `-o noacl` turns them off): the
    /// kernel enforces `system.posix_acl_access` and the file system applies
    /// the umask or the parent's default ACL at create. Needs
    /// `default_permissions` (off with it).
    pub acl: bool,
    /// How long the kernel caches attributes, in ms (`-o attr_ttl_ms=N`).
    /// Default 1000: short, so other mounts' changes show up quickly.
    pub attr_ttl_ms: u64,
    /// How long the kernel caches name lookups, in ms (`-o entry_ttl_ms=N`).
    /// Default 1000.
    pub entry_ttl_ms: u64,
    /// Lease that keeps a file unlinked while open alive on the metadata
    /// service, in ms, renewed every third of it. Default 60000.
    pub open_lease_ms: u64,
    /// File locks (`fcntl`, `flock`) hold across every mount of the
    /// cluster, kept by the metadata service (`-o locks`, the default).
    /// `-o nolocks` leaves them to this machine's kernel: they then exclude
    /// only processes using this same mount.
    pub locks: bool,
    /// How often, at most, a lock that waits (F_SETLKW, `flock` without
    /// `-n`) asks the metadata service again, in ms (`-o lock_poll_ms=N`).
    /// Waits start at 5 ms and double up to this. Default 100; 5..=10000.
    pub lock_poll_ms: u64,
    /// Threads reading kernel requests (`-o threads=N`). Default 4.
    pub threads: usize,
    /// How long a metadata call waits for the metadata service (a restart,
    /// a leader election) before it fails with EIO, in seconds
    /// (`-o meta_wait=SECONDS`). Default 60: a routine restart or failover
    /// is a pause for applications, not an error.
    pub meta_wait_secs: u64,
    /// Metadata calls wait for ever (`-o hard`; `-o soft` undoes it), as
    /// an NFS hard mount. Default false.
    pub hard: bool,
    /// Source shown in `mount`, `df` and `/proc/mounts` (`-o fsname=NAME`).
    /// Default empty: the metadata members (`HOST:PORT,HOST:PORT`), as NFS
    /// shows its server.
    pub fsname: String,
    /// When reads update access times (`-o noatime`, `-o relatime` (the
    /// default; also `atime`), `-o strictatime` (also `norelatime`)); see
    /// `atime`. Directories' access times are never updated (`nodiratime`).
    pub atime: AtimeMode,
    /// Refuse to execute programs from the mount (`-o noexec`; `exec`
    /// undoes it). Default false.
    pub noexec: bool,
    /// Ignore set-user-id and set-group-id bits (`-o nosuid`; `-o suid`
    /// honours them). Default true: a network file system's set-uid
    /// programs are not trusted unless asked for, as with fusermount.
    pub nosuid: bool,
    /// Do not open device files through the mount (`-o nodev`; `-o dev`
    /// opens them). Default true, as `nosuid`.
    pub nodev: bool,
    /// Writes are synchronous, as if every open had O_SYNC (`-o sync`;
    /// `async` undoes it). Default false.
    pub sync: bool,
    /// Directory changes are synchronous (`-o dirsync`). They always are:
    /// every metadata change is committed before it is answered; the flag
    /// is passed on to the kernel so `mount` shows it. Default false.
    pub dirsync: bool,
    /// Address of this mount's HTTP endpoint (`/healthz`, `/metrics`:
    /// transfers, retries, failovers, cache hits) (`-o admin_listen=ADDR`).
    /// Default empty: off (several mounts on one host would collide).
    pub admin_listen: String,
    /// Bearer token that opens `/metrics` (besides an `admin:` client
    /// certificate); at least 16 characters. Default none: with TLS only
    /// admin certificates get in; with `insecure` `/metrics` is open.
    pub admin_token: Option<String>,
    /// File whose first line is the admin token
    /// (`-o admin_token_file=PATH`). Default none; at most one of the two.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The client library's settings: metadata members, cache and buffer
    /// sizes (`-o cache_mb=N`, `-o write_buffer_mb=N`,
    /// `-o readahead_chunks=N`), retry policy.
    pub client: ClientConfig,
    /// Directory with `ca.pem`, `cert.pem` and `key.pem` (a `client:`
    /// certificate) for mutual TLS with the cluster (`--tls-dir`). No
    /// default: this or `insecure` must be set.
    pub tls_dir: Option<std::path::PathBuf>,
    /// Talk to a cluster run with `--insecure`: no TLS, no certificate.
    /// Default false.
    pub insecure: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            default_permissions: true,
            acl: true,
            attr_ttl_ms: 1000,
            entry_ttl_ms: 1000,
            open_lease_ms: 60_000,
            locks: true,
            lock_poll_ms: 100,
            threads: 4,
            meta_wait_secs: 60,
            hard: false,
            fsname: String::new(),
            atime: AtimeMode::default(),
            noexec: false,
            nosuid: true,
            nodev: true,
            sync: false,
            dirsync: false,
            admin_listen: String::new(),
            admin_token: None,
            admin_token_file: None,
            client: ClientConfig::default(),
            tls_dir: None,
            insecure: false,
        }
    }
}

/// Options `mount(8)` and fstab pass along that need nothing from us:
/// fstab's own (`auto`, `user`, `_netdev`, `nofail`...), mount(8)'s
/// verbosity, and the timestamp flags that describe what BigFS does anyway
/// (directory atimes are never updated; atimes are batched as `lazytime`
/// asks).
const IGNORED: &[&str] = &[
    "defaults",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "silent",
    "loud",
];

impl MountConfig {
    /// The `/metrics` bearer token, read from `admin_token` or
    /// `admin_token_file`.
    pub fn admin_token(&self) -> Result<Option<bigfs_proto::admin_http::AdminToken>, String> {
        bigfs_proto::admin_http::AdminToken::load(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
        )
    }

    /// Takes the metadata members from a mount source as fstab passes it:
    /// `bigfs#HOST:PORT[,HOST:PORT...]` or the list alone.
    pub fn apply_source(&mut self, source: &str) {
        self.client.metadata = source.trim_start_matches("bigfs#").to_string();
    }

    /// Applies one `-o` list ("ro,allow_other,cache_mb=512").
    /// `metadata=a:9400,b:9400` takes the addresses after it too: an item
    /// with a ':' and no '=' is no option but the next member.
    pub fn apply_options(&mut self, opts: &str) -> Result<(), String> {
        self.apply_options_sloppy(opts, false).map(drop)
    }

    /// As `apply_options`; when `sloppy` (mount(8)'s `-s`), unknown options
    /// are returned instead of refused.
    pub fn apply_options_sloppy(
        &mut self,
        opts: &str,
        sloppy: bool,
    ) -> Result<Vec<String>, String> {
        let mut unknown = Vec::new();
        let mut in_metadata = false;
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if in_metadata && opt.contains(':') && !opt.contains('=') {
                self.client.metadata = format!("{},{opt}", self.client.metadata);
                continue;
            }
            in_metadata = opt.starts_with("metadata=");
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let num = |v: Option<&str>| -> Result<u64, String> {
                v.ok_or_else(|| format!("option {key} needs a value ({key}=N)"))?
                    .parse::<u64>()
                    .map_err(|_| {
                        format!("option {key}: {:?} is not a whole number", v.unwrap_or(""))
                    })
            };
            match key {
                "noatime" => self.atime = AtimeMode::NoAtime,
                "atime" | "relatime" => self.atime = AtimeMode::Relatime,
                "strictatime" | "norelatime" => self.atime = AtimeMode::StrictAtime,
                "noexec" => self.noexec = true,
                "exec" => self.noexec = false,
                "nosuid" => self.nosuid = true,
                "suid" => self.nosuid = false,
                "nodev" => self.nodev = true,
                "dev" => self.nodev = false,
                "sync" => self.sync = true,
                "async" => self.sync = false,
                "dirsync" => self.dirsync = true,
                "ro" => self.read_only = true,
                "rw" => self.read_only = false,
                "allow_other" => self.allow_other = true,
                "allow_root" => self.allow_root = true,
                "auto_unmount" => self.auto_unmount = true,
                "default_permissions" => self.default_permissions = true,
                "nodefault_permissions" => self.default_permissions = false,
                "acl" => self.acl = true,
                "noacl" => self.acl = false,
                "negative_lookups" => self.client.negative_lookups = true,
                "nonegative_lookups" => self.client.negative_lookups = false,
                "attr_ttl_ms" => self.attr_ttl_ms = num(value)?,
                "entry_ttl_ms" => self.entry_ttl_ms = num(value)?,
                "threads" => self.threads = num(value)? as usize,
                "locks" => self.locks = true,
                "nolocks" => self.locks = false,
                "lock_poll_ms" => self.lock_poll_ms = num(value)?,
                "meta_wait" => self.meta_wait_secs = num(value)?,
                "hard" => self.hard = true,
                "soft" => self.hard = false,
                "cache_mb" => self.client.cache_bytes = num(value)? << 20,
                "write_buffer_mb" => self.client.write_buffer_bytes = num(value)? << 20,
                "readahead_chunks" => self.client.readahead_chunks = num(value)? as u32,
                "metadata" => {
                    self.client.metadata = value
                        .ok_or("option metadata needs a value (metadata=HOST:PORT[,HOST:PORT])")?
                        .into()
                }
                "subdir" => {
                    self.client.subdir = value
                        .ok_or("option subdir needs a value (subdir=/path)")?
                        .into()
                }
                "fsname" => self.fsname = value.ok_or("option fsname needs a value")?.into(),
                "admin_listen" => {
                    self.admin_listen = value
                        .ok_or("option admin_listen needs a value (HOST:PORT)")?
                        .into()
                }
                "admin_token_file" => {
                    self.admin_token = None;
                    self.admin_token_file = Some(
                        value
                            .ok_or("option admin_token_file needs a value (PATH)")?
                            .into(),
                    )
                }
                k if IGNORED.contains(&k) || k.starts_with("x-") || k.starts_with("comment=") => {}
                _ if sloppy => unknown.push(opt.to_string()),
                _ => return Err(format!("unknown mount option {opt:?}")),
            }
        }
        Ok(unknown)
    }

    /// Checks the values; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        self.client.validate()?;
        if self.threads == 0 || self.threads > 64 {
            return Err(format!("threads must be 1..=64, got {}", self.threads));
        }
        if self.meta_wait_secs == 0 && !self.hard {
            return Err("meta_wait must be at least 1 second (or use hard)".into());
        }
        if !(5..=10_000).contains(&self.lock_poll_ms) {
            return Err(format!(
                "lock_poll_ms must be 5..=10000, got {}",
                self.lock_poll_ms
            ));
        }
        if self.open_lease_ms < 3000 {
            return Err("open_lease_ms must be at least 3000".into());
        }
        bigfs_proto::daemon::parse_admin_listen(&self.admin_listen)?;
        self.admin_token()?;
        if self.allow_other && self.allow_root {
            return Err("allow_other and allow_root cannot be used together".into());
        }
        Ok(())
    }
}

impl MountConfig {
    /// The source `mount` shows: `fsname`, else the metadata members.
    pub fn source(&self) -> String {
        if self.fsname.is_empty() {
            self.client.metadata.clone()
        } else {
            self.fsname.clone()
        }
    }

    /// How the mount's metadata calls wait, from `meta_wait` and `hard`.
    pub fn meta_wait(&self) -> MetaWait {
        if self.hard {
            MetaWait::Forever
        } else {
            MetaWait::For(Duration::from_secs(self.meta_wait_secs))
        }
    }

    /// The client library's settings with the mount's metadata wait.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            meta_wait: self.meta_wait(),
            fresh_dir_ttl: Duration::from_millis(self.attr_ttl_ms),
            ..self.client.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_set_fields_and_unknown_ones_are_refused() {
        let mut c = MountConfig::default();
        c.apply_options("ro,allow_other,cache_mb=16,_netdev,defaults,attr_ttl_ms=5")
            .unwrap();
        assert!(c.read_only && c.allow_other && c.acl);
        c.apply_options("noacl").unwrap();
        assert!(!c.acl);
        assert_eq!(c.client.cache_bytes, 16 << 20);
        assert_eq!(c.attr_ttl_ms, 5);
        let e = c.apply_options("bogus").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = c.apply_options("cache_mb=lots").unwrap_err();
        assert!(e.contains("cache_mb"), "{e}");
    }

    #[test]
    fn kernel_and_atime_flags_are_taken_not_ignored() {
        let mut c = MountConfig::default();
        assert_eq!(c.atime, AtimeMode::Relatime);
        c.apply_options("noexec,nosuid,nodev,sync,dirsync,noatime,nodiratime,lazytime")
            .unwrap();
        assert!(c.noexec && c.nosuid && c.nodev && c.sync && c.dirsync);
        assert_eq!(c.atime, AtimeMode::NoAtime);
        c.apply_options("exec,suid,dev,async,strictatime").unwrap();
        assert!(!c.noexec && !c.nosuid && !c.nodev && !c.sync);
        assert_eq!(c.atime, AtimeMode::StrictAtime);
        c.apply_options("relatime").unwrap();
        assert_eq!(c.atime, AtimeMode::Relatime);
        assert!(
            c.apply_options("mand").is_err(),
            "mandatory locks are refused"
        );
    }

    #[test]
    fn the_source_is_the_metadata_members_unless_named() {
        let mut c = MountConfig::default();
        c.apply_options("metadata=a:1,b:2").unwrap();
        assert_eq!(c.source(), "a:1,b:2");
        c.apply_options("fsname=prod").unwrap();
        assert_eq!(c.source(), "prod");
    }

    #[test]
    fn metadata_wait_options() {
        let mut c = MountConfig::default();
        assert_eq!(c.meta_wait(), MetaWait::For(Duration::from_secs(60)));
        c.apply_options("meta_wait=2").unwrap();
        assert_eq!(
            c.client_config().meta_wait,
            MetaWait::For(Duration::from_secs(2))
        );
        c.apply_options("hard").unwrap();
        assert_eq!(c.meta_wait(), MetaWait::Forever);
        c.apply_options("soft,meta_wait=0").unwrap();
        assert!(c.validate().unwrap_err().contains("meta_wait"));
    }

    #[test]
    fn metadata_option_takes_a_member_list() {
        let mut c = MountConfig::default();
        c.apply_options("ro,metadata=a:1,b:2,c:3,cache_mb=16")
            .unwrap();
        assert_eq!(c.client.metadata, "a:1,b:2,c:3");
        assert_eq!(c.client.cache_bytes, 16 << 20);
        assert!(c.apply_options("metadata=a:1,bogus").is_err());
        let t: MountConfig = toml::from_str("[client]\nmetadata = [\"a:1\", \"b:2\"]").unwrap();
        assert_eq!(t.client.metadata, "a:1,b:2");
    }

    #[test]
    fn toml_keys_are_checked() {
        let e = toml::from_str::<MountConfig>("nonsense = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nonsense"), "{e}");
        let c: MountConfig =
            toml::from_str("threads = 8\n[client]\nmetadata = \"10.0.0.1:9400\"").unwrap();
        assert_eq!(c.threads, 8);
        assert_eq!(c.client.metadata, "10.0.0.1:9400");
    }
}
