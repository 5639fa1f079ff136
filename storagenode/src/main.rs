//! `bigfs-storage`: a BigFS storage node.

use std::path::PathBuf;
use std::process::ExitCode;

use bigfs_storagenode::Config;
use clap::Parser;

/// A BigFS storage node: stores chunks and replicates them to peers.
#[derive(Debug, Parser)]
#[command(name = "bigfs-storage", version)]
struct Args {
    /// TOML configuration file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (one per disk) for chunk files and the pinned node
    /// id; repeat it or separate with commas for several disks.
    #[arg(long, value_delimiter = ',')]
    data_dir: Vec<PathBuf>,
    /// Address to listen on (ip:port). Default 127.0.0.1:9500.
    #[arg(long)]
    listen: Option<String>,
    /// Metadata members, comma separated (host:port,host:port,...); the
    /// node finds the leader. Default 127.0.0.1:9400.
    #[arg(long)]
    metadata: Option<String>,
    /// This node's id. Default: pinned in <data-dir>/node_id, else generated.
    #[arg(long)]
    node_id: Option<String>,
    /// host:port peers use to reach this node. Default: the listen address.
    #[arg(long)]
    advertise: Option<String>,
    /// Admin HTTP address (/healthz, /metrics); "" disables it.
    #[arg(long)]
    admin_listen: Option<String>,
    /// File whose first line is the bearer token of /metrics.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Log level or filter, e.g. info or debug (RUST_LOG overrides it).
    #[arg(long)]
    log_level: Option<String>,
    /// Accept this start's chunk inventory as the truth, even though it
    /// lacks most of the copies listed for this node (a replaced disk): the
    /// missing copies are unlisted and made again elsewhere. Without it such
    /// a registration is refused and the node exits.
    #[arg(long)]
    accept_inventory: bool,
    /// Use every data directory without a .bigfs-disk marker as a new,
    /// empty disk (after adding or replacing a disk). Without it such a
    /// directory beside marked ones is a bad disk (not mounted?).
    #[arg(long)]
    init_disks: bool,
    /// Directory with ca.pem, cert.pem, key.pem (a node:<id> certificate).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Run without TLS or authentication (only on a trusted network).
    #[arg(long)]
    insecure: bool,
}

fn load(args: Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    match args.data_dir.len() {
        0 => {}
        1 => {
            config.data_dir = args.data_dir[0].clone();
            config.data_dirs.clear();
        }
        _ => {
            config.data_dir = PathBuf::new();
            config.data_dirs = args.data_dir;
        }
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.metadata {
        config.metadata = v;
    }
    if let Some(v) = args.node_id {
        config.node_id = Some(v);
    }
    if let Some(v) = args.advertise {
        config.advertise = Some(v);
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(f) = args.admin_token_file {
        config.admin_token = None;
        config.admin_token_file = Some(f);
    }
    if let Some(v) = args.log_level {
        config.log_level = v;
    }
    config.accept_inventory = args.accept_inventory;
    config.init_disks = args.init_disks;
    if let Some(v) = args.tls_dir {
        config.tls_dir = Some(v);
    }
    config.insecure |= args.insecure;
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    let config = match load(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bigfs-storage: {e}");
            return ExitCode::from(2);
        }
    };
    bigfs_proto::daemon::init_logging(&config.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bigfs-storage: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bigfs_storagenode::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "storage node failed");
            eprintln!("bigfs-storage: {e:#}");
            ExitCode::FAILURE
        }
    }
}
