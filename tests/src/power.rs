//! A disk whose power a test can cut: a `bigfs-lossyfs` mount (see that
//! crate) over a backing directory. Data written to it and not fsync'd is
//! lost at a cut, as on a real machine; SIGKILL alone cannot show that.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, is_mounted, keep_if_panicking, lazy_unmount, reap_within, track_child, tracked};

/// A lossy mount in a temporary directory of its own. Drop it after every
/// process that uses it (declare it before the `Cluster`).
pub struct LossyDisk {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl LossyDisk {
    /// Mounts an empty lossy disk and waits until it is up (20 s at most).
    pub fn mount() -> LossyDisk {
        let dir = tempfile::Builder::new()
            .prefix("bigfs-disk-")
            .tempdir()
            .expect("tempdir");
        for d in ["backing", "disk"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("create disk dirs");
        }
        tracked().1.push(dir.path().join("disk"));
        let mut d = LossyDisk { dir, child: None };
        d.power_on();
        d
    }

    /// Where the disk is mounted: put data directories under it.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("disk")
    }

    /// The directory that plays the disk's platters.
    pub fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// The lossy file system's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("lossyfs.log")
    }

    /// Mounts the disk again over what survived (after a cut).
    pub fn power_on(&mut self) {
        assert!(self.child.is_none(), "the disk is already powered");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("lossyfs log");
        let child = Command::new(bin("bigfs-lossyfs"))
            .arg(self.backing())
            .arg(self.path())
            .arg("--control")
            .arg(self.control())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("lossyfs log"))
            .stderr(log)
            .spawn()
            .expect("spawn bigfs-lossyfs");
        track_child(&child);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.path()) || !self.control().exists() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "bigfs-lossyfs exited ({status}) before mounting; see {}",
                    self.log_path().display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "bigfs-lossyfs did not mount within 20 s; see {}",
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cuts the power: every unsynced page is lost, except that each one
    /// reaches the disk with probability `keep_percent`, chosen by `seed`.
    /// Stop every process that uses the disk first. Returns the lossy file
    /// system's summary (`cut files=.. pages=.. kept=..`). Call
    /// [`power_on`](Self::power_on) to use the disk again.
    pub fn power_cut(&mut self, seed: u64, keep_percent: u32) -> String {
        let answer = self.ask(&format!("cut {seed} {keep_percent}"));
        assert!(
            answer.starts_with("cut "),
            "power cut refused ({answer:?}); see {}",
            self.log_path().display()
        );
        self.stop();
        answer.trim().to_string()
    }

    /// Sends one control line; answers the reply line.
    fn ask(&self, line: &str) -> String {
        let mut s = UnixStream::connect(self.control()).expect("connect to lossyfs control");
        writeln!(s, "{line}").expect("send a control line");
        let mut answer = String::new();
        BufReader::new(&s)
            .read_line(&mut answer)
            .expect("read the control answer");
        answer
    }

    /// Makes the disk fail in place: every operation on it answers EIO from
    /// now on, as a dying drive does (the mount stays).
    pub fn fail(&self) {
        let answer = self.ask("fail");
        assert_eq!(
            answer.trim(),
            "failing",
            "see {}",
            self.log_path().display()
        );
    }

    /// Waits for the (exiting or killed) daemon and unmounts the dead mount.
    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            reap_within(c, Duration::from_secs(10));
        }
        lazy_unmount(&self.path());
    }
}

impl Drop for LossyDisk {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
        }
        self.stop();
        let mount = self.path();
        tracked().1.retain(|d| *d != mount);
        keep_if_panicking(&mut self.dir, "lossy disk");
    }
}
