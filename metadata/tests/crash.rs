//! kill -9 the real binary mid-stream: every answered mutation survives.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bigfs_proto::pb;

fn spawn(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bigfs-metadata"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        // No admin HTTP port: it could collide with another cluster here.
        .arg("--admin-listen")
        .arg("")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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

async fn client(
    port: u16,
) -> bigfs_proto::pb::metadata_client::MetadataClient<tonic::transport::Channel> {
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
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
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
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let mut child = spawn(dir.path(), port);
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
    child.kill().unwrap();
    child.wait().unwrap();
}
