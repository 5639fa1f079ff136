//! The metadata service on a full disk: a change that cannot be logged is
//! refused with ENOSPC and leaves nothing half done; once there is space
//! again it goes on, and a kill -9 and restart keeps exactly the changes
//! that were answered.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bigfs_tests::{Cluster, deadline};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 2 s on a loaded 2-core machine; the limit is 60 s at least, room
/// for Cluster::start's own 20 s + 30 s waits.
const DEADLINE: Duration = Duration::from_secs(60);

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_metadata_disk_answers_enospc_and_loses_no_answered_change() {
    let _deadline = deadline(DEADLINE);
    let mut c = Cluster::start(0).await;
    // The metadata service again, now on a 1 MiB file system.
    c.kill_metadata();
    let disk = Tmpfs::mount(&c.dir.path().join("meta"), "1m");
    c.start_metadata();
    c.wait_metadata().await;

    let client = c.client().await;
    let d = client.mkdir(1, "d", 0o755).await.unwrap().ino;
    let long = "x".repeat(200);
    let mut made = Vec::new();
    let err = loop {
        let name = format!("{long}{}", made.len());
        match client.mkdir(d, &name, 0o755).await {
            Ok(_) => made.push(name),
            Err(e) => break e,
        }
        assert!(made.len() < 100_000, "the disk never filled");
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    assert!(err.to_string().contains("metadata disk is full"), "{err}");
    assert!(made.len() > 100, "only {} directories fit", made.len());

    // Space again: it goes on without a restart.
    disk.resize("8m");
    client
        .mkdir(d, "after", 0o755)
        .await
        .expect("mkdir with space again");
    made.push("after".into());

    // Every answered mkdir survives kill -9, and nothing else appears.
    c.kill_metadata();
    c.start_metadata();
    c.wait_metadata().await;
    let client = c.client().await;
    let mut listed: Vec<String> = client
        .readdir_all(d)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    listed.sort();
    made.sort();
    assert_eq!(listed, made);
    c.kill_metadata();
}
