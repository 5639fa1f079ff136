//! kill -9 the real binary mid-stream: every answered mutation survives.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bigfs_proto::pb;

/// Time limit of the test: it runs in about 1 s on a loaded 2-core machine;
/// 60 s leaves room for the service's start-up waits.
const DEADLINE: Duration = Duration::from_secs(60);

/// The spawned service, killed with SIGKILL when dropped: a test that fails
/// or runs past its deadline leaves no process behind.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &std::path::Path, port: u16) -> Service {
    let child = Command::new(env!("CARGO_BIN_EXE_bigfs-metadata"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        // No admin HTTP port: it could collide with another cluster here.
        .arg("--admin-listen")
        .arg("")
        .arg("--insecure")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Service(child)
}

/// A free port below the ephemeral range, so no outgoing connection can
/// take it between the check and the server's bind.
fn free_port() -> u16 {
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    (0..10_000u16)
        .map(|i| 20_000 + (start - 20_000 + i) % 10_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 30000")
}

async fn client(port: u16) -> bigfs_proto::MetaClient {
    let c = bigfs_proto::metadata_client(&format!("127.0.0.1:{port}")).unwrap();
    for _ in 0..100 {
        let mut probe = c.clone();
        if probe.get_attr(pb::InodeRequest { ino: 1 }).await.is_ok() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metadata service did not come up");
}

#[tokio::test]
async fn answered_mutations_survive_kill_9() {
    tokio::time::timeout(DEADLINE, kill_9_and_look_up_every_answered_create())
        .await
        .expect("the test ran past its deadline");
}

async fn kill_9_and_look_up_every_answered_create() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let service = spawn(dir.path(), port);
    let mut c = client(port).await;
    let mut answered = Vec::new();
    for i in 0..50 {
        let name = format!("f{i}");
        let attr = c
            .create(pb::CreateRequest {
                parent: 1,
                name: name.clone(),
                kind: pb::FileKind::File as i32,
                mode: 0o644,
                exclusive: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .attr
            .unwrap();
        answered.push((name, attr.ino));
    }
    drop(service); // SIGKILL

    let _service = spawn(dir.path(), port);
    let mut c = client(port).await;
    for (name, ino) in &answered {
        let got = c
            .lookup(pb::LookupRequest {
                parent: 1,
                name: name.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .attr
            .unwrap();
        assert_eq!(got.ino, *ino, "{name}");
    }
}
