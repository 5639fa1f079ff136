//! A mount rides out a metadata service that is away: calls wait for it
//! (`meta_wait`, default 60 s) instead of failing with EIO, fail with EIO
//! once `meta_wait` has passed, and a member list whose first address is
//! dead still serves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bigfs_tests::{Cluster, Mount, deadline, free_port, metric_sum, parse_prometheus};

/// How long the metadata service stays away in the pause test: longer than
/// the old retry budget (~3 s with the test retry policy) by far, well
/// inside the default meta_wait of 60 s.
const AWAY: Duration = Duration::from_secs(8);

/// One `ls`, `stat` and `touch` on the mount, each in its own thread,
/// started now: their outcomes and how long each took.
fn ops_in_threads(
    root: &Path,
) -> Vec<std::thread::JoinHandle<(&'static str, std::io::Result<()>, Duration)>> {
    let ls = root.join("d");
    let stat = root.join("d/f");
    let touch = root.join("d/new");
    let run = |name: &'static str, p: PathBuf, op: fn(&Path) -> std::io::Result<()>| {
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = op(&p);
            (name, r, t.elapsed())
        })
    };
    vec![
        run("ls", ls, |p| {
            std::fs::read_dir(p)?
                .collect::<std::io::Result<Vec<_>>>()
                .map(drop)
        }),
        run("stat", stat, |p| std::fs::metadata(p).map(drop)),
        run("touch", touch, |p| std::fs::File::create(p).map(drop)),
    ]
}

/// Lets the kernel's attribute and entry caches (200 ms in test mounts)
/// expire, so the next operations ask the metadata service.
fn let_caches_expire() {
    std::thread::sleep(Duration::from_millis(500));
}

fn scrape(c: &Cluster, addr: &str) -> Vec<(String, f64)> {
    let (code, body) = c.admin_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    parse_prometheus(&body).expect("Prometheus text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_restart_is_a_pause_not_eio() {
    let _deadline = deadline(Duration::from_secs(90));
    let mut c = Cluster::start(1).await;
    let admin = format!("127.0.0.1:{}", free_port());
    let m = Mount::new(&c, &[&format!("admin_listen={admin}")]);
    std::fs::create_dir(m.path().join("d")).unwrap();
    std::fs::write(m.path().join("d/f"), b"x").unwrap();

    c.kill_metadata();
    let_caches_expire();
    let started = Instant::now();
    let ops = ops_in_threads(m.path());
    tokio::time::sleep(AWAY).await;
    c.start_metadata();
    c.wait_metadata().await;
    for op in ops {
        let (name, r, took) = op.join().expect("op thread");
        assert!(r.is_ok(), "{name} failed after {took:?}: {r:?}");
        assert!(
            took >= AWAY - Duration::from_secs(1),
            "{name} answered in {took:?}, before the service was back"
        );
    }
    assert!(started.elapsed() < AWAY + Duration::from_secs(15));
    assert!(m.path().join("d/new").exists(), "touch created the file");

    let samples = scrape(&c, &admin);
    assert!(metric_sum(&samples, "bigfs_client_meta_waits_total", &[]) >= 3.0);
    assert!(metric_sum(&samples, "bigfs_client_meta_wait_seconds_total", &[]) >= 3.0 * 6.0);
    assert_eq!(
        metric_sum(&samples, "bigfs_client_meta_wait_gave_up_total", &[]),
        0.0
    );
    let log = std::fs::read_to_string(m.log_path()).unwrap();
    assert_eq!(
        log.matches("metadata calls wait for it").count(),
        1,
        "one warn per outage:\n{log}"
    );
    assert_eq!(
        log.matches("metadata service answers again").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_meta_wait_calls_fail_with_eio() {
    let _deadline = deadline(Duration::from_secs(60));
    let mut c = Cluster::start(1).await;
    let m = Mount::new(&c, &["meta_wait=2"]);
    std::fs::create_dir(m.path().join("d")).unwrap();
    std::fs::write(m.path().join("d/f"), b"x").unwrap();

    c.kill_metadata();
    let_caches_expire();
    for op in ops_in_threads(m.path()) {
        let (name, r, took) = op.join().expect("op thread");
        let e = r.expect_err(name);
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}");
        assert!(
            took >= Duration::from_millis(1_800) && took < Duration::from_secs(6),
            "{name} failed after {took:?}, not after about 2 s"
        );
    }
    // The mount serves again once the service is back.
    c.start_metadata();
    c.wait_metadata().await;
    assert!(std::fs::metadata(m.path().join("d/f")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_metadata_address_is_skipped() {
    let _deadline = deadline(Duration::from_secs(60));
    let c = Cluster::start(3).await;
    let dead = format!("127.0.0.1:{}", free_port());
    let m = Mount::with_metadata(&c, &format!("{dead},{}", c.meta_addr), &[]);
    let data = bigfs_tests::random_bytes(5 << 20, 91);
    std::fs::create_dir(m.path().join("d")).unwrap();
    std::fs::write(m.path().join("d/f"), &data).unwrap();
    std::fs::rename(m.path().join("d/f"), m.path().join("d/g")).unwrap();
    let names: Vec<_> = std::fs::read_dir(m.path().join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["g"]);
    let fresh = Mount::with_metadata(&c, &format!("{dead},{}", c.meta_addr), &[]);
    assert_eq!(std::fs::read(fresh.path().join("d/g")).unwrap(), data);
    // The CLI takes the same list.
    let out = std::process::Command::new(bigfs_tests::bin("bigfs"))
        .args([
            "--metadata",
            &format!("{dead},{}", c.meta_addr),
            "--tls-dir",
        ])
        .arg(c.tls_dir("cli"))
        .args(["ls", "/d"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains('g'));
}
