//! Per-directory settings through the client: replication (`setrepl`) and
//! quotas. A child of `client`, so it reaches the metadata connection.

use bigfs_proto::pb;

use crate::client::Client;
use crate::error::Result;

impl Client {
    /// Sets the copies `ino` wants (and, `recursive`, everything below it).
    /// Answers how many files and directories changed.
    pub async fn set_replication(
        &self,
        ino: u64,
        replication: u32,
        recursive: bool,
    ) -> Result<u64> {
        let req = pb::SetReplicationRequest {
            ino,
            replication,
            recursive,
            id: None,
        };
        let reply = self
            .changing(
                &[ino],
                &[],
                self.io.meta.mutate("setrepl", req, |mut c, r| async move {
                    c.set_replication(r).await
                }),
            )
            .await;
        Ok(reply?.changed)
    }

    /// Sets (`Some(0)` removes a limit) or, with `clear`, removes the quota
    /// of directory `ino`.
    pub async fn set_quota(
        &self,
        ino: u64,
        max_bytes: Option<u64>,
        max_inodes: Option<u64>,
        clear: bool,
    ) -> Result<pb::QuotaReply> {
        let req = pb::SetQuotaRequest {
            ino,
            max_bytes,
            max_inodes,
            clear,
            id: None,
        };
        self.io
            .meta
            .mutate(
                "setquota",
                req,
                |mut c, r| async move { c.set_quota(r).await },
            )
            .await
    }

    /// The quota of `ino`, or with `nearest` of the nearest directory at or
    /// above it that has one.
    pub async fn get_quota(&self, ino: u64, nearest: bool) -> Result<pb::QuotaReply> {
        self.io
            .meta
            .call("getquota", |mut c| async move {
                c.get_quota(pb::QuotaRequest { ino, nearest }).await
            })
            .await
    }

    pub async fn list_quotas(&self) -> Result<pb::QuotaListReply> {
        self.io
            .meta
            .call("lsquota", |mut c| async move {
                c.list_quotas(pb::Empty {}).await
            })
            .await
    }
}
