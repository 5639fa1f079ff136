//! Deployment: configuration files are checked at start (bad values and
//! unknown keys refused, naming the key; the shipped examples accepted), and
//! the install script lays out units that `systemd-analyze verify` accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bigfs_tests::{bin, deadline, free_port};

/// Time limit of each test here (see `bigfs_tests::deadline`): this file runs
/// in about 4 s on a loaded 2-core machine; the limit is ~8x that, as
/// systemd-analyze can be slow to start on a busy machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Runs `binary --config FILE` with `toml` as the file; expects a refusal
/// naming `key`.
fn assert_refused(binary: &str, toml: &str, key: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, toml).expect("write");
    let out = Command::new(bin(binary))
        .arg("--config")
        .arg(&cfg)
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{binary} accepted {toml:?}");
    assert!(
        stderr.contains(key),
        "{binary} refused {toml:?} without naming {key}: {stderr}"
    );
}

#[test]
fn configs_with_a_bad_value_or_an_unknown_key_are_refused_naming_the_key() {
    let _deadline = deadline(DEADLINE);
    let m = "bigfs-metadata";
    assert_refused(m, "replicaton = 2\n", "replicaton", &[]);
    assert_refused(m, "chunk_size = 1000\n", "chunk_size", &[]);
    assert_refused(m, "replication = \"three\"\n", "replication", &[]);
    assert_refused(m, "admin_listen = \"localhost\"\n", "admin_listen", &[]);
    assert_refused(m, "log_level = \"loud=[\"\n", "log_level", &[]);
    assert_refused(m, "admin_token = \"short\"\n", "admin_token", &[]);
    assert_refused(
        m,
        "",
        "admin_token_file",
        &["--admin-token-file", "/nonexistent"],
    );
    let s = "bigfs-storage";
    assert_refused(s, "bogus_key = 1\n", "bogus_key", &[]);
    assert_refused(s, "max_concurrent_puts = 0\n", "max_concurrent_puts", &[]);
    assert_refused(s, "[retry]\nmax_retires = 2\n", "max_retires", &[]);
    assert_refused(s, "admin_listen = \"x:y\"\n", "admin_listen", &[]);
    assert_refused(s, "admin_token = \"short\"\n", "admin_token", &[]);
    // A flag is checked like the file.
    assert_refused(m, "", "admin_listen", &["--admin-listen", "nope"]);
}

/// Starts `binary` with a shipped example config (ports overridden) and
/// checks it is still running after it had time to refuse its config.
fn assert_example_accepted(binary: &str, example: &str, extra: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(bin(binary))
        .arg("--config")
        .arg(repo().join("deploy/config").join(example))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            panic!(
                "{binary} refused deploy/config/{example} ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_shipped_example_configs_are_accepted() {
    let _deadline = deadline(DEADLINE);
    let port = |p: u16| format!("127.0.0.1:{p}");
    // The examples name TLS directories under /etc; certificates of a test
    // CA stand in for them.
    let tls = tempfile::tempdir().expect("tempdir");
    bigfs_tests::certs::write_ca(&tls.path().join("ca"));
    let dir = |identity: &str, name: &str| {
        let d = tls.path().join(name);
        bigfs_tests::certs::issue_into(&tls.path().join("ca"), identity, &d);
        d.display().to_string()
    };
    for example in ["metadata.toml", "storage.toml", "mount.toml"] {
        let text =
            std::fs::read_to_string(repo().join("deploy/config").join(example)).expect("example");
        assert!(
            text.contains("\ntls_dir = ") && !text.contains("\ninsecure = true"),
            "{example} does not use TLS"
        );
    }
    assert_example_accepted(
        "bigfs-metadata",
        "metadata.toml",
        &[
            "--tls-dir".into(),
            dir("meta:meta-1", "meta"),
            // The shipped exports file stands in for /etc/bigfs/exports.toml.
            "--exports".into(),
            repo()
                .join("deploy/config/exports.toml")
                .display()
                .to_string(),
            "--listen".into(),
            port(free_port()),
            "--admin-listen".into(),
            port(free_port()),
        ],
    );
    assert_example_accepted(
        "bigfs-storage",
        "storage.toml",
        &[
            "--tls-dir".into(),
            dir("node:disk1", "disk1"),
            "--listen".into(),
            port(free_port()),
            "--admin-listen".into(),
            port(free_port()),
            "--metadata".into(),
            port(free_port()),
        ],
    );
}

#[test]
fn installed_systemd_units_pass_systemd_analyze_verify() {
    let _deadline = deadline(DEADLINE);
    // A machine without it fails the test (scripts/install-deps.sh installs
    // Debian's `systemd`, which ships it).
    let found = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "systemd-analyze is not installed: run scripts/install-deps.sh"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let bin_dir = bin("bigfs-metadata")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let out = Command::new("sh")
        .arg(repo().join("deploy/install.sh"))
        .env("PREFIX", r.join("usr"))
        .env("SYSCONFDIR", r.join("etc"))
        .env("UNITDIR", r.join("units"))
        .env("SBINDIR", r.join("sbin"))
        .env("BINSRC", &bin_dir)
        .env("SYSTEM_SETUP", "no")
        .output()
        .expect("run install.sh");
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "usr/bin/bigfs-metadata",
        "usr/bin/bigfs-storage",
        "usr/bin/bigfs",
        "etc/bigfs/metadata.toml",
        "etc/bigfs/exports.toml",
        "etc/bigfs/storage.toml.example",
        "etc/bigfs/mount.toml",
        "sbin/mount.fuse.bigfs",
    ] {
        assert!(r.join(f).exists(), "install.sh did not install {f}");
    }
    let helper = std::fs::read_to_string(r.join("sbin/mount.fuse.bigfs")).expect("helper");
    assert!(
        helper.contains(&format!("exec {}/usr/bin/bigfs-mount", r.display())),
        "{helper}"
    );
    // The FUSE daemon may not be built in this tree; the unit needs a file
    // at its ExecStart path to verify.
    let mount = r.join("usr/bin/bigfs-mount");
    if !mount.exists() {
        std::fs::write(&mount, "#!/bin/sh\n").expect("stub");
        Command::new("chmod")
            .arg("+x")
            .arg(&mount)
            .status()
            .expect("chmod");
    }
    // Instances: a storage node "disk1" (its config must exist) and the
    // mount at /mnt/bigfs.
    std::fs::copy(
        r.join("etc/bigfs/storage.toml.example"),
        r.join("etc/bigfs/storage-disk1.toml"),
    )
    .expect("copy");
    let units = r.join("units");
    std::os::unix::fs::symlink(
        "bigfs-storage@.service",
        units.join("bigfs-storage@disk1.service"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(
        "bigfs-mount@.service",
        units.join("bigfs-mount@mnt-bigfs.service"),
    )
    .expect("symlink");
    for unit in [
        "bigfs-metadata.service",
        "bigfs-storage@disk1.service",
        "bigfs-mount@mnt-bigfs.service",
    ] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit");
        assert!(text.contains("Type=notify"), "{unit} is not Type=notify");
        assert!(text.contains("Restart=on-failure"), "{unit}");
        assert!(
            text.contains(&r.join("usr/bin").display().to_string()),
            "{unit} not rewritten"
        );
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg("--man=no")
            .arg(units.join(unit))
            .output()
            .expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {unit}: {stderr}"
        );
    }
    let storage = std::fs::read_to_string(units.join("bigfs-storage@.service")).expect("unit");
    for needed in [
        "User=bigfs",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "network-online.target",
    ] {
        assert!(
            storage.contains(needed),
            "bigfs-storage@.service lacks {needed}"
        );
    }
}
