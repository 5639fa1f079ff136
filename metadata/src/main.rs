//! `bigfs-metadata --data-dir DIR --listen ADDR [--node-id N --peers 1=A,2=B,3=C] [--config FILE]`

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
    /// File whose first line is the bearer token of the admin HTTP pages.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Log level or filter, e.g. info or debug (RUST_LOG overrides it).
    #[arg(long)]
    log_level: Option<String>,
    /// This member's id in the metadata group (default 1).
    #[arg(long)]
    node_id: Option<u64>,
    /// The group's members: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT (this one
    /// included). Without it the member forms a group of one.
    #[arg(long)]
    peers: Option<String>,
    /// Join a running group as a new member (added with `bigfs admin meta
    /// add`) instead of forming one.
    #[arg(long)]
    join: bool,
    /// Directory with ca.pem, cert.pem, key.pem (a meta: certificate).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Run without TLS or authentication (only on a trusted network).
    #[arg(long)]
    insecure: bool,
    /// The exports file (who may mount what); re-read on SIGHUP.
    #[arg(long)]
    exports: Option<PathBuf>,
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
    if let Some(f) = args.admin_token_file {
        config.admin_token = None;
        config.admin_token_file = Some(f);
    }
    if let Some(l) = args.log_level {
        config.log_level = l;
    }
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(p) = args.peers {
        config.peers = p;
    }
    if args.join {
        config.join = true;
    }
    if let Some(d) = args.tls_dir {
        config.tls_dir = Some(d);
    }
    config.insecure |= args.insecure;
    if let Some(x) = args.exports {
        config.exports_file = Some(x);
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    // openraft logs every failed heartbeat to a down member, twice a
    // second: keep its warnings, not that stream (our own leadership and
    // membership changes are logged by bigfs_metadata).
    let filter = if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!(
            "{},openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off",
            config.log_level
        )
    };
    bigfs_proto::daemon::init_logging(&filter);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        runtime.worker_threads(config.threads);
    }
    runtime
        .enable_all()
        .build()?
        .block_on(bigfs_metadata::run(config))
}
