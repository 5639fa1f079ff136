//! `bigfs-lossyfs BACKING MOUNTPOINT --control SOCKET`: mounts the lossy
//! file system and serves power cuts on a unix socket. A client writes one
//! line `cut SEED KEEP_PERCENT`; the answer is one line
//! `cut files=F pages=P kept=K`, after which the process exits and leaves
//! the mount dead (unmount it, then mount again to "reboot"). The line
//! `fail` makes the disk die in place instead: every operation answers EIO
//! (answer `failing`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use anyhow::Context;
use bigfs_lossyfs::fs::LossyFs;
use clap::Parser;

#[derive(Parser)]
#[command(about = "FUSE passthrough that loses unsynced writes on a power cut")]
struct Args {
    /// The directory that plays the disk.
    backing: PathBuf,
    /// Where to mount.
    mountpoint: PathBuf,
    /// Unix socket on which power cuts are asked for.
    #[arg(long)]
    control: PathBuf,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let fs = LossyFs::new(&args.backing)
        .with_context(|| format!("opening backing directory {}", args.backing.display()))?;
    let _ = std::fs::remove_file(&args.control);
    let listener = UnixListener::bind(&args.control)
        .with_context(|| format!("binding control socket {}", args.control.display()))?;
    let control_fs = fs.clone();
    std::thread::spawn(move || serve_control(listener, control_fs));

    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("bigfs-lossyfs".into()),
        fuser::MountOption::Subtype("lossyfs".into()),
    ];
    cfg.n_threads = Some(args.threads.max(1));
    cfg.clone_fd = true;
    let session = fuser::Session::new(fs, &args.mountpoint, &cfg)
        .with_context(|| format!("mounting {}", args.mountpoint.display()))?;
    tracing::info!(backing = %args.backing.display(), mountpoint = %args.mountpoint.display(), "mounted");
    session.run().context("serving the mount")?;
    Ok(())
}

fn serve_control(listener: UnixListener, fs: LossyFs) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = handle(stream, &fs) {
                    tracing::warn!(error = %e, "control request failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
        }
    }
}

fn handle(stream: UnixStream, fs: &LossyFs) -> anyhow::Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    if words == ["fail"] {
        fs.fail();
        tracing::warn!("disk failing: every operation answers EIO from now on");
        let mut out = &stream;
        writeln!(out, "failing")?;
        return Ok(out.flush()?);
    }
    let ["cut", seed, keep] = words.as_slice() else {
        anyhow::bail!("unknown control request {line:?}");
    };
    let seed: u64 = seed.parse().context("seed")?;
    let keep: u32 = keep.parse().context("keep percent")?;
    let s = fs.power_cut(seed, keep)?;
    tracing::warn!(
        seed,
        keep_percent = keep,
        files = s.files,
        pages = s.pages,
        kept = s.kept,
        "power cut"
    );
    let mut out = &stream;
    writeln!(
        out,
        "cut files={} pages={} kept={}",
        s.files, s.pages, s.kept
    )?;
    out.flush()?;
    // The power is off: nothing more reaches the disk, and the kernel sees
    // the file system vanish.
    std::process::exit(0);
}
