//! A real local BigFS cluster for integration tests: the metadata service
//! and storage nodes run as separate processes on loopback ports, in a
//! temporary directory, and can be killed (-9) and restarted.
//!
//! The binaries must be built first (`cargo build --workspace --bins`);
//! `.ci/run` does that.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigfs_client::{Client, ClientConfig};
use bigfs_proto::{RetryConfig, pb};
use sha2::{Digest, Sha256};

pub use admin_http::{AdminAuth, http_get, https_config, https_connect, https_get, https_stream};

pub mod admin_http;
pub mod certs;
pub mod group;
pub mod power;

/// Processes and mount points the harness started, so a test that runs past
/// its deadline can take them down before the test binary exits.
static TRACKED: std::sync::Mutex<(Vec<u32>, Vec<PathBuf>)> =
    std::sync::Mutex::new((Vec::new(), Vec::new()));

fn tracked() -> std::sync::MutexGuard<'static, (Vec<u32>, Vec<PathBuf>)> {
    TRACKED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records a child process for the deadline watchdog.
pub fn track_child(child: &Child) {
    tracked().0.push(child.id());
}

pub(crate) fn untrack_child(pid: u32) {
    tracked().0.retain(|p| *p != pid);
}

/// A child process the deadline watchdog knows about, killed when dropped:
/// for a daemon a test starts by hand.
pub struct TrackedChild(Child);

impl TrackedChild {
    pub fn spawn(cmd: &mut Command) -> TrackedChild {
        let child = cmd.spawn().expect("spawn child process");
        track_child(&child);
        TrackedChild(child)
    }
}

impl Drop for TrackedChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        untrack_child(self.0.id());
    }
}

/// A running test's time limit; dropping it (the test ended) disarms it.
pub struct Deadline {
    disarm: Option<std::sync::mpsc::Sender<()>>,
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(tx) = self.disarm.take() {
            let _ = tx.send(());
        }
    }
}

/// Fails the test (and its whole test binary, with exit status 1) if it is
/// still running after `limit`: the watchdog prints which test ran over,
/// kills every process the harness started, lazily unmounts its mounts and
/// exits, so one hung FUSE call cannot block CI until the job's own limit.
/// Put `let _deadline = deadline(Duration::from_secs(N));` first in every
/// integration test.
pub fn deadline(limit: Duration) -> Deadline {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            return;
        }
        eprintln!("test {name} ran past its deadline of {limit:?}: killing its processes");
        let (pids, mounts) = tracked().clone();
        for pid in pids {
            // SAFETY: kill(2) on a pid this process spawned.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        std::process::exit(1);
    });
    Deadline { disarm: Some(tx) }
}

/// Where cargo put the workspace binaries (next to this test's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        p.display()
    );
    p
}

/// A port nothing listens on, below the kernel's ephemeral range.
///
/// A port from `bind(":0")` is an ephemeral one: between picking it and the
/// server binding it, any outgoing connection on the machine may take it.
/// Ports under 32768 are never handed out for outgoing connections, and a
/// per-process counter keeps the tests of one binary from picking the same.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 200) * 50;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (base - 20_000 + n) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

pub struct Node {
    /// The node id it registers with.
    pub id: String,
    /// Names its data directory and log: the id, unless several processes
    /// share an id (see [`Cluster::add_node_as`]).
    pub name: String,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The node's admin HTTP address (`/healthz`, `/metrics`).
    pub admin_addr: String,
    child: Option<Child>,
}

/// Where a cluster's metadata service comes from.
enum MetaSetup<'a> {
    /// One service the cluster starts, with these extra TOML settings.
    Own(&'a str),
    /// A group the caller runs, at this member list.
    External(&'a str),
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub meta_addr: String,
    /// The metadata service's admin HTTP address (status page, `/nodes`, ...).
    pub meta_admin_addr: String,
    meta_child: Option<Child>,
    pub nodes: Vec<Node>,
    meta_config: PathBuf,
    /// Where the data directories of the metadata service (`meta/`) and of
    /// the nodes (named by node id) are: the temporary directory, or the
    /// directory given to [`Cluster::start_on`].
    data_root: PathBuf,
    /// Extra environment of the metadata service (test faults).
    meta_env: Vec<(String, String)>,
    /// The cluster's CA (`ca/`) and a TLS directory per process (`meta`,
    /// `cli`, each node's name, each mount).
    pub tls: PathBuf,
}

/// The bearer token of every test cluster's admin HTTP (the metadata
/// service's and the nodes'), in `tls/admin-token`.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Metadata settings for tests: quick failure detection so tests that kill
/// nodes do not wait the production timeouts.
const TEST_META_CONFIG: &str = r#"
heartbeat_interval_ms = 300
suspect_after_ms = 1500
down_after_ms = 3000
"#;

impl Cluster {
    /// Starts a metadata service and `n` storage nodes and waits until every
    /// node is up.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, "").await
    }

    /// As `start`, with extra metadata TOML settings.
    pub async fn start_with(n: usize, extra_meta: &str) -> Cluster {
        Self::start_with_storage(n, extra_meta, "").await
    }

    /// As `start_with`, with storage node settings (TOML) too.
    pub async fn start_with_storage(n: usize, extra_meta: &str, storage: &str) -> Cluster {
        Self::start_in(None, n, MetaSetup::Own(extra_meta), storage).await
    }

    /// As `start_with_storage`, with every data directory under
    /// `data_root` (a file system of the test's choosing, e.g. a
    /// [`power::LossyDisk`]); logs and configs stay in the temporary
    /// directory.
    pub async fn start_on(data_root: &Path, n: usize, extra_meta: &str, storage: &str) -> Cluster {
        Self::start_in(
            Some(data_root.to_path_buf()),
            n,
            MetaSetup::Own(extra_meta),
            storage,
        )
        .await
    }

    /// A cluster whose metadata service is a group run by the caller (see
    /// [`group::Group`]): `meta_addrs` is its member list, which storage
    /// nodes, mounts and the CLI get. Starts `n` storage nodes.
    pub async fn start_external(meta_addrs: &str, n: usize) -> Cluster {
        Self::start_in(None, n, MetaSetup::External(meta_addrs), "").await
    }

    /// Starts the cluster's metadata service as `meta` says, then `n`
    /// storage nodes.
    async fn start_in(
        data_root: Option<PathBuf>,
        n: usize,
        meta: MetaSetup<'_>,
        storage: &str,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("bigfs-test-")
            .tempdir()
            .expect("tempdir");
        let data_root = data_root.unwrap_or_else(|| dir.path().to_path_buf());
        let meta_config = dir.path().join("metadata.toml");
        let meta_addr = format!("127.0.0.1:{}", free_port());
        let tls = dir.path().join("tls");
        certs::install_client();
        certs::write_ca(&tls.join("ca"));
        certs::issue_into(&tls.join("ca"), "admin:cli", &tls.join("cli"));
        std::fs::write(tls.join("admin-token"), format!("{ADMIN_TOKEN}\n")).expect("admin token");
        let mut c = Cluster {
            dir,
            meta_addr,
            meta_admin_addr: format!("127.0.0.1:{}", free_port()),
            meta_child: None,
            nodes: Vec::new(),
            meta_config,
            data_root,
            meta_env: Vec::new(),
            tls,
        };
        if !storage.is_empty() {
            c.set_storage_config(storage);
        }
        match meta {
            MetaSetup::Own(extra) => {
                std::fs::write(&c.meta_config, format!("{TEST_META_CONFIG}\n{extra}"))
                    .expect("write config");
                c.issue("meta:meta", "meta");
                c.start_metadata();
            }
            MetaSetup::External(addrs) => c.meta_addr = addrs.to_string(),
        }
        c.wait_metadata().await;
        for i in 0..n {
            c.add_node(&format!("node-{}", i + 1));
        }
        c.wait_nodes_up(n).await;
        c
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("log file")
    }

    pub fn start_metadata(&mut self) {
        let data = self.data_root.join("meta");
        let child = Command::new(bin("bigfs-metadata"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(&self.meta_addr)
            .arg("--config")
            .arg(&self.meta_config)
            .arg("--admin-listen")
            .arg(&self.meta_admin_addr)
            .arg("--tls-dir")
            .arg(self.tls.join("meta"))
            .arg("--admin-token-file")
            .arg(self.tls.join("admin-token"))
            .env("RUST_LOG", "info")
            .envs(self.meta_env.iter().map(|(k, v)| (k, v)))
            .stdout(self.log_file("metadata"))
            .stderr(self.log_file("metadata"))
            .spawn()
            .expect("spawn bigfs-metadata");
        track_child(&child);
        self.meta_child = Some(child);
    }

    /// Sets `key=value` in the metadata service's environment from its next
    /// start on (e.g. a test fault; see `restart_metadata`).
    pub fn set_metadata_env(&mut self, key: &str, value: &str) {
        self.meta_env.retain(|(k, _)| k != key);
        self.meta_env.push((key.to_string(), value.to_string()));
    }

    /// Kills the metadata service with SIGKILL.
    pub fn kill_metadata(&mut self) {
        kill_and_reap(self.meta_child.take());
    }

    pub async fn restart_metadata(&mut self) {
        self.kill_metadata();
        self.start_metadata();
        self.wait_metadata().await;
    }

    pub async fn wait_metadata(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = bigfs_proto::metadata_client(&self.meta_addr)
                && c.status(pb::Empty {}).await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "metadata service did not start; see {}",
                self.log_path("metadata")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The TLS directory of process `name` (`meta`, `cli`, a node's name).
    pub fn tls_dir(&self, name: &str) -> PathBuf {
        self.tls.join(name)
    }

    /// A GET on an admin HTTP server of this cluster (`addr`: the metadata
    /// service's, a node's or a mount's), over HTTPS as `admin:cli`.
    pub fn admin_get(&self, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
        self.admin_get_as(addr, path, AdminAuth::Cert(&self.tls_dir("cli")))
    }

    /// The sum of metric `name`'s samples whose labels include `labels`,
    /// from the `/metrics` of the admin server at `addr`.
    pub fn metric(&self, addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (code, body) = self.admin_get(addr, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "{body}");
        let samples = parse_prometheus(&body).expect("Prometheus text");
        metric_sum(&samples, name, labels)
    }

    /// As [`Cluster::admin_get`], proving access with `auth`.
    pub fn admin_get_as(
        &self,
        addr: &str,
        path: &str,
        auth: AdminAuth<'_>,
    ) -> std::io::Result<(u16, String)> {
        https_get(addr, path, &self.tls_dir("cli"), auth)
    }

    /// The cluster's CA directory (`ca.pem`, `ca.key`, `issued.txt`).
    pub fn ca_dir(&self) -> PathBuf {
        self.tls.join("ca")
    }

    /// Issues a certificate for `identity` (`role:name`) into the TLS
    /// directory `name` (created); returns its serial.
    pub fn issue(&self, identity: &str, name: &str) -> String {
        certs::issue_into(&self.ca_dir(), identity, &self.tls_dir(name))
    }

    pub fn log_path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.log"))
            .display()
            .to_string()
    }

    /// Adds and starts a storage node with id `id`.
    pub fn add_node(&mut self, id: &str) -> usize {
        self.add_node_as(id, id)
    }

    /// Adds and starts a storage node process called `name` (its data
    /// directory and log) registering as `node_id`, on a port of its own:
    /// a second process may claim an existing node's id.
    pub fn add_node_as(&mut self, name: &str, node_id: &str) -> usize {
        let addr = format!("127.0.0.1:{}", free_port());
        let data_dir = self.data_root.join(name);
        self.nodes.push(Node {
            id: node_id.to_string(),
            name: name.to_string(),
            addr,
            data_dir,
            admin_addr: format!("127.0.0.1:{}", free_port()),
            child: None,
        });
        let i = self.nodes.len() - 1;
        if !self.tls_dir(name).exists() {
            self.issue(&format!("node:{node_id}"), name);
        }
        self.start_node(i);
        i
    }

    /// Adds and starts a storage node with id `id` and extra flags (say,
    /// more `--data-dir`s beside its own).
    pub fn add_node_with(&mut self, id: &str, extra_args: &[&str]) -> usize {
        let addr = format!("127.0.0.1:{}", free_port());
        self.nodes.push(Node {
            id: id.to_string(),
            name: id.to_string(),
            addr,
            data_dir: self.data_root.join(id),
            admin_addr: format!("127.0.0.1:{}", free_port()),
            child: None,
        });
        let i = self.nodes.len() - 1;
        self.issue(&format!("node:{id}"), id);
        self.start_node_with(i, extra_args);
        i
    }

    /// Storage node settings (TOML) for nodes started from now on.
    pub fn set_storage_config(&self, toml: &str) {
        std::fs::write(self.dir.path().join("storage.toml"), toml).expect("write storage config");
    }

    pub fn start_node(&mut self, i: usize) {
        self.start_node_with(i, &[]);
    }

    /// Starts storage node `i` with extra command-line flags.
    pub fn start_node_with(&mut self, i: usize, extra_args: &[&str]) {
        let log = self.log_file(&self.nodes[i].name);
        let log2 = self.log_file(&self.nodes[i].name);
        let storage_config = self.dir.path().join("storage.toml");
        let n = &mut self.nodes[i];
        let mut cmd = Command::new(bin("bigfs-storage"));
        if storage_config.exists() {
            cmd.arg("--config").arg(&storage_config);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--listen")
            .arg(&n.addr)
            .arg("--metadata")
            .arg(&self.meta_addr)
            .arg("--node-id")
            .arg(&n.id)
            .arg("--admin-listen")
            .arg(&n.admin_addr)
            .arg("--tls-dir")
            .arg(self.tls.join(&n.name))
            .arg("--admin-token-file")
            .arg(self.tls.join("admin-token"))
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn bigfs-storage");
        track_child(&child);
        n.child = Some(child);
    }

    /// Kills storage node `i` with SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        kill_and_reap(self.nodes[i].child.take());
    }

    /// Kills every storage node and the metadata service with SIGKILL,
    /// all before waiting for any (as one power cut would stop them).
    pub fn kill_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        children.extend(self.meta_child.take());
        kill_and_reap(children);
    }

    /// Starts the metadata service and every node again (after
    /// [`kill_all`](Self::kill_all)) and waits until all nodes are up.
    pub async fn start_all(&mut self) {
        self.start_metadata();
        self.wait_metadata().await;
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        self.wait_nodes_up(self.nodes.len()).await;
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to storage node `i`, if it runs.
    pub fn signal_node(&self, i: usize, signal: libc::c_int) {
        if let Some(c) = &self.nodes[i].child {
            send_signal(c, signal);
        }
    }

    /// Sends `signal` to the metadata service, if it runs.
    pub fn signal_metadata(&self, signal: libc::c_int) {
        if let Some(c) = &self.meta_child {
            send_signal(c, signal);
        }
    }

    /// Waits (`timeout` at most) for storage node `i` to exit by itself;
    /// its exit status, or None if it still runs.
    pub async fn wait_node_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.nodes[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                untrack_child(child.id());
                self.nodes[i].child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Whether storage node `i` was started and not killed since.
    pub fn node_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Whether the metadata service was started and not killed since.
    pub fn metadata_running(&self) -> bool {
        self.meta_child.is_some()
    }

    /// The processes (`metadata`, node names) started and not killed by
    /// the test that have exited since, with how: an empty list means
    /// every daemon still runs.
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let procs = std::iter::once(("metadata".to_string(), &mut self.meta_child)).chain(
            self.nodes
                .iter_mut()
                .map(|n| (n.name.clone(), &mut n.child)),
        );
        for (name, child) in procs {
            if let Some(c) = child
                && let Ok(Some(status)) = c.try_wait()
            {
                out.push(format!("{name} ({status})"));
            }
        }
        out
    }

    pub async fn status(&self) -> pb::StatusReply {
        let mut c = bigfs_proto::metadata_client(&self.meta_addr).expect("client");
        c.status(pb::Empty {}).await.expect("status").into_inner()
    }

    /// Every referenced chunk has its Available copies on Up nodes, nothing
    /// queued, nothing pending.
    pub async fn healed(&self) -> bool {
        let s = self.status().await;
        s.under_replicated == 0 && s.lost == 0 && s.repair_pending == 0 && s.replicas_pending == 0
    }

    /// Waits until at least `n` nodes are up.
    pub async fn wait_nodes_up(&self, n: usize) {
        self.wait_for(Duration::from_secs(30), "storage nodes up", || async {
            let s = self.status().await;
            s.nodes
                .iter()
                .filter(|x| x.state == pb::NodeState::Up as i32)
                .count()
                >= n
        })
        .await;
    }

    /// Waits (30 s at most) until the metadata service sees node `i` as
    /// Down. A killed node still counts as Up until its heartbeats are
    /// missed, so its copies still count toward the replication factor.
    pub async fn wait_node_down(&self, i: usize) {
        let id = &self.nodes[i].id;
        self.wait_for(Duration::from_secs(30), &format!("{id} down"), || async {
            let s = self.status().await;
            s.nodes
                .iter()
                .any(|n| n.node_id == *id && n.state == pb::NodeState::Down as i32)
        })
        .await;
    }

    /// Polls `cond` every 100 ms until it holds; panics after `timeout`.
    pub async fn wait_for<F, Fut>(&self, timeout: Duration, what: &str, cond: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !cond().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client library connection with a short retry budget.
    pub async fn client(&self) -> Arc<Client> {
        let cfg = ClientConfig {
            metadata: self.meta_addr.clone(),
            retry: RetryConfig {
                max_retries: 4,
                base_delay_ms: 50,
                max_delay_ms: 500,
                multiplier: 2.0,
                attempt_timeout_ms: 5_000,
            },
            ..ClientConfig::default()
        };
        Client::connect(cfg).await.expect("connect client")
    }

    /// The `bigfs` CLI with `args`, pointed at this cluster, not started.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("bigfs"));
        cmd.arg("--metadata")
            .arg(&self.meta_addr)
            .arg("--tls-dir")
            .arg(self.tls_dir("cli"))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the `bigfs` CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run bigfs")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "bigfs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Chunk files stored on node `i`'s disk.
    pub fn chunk_files(&self, i: usize) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.nodes[i].data_dir.join("chunks");
        let Ok(dirs) = std::fs::read_dir(&root) else {
            return out;
        };
        for d in dirs.flatten() {
            if let Ok(files) = std::fs::read_dir(d.path()) {
                out.extend(files.flatten().map(|f| f.path()).filter(|p| p.is_file()));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        keep_if_panicking(&mut self.dir, "cluster logs");
    }
}

/// Gives a child `timeout` to exit by itself, then kills and reaps it.
fn reap_within(mut c: Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_and_reap([c]);
}

/// Detaches the mount at `dir`, if there is one, even if it is busy or dead.
fn lazy_unmount(dir: &Path) {
    if is_mounted(dir) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

/// Sends SIGKILL to every child, then waits for each.
pub(crate) fn kill_and_reap(children: impl IntoIterator<Item = Child>) {
    let mut children: Vec<Child> = children.into_iter().collect();
    for c in &mut children {
        let _ = c.kill();
    }
    for mut c in children {
        let _ = c.wait();
        untrack_child(c.id());
    }
}

/// In a test that is failing, or with `BIGFS_KEEP_LOGS` set, keeps `dir`
/// (logs, data) for whoever reads the output instead of deleting it.
pub(crate) fn keep_if_panicking(dir: &mut tempfile::TempDir, what: &str) {
    if std::thread::panicking() || std::env::var_os("BIGFS_KEEP_LOGS").is_some() {
        eprintln!("{what} kept in {}", dir.path().display());
        std::mem::forget(std::mem::replace(
            dir,
            tempfile::Builder::new()
                .prefix("bigfs-dummy-")
                .tempdir()
                .expect("tempdir"),
        ));
    }
}

pub(crate) fn send_signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid, which we have not waited for.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(r, 0, "kill({signal}) failed");
}

/// `len` pseudo-random bytes from `seed` (fast, reproducible).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Writes a whole buffer through the client library to `path`.
pub async fn write_file(client: &Client, path: &str, data: &[u8]) {
    let h = client.create_path(path, 0o644).await.expect("create");
    let step = 1 << 20;
    let mut off = 0;
    while off < data.len() {
        let end = (off + step).min(data.len());
        h.write(off as u64, &data[off..end]).await.expect("write");
        off = end;
    }
    h.flush().await.expect("flush");
}

/// Reads a whole file through the client library.
pub async fn read_file(client: &Client, path: &str) -> Vec<u8> {
    try_read_file(client, path).await.expect("read file")
}

/// Reads a whole file through the client library; the first error.
pub async fn try_read_file(client: &Client, path: &str) -> bigfs_client::Result<Vec<u8>> {
    let attr = client.resolve(path).await?;
    let h = client.open_attr(&attr)?;
    let mut out = Vec::with_capacity(attr.size as usize);
    loop {
        let d = h.read(out.len() as u64, 4 << 20).await?;
        if d.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&d);
    }
}

/// Parses Prometheus text format strictly enough to catch malformed output:
/// every sample line is `name{labels} value` with a float value and a name
/// declared by a `# TYPE` line. Returns (name with labels, value) pairs.
/// Empties the kernel's page, dentry and inode caches (needs root): the
/// next access goes to the mount.
pub fn drop_caches() {
    // Sync first so dirty pages of other file systems are not lost work.
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches (needs root)");
}

pub fn parse_prometheus(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().ok_or(format!("bad TYPE line {line:?}"))?;
            let kind = parts.next().ok_or(format!("bad TYPE line {line:?}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("bad metric type in {line:?}"));
            }
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or(format!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("bad value in {line:?}"))?;
        let name = series.split('{').next().unwrap_or_default();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("bad metric name in {line:?}"));
        }
        if series.contains('{') && !series.ends_with('}') {
            return Err(format!("unterminated labels in {line:?}"));
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| typed.contains(*b))
            .unwrap_or(name);
        if !typed.contains(base) {
            return Err(format!("{name} has no # TYPE line"));
        }
        out.push((series.to_string(), value));
    }
    Ok(out)
}

/// Sum of the samples of `name` whose labels contain every `label=value`.
pub fn metric_sum(samples: &[(String, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Client retry settings of test mounts: a short budget, so a read that no
/// replica can serve fails with EIO within a few seconds.
pub const TEST_MOUNT_CONFIG: &str = r#"
[client.retry]
max_retries = 3
base_delay_ms = 50
max_delay_ms = 300
multiplier = 2.0
attempt_timeout_ms = 2000
"#;

/// Mount options used by every test mount (later `extra_opts` override them).
pub const TEST_MOUNT_OPTS: &str =
    "attr_ttl_ms=200,entry_ttl_ms=200,cache_mb=64,write_buffer_mb=32,readahead_chunks=4,threads=4";

/// Runs `argv` as `uid`:`gid` (no supplementary groups) and returns its
/// stderr if it failed, None if it succeeded.
pub fn as_user(uid: u32, gid: u32, argv: &[&dyn AsRef<std::ffi::OsStr>]) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(argv[0]);
    for a in &argv[1..] {
        c.arg(a);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run a command as another user");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Whether `dir` is listed as a mount point in /proc/self/mountinfo.
pub fn is_mounted(dir: &Path) -> bool {
    let want = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A `bigfs-mount` daemon run in the foreground as a child process, with
/// its mount point and log in the cluster's temporary directory. Dropping it
/// unmounts and stops the daemon; drop mounts before their cluster.
pub struct Mount {
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Mounts `cluster` with the test options plus `extra_opts` (each one
    /// `-o` value, or a flag when it starts with `-`) and waits until the mount is up (20 s at most).
    pub fn new(cluster: &Cluster, extra_opts: &[&str]) -> Mount {
        Self::with_metadata(cluster, &cluster.meta_addr, extra_opts)
    }

    /// As [`Mount::new`], given `--metadata metadata` (a member list such
    /// as "dead:1,live:2") instead of the cluster's address.
    pub fn with_metadata(cluster: &Cluster, metadata: &str, extra_opts: &[&str]) -> Mount {
        Self::start(cluster, metadata, None, extra_opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Mount::new`], mounting as `client:<client>` (exports match
    /// that name); the error says why the mount did not come up.
    pub fn as_client(
        cluster: &Cluster,
        client: &str,
        extra_opts: &[&str],
    ) -> Result<Mount, String> {
        Self::start(
            cluster,
            &cluster.meta_addr,
            Some(format!("client:{client}")),
            extra_opts,
        )
    }

    /// As [`Mount::new`], mounting with an `admin:<name>` certificate
    /// (admin calls allowed, e.g. the `.trash` view).
    pub fn as_admin(cluster: &Cluster, name: &str, extra_opts: &[&str]) -> Mount {
        Self::start(
            cluster,
            &cluster.meta_addr,
            Some(format!("admin:{name}")),
            extra_opts,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn start(
        cluster: &Cluster,
        metadata: &str,
        identity: Option<String>,
        extra_opts: &[&str],
    ) -> Result<Mount, String> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = cluster.dir.path();
        let dir = base.join(format!("mnt-{n}"));
        std::fs::create_dir_all(&dir).expect("create mount point");
        let config = base.join(format!("mount-{n}.toml"));
        std::fs::write(&config, TEST_MOUNT_CONFIG).expect("write mount config");
        let log = base.join(format!("mount-{n}.log"));
        let log_file = std::fs::File::create(&log).expect("mount log");
        let tls = format!("mount-{n}");
        let identity = identity.unwrap_or_else(|| format!("client:mount-{n}"));
        cluster.issue(&identity, &tls);
        let mut cmd = Command::new(bin("bigfs-mount"));
        cmd.arg(&dir)
            .arg("--metadata")
            .arg(metadata)
            .arg("--tls-dir")
            .arg(cluster.tls_dir(&tls))
            .arg("--foreground")
            .arg("--config")
            .arg(&config)
            .arg("-o")
            .arg(TEST_MOUNT_OPTS);
        for o in extra_opts {
            if o.starts_with('-') {
                cmd.arg(o); // a flag such as mount(8)'s -v
            } else {
                cmd.arg("-o").arg(o);
            }
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("spawn bigfs-mount");
        track_child(&child);
        tracked().1.push(dir.clone());
        let mut m = Mount {
            dir,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&m.dir) {
            if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                m.child = None;
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                return Err(format!(
                    "bigfs-mount exited ({status}) before mounting; its log ({}):\n{log}",
                    m.log.display()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "bigfs-mount did not mount within 20 s; see {}",
                    m.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The daemon's process id (None once it has been waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the daemon to exit; panics otherwise.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().expect("wait bigfs-mount") {
                untrack_child(child.id());
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "bigfs-mount did not exit within {timeout:?}; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the daemon to exit: its status, or None
    /// if it is still running (it is left running).
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("daemon already stopped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().expect("wait bigfs-mount") {
                untrack_child(child.id());
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL and waits for it; the mount point is
    /// left behind (its calls fail with ENOTCONN) until the mount is dropped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            untrack_child(c.id());
        }
    }

    /// Sends SIGTERM to the daemon without waiting.
    pub fn sigterm(&self) {
        let pid = self.pid().expect("daemon already stopped");
        // SAFETY: plain kill(2) on our own child's pid.
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0, "kill(SIGTERM) failed");
    }

    /// Sends SIGTERM to the daemon and waits (30 s at most) for it to exit.
    pub fn unmount_with_sigterm(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_exit(Duration::from_secs(30))
    }

    /// `fusermount3 -u`, then waits (30 s at most) for the daemon to exit.
    pub fn unmount(&mut self) -> std::process::ExitStatus {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .output()
            .expect("run fusermount3");
        assert!(
            out.status.success(),
            "fusermount3 -u failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        if let Some(c) = self.child.take() {
            reap_within(c, Duration::from_secs(10));
        }
        lazy_unmount(&self.dir);
        tracked().1.retain(|d| *d != self.dir);
    }
}

/// renameat2(2) with `flags`; Err(errno) on failure.
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    let a =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(from.as_os_str())).unwrap();
    let b = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(to.as_os_str())).unwrap();
    // SAFETY: two valid NUL-terminated paths relative to the cwd.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}
