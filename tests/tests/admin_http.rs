//! The admin HTTP servers on a live cluster: every endpoint answers with the
//! right content, `/metrics` is Prometheus text whose counters move with
//! traffic, a killed node shows as down, the status page renders in
//! headless Chromium, and only an admin certificate or the admin token
//! opens the pages (HTTPS with TLS, plain HTTP with `--insecure`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bigfs_tests::admin_http::http_get_as;
use bigfs_tests::{
    ADMIN_TOKEN, AdminAuth, Cluster, TrackedChild, bin, deadline, free_port, http_get, metric_sum,
    parse_prometheus, random_bytes, read_file, write_file,
};
use serde_json::Value;

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 10 s on a loaded 2-core machine; the limit is ~6x that.
const DEADLINE: Duration = Duration::from_secs(60);

fn get_json(c: &Cluster, addr: &str, path: &str) -> Value {
    let (code, body) = c.admin_get(addr, path).expect("GET");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
}

fn metrics(c: &Cluster, addr: &str) -> Vec<(String, f64)> {
    let (code, body) = c.admin_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    parse_prometheus(&body)
        .unwrap_or_else(|e| panic!("/metrics of {addr} is not Prometheus text: {e}\n{body}"))
}

fn node_state(nodes: &Value, id: &str) -> String {
    nodes
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["node_id"] == id)
        .map(|n| n["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_and_a_killed_node_shows_as_down() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(3).await;
    let meta = c.meta_admin_addr.clone();
    let node1 = c.nodes[0].admin_addr.clone();

    let before_meta = metrics(&c, &meta);
    let before_node = metrics(&c, &node1);
    c.cli_ok(&["mkdir", "/dir"]);
    let client = c.client().await;
    write_file(&client, "/dir/a", &random_bytes(5 << 20, 1)).await;
    // The write was answered at the quorum of 2: let the third copies land.
    c.wait_for(Duration::from_secs(30), "the third copies", || c.healed())
        .await;
    let reader = c.client().await;
    assert_eq!(read_file(&reader, "/dir/a").await.len(), 5 << 20);

    assert_eq!(
        c.admin_get(&meta, "/healthz").unwrap(),
        (200, "ok\n".to_string())
    );
    let (code, body) = c.admin_get(&node1, "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok node-1\n"));

    let nodes = get_json(&c, &meta, "/nodes");
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    for n in nodes.as_array().unwrap() {
        assert_eq!(n["state"], "up", "{n}");
        assert!(n["capacity"].as_u64().unwrap() > 0, "{n}");
        assert!(n["last_heartbeat_ms_ago"].as_u64().unwrap() < 3000, "{n}");
    }
    let check = get_json(&c, &meta, "/nodes/check");
    assert!(
        check
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["reachable"] == true),
        "{check}"
    );

    let files = get_json(&c, &meta, "/files");
    assert_eq!(files["total"], 1);
    let f = &files["files"][0];
    assert_eq!(
        (f["path"].as_str(), f["size"].as_u64(), f["chunks"].as_u64()),
        (Some("/dir/a"), Some(5 << 20), Some(2))
    );
    assert_eq!(f["status"], "healthy");
    assert_eq!(get_json(&c, &meta, "/files?prefix=/other")["total"], 0);
    assert_eq!(get_json(&c, &meta, "/replication-queue")["length"], 0);
    assert!(get_json(&c, &meta, "/failures")["recent"].is_array());
    let summary = get_json(&c, &meta, "/summary");
    assert_eq!(summary["files"], 1);
    let (code, page) = c.admin_get(&meta, "/").unwrap();
    assert!(code == 200 && page.contains("<title>BigFS status</title>"));

    // Counters moved with the traffic.
    let after_meta = metrics(&c, &meta);
    let commits = |m: &[(String, f64)]| {
        metric_sum(
            m,
            "bigfs_grpc_requests_total",
            &[("method", "CommitLayout")],
        )
    };
    assert!(
        commits(&after_meta) > commits(&before_meta),
        "CommitLayout not counted"
    );
    assert!(
        metric_sum(
            &after_meta,
            "bigfs_grpc_request_duration_seconds_count",
            &[("method", "GetLayout")]
        ) > 0.0
    );
    assert_eq!(
        metric_sum(&after_meta, "bigfs_nodes", &[("state", "up")]),
        3.0
    );
    assert_eq!(metric_sum(&after_meta, "bigfs_files", &[]), 1.0);
    let after_node = metrics(&c, &node1);
    let put =
        |m: &[(String, f64)]| metric_sum(m, "bigfs_storage_chunk_bytes_total", &[("op", "put")]);
    let got =
        |m: &[(String, f64)]| metric_sum(m, "bigfs_storage_chunk_bytes_total", &[("op", "get")]);
    assert!(
        put(&after_node) > put(&before_node),
        "node-1 put bytes did not move"
    );
    let total_get: f64 = c
        .nodes
        .iter()
        .map(|n| got(&metrics(&c, &n.admin_addr)))
        .sum();
    assert!(
        total_get >= (5 << 20) as f64,
        "reads not counted: {total_get}"
    );
    assert!(metric_sum(&after_node, "bigfs_storage_chunks", &[]) >= 2.0);

    // Kill node-3: down on /nodes, unreachable on /nodes/check, chunks
    // under-replicated on /files and /replication-queue.
    c.kill_node(2);
    c.wait_for(Duration::from_secs(15), "node-3 down on /nodes", || {
        let nodes = get_json(&c, &meta, "/nodes");
        async move { node_state(&nodes, "node-3") == "down" }
    })
    .await;
    let check = get_json(&c, &meta, "/nodes/check");
    let n3 = check
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == "node-3")
        .unwrap()
        .clone();
    assert_eq!(n3["reachable"], false, "{n3}");
    assert_eq!(
        get_json(&c, &meta, "/files")["files"][0]["status"],
        "under_replicated"
    );
    let q = get_json(&c, &meta, "/replication-queue");
    assert_eq!(q["length"], 2, "{q}");
    assert_eq!(
        metric_sum(&metrics(&c, &meta), "bigfs_under_replicated_chunks", &[]),
        2.0
    );
}

/// Chromium's binary; a machine without one fails the test
/// (scripts/install-deps.sh installs Debian's `chromium`).
fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed: run scripts/install-deps.sh")
}

/// Runs headless Chromium on `url`: `--dump-dom` after the page's script
/// ran, or a screenshot to `png`.
fn headless(browser: &str, url: &str, png: Option<&Path>) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,900",
        // The admin HTTPS certificate is signed by the test cluster's CA,
        // which this browser profile does not know.
        "--ignore-certificate-errors",
        // Let the page fetch /summary and render before the snapshot.
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match png {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_shows_three_nodes_in_headless_chromium() {
    let _deadline = deadline(DEADLINE);
    let browser = chromium();
    let mut c = Cluster::start(3).await;
    let client = c.client().await;
    write_file(&client, "/report.bin", &random_bytes(9 << 20, 3)).await;
    c.wait_for(Duration::from_secs(30), "the third copies", || c.healed())
        .await;
    // The token rides in the fragment, which the browser never sends; the
    // page's script passes it on as `Authorization: Bearer` to /summary.
    let url = format!("https://{}/#token={ADMIN_TOKEN}", c.meta_admin_addr);

    let dom = headless(browser, &url, None);
    // Rendered rows only (the script holds the row template too).
    assert_eq!(
        dom.matches("<tr class=\"node\" data-node=\"node-").count(),
        3,
        "{dom}"
    );
    for id in ["node-1", "node-2", "node-3"] {
        assert!(
            dom.contains(&format!("data-node=\"{id}\" data-state=\"up\"")),
            "{id} not up: {dom}"
        );
    }
    assert!(dom.contains("healthy · 3/3 nodes up"), "{dom}");

    // Kill node-3 and report a failure, as a client would.
    c.kill_node(2);
    let mut md = bigfs_proto::metadata_client(&c.meta_addr).expect("client");
    md.report_failure(bigfs_proto::pb::ReportFailureRequest {
        node_id: "node-3".into(),
        chunk_id: vec![],
        operation: "read".into(),
        error: "connection refused".into(),
        reporter: "status-page-test".into(),
    })
    .await
    .expect("report failure");
    c.wait_node_down(2).await;
    let dom = headless(browser, &url, None);
    assert!(
        dom.contains("data-node=\"node-3\" data-state=\"down\""),
        "{dom}"
    );
    assert!(dom.contains("degraded · 2/3 nodes up"), "{dom}");
    assert!(
        dom.contains("connection refused"),
        "failure not shown: {dom}"
    );

    // The screenshot goes to the cluster's temp dir; set BIGFS_SCREENSHOT to
    // a path (e.g. docs/status-page.png) to keep it.
    let png = std::env::var_os("BIGFS_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| c.dir.path().join("status-page.png"));
    std::fs::create_dir_all(png.parent().unwrap()).expect("docs dir");
    headless(browser, &url, Some(&png));
    let bytes = std::fs::read(&png).expect("screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "screenshot is not a PNG"
    );
}

/// What an admin page answers to a GET made with `auth` (0: the TLS
/// handshake itself was refused).
fn status_as(c: &Cluster, addr: &str, path: &str, auth: AdminAuth<'_>) -> u16 {
    match c.admin_get_as(addr, path, auth) {
        Ok((code, _)) => code,
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_admin_certificate_or_the_token_opens_the_admin_pages() {
    let _deadline = deadline(DEADLINE);
    let c = Cluster::start(1).await;
    c.issue("client:snoop", "snoop");
    c.issue("admin:ops", "ops");
    let other_ca = tempfile::tempdir().expect("tempdir");
    bigfs_proto::certs::init_ca(other_ca.path(), "elsewhere").expect("other CA");
    bigfs_proto::certs::issue(
        other_ca.path(),
        &bigfs_proto::auth::Identity::parse("admin:ops").unwrap(),
        &[],
        1,
    )
    .expect("issue")
    .write_tls_dir(&other_ca.path().join("ops"), other_ca.path())
    .expect("TLS dir");

    let pages = [
        (c.meta_admin_addr.clone(), "/metrics"),
        (c.meta_admin_addr.clone(), "/nodes"),
        (c.meta_admin_addr.clone(), "/summary"),
        (c.nodes[0].admin_addr.clone(), "/metrics"),
    ];
    for (addr, path) in &pages {
        let at = format!("{addr}{path}");
        let (code, body) = c.admin_get_as(addr, path, AdminAuth::Nothing).unwrap();
        assert_eq!(code, 401, "{at} without anything: {body}");
        assert!(body.contains("authentication required"), "{at}: {body}");
        assert_eq!(body.lines().count(), 1, "{at}: a one-line reason: {body}");
        let (code, body) = c
            .admin_get_as(addr, path, AdminAuth::Cert(&c.tls_dir("snoop")))
            .unwrap();
        assert_eq!(code, 401, "{at} with a client: certificate: {body}");
        assert!(body.contains("client:snoop may not"), "{at}: {body}");
        assert_eq!(
            status_as(&c, addr, path, AdminAuth::Cert(&c.tls_dir("ops"))),
            200,
            "{at} with an admin: certificate"
        );
        assert_eq!(
            status_as(&c, addr, path, AdminAuth::Token(ADMIN_TOKEN)),
            200,
            "{at} with the token"
        );
        let (code, body) = c
            .admin_get_as(
                addr,
                path,
                AdminAuth::Token("test-admin-token-0123456789abcdeX"),
            )
            .unwrap();
        assert_eq!((code, body.as_str()), (401, "wrong bearer token\n"), "{at}");
        // An admin certificate from another CA does not even connect.
        assert_eq!(
            status_as(
                &c,
                addr,
                path,
                AdminAuth::Cert(&other_ca.path().join("ops"))
            ),
            0,
            "{at} with another CA's certificate"
        );
        // Plain HTTP to the HTTPS port gets nothing.
        assert!(
            !matches!(http_get(addr, path), Ok((200, _))),
            "{at} over plain HTTP"
        );
    }
    // Probes stay open: a bare "ok" for systemd and load balancers.
    for addr in [&c.meta_admin_addr, &c.nodes[0].admin_addr] {
        assert_eq!(status_as(&c, addr, "/healthz", AdminAuth::Nothing), 200);
    }
    let meta_log = std::fs::read_to_string(c.log_path("metadata")).unwrap_or_default();
    assert!(
        meta_log.contains("admin HTTP request refused"),
        "refusals are logged"
    );
}

/// Starts a metadata service run `--insecure` with `extra` flags; its
/// admin address and log path.
fn insecure_metadata(dir: &Path, name: &str, extra: &[&str]) -> (TrackedChild, String, String) {
    let admin = format!("127.0.0.1:{}", free_port());
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = TrackedChild::spawn(
        Command::new(bin("bigfs-metadata"))
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--admin-listen")
            .arg(&admin)
            .arg("--insecure")
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file),
    );
    (child, admin, log.display().to_string())
}

fn wait_http(addr: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !matches!(http_get(addr, "/healthz"), Ok((200, _))) {
        assert!(std::time::Instant::now() < until, "{addr} never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_admin_http_still_needs_the_token_when_one_is_set() {
    let _deadline = deadline(DEADLINE);
    let dir = tempfile::Builder::new()
        .prefix("bigfs-test-")
        .tempdir()
        .expect("tempdir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let token_arg = token_file.display().to_string();

    let (_with, admin, _) = insecure_metadata(
        dir.path(),
        "with-token",
        &["--admin-token-file", &token_arg],
    );
    wait_http(&admin);
    let (code, body) = http_get(&admin, "/metrics").unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, _) = http_get_as(&admin, "/metrics", AdminAuth::Token(ADMIN_TOKEN)).unwrap();
    assert_eq!(code, 200);
    let (code, body) = http_get_as(
        &admin,
        "/metrics",
        AdminAuth::Token("wrong-token-0123456789"),
    )
    .unwrap();
    assert_eq!((code, body.as_str()), (401, "wrong bearer token\n"));

    let (_open, admin, log) = insecure_metadata(dir.path(), "open", &[]);
    wait_http(&admin);
    assert_eq!(http_get(&admin, "/metrics").unwrap().0, 200);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("without TLS and without admin_token: every page is open"),
        "{text}"
    );
}
