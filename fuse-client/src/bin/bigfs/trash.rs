//! `bigfs trash ...` and `bigfs snapshot`: the metadata service's
//! Snapshots service (admin certificates only).

use bigfs_proto::leader::{SnapshotsClient, snapshots_client};
use bigfs_proto::pb;
use clap::Subcommand;

use crate::failure::Failure;
use crate::output::outln;

#[derive(Subcommand)]
pub enum TrashCmd {
    /// Deleted files still recoverable: path deleted from, size, when, expiry.
    Ls {
        /// Only files deleted from paths starting with PREFIX.
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many entries (0 = 1000; the server caps it at 10000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Put the file deleted from PATH back there (the latest one deleted
    /// from it, or --ino). Missing parent directories are recreated; a PATH
    /// that exists now is refused.
    Restore {
        path: String,
        /// The inode to restore (as `trash ls` shows), when several files
        /// were deleted from PATH.
        #[arg(long, default_value_t = 0)]
        ino: u64,
    },
    /// Free trashed files for good: every one, or those deleted from PATH.
    Purge { path: Option<String> },
}

fn connect(metadata: &str) -> Result<SnapshotsClient, Failure> {
    snapshots_client(metadata).map_err(|e| Failure {
        code: 3,
        message: format!("{metadata}: {e}"),
    })
}

fn rpc(what: &str, s: tonic::Status) -> Failure {
    let code = if s.code() == tonic::Code::Unavailable {
        3
    } else {
        1
    };
    Failure {
        code,
        message: format!("{what}: {}", s.message()),
    }
}

/// "2026-11-30 21:45:10 UTC" for ms since the epoch.
fn when(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub async fn run(metadata: &str, cmd: &TrashCmd, json: bool) -> Result<(), Failure> {
    let mut c = connect(metadata)?;
    match cmd {
        TrashCmd::Ls { prefix, limit } => {
            let r = c
                .trash_list(pb::TrashListRequest {
                    prefix: prefix.clone(),
                    limit: *limit,
                })
                .await
                .map_err(|s| rpc("trash ls", s))?
                .into_inner();
            if json {
                let entries: Vec<serde_json::Value> = r
                    .entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({"ino": e.ino, "path": e.path, "size": e.size,
                            "deleted_ms": e.deleted_ms, "expires_ms": e.expires_ms})
                    })
                    .collect();
                outln!(
                    "{}",
                    serde_json::json!({"total": r.total, "retention_ms": r.retention_ms,
                        "entries": entries})
                );
                return Ok(());
            }
            outln!(
                "{:>10} {:>12}  {:<23}  {:<23}  PATH",
                "INODE",
                "SIZE",
                "DELETED",
                "EXPIRES"
            );
            for e in &r.entries {
                outln!(
                    "{:>10} {:>12}  {:<23}  {:<23}  {}",
                    e.ino,
                    e.size,
                    when(e.deleted_ms),
                    when(e.expires_ms),
                    e.path
                );
            }
            outln!(
                "{} of {} trashed files; retention {} s",
                r.entries.len(),
                r.total,
                r.retention_ms / 1000
            );
        }
        TrashCmd::Restore { path, ino } => {
            let r = c
                .trash_restore(pb::TrashRestoreRequest {
                    path: path.clone(),
                    ino: *ino,
                })
                .await
                .map_err(|s| rpc(path, s))?
                .into_inner();
            if json {
                outln!("{}", serde_json::json!({"ino": r.ino, "path": r.path}));
            } else {
                outln!("{}: restored (inode {})", r.path, r.ino);
            }
        }
        TrashCmd::Purge { path } => {
            let r = c
                .trash_purge(pb::TrashPurgeRequest {
                    path: path.clone().unwrap_or_default(),
                })
                .await
                .map_err(|s| rpc("trash purge", s))?
                .into_inner();
            if json {
                outln!("{}", serde_json::json!({"purged": r.purged}));
            } else {
                outln!("{} trashed files purged", r.purged);
            }
        }
    }
    Ok(())
}

pub async fn snapshot(
    metadata: &str,
    (src, dst): (&str, &str),
    read_only: bool,
    json: bool,
) -> Result<(), Failure> {
    let mut c = connect(metadata)?;
    let r = c
        .snapshot(pb::SnapshotRequest {
            src: src.to_string(),
            dst: dst.to_string(),
            read_only,
        })
        .await
        .map_err(|s| rpc(&format!("snapshot {src} {dst}"), s))?
        .into_inner();
    if json {
        outln!(
            "{}",
            serde_json::json!({"src": src, "dst": dst, "read_only": read_only,
                "inodes": r.inodes, "chunk_refs": r.chunk_refs})
        );
    } else {
        outln!(
            "{dst}: snapshot of {src}{}: {} inodes, {} chunk references shared",
            if read_only { " (read-only)" } else { "" },
            r.inodes,
            r.chunk_refs
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn when_formats_utc() {
        assert_eq!(super::when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::when(1_796_075_110_000), "2026-11-30 21:45:10 UTC");
    }
}
