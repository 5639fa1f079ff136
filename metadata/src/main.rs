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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    tokio::runtime::Runtime::new()?.block_on(bigfs_metadata::run(config))
}
