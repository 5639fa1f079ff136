//! `bigfs setrepl`, `bigfs getrepl` and `bigfs quota`: per-directory
//! replication and quotas.

use bigfs_client::{Client, ClientError};
use bigfs_proto::pb;
use clap::Subcommand;

use crate::failure::{Failure, errno_words};
use crate::output::outln;

/// The most copies `setrepl` accepts (the metadata service checks too).
const MAX_REPLICATION: u32 = 9;

#[derive(Subcommand)]
pub enum QuotaCmd {
    /// Set limits on a directory's tree (a limit of 0 removes it; limits
    /// not given stay as they are).
    Set {
        path: String,
        /// Bytes of file data: a number with an optional K, M, G or T
        /// suffix (powers of 1024), e.g. 10G.
        #[arg(long)]
        bytes: Option<String>,
        /// Files, directories and other entries below it.
        #[arg(long)]
        inodes: Option<u64>,
    },
    /// Show a directory's limits and usage.
    Get { path: String },
    /// List every quota.
    Ls,
    /// Remove a directory's quota.
    Clear { path: String },
}

impl QuotaCmd {
    pub fn path(&self) -> Option<&str> {
        match self {
            QuotaCmd::Set { path, .. } | QuotaCmd::Get { path } | QuotaCmd::Clear { path } => {
                Some(path)
            }
            QuotaCmd::Ls => None,
        }
    }
}

/// `path: words (what the service said)`: these refusals carry details
/// (bounds, an export's limit) worth showing.
fn failed(path: &str) -> impl FnOnce(ClientError) -> Failure + '_ {
    move |e| match &e {
        ClientError::Remote { errno, message, .. } => {
            Failure::new(format!("{path}: {} ({message})", errno_words(*errno)))
        }
        _ => Failure::from(e),
    }
}

pub async fn setrepl(
    client: &Client,
    path: &str,
    replication: u32,
    recursive: bool,
) -> Result<(), Failure> {
    if !(1..=MAX_REPLICATION).contains(&replication) {
        return Err(Failure::usage(format!(
            "replication {replication} is out of range: 1 to {MAX_REPLICATION} copies"
        )));
    }
    let attr = client.resolve(path).await.map_err(failed(path))?;
    let changed = client
        .set_replication(attr.ino, replication, recursive)
        .await
        .map_err(failed(path))?;
    let nodes = client.status().await.map(|s| {
        s.nodes
            .iter()
            .filter(|n| n.state == pb::NodeState::Up as i32)
            .count()
    });
    if let Ok(up) = nodes
        && (replication as usize) > up
    {
        crate::output::error_line(&format!(
            "warning: {replication} copies wanted but {up} storage nodes are up; \
             chunks stay under-replicated until more join"
        ));
    }
    outln!("{path}: replication {replication} ({changed} changed)");
    Ok(())
}

pub async fn getrepl(client: &Client, path: &str, json: bool) -> Result<(), Failure> {
    let attr = client.resolve(path).await.map_err(failed(path))?;
    let is_dir = attr.kind == pb::FileKind::Directory as i32;
    let default = client.status().await.map(|s| s.default_replication)?;
    let wanted = if attr.replication == 0 {
        default
    } else {
        attr.replication
    };
    // Actual copies: Available replicas per chunk, fewest and most.
    let mut copies: Option<(usize, usize)> = None;
    if attr.kind == pb::FileKind::File as i32 {
        let ino = attr.ino;
        let layout = client
            .io()
            .meta
            .call("get layout", |mut c| async move {
                c.get_layout(pb::InodeRequest { ino }).await
            })
            .await
            .map_err(failed(path))?;
        for c in &layout.chunks {
            let n = c
                .replicas
                .iter()
                .filter(|r| r.status == pb::ReplicaStatus::Available as i32)
                .count();
            copies = Some(copies.map_or((n, n), |(lo, hi)| (lo.min(n), hi.max(n))));
        }
    }
    if json {
        let v = serde_json::json!({"path": path, "replication": wanted,
            "set": attr.replication != 0, "directory": is_dir,
            "copies_min": copies.map(|c| c.0), "copies_max": copies.map(|c| c.1)});
        outln!("{v}");
        return Ok(());
    }
    let origin = if attr.replication == 0 {
        " (cluster default)"
    } else {
        ""
    };
    match copies {
        Some((lo, hi)) if lo == hi => {
            outln!("{path}: replication {wanted}{origin}, {lo} copies")
        }
        Some((lo, hi)) => outln!("{path}: replication {wanted}{origin}, {lo} to {hi} copies"),
        None => outln!("{path}: replication {wanted}{origin}"),
    }
    Ok(())
}

/// Parses a size: digits with an optional K, M, G or T (powers of 1024,
/// an optional trailing "B" or "iB").
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: the suffix must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (a number with K, M, G or T)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn limit(n: u64) -> String {
    if n == 0 { "none".into() } else { n.to_string() }
}

fn print_quota(q: &pb::QuotaInfo, shown_path: &str) {
    outln!(
        "{shown_path}: bytes {} of {} ({}), inodes {} of {}",
        q.bytes,
        limit(q.max_bytes),
        bigfs_client::admin::human(q.bytes),
        q.inodes,
        limit(q.max_inodes)
    );
}

fn quota_json(q: &pb::QuotaInfo) -> serde_json::Value {
    serde_json::json!({"path": q.path, "max_bytes": q.max_bytes, "max_inodes": q.max_inodes,
        "bytes": q.bytes, "inodes": q.inodes})
}

pub async fn quota(client: &Client, cmd: &QuotaCmd, json: bool) -> Result<(), Failure> {
    if let QuotaCmd::Ls = cmd {
        let list = client.list_quotas().await?;
        if json {
            let v: Vec<_> = list.quotas.iter().map(quota_json).collect();
            outln!("{}", serde_json::Value::from(v));
        } else if list.quotas.is_empty() {
            outln!("no quotas");
        } else {
            for q in &list.quotas {
                print_quota(q, &q.path);
            }
        }
        return Ok(());
    }
    let path = cmd.path().unwrap_or("/");
    let attr = client.resolve(path).await.map_err(failed(path))?;
    let reply = match cmd {
        QuotaCmd::Set { bytes, inodes, .. } => {
            if bytes.is_none() && inodes.is_none() {
                return Err(Failure::usage("quota set: give --bytes, --inodes or both"));
            }
            let bytes = bytes
                .as_deref()
                .map(parse_size)
                .transpose()
                .map_err(Failure::usage)?;
            client
                .set_quota(attr.ino, bytes, *inodes, false)
                .await
                .map_err(failed(path))?
        }
        QuotaCmd::Clear { .. } => {
            client
                .set_quota(attr.ino, None, None, true)
                .await
                .map_err(failed(path))?;
            outln!("{path}: quota removed");
            return Ok(());
        }
        QuotaCmd::Get { .. } => client
            .get_quota(attr.ino, false)
            .await
            .map_err(failed(path))?,
        QuotaCmd::Ls => unreachable!("handled above"),
    };
    match reply.quota.filter(|_| reply.found) {
        Some(q) if json => outln!("{}", quota_json(&q)),
        Some(q) => print_quota(&q, path),
        None => return Err(Failure::new(format!("{path}: no quota"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("5MiB"), Ok(5 << 20));
        assert!(parse_size("5X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
