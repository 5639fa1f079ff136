//! Every `bigfs` command ends quietly when the reader of its output goes
//! away (`bigfs ls | head`): killed by SIGPIPE like `ls`, with no panic
//! message or backtrace on standard error.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use bigfs_tests::{Cluster, random_bytes, write_file};

/// Runs the CLI with its standard output a pipe whose reader is already
/// closed, so its first write fails with EPIPE.
fn into_closed_pipe(c: &Cluster, args: &[&str]) -> std::process::Output {
    // The reader is closed before the child starts, so no write of the
    // child's can land in the pipe first, however the two are scheduled.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    c.cli_command(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bigfs")
        .wait_with_output()
        .expect("wait for bigfs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_dies_of_sigpipe_silently_when_its_reader_is_gone() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    let c = Cluster::start(1).await;
    let client = c.client().await;
    write_file(&client, "/f", &random_bytes(3 << 20, 1)).await;

    for args in [
        &["ls", "/"][..],
        &["ls", "-l", "/"],
        &["--json", "ls", "/"],
        &["cat", "/f"],
        &["get", "/f", "-"],
        &["stat", "/f"],
        &["status"],
        &["admin", "nodes"],
        &["admin", "queue"],
        &["admin", "fsck"],
    ] {
        let out = into_closed_pipe(&c, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "bigfs {args:?} ended with {} instead of SIGPIPE; stderr: {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "bigfs {args:?} wrote: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn output_into_head_ends_without_an_error_message() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    let c = Cluster::start(1).await;
    let client = c.client().await;
    // Both outputs exceed a pipe's 64 KiB buffer, so `bigfs` is still
    // writing when `head` exits: 400 names of 200 bytes, and 3 MiB.
    for i in 0..400 {
        let name = format!("{i:04}{}", "x".repeat(196));
        client
            .create_file(client.root(), &name, 0o644, true)
            .await
            .expect("create");
    }
    write_file(&client, "/f", &random_bytes(3 << 20, 2)).await;
    let bigfs = format!(
        "{} --metadata {} --tls-dir {}",
        bigfs_tests::bin("bigfs").display(),
        c.meta_addr,
        c.tls_dir("cli").display()
    );
    for (pipeline, lines) in [
        (format!("{bigfs} ls / | head -1"), 1),
        (format!("{bigfs} cat /f | head -c 100 | wc -c"), 1),
    ] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&pipeline)
            .output()
            .expect("run sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{pipeline}: {stderr}"
        );
        assert!(stderr.is_empty(), "{pipeline}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), lines, "{pipeline}: {stdout}");
    }
}
