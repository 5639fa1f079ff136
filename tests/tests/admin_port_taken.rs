//! The admin HTTP port is optional: a daemon that cannot bind it (a second
//! daemon on the machine with the default port) warns, says how to pick
//! another, and serves its real work without it.

use std::process::Command;
use std::time::Duration;

use bigfs_tests::{
    Cluster, Mount, TrackedChild, bin, free_port, random_bytes, read_file, write_file,
};

/// The warning every daemon logs when its admin port is taken.
fn not_started(addr: &str) -> String {
    format!("admin HTTP not started: cannot listen on {addr}")
}

fn log_of(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_storage_node_on_a_taken_admin_port_still_registers_and_serves() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    let mut c = Cluster::start(1).await;
    let shared = c.nodes[0].admin_addr.clone();
    let i = c.add_node("node-2");
    c.kill_node(i);
    c.nodes[i].admin_addr = shared.clone();
    c.start_node(i);
    c.wait_nodes_up(2).await;

    // A write needs both nodes (replication 3, quorum 2 of the 2 up).
    let client = c.client().await;
    let data = random_bytes(1 << 20, 5);
    write_file(&client, "/f", &data).await;
    assert_eq!(read_file(&client, "/f").await, data);
    assert_eq!(c.chunk_files(i).len(), 1, "node-2 stored its copy");

    let log = log_of(&c.log_path("node-2"));
    assert!(log.contains(&not_started(&shared)), "node-2 log: {log}");
    assert!(log.contains("Set admin_listen"), "node-2 log: {log}");
    let (code, body) = c.admin_get(&shared, "/healthz").expect("GET /healthz");
    assert_eq!((code, body.trim()), (200, "ok node-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_metadata_service_on_a_taken_admin_port_still_serves() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    let c = Cluster::start(0).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let log = c.dir.path().join("metadata-2.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let _second = TrackedChild::spawn(
        Command::new(bin("bigfs-metadata"))
            .arg("--data-dir")
            .arg(c.dir.path().join("meta-2"))
            .arg("--listen")
            .arg(&addr)
            .arg("--admin-listen")
            .arg(&c.meta_admin_addr)
            .arg("--tls-dir")
            .arg(c.tls_dir("meta"))
            .env("RUST_LOG", "info")
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file),
    );
    let log = log.to_str().expect("utf-8 path").to_string();
    c.wait_for(
        Duration::from_secs(20),
        "the second metadata service",
        || async {
            match bigfs_proto::metadata_client(&addr) {
                Ok(mut m) => m.status(bigfs_proto::pb::Empty {}).await.is_ok(),
                Err(_) => false,
            }
        },
    )
    .await;
    let text = log_of(&log);
    assert!(text.contains(&not_started(&c.meta_admin_addr)), "{text}");
    let (code, _) = c
        .admin_get(&c.meta_admin_addr, "/healthz")
        .expect("GET /healthz");
    assert_eq!(code, 200, "the first service keeps its admin port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_on_a_taken_admin_port_still_mounts() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    let c = Cluster::start(2).await;
    let taken = c.meta_admin_addr.clone();
    let m = Mount::new(&c, &[&format!("admin_listen={taken}")]);
    std::fs::write(m.path().join("f"), b"hello").expect("write through the mount");
    assert_eq!(std::fs::read(m.path().join("f")).expect("read"), b"hello");
    let log = std::fs::read_to_string(m.log_path()).unwrap_or_default();
    assert!(log.contains(&not_started(&taken)), "{log}");
}
