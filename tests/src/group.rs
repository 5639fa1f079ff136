//! A metadata group of several `bigfs-metadata` members on loopback, for
//! the Raft tests: start, kill, wipe and restart members, find the leader,
//! cut a member off with iptables.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bigfs_proto::pb;

use crate::{
    bin, certs, free_port, keep_if_panicking, kill_and_reap, send_signal, track_child,
    untrack_child,
};

/// Metadata settings for group tests: quick elections and failure
/// detection.
const GROUP_META_CONFIG: &str = r#"
heartbeat_interval_ms = 300
suspect_after_ms = 1500
down_after_ms = 3000
snapshot_every = 200
[raft]
log_kept_after_snapshot = 50
"#;

pub struct Group {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<String>,
    children: Vec<Option<Child>>,
    peers: String,
    /// uid each member runs as (0: the test's own).
    uids: Vec<u32>,
    /// iptables rules added by `isolate`, removed by `heal_partition`.
    rules: Vec<Vec<String>>,
    /// Extra environment of every member (test faults).
    env: Vec<(String, String)>,
}

impl Group {
    /// Starts `n` members forming one group and waits for a leader.
    pub async fn start(n: usize) -> Group {
        Self::start_with(n, &[], &[]).await
    }

    /// As `start`, each member `i` running as `uids[i]` (if given) and
    /// with `env` in its environment.
    pub async fn start_with(n: usize, uids: &[u32], env: &[(&str, &str)]) -> Group {
        let dir = tempfile::Builder::new()
            .prefix("bigfs-test-group-")
            .tempdir()
            .expect("tempdir");
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(dir.path().join("metadata.toml"), GROUP_META_CONFIG).expect("config");
        // The test process's CA (shared with every Cluster of this process),
        // and a meta: certificate per member.
        certs::install_client();
        let ca = dir.path().join("tls").join("ca");
        certs::write_ca(&ca);
        for i in 0..n {
            let out = dir.path().join("tls").join(format!("meta{}", i + 1));
            certs::issue_into(&ca, &format!("meta:meta-{}", i + 1), &out);
        }
        let mut g = Group {
            dir,
            addrs,
            children: (0..n).map(|_| None).collect(),
            peers,
            uids: (0..n).map(|i| uids.get(i).copied().unwrap_or(0)).collect(),
            rules: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // Members running as other users must reach their data dirs.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(g.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        for i in 0..n {
            g.start_member(i);
        }
        g.wait_leader(Duration::from_secs(30)).await;
        g
    }

    /// All members' addresses, comma-separated (what clients are given).
    pub fn addr_list(&self) -> String {
        self.addrs.join(",")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("meta{}", i + 1))
    }

    /// Member `i`'s TLS directory (its `meta:` certificate).
    pub fn tls_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("tls").join(format!("meta{}", i + 1))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("meta{}.log", i + 1))
    }

    /// Runs member `i` as `uid` from its next start (for `isolate`).
    pub fn run_as(&mut self, i: usize, uid: u32) {
        self.uids[i] = uid;
    }

    pub fn start_member(&mut self, i: usize) {
        let data = self.data_dir(i);
        std::fs::create_dir_all(&data).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("log");
        let mut cmd = if self.uids[i] == 0 {
            Command::new(bin("bigfs-metadata"))
        } else {
            let uid = self.uids[i].to_string();
            let status = Command::new("chown")
                .args(["-R", &format!("{uid}:{uid}")])
                .arg(&data)
                .arg(self.tls_dir(i))
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the member's data dir");
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
                .arg(bin("bigfs-metadata"));
            c
        };
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--listen", &self.addrs[i], "--admin-listen", ""])
            .args(["--node-id", &(i + 1).to_string(), "--peers", &self.peers])
            .arg("--tls-dir")
            .arg(self.tls_dir(i))
            .arg("--config")
            .arg(self.dir.path().join("metadata.toml"))
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn bigfs-metadata");
        track_child(&child);
        self.children[i] = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        kill_and_reap(self.children[i].take());
    }

    /// SIGTERM, and waits for the member to exit.
    pub fn terminate(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            send_signal(&c, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    untrack_child(c.id());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            kill_and_reap(Some(c));
        }
    }

    pub fn running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// Member `i`'s own view of the group, if it answers.
    pub async fn status_of(&self, i: usize) -> Option<pb::MetaStatusReply> {
        let ch = bigfs_proto::channel(&self.addrs[i]).ok()?;
        let mut c = pb::admin_client::AdminClient::new(ch);
        let fut = c.meta_status(pb::Empty {});
        match tokio::time::timeout(Duration::from_secs(2), fut).await {
            Ok(Ok(r)) => Some(r.into_inner()),
            _ => None,
        }
    }

    /// The index of the member that leads, as a running member that says
    /// it is the leader reports it.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.addrs.len() {
            if !self.running(i) {
                continue;
            }
            if let Some(s) = self.status_of(i).await
                && s.state == "Leader"
            {
                return Some(s.id as usize - 1);
            }
        }
        None
    }

    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no metadata leader within {timeout:?}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until member `i` has applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status_of(i).await
                && s.applied_index >= index
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {} did not apply index {index} within {timeout:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A Metadata client to member `i` alone.
    pub fn client_of(
        &self,
        i: usize,
    ) -> pb::metadata_client::MetadataClient<tonic::transport::Channel> {
        pb::metadata_client::MetadataClient::new(
            bigfs_proto::channel(&self.addrs[i]).expect("channel"),
        )
    }

    fn port(&self, i: usize) -> String {
        self.addrs[i].rsplit(':').next().expect("port").to_string()
    }

    /// Cuts member `i` off from the other members by dropping their
    /// loopback traffic with iptables: nothing it sends reaches their
    /// ports, and nothing they send reaches its port. Clients (this test
    /// process, uid 0) still reach it. Member `i` must run as `member_uid`
    /// and the others as `others_uid` (see `run_as`).
    pub fn isolate(&mut self, i: usize, member_uid: u32, others_uid: u32) {
        let others: Vec<String> = (0..self.addrs.len())
            .filter(|j| *j != i)
            .map(|j| self.port(j))
            .collect();
        let rules = vec![
            drop_rule(
                member_uid,
                &["-m", "multiport", "--dports", &others.join(",")],
            ),
            drop_rule(others_uid, &["--dport", &self.port(i)]),
        ];
        for r in &rules {
            let st = Command::new("iptables")
                .arg("-I")
                .args(r)
                .status()
                .expect("iptables");
            assert!(st.success(), "iptables -I {r:?}");
        }
        self.rules.extend(rules);
    }

    /// Removes the rules `isolate` added.
    pub fn heal_partition(&mut self) {
        for r in self.rules.drain(..) {
            let _ = Command::new("iptables").arg("-D").args(&r).status();
        }
    }
}

/// An OUTPUT rule dropping loopback TCP sent by `uid` to the ports `dst`
/// names.
fn drop_rule(uid: u32, dst: &[&str]) -> Vec<String> {
    let mut r: Vec<String> = [
        "OUTPUT",
        "-o",
        "lo",
        "-p",
        "tcp",
        "-m",
        "owner",
        "--uid-owner",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    r.push(uid.to_string());
    r.extend(dst.iter().map(|s| s.to_string()));
    r.extend(["-j".to_string(), "DROP".to_string()]);
    r
}

impl Drop for Group {
    fn drop(&mut self) {
        self.heal_partition();
        for i in 0..self.children.len() {
            self.kill(i);
        }
        keep_if_panicking(&mut self.dir, "metadata group");
    }
}
