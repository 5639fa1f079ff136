//! `bigfs-mount` run the way fstab and a shell run it: detached with
//! `--background`, logging to `--log-file`, serving Prometheus `/metrics`
//! on `-o admin_listen`, and exiting when unmounted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bigfs_tests::{
    ADMIN_TOKEN, AdminAuth, Cluster, TEST_MOUNT_CONFIG, bin, deadline, free_port, http_get,
    is_mounted, metric_sum, parse_prometheus, random_bytes,
};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 2 s on a loaded 2-core machine; the limit is 60 s at least, room
/// for Cluster::start's own 20 s + 30 s waits.
const DEADLINE: Duration = Duration::from_secs(60);

/// The mount's `/metrics`, read with the admin token it was given.
fn scrape(c: &Cluster, addr: &str) -> Vec<(String, f64)> {
    let (code, body) = c
        .admin_get_as(addr, "/metrics", AdminAuth::Token(ADMIN_TOKEN))
        .expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    parse_prometheus(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_mount_logs_to_its_file_serves_metrics_and_exits_on_umount() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(3).await;
    let base = c.dir.path();
    let mnt = base.join("bg-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let config = base.join("bg-mount.toml");
    std::fs::write(&config, TEST_MOUNT_CONFIG).unwrap();
    let log = base.join("bg-mount.log");
    let admin = format!("127.0.0.1:{}", free_port());

    // The command returns once the file system is mounted.
    let out = Command::new(bin("bigfs-mount"))
        .arg(&mnt)
        .arg("--metadata")
        .arg(&c.meta_addr)
        .arg("--background")
        .arg("--tls-dir")
        .arg(c.tls_dir("cli"))
        .arg("--config")
        .arg(&config)
        .arg("--log-file")
        .arg(&log)
        .arg("-o")
        .arg(format!("admin_listen={admin}"))
        .arg("-o")
        .arg(format!(
            "admin_token_file={}",
            c.tls.join("admin-token").display()
        ))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run bigfs-mount");
    assert!(
        out.status.success(),
        "bigfs-mount --background: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&mnt), "not mounted when the command returned");

    let data = random_bytes(5 << 20, 77);
    std::fs::write(mnt.join("f"), &data).unwrap();
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), data);

    // The daemon's counters move with the traffic it carried.
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        match c.admin_get_as(&admin, "/healthz", AdminAuth::Nothing) {
            Ok((200, _)) => break scrape(&c, &admin),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("mount admin port {admin} never answered: {other:?}"),
        }
    };
    let (code, body) = c
        .admin_get_as(&admin, "/metrics", AdminAuth::Nothing)
        .expect("GET /metrics");
    assert_eq!(code, 401, "the mount's /metrics without a token: {body}");
    let written = metric_sum(&samples, "bigfs_client_bytes_written_total", &[]);
    assert!(written >= data.len() as f64, "bytes written {written}");
    assert!(metric_sum(&samples, "bigfs_client_chunk_ops_total", &[]) >= 2.0);
    assert_eq!(
        metric_sum(&samples, "bigfs_client_chunk_ops_failed_total", &[]),
        0.0
    );

    // Unmounting ends the daemon: its admin port closes.
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(&admin, "/healthz").is_ok() {
        assert!(
            Instant::now() < deadline,
            "daemon still running after umount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("mounted"),
        "log file has no mount line:\n{text}"
    );
    assert!(!text.contains("ERROR"), "errors in the daemon log:\n{text}");
}

/// kill -9 of the daemon: whatever `close` or `fsync` acknowledged is on
/// the cluster; a fresh mount reads it byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_daemon_loses_nothing_close_or_fsync_acknowledged() {
    let _deadline = deadline(DEADLINE);
    use std::io::Write;
    let c = Cluster::start(3).await;
    let mut m = bigfs_tests::Mount::new(&c, &[]);
    let closed = random_bytes(3 << 20, 78);
    std::fs::write(m.path().join("closed"), &closed).unwrap();
    let synced = random_bytes(9 << 20, 79);
    let mut open = std::fs::File::create(m.path().join("synced")).unwrap();
    open.write_all(&synced).unwrap();
    open.sync_all().unwrap();
    // More bytes after the fsync: these may be lost, the synced ones not.
    open.write_all(&random_bytes(1 << 20, 80)).unwrap();

    let pid = m.pid().expect("daemon running") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    m.try_wait_exit(Duration::from_secs(10))
        .expect("daemon still alive after SIGKILL");
    drop(open);

    let fresh = bigfs_tests::Mount::new(&c, &[]);
    assert!(std::fs::read(fresh.path().join("closed")).unwrap() == closed);
    let got = std::fs::read(fresh.path().join("synced")).unwrap();
    assert!(
        got.len() >= synced.len(),
        "synced file shrank to {}",
        got.len()
    );
    assert!(got[..synced.len()] == synced[..], "fsync'd bytes differ");
}
