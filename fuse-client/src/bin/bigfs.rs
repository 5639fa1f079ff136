//! `bigfs`: transfer files to and from a BigFS cluster and inspect it.
//!
//! Exit codes: 0 success, 1 the operation failed (the message says why),
//! 2 bad usage, 3 the metadata service cannot be reached.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bigfs_client::client::split_path;
use bigfs_client::meta_wait::MetaWait;
use bigfs_client::{Client, ClientConfig, ClientError};
use bigfs_proto::{errno, pb};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "bigfs/admin.rs"]
mod admin;
#[path = "bigfs/certs.rs"]
mod certs;
#[path = "bigfs/failure.rs"]
mod failure;
#[path = "bigfs/fsck.rs"]
mod fsck;
#[path = "bigfs/output.rs"]
mod output;
#[path = "bigfs/settings.rs"]
mod settings;
#[path = "bigfs/trash.rs"]
mod trash;

use crate::failure::{Failure, at, errno_failure, errno_words};
use crate::output::{out, outln};

#[derive(Parser)]
#[command(
    name = "bigfs",
    version,
    about = "Transfer files to and from a BigFS cluster and inspect it"
)]
struct Cli {
    /// Metadata members, comma separated (host:port,host:port,...).
    #[arg(long, env = "BIGFS_METADATA", global = true)]
    metadata: Option<String>,
    /// Client configuration file (TOML, keys of ClientConfig).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Machine-readable output where it applies.
    #[arg(long, global = true)]
    json: bool,
    /// Directory with ca.pem, cert.pem, key.pem (a client: or admin:
    /// certificate) for mutual TLS with the cluster.
    #[arg(long, env = "BIGFS_TLS_DIR", global = true)]
    tls_dir: Option<PathBuf>,
    /// Talk to a cluster run with --insecure: no TLS, no certificate.
    #[arg(long, env = "BIGFS_INSECURE", global = true)]
    insecure: bool,
    /// Seconds a command waits for a metadata leader (an election, a
    /// restart) before it fails. Default: 30 with several members (an
    /// election takes a few seconds), 0 (a few quick retries) with one.
    #[arg(long, env = "BIGFS_META_WAIT", global = true)]
    meta_wait: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload a local file (a REMOTE that is a directory receives LOCAL's name).
    Put { local: PathBuf, remote: String },
    /// Download a remote file ("-" writes to standard output).
    Get { remote: String, local: PathBuf },
    /// Print a remote file to standard output.
    Cat { remote: String },
    /// List a directory.
    Ls {
        #[arg(default_value = "/")]
        path: String,
        /// Long listing: kind, mode, size, inode.
        #[arg(short, long)]
        long: bool,
    },
    /// Show a file's attributes and chunks.
    Stat { path: String },
    /// Remove a file (or, with -r, a directory tree).
    Rm {
        path: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Make a directory.
    Mkdir {
        path: String,
        /// Make parents as needed; no error if it exists.
        #[arg(short, long)]
        parents: bool,
    },
    /// Rename or move.
    Mv { from: String, to: String },
    /// Cluster status: nodes, capacity, chunks, replica health.
    Status,
    /// Set the copies a file's chunks want, or what a directory passes on
    /// to new entries (1 to 9).
    Setrepl {
        /// Also every file and directory below PATH.
        #[arg(short, long)]
        recursive: bool,
        replication: u32,
        path: String,
    },
    /// Show the copies a file wants and has, or a directory passes on.
    Getrepl { path: String },
    /// Directory quotas: limits on bytes and inodes.
    #[command(subcommand)]
    Quota(settings::QuotaCmd),
    /// Self-healing administration: nodes, repair queue, recover, decommission.
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// Deleted and overwritten files kept for `trash_retention_ms`: list,
    /// restore, purge (admin certificate).
    #[command(subcommand)]
    Trash(trash::TrashCmd),
    /// Copy the tree SRC to DST (new) by sharing its chunks: time per
    /// inode, not per byte; later writes to either side do not show on the
    /// other (admin certificate).
    Snapshot {
        src: String,
        dst: String,
        /// The copy refuses writes, new entries, renames and attribute
        /// changes (EROFS); `rm -r` still removes it.
        #[arg(long)]
        read_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            output::error_line(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            output::error_line(&f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The CLI's wait for a leader when given several metadata members: an
/// election after a leader dies takes a few seconds, and a command should
/// ride through it as a mount does.
const DEFAULT_GROUP_WAIT_SECS: u64 = 30;

fn load_config(cli: &Cli) -> Result<ClientConfig, Failure> {
    let mut cfg = match &cli.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?
        }
        None => ClientConfig::default(),
    };
    if let Some(m) = &cli.metadata {
        cfg.metadata = m.clone();
    }
    let members = bigfs_proto::leader::parse_addrs(&cfg.metadata).len();
    let wait = cli.meta_wait.unwrap_or(if members > 1 {
        DEFAULT_GROUP_WAIT_SECS
    } else {
        0
    });
    if wait > 0 {
        cfg.meta_wait = MetaWait::For(Duration::from_secs(wait));
    }
    cfg.client_name = format!("bigfs-cli-{}", std::process::id());
    Ok(cfg)
}

impl Cmd {
    /// The cluster paths the command names.
    fn remote_paths(&self) -> Vec<&str> {
        match self {
            Cmd::Put { remote, .. } | Cmd::Get { remote, .. } | Cmd::Cat { remote } => {
                vec![remote]
            }
            Cmd::Ls { path, .. }
            | Cmd::Stat { path }
            | Cmd::Rm { path, .. }
            | Cmd::Mkdir { path, .. } => vec![path],
            Cmd::Mv { from, to }
            | Cmd::Snapshot {
                src: from, dst: to, ..
            } => vec![from, to],
            Cmd::Trash(trash::TrashCmd::Restore { path, .. }) => vec![path],
            Cmd::Trash(trash::TrashCmd::Purge { path }) => {
                path.iter().map(String::as_str).collect()
            }
            Cmd::Setrepl { path, .. } | Cmd::Getrepl { path } => vec![path],
            Cmd::Quota(q) => q.path().into_iter().collect(),
            Cmd::Status | Cmd::Admin(_) | Cmd::Trash(_) => vec![],
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Cmd::Admin(admin::AdminCmd::Certs(c)) = &cli.cmd {
        return certs::run(c, cli.json);
    }
    bigfs_proto::tls::Security::from_settings("bigfs", cli.tls_dir.as_deref(), cli.insecure)
        .map_err(|e| Failure::usage(e.to_string()))?
        .install_client();
    let cfg = load_config(&cli)?;
    if let Some(p) = cli
        .cmd
        .remote_paths()
        .into_iter()
        .find(|p| !p.starts_with('/'))
    {
        return Err(Failure::usage(format!(
            "{p}: cluster paths are absolute (start with /)"
        )));
    }
    match &cli.cmd {
        Cmd::Admin(cmd) => return admin::run(&cfg.metadata, cmd, cli.json).await,
        Cmd::Trash(cmd) => return trash::run(&cfg.metadata, cmd, cli.json).await,
        Cmd::Snapshot {
            src,
            dst,
            read_only,
        } => return trash::snapshot(&cfg.metadata, (src, dst), *read_only, cli.json).await,
        _ => {}
    }
    let wait = cfg.meta_wait;
    let client = Client::connect_waiting(cfg, wait).await?;
    match &cli.cmd {
        Cmd::Put { local, remote } => put(&client, local, remote).await,
        Cmd::Get { remote, local } => get(&client, remote, local).await,
        Cmd::Cat { remote } => get(&client, remote, Path::new("-")).await,
        Cmd::Ls { path, long } => ls(&client, path, *long, cli.json).await,
        Cmd::Stat { path } => stat(&client, path, cli.json).await,
        Cmd::Rm { path, recursive } => rm(&client, path, *recursive).await,
        Cmd::Mkdir { path, parents } => mkdir(&client, path, *parents).await,
        Cmd::Mv { from, to } => mv(&client, from, to).await,
        Cmd::Status => status(&client, cli.json).await,
        Cmd::Setrepl {
            recursive,
            replication,
            path,
        } => settings::setrepl(&client, path, *replication, *recursive).await,
        Cmd::Getrepl { path } => settings::getrepl(&client, path, cli.json).await,
        Cmd::Quota(q) => settings::quota(&client, q, cli.json).await,
        Cmd::Admin(_) | Cmd::Trash(_) | Cmd::Snapshot { .. } => unreachable!("handled above"),
    }
}

fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style);
    }
    pb
}

fn is_dir(attr: &pb::Attr) -> bool {
    attr.kind == pb::FileKind::Directory as i32
}

async fn put(client: &Client, local: &Path, remote: &str) -> Result<(), Failure> {
    let local_name = local.display().to_string();
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(at(&local_name))?;
    let meta = file.metadata().await.map_err(at(&local_name))?;
    if meta.is_dir() {
        return Err(errno_failure(&local_name, errno::EISDIR));
    }
    let target = match client.resolve(remote).await {
        Ok(a) if is_dir(&a) => {
            let name = local
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow::anyhow!("{}: no usable file name", local.display()))?;
            format!("{}/{}", remote.trim_end_matches('/'), name)
        }
        _ => remote.to_string(),
    };
    let handle = client
        .create_path(&target, 0o644)
        .await
        .map_err(at(&target))?;
    let chunk = client
        .status()
        .await
        .map(|s| s.chunk_size.max(65536) as usize)
        .unwrap_or(4 << 20);
    let bar = progress(meta.len());
    let mut buf = vec![0u8; chunk];
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf)
            .await
            .map_err(at(&local_name))?;
        if n == 0 {
            break;
        }
        handle.write(offset, &buf[..n]).await.map_err(at(&target))?;
        offset += n as u64;
        bar.set_position(offset);
    }
    handle.flush().await.map_err(at(&target))?;
    bar.finish_and_clear();
    Ok(())
}

/// Fills `buf` unless the file ends first; returns the bytes read.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = file.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

async fn get(client: &Client, remote: &str, local: &Path) -> Result<(), Failure> {
    let attr = client.resolve(remote).await.map_err(at(remote))?;
    if is_dir(&attr) {
        return Err(errno_failure(remote, errno::EISDIR));
    }
    let handle = client.open_attr(&attr).map_err(at(remote))?;
    let local_name = local.display().to_string();
    let to_stdout = local == Path::new("-");
    let bar = if to_stdout {
        ProgressBar::hidden()
    } else {
        progress(attr.size)
    };
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(local)
                .await
                .map_err(at(&local_name))?,
        )
    };
    let write_failed = |e: std::io::Error| -> Failure {
        if to_stdout {
            output::stdout_failed(&e);
        }
        at(&local_name)(e)
    };
    let step = attr.chunk_size.max(65536) as usize;
    let mut offset = 0u64;
    loop {
        let data = handle.read(offset, step).await.map_err(at(remote))?;
        if data.is_empty() {
            break;
        }
        out.write_all(&data).await.map_err(write_failed)?;
        offset += data.len() as u64;
        bar.set_position(offset);
    }
    out.flush().await.map_err(write_failed)?;
    bar.finish_and_clear();
    Ok(())
}

fn kind_char(kind: i32) -> char {
    match pb::FileKind::try_from(kind) {
        Ok(pb::FileKind::Directory) => 'd',
        Ok(pb::FileKind::Symlink) => 'l',
        Ok(pb::FileKind::Fifo) => 'p',
        Ok(pb::FileKind::Socket) => 's',
        Ok(pb::FileKind::CharDevice) => 'c',
        Ok(pb::FileKind::BlockDevice) => 'b',
        _ => '-',
    }
}

async fn ls(client: &Client, path: &str, long: bool, json: bool) -> Result<(), Failure> {
    let attr = client.resolve(path).await.map_err(at(path))?;
    let entries = if is_dir(&attr) {
        client.readdir_all(attr.ino).await.map_err(at(path))?
    } else {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        vec![pb::DirEntry {
            name,
            ino: attr.ino,
            kind: attr.kind,
            cookie: 0,
            attr: Some(attr),
        }]
    };
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let a = e.attr.clone().unwrap_or_default();
                serde_json::json!({"name": e.name, "ino": e.ino, "kind": kind_char(e.kind).to_string(),
                    "size": a.size, "mode": a.mode})
            })
            .collect();
        outln!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    for e in entries {
        if long {
            let a = e.attr.unwrap_or_default();
            outln!(
                "{}{:04o} {:>12} {:>8} {}",
                kind_char(e.kind),
                a.mode & 0o7777,
                a.size,
                e.ino,
                e.name
            );
        } else {
            outln!("{}", e.name);
        }
    }
    Ok(())
}

async fn stat(client: &Client, path: &str, json: bool) -> Result<(), Failure> {
    let attr = client.resolve(path).await.map_err(at(path))?;
    let layout = if attr.kind == pb::FileKind::File as i32 {
        let ino = attr.ino;
        Some(
            client
                .io()
                .meta
                .call("get layout", |mut c| async move {
                    c.get_layout(pb::InodeRequest { ino }).await
                })
                .await
                .map_err(at(path))?,
        )
    } else {
        None
    };
    let chunks: Vec<serde_json::Value> = layout
        .iter()
        .flat_map(|l| l.chunks.iter())
        .map(|c| {
            let r = c.chunk.clone().unwrap_or_default();
            serde_json::json!({
                "index": r.index, "id": hex::encode(&r.id), "len": r.len,
                "replicas": c.replicas.iter().map(|x| x.node_id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    // Bytes of chunk index 0 the metadata keeps (a small file stored inline).
    let inline = layout
        .as_ref()
        .and_then(|l| l.inline_data.as_ref())
        .map(|d| d.len());
    if json {
        let v = serde_json::json!({"ino": attr.ino, "kind": kind_char(attr.kind).to_string(), "size": attr.size,
            "mode": attr.mode, "uid": attr.uid, "gid": attr.gid, "nlink": attr.nlink,
            "chunk_size": attr.chunk_size, "replication": attr.replication, "version": attr.version,
            "chunks": chunks, "inline_bytes": inline});
        outln!("{v}");
        return Ok(());
    }
    outln!("path:        {path}");
    outln!("inode:       {}", attr.ino);
    outln!("kind:        {}", kind_char(attr.kind));
    outln!("size:        {}", attr.size);
    outln!("mode:        {:04o}", attr.mode & 0o7777);
    outln!("uid/gid:     {}/{}", attr.uid, attr.gid);
    outln!("links:       {}", attr.nlink);
    if !attr.symlink_target.is_empty() {
        outln!("target:      {}", attr.symlink_target);
    }
    if let Some(l) = layout {
        outln!("chunk size:  {}", attr.chunk_size);
        outln!("replication: {}", attr.replication);
        if let Some(n) = inline {
            outln!("inline:      {n} bytes of chunk 0, kept by the metadata service");
        }
        for c in l.chunks {
            let r = c.chunk.unwrap_or_default();
            let nodes: Vec<String> = c.replicas.iter().map(|x| x.node_id.clone()).collect();
            outln!(
                "chunk {:>6}: {} len {} on [{}]",
                r.index,
                hex::encode(&r.id[..6.min(r.id.len())]),
                r.len,
                nodes.join(", ")
            );
        }
    }
    Ok(())
}

async fn rm(client: &Client, path: &str, recursive: bool) -> Result<(), Failure> {
    let attr = client.resolve(path).await.map_err(at(path))?;
    let (parent, name) = client.parent_of(path).await.map_err(at(path))?;
    if is_dir(&attr) {
        if !recursive {
            let words = errno_words(errno::EISDIR);
            return Err(Failure::new(format!("{path}: {words} (use -r)")));
        }
        remove_tree(client, attr.ino).await.map_err(at(path))?;
        client.rmdir(parent, &name).await.map_err(at(path))?;
    } else {
        client.unlink(parent, &name).await.map_err(at(path))?;
    }
    Ok(())
}

/// Removes everything below directory `ino`, depth first.
async fn remove_tree(client: &Client, ino: u64) -> Result<(), ClientError> {
    let mut stack = vec![(ino, false)];
    while let Some((dir, emptied)) = stack.pop() {
        if emptied {
            continue;
        }
        let entries = client.readdir_all(dir).await?;
        let subdirs: Vec<&pb::DirEntry> = entries
            .iter()
            .filter(|e| e.kind == pb::FileKind::Directory as i32)
            .collect();
        for e in entries
            .iter()
            .filter(|e| e.kind != pb::FileKind::Directory as i32)
        {
            client.unlink(dir, &e.name).await?;
        }
        for d in subdirs {
            Box::pin(remove_tree(client, d.ino)).await?;
            client.rmdir(dir, &d.name).await?;
        }
    }
    Ok(())
}

async fn mkdir(client: &Client, path: &str, parents: bool) -> Result<(), Failure> {
    if !parents {
        let (parent, name) = client.parent_of(path).await.map_err(at(path))?;
        client.mkdir(parent, &name, 0o755).await.map_err(at(path))?;
        return Ok(());
    }
    let mut ino = client.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = match client.lookup(ino, part).await {
            Ok(a) if is_dir(&a) => a.ino,
            Ok(_) => return Err(errno_failure(path, errno::ENOTDIR)),
            Err(e) if e.errno() == errno::ENOENT => {
                client.mkdir(ino, part, 0o755).await.map_err(at(path))?.ino
            }
            Err(e) => return Err(at(path)(e)),
        };
    }
    Ok(())
}

async fn mv(client: &Client, from: &str, to: &str) -> Result<(), Failure> {
    let (parent, name) = client.parent_of(from).await.map_err(at(from))?;
    let to = match client.resolve(to).await {
        Ok(a) if is_dir(&a) => format!("{}/{}", to.trim_end_matches('/'), name),
        _ => to.to_string(),
    };
    let (new_parent_path, new_name) = split_path(&to).map_err(at(&to))?;
    let new_parent = client.resolve(&new_parent_path).await.map_err(at(&to))?.ino;
    client
        .rename(pb::RenameRequest {
            parent,
            name,
            new_parent,
            new_name,
            noreplace: false,
            exchange: false,
            open_lease_ms: 0,
            id: None,
        })
        .await
        // The parents resolved, so a missing name is the source; what
        // else can fail (exists, not empty, not a directory) is the target.
        .map_err(|e| {
            let blamed = if e.errno() == errno::ENOENT {
                from
            } else {
                &to
            };
            at(blamed)(e)
        })?;
    Ok(())
}

async fn status(client: &Client, json: bool) -> Result<(), Failure> {
    let s = client.status().await?;
    if json {
        let nodes: Vec<serde_json::Value> = s
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({"node_id": n.node_id, "address": n.address, "state": bigfs_client::admin::node_state(n.state),
                "capacity": n.capacity, "used": n.used, "chunks": n.chunk_count,
                "last_heartbeat_ms_ago": n.last_heartbeat_ms_ago, "failures": n.failures})
            })
            .collect();
        let v = serde_json::json!({"nodes": nodes, "files": s.files, "directories": s.directories,
            "chunks": s.chunks, "chunk_bytes": s.chunk_bytes, "replicas_available": s.replicas_available,
            "replicas_pending": s.replicas_pending, "replicas_deleting": s.replicas_deleting,
            "under_replicated": s.under_replicated, "lost": s.lost,
            "default_replication": s.default_replication, "chunk_size": s.chunk_size,
            "copies_wanted": s.copies_wanted, "copies_good": s.copies_good,
            "repair_pending": s.repair_pending, "repair_failed": s.repair_failed,
            "repair_completed": s.repair_completed, "gc_backlog": s.gc_backlog,
            "gc_trash": s.gc_trash, "trash_files": s.trash_files, "trash_bytes": s.trash_bytes,
            "inline_files": s.inline_files, "inline_bytes": s.inline_bytes});
        outln!("{v}");
        return Ok(());
    }
    outln!(
        "{:<16} {:<22} {:<8} {:>10} {:>10} {:>8} {:>9}",
        "NODE",
        "ADDRESS",
        "STATE",
        "USED",
        "CAPACITY",
        "CHUNKS",
        "FAILURES"
    );
    for n in &s.nodes {
        outln!(
            "{:<16} {:<22} {:<8} {:>10} {:>10} {:>8} {:>9}",
            n.node_id,
            n.address,
            bigfs_client::admin::node_state(n.state),
            bigfs_client::admin::human(n.used),
            bigfs_client::admin::human(n.capacity),
            n.chunk_count,
            n.failures
        );
    }
    outln!();
    outln!(
        "files {}  directories {}  chunks {} ({})  inline {} files ({})  trash {} files ({})",
        s.files,
        s.directories,
        s.chunks,
        bigfs_client::admin::human(s.chunk_bytes),
        s.inline_files,
        bigfs_client::admin::human(s.inline_bytes),
        s.trash_files,
        bigfs_client::admin::human(s.trash_bytes)
    );
    outln!(
        "replicas: {} available, {} pending, {} deleting; replication {}",
        s.replicas_available,
        s.replicas_pending,
        s.replicas_deleting,
        s.default_replication
    );
    outln!(
        "copies: {} of {} wanted (each chunk wants the highest replication of its files)",
        s.copies_good,
        s.copies_wanted
    );
    let health = if s.lost > 0 {
        "DATA UNAVAILABLE"
    } else if s.under_replicated > 0 {
        "degraded"
    } else {
        "healthy"
    };
    outln!(
        "health: {health} ({} under-replicated, {} lost)",
        s.under_replicated,
        s.lost
    );
    out!("{}", bigfs_client::admin::healing_line(&s));
    Ok(())
}
