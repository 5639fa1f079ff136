//! `bigfs-mount`: mounts a BigFS cluster as an ordinary directory.
//!
//! `bigfs-mount MOUNTPOINT --metadata HOST:PORT[,HOST:PORT...] [-o OPTIONS]
//! [--background]` or, as fstab's helper (`mount.fuse.bigfs`),
//! `bigfs-mount bigfs#HOST:PORT[,HOST:PORT...] MOUNTPOINT -o OPTIONS`.
//! With several metadata members the mount follows their leader.
//!
//! SIGTERM, SIGINT, `umount` and `fusermount3 -u` flush every buffered
//! write to the cluster before the daemon exits.
//! Exit codes: 0 clean unmount, 1 runtime failure, 2 bad usage or
//! configuration, 3 the cluster cannot be reached.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigfs_client::Client;
use bigfs_client::atime::AtimeMode;
use bigfs_client::fuse_fs::BigFs;
use bigfs_client::mount_config::MountConfig;
use bigfs_client::permissions::Squash;
use clap::Parser;
use fuser::{MountOption, SessionACL};

#[derive(Parser, Debug)]
#[command(
    name = "bigfs-mount",
    version,
    about = "Mount a BigFS cluster as a directory"
)]
struct Args {
    /// `[SOURCE] MOUNTPOINT`; SOURCE is `bigfs#HOST:PORT[,HOST:PORT...]`
    /// or the list alone (as fstab passes it) and stands in for --metadata.
    #[arg(num_args = 1..=2, required = true)]
    positional: Vec<String>,
    /// Metadata members, comma separated (host:port,host:port,...).
    #[arg(long, env = "BIGFS_METADATA")]
    metadata: Option<String>,
    /// Mount options, comma separated (ro, allow_other, cache_mb=N, ...).
    #[arg(short = 'o', action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// Configuration file (TOML); defaults to /etc/bigfs/mount.toml if it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stay in the foreground (the default when run by systemd).
    #[arg(short = 'f', long, conflicts_with = "background")]
    foreground: bool,
    /// Detach once mounted (the default from a terminal or fstab).
    #[arg(long)]
    background: bool,
    /// Where a background daemon writes its log.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Directory with ca.pem, cert.pem, key.pem (a client: certificate).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Talk to a cluster run with --insecure: no TLS, no certificate.
    #[arg(long)]
    insecure: bool,
    /// Say what is mounted (mount(8) passes its -v on to the helper).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Accepted from mount(8) (do not write /etc/mtab): nothing to do.
    #[arg(short = 'n', hide = true)]
    no_mtab: bool,
    /// Sloppy: warn about unknown -o options instead of refusing them
    /// (mount(8) passes on its -s).
    #[arg(short = 's', long)]
    sloppy: bool,
}

const DEFAULT_CONFIG: &str = "/etc/bigfs/mount.toml";

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("bigfs-mount: {msg}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (source, mountpoint) = match args.positional.as_slice() {
        [m] => (None, PathBuf::from(m)),
        [s, m] => (Some(s.as_str()), PathBuf::from(m)),
        _ => return fail(2, "usage: bigfs-mount [SOURCE] MOUNTPOINT"),
    };
    let mut cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    if let Some(s) = source {
        cfg.apply_source(s);
    }
    if let Some(m) = &args.metadata {
        cfg.client.metadata = m.clone();
    }
    for o in &args.options {
        match cfg.apply_options_sloppy(o, args.sloppy) {
            Ok(unknown) => {
                for u in unknown {
                    eprintln!("bigfs-mount: unknown mount option {u:?} ignored (-s)");
                }
            }
            Err(e) => return fail(2, e),
        }
    }
    if let Some(d) = &args.tls_dir {
        cfg.tls_dir = Some(d.clone());
    }
    cfg.insecure |= args.insecure;
    if let Err(e) = cfg.validate() {
        return fail(2, e);
    }
    let security = match bigfs_proto::tls::Security::from_settings(
        "bigfs-mount",
        cfg.tls_dir.as_deref(),
        cfg.insecure,
    ) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    security.install_client();
    match std::fs::metadata(&mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return fail(2, format!("{}: not a directory", mountpoint.display())),
        Err(e) => return fail(2, format!("{}: {e}", mountpoint.display())),
    }
    if is_mounted(&mountpoint) {
        return fail(
            2,
            format!(
                "{}: something is already mounted there",
                mountpoint.display()
            ),
        );
    }
    // Background unless asked otherwise or run by systemd (which wants the
    // main process to stay).
    let background =
        args.background || (!args.foreground && std::env::var_os("INVOCATION_ID").is_none());
    if args.verbose {
        eprintln!(
            "bigfs-mount: mounting {} on {} ({})",
            cfg.source(),
            mountpoint.display(),
            if cfg.read_only { "ro" } else { "rw" }
        );
    }
    if background {
        return spawn_background(&args, &mountpoint);
    }
    run_foreground(cfg, &security, &mountpoint, args.log_file.as_deref())
}

fn load_config(path: Option<&Path>) -> Result<MountConfig, String> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(MountConfig::default()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether `dir` is a mount point (listed in /proc/self/mountinfo).
fn is_mounted(dir: &Path) -> bool {
    let Ok(canon) = dir.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Runs this program again in the foreground, detached, and waits until the
/// mount is up (or the child has failed and said why).
fn spawn_background(args: &Args, mountpoint: &Path) -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        return fail(1, "cannot find my own executable");
    };
    let log = match &args.log_file {
        Some(p) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Stdio::from(f),
            Err(e) => return fail(2, format!("{}: {e}", p.display())),
        },
        None => Stdio::null(),
    };
    let err_path = std::env::temp_dir().join(format!("bigfs-mount-{}.err", std::process::id()));
    let Ok(err_file) = std::fs::File::create(&err_path) else {
        return fail(1, "cannot create a temp file");
    };
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1).filter(|a| a != "--background"))
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_file);
    // SAFETY: setsid only detaches the child from our session; it is
    // async-signal-safe and has no preconditions.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(1, format!("cannot start the daemon: {e}")),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if is_mounted(mountpoint) {
            let _ = std::fs::remove_file(&err_path);
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let msg = std::fs::read_to_string(&err_path).unwrap_or_default();
            let _ = std::fs::remove_file(&err_path);
            eprint!("{msg}");
            return ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8);
        }
        if Instant::now() > deadline {
            let _ = std::fs::remove_file(&err_path);
            return fail(1, "the daemon did not mount within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Points file descriptor 2 at the log file, so what the runtime writes to
/// stderr (a panic message) lands in the daemon's log.
fn stderr_to(log: &std::fs::File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: dup2 onto fd 2 of a descriptor we own and keep open.
    unsafe { libc::dup2(log.as_raw_fd(), 2) };
}

fn run_foreground(
    mut cfg: MountConfig,
    security: &bigfs_proto::tls::Security,
    mountpoint: &Path,
    log_file: Option<&Path>,
) -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false);
    // The log goes to --log-file when given (a background daemon's stderr
    // is only for the reason it failed to mount), else to stderr.
    let log = match log_file.map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| format!("log file {}: {e}", p.display()))
    }) {
        Some(Ok((writer, f))) => {
            logs.with_writer(std::sync::Mutex::new(writer)).init();
            Some(f)
        }
        Some(Err(e)) => return fail(2, e),
        None => {
            logs.with_writer(std::io::stderr).init();
            None
        }
    };
    security.log_start("bigfs-mount");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bigfs-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    let client = match rt.block_on(Client::connect(cfg.client_config())) {
        Ok(c) => c,
        Err(e) => return fail(3, e),
    };
    let squash = match rt.block_on(client.export()) {
        Ok(export) => {
            if export.read_only && !cfg.read_only {
                tracing::info!(path = %export.path, "the export is read-only: mounting read-only");
                cfg.read_only = true;
            }
            if export.path != "/" || export.squash != "none" {
                tracing::info!(
                    path = %export.path,
                    squash = %export.squash,
                    "mounting the export granted to this client"
                );
            }
            let squash = Squash::from_export(&export);
            if squash.is_some_and(|s| s.all) {
                // Every caller acts as the anonymous user: the mount checks
                // permissions itself, the kernel would check the real ids.
                cfg.default_permissions = false;
            }
            squash
        }
        Err(e) => return fail(3, format!("the metadata service refuses this mount: {e}")),
    };
    let fs = BigFs::new(Arc::clone(&client), rt.handle().clone(), cfg.clone()).with_squash(squash);
    let open = fs.open_files();
    let lock_session = fs.lock_session();
    let notifier_slot = fs.notifier_slot();

    let mut options = vec![
        MountOption::FSName(cfg.source()),
        // fusermount takes the subtype from this; a mount by root goes
        // straight to the kernel, which takes it from the option below.
        // Either way `mount` shows the type as fuse.bigfs.
        MountOption::Subtype("bigfs".into()),
        MountOption::CUSTOM("subtype=bigfs".into()),
    ];
    for (on, flag) in [
        (cfg.noexec, MountOption::NoExec),
        (cfg.nosuid, MountOption::NoSuid),
        (!cfg.nosuid, MountOption::Suid),
        (cfg.nodev, MountOption::NoDev),
        (!cfg.nodev, MountOption::Dev),
        (cfg.sync, MountOption::Sync),
        (cfg.dirsync, MountOption::DirSync),
        (cfg.atime == AtimeMode::NoAtime, MountOption::NoAtime),
    ] {
        if on {
            options.push(flag);
        }
    }
    if cfg.default_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    if cfg.read_only {
        options.push(MountOption::RO);
    }
    if cfg.auto_unmount {
        options.push(MountOption::AutoUnmount);
    }
    let mut fuse_cfg = fuser::Config::default();
    fuse_cfg.mount_options = options;
    fuse_cfg.acl = if cfg.allow_other || cfg.auto_unmount {
        SessionACL::All
    } else if cfg.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    fuse_cfg.n_threads = Some(cfg.threads);
    fuse_cfg.clone_fd = true;

    let mut session = match fuser::Session::new(fs, mountpoint, &fuse_cfg) {
        Ok(s) => s,
        Err(e) => return fail(1, format!("mount {}: {e}", mountpoint.display())),
    };
    let _ = notifier_slot.set(session.notifier());
    let mut unmounter = session.unmount_callable();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let session_thread = std::thread::spawn(move || {
        let r = session.run();
        let _ = done_tx.send(());
        r
    });
    tracing::info!(mountpoint = %mountpoint.display(), metadata = %cfg.client.metadata, meta_wait = ?cfg.meta_wait(), "mounted");
    notify_ready();
    // Mounted: from now on a panic message belongs in the log too.
    if let Some(f) = &log {
        stderr_to(f);
    }

    // admin_listen was checked with the configuration; the port is optional.
    if let Ok(addr) = bigfs_proto::daemon::parse_admin_listen(&cfg.admin_listen)
        && let Some(l) = rt.block_on(bigfs_proto::daemon::bind_admin(addr))
    {
        // The token was checked with the configuration.
        let access = bigfs_proto::admin_http::Access::new(
            security,
            cfg.admin_token().ok().flatten(),
            bigfs_client::metrics_http::OPEN_PATHS,
        );
        rt.spawn(bigfs_client::metrics_http::serve(
            l,
            Arc::clone(&client),
            security.clone(),
            access,
            std::future::pending(),
        ));
    }

    // Keep files that are unlinked while open alive on the metadata service.
    let lease = Duration::from_millis(cfg.open_lease_ms);
    let renew_client = Arc::clone(&client);
    let renew_open = Arc::clone(&open);
    rt.spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            let inos = renew_open.open_inodes();
            if !inos.is_empty()
                && let Err(e) = renew_client
                    .keep_inodes(inos, lease.as_millis() as u64)
                    .await
            {
                tracing::warn!(error = %e, "renewing open-file leases failed");
            }
        }
    });

    // Keep this mount's file locks alive on the metadata service.
    if let Some(l) = lock_session {
        rt.spawn(l.run_renewal());
    }

    // Wait for a signal or an external unmount.
    let signalled = rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return false,
            };
        let ended = tokio::task::spawn_blocking(move || done_rx.recv());
        tokio::select! {
            _ = term.recv() => true,
            _ = tokio::signal::ctrl_c() => true,
            _ = ended => false,
        }
    });
    if signalled {
        tracing::info!("signal received: flushing buffered writes, then unmounting");
        rt.block_on(async {
            for h in open.all() {
                if let Err(e) = h.flush().await {
                    tracing::error!(ino = h.ino(), error = %e, "flush before unmount failed");
                }
            }
        });
        if let Err(e) = unmounter.unmount() {
            // Files are still open. Everything they wrote is flushed; detach
            // the mount and exit: closing /dev/fuse ends the connection, so
            // their next call fails instead of hanging a shutdown.
            tracing::warn!(error = %e, "unmount refused (files still open); detaching lazily");
            let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
            log_metrics(&client);
            std::process::exit(0);
        }
    }
    let result = session_thread.join();
    log_metrics(&client);
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => fail(1, format!("session ended with an error: {e}")),
        Err(_) => fail(1, "session thread panicked"),
    }
}

/// One closing line with the transfer figures of this mount's life.
fn log_metrics(client: &Client) {
    let m = client.metrics();
    tracing::info!(
        ops = m.ops,
        first_try_success_rate = m.first_try_success_rate,
        mean_attempts = m.mean_attempts,
        failovers = m.failovers,
        worst_nodes = ?m.worst_nodes.iter().take(3).collect::<Vec<_>>(),
        "unmounted"
    );
}

/// Tells systemd (Type=notify) that the mount is up, when run under it.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let p = path.to_string_lossy().to_string();
    let _ = if let Some(abstract_name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", &p)
    };
}
