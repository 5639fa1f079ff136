//! `bigfs-metadata --data-dir DIR --listen ADDR [--config FILE]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bigfs_metadata::Config;
use clap::Parser;

/// The BigFS metadata service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; the flags below override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the metadata database (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address, e.g. 127.0.0.1:9400.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin HTTP address (status page, /metrics); "" disables it.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Log level or filter, e.g. info or debug (RUST_LOG overrides it).
    #[arg(long)]
    log_level: Option<String>,
    /// Directory with ca.pem, cert.pem, key.pem (a meta: certificate).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Run without TLS or authentication (only on a trusted network).
    #[arg(long)]
    insecure: bool,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bigfs-metadata: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(a) = args.admin_listen {
        config.admin_listen = a;
    }
    if let Some(l) = args.log_level {
        config.log_level = l;
    }
    if let Some(d) = args.tls_dir {
        config.tls_dir = Some(d);
    }
    config.insecure |= args.insecure;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    bigfs_proto::daemon::init_logging(&config.log_level);
    tokio::runtime::Runtime::new()?.block_on(bigfs_metadata::run(config))
}
