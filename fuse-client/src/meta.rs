//! The client's view of the metadata service: every call goes through one
//! helper with a per-attempt deadline and backoff on transient failures,
//! for as long as the client's [`MetaWait`] allows. The channel underneath
//! finds the leader among the metadata members.
//! A mutation goes through [`Meta::mutate`], which names it with a request
//! id so that its retries are answered once, as the first try would be.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bigfs_proto::pb;
use bigfs_proto::{LocksClient, MetaClient, RetryConfig};

use crate::error::{ClientError, Result};
use crate::meta_wait::{MetaWait, WaitCounts, WaitLog};
use crate::request_ids::RequestIds;

#[derive(Clone)]
pub struct Meta {
    client: MetaClient,
    /// The Locks service on the same members (file locks).
    locks: LocksClient,
    retry: RetryConfig,
    wait: MetaWait,
    waits: Arc<WaitLog>,
    addr: String,
    ids: Arc<RequestIds>,
}

/// A mutating request that carries a [`pb::RequestId`].
pub trait Mutation: Clone {
    fn with_id(self, id: pb::RequestId) -> Self;
}

macro_rules! mutation {
    ($($t:ty),*) => {$(
        impl Mutation for $t {
            fn with_id(mut self, id: pb::RequestId) -> Self {
                self.id = Some(id);
                self
            }
        }
    )*};
}

mutation!(
    pb::CreateRequest,
    pb::TmpFileRequest,
    pb::SetAttrRequest,
    pb::LinkRequest,
    pb::NameRequest,
    pb::RenameRequest,
    pb::SetXattrRequest,
    pb::XattrNameRequest,
    pb::CommitLayoutRequest,
    pb::SetReplicationRequest,
    pb::SetQuotaRequest
);

/// Codes worth another try: the service is restarting, has no leader (or
/// the channel found none: `not the leader` / `no leader` are UNAVAILABLE)
/// or the link broke. Everything else is the service's considered answer.
fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

impl Meta {
    /// A client of the metadata members in `addrs` ("a,b,c" or one).
    pub fn new(addrs: &str, retry: RetryConfig, wait: MetaWait) -> Result<Self> {
        Self::confined(addrs, "", retry, wait)
    }

    /// As [`Meta::new`], every call confined to the subtree `subdir`.
    pub fn confined(addrs: &str, subdir: &str, retry: RetryConfig, wait: MetaWait) -> Result<Self> {
        let connect = |message: String| ClientError::Connect {
            addr: addrs.into(),
            message,
        };
        let channel = bigfs_proto::leader::MetaChannel::new(addrs)
            .map_err(|e| connect(e.to_string()))?
            .confined_to(subdir)
            .map_err(connect)?;
        // The Locks service is confined to the same subtree.
        let locks = bigfs_proto::pb::locks_client::LocksClient::new(channel.clone());
        let client = bigfs_proto::metadata_client_over(channel);
        Ok(Meta {
            client,
            locks,
            retry,
            wait,
            waits: Arc::default(),
            addr: addrs.to_string(),
            ids: RequestIds::new(),
        })
    }

    /// The metadata members as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// This client's random id: it names its requests, and its lock
    /// session on the metadata service.
    pub fn client_id(&self) -> u64 {
        self.ids.client()
    }

    /// The waits of this client's calls so far.
    pub fn wait_counts(&self) -> WaitCounts {
        self.waits.counts()
    }

    /// Runs the mutation `f(client, req)` with retries, every attempt
    /// carrying the same request id: the service applies it once and
    /// answers each retry as it answered the first try.
    pub async fn mutate<R, T, F, Fut>(&self, op: &'static str, req: R, f: F) -> Result<T>
    where
        R: Mutation,
        F: Fn(MetaClient, R) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let held = self.ids.next();
        let req = req.with_id(held.id());
        self.call(op, |c| f(c, req.clone())).await
    }

    /// Runs `f` with retries for as long as the client's [`MetaWait`]
    /// allows. `f` gets a fresh client handle each attempt and must build
    /// its request anew (requests are cheap to clone).
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(MetaClient) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_waiting(op, self.wait, f).await
    }

    /// As [`Meta::call`], on the Locks service.
    pub async fn call_locks<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(LocksClient) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retrying(&self.locks, op, self.wait, f).await
    }

    /// As [`Meta::call`], waiting as `wait` says instead.
    pub async fn call_waiting<T, F, Fut>(&self, op: &'static str, wait: MetaWait, f: F) -> Result<T>
    where
        F: Fn(MetaClient) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retrying(&self.client, op, wait, f).await
    }

    /// Runs `f` on clones of `client` with retries, as `wait` allows.
    async fn retrying<C, T, F, Fut>(
        &self,
        client: &C,
        op: &'static str,
        wait: MetaWait,
        f: F,
    ) -> Result<T>
    where
        C: Clone,
        F: Fn(C) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        let mut waiting_since = None;
        let mut attempt = 0;
        loop {
            let deadline = wait.attempt_timeout(&self.retry, attempt, start.elapsed());
            let outcome = tokio::time::timeout(deadline, f(client.clone()))
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("attempt timed out")));
            let status = match outcome {
                Ok(resp) => {
                    if let Some(began) = waiting_since {
                        self.waits.end(op, began, true);
                    }
                    return Ok(resp.into_inner());
                }
                Err(status) if transient(status.code()) => status,
                Err(status) => return Err(ClientError::remote(op, status)),
            };
            let Some(sleep) = wait.next_sleep(&self.retry, attempt, start.elapsed()) else {
                if let Some(began) = waiting_since {
                    self.waits.end(op, began, false);
                }
                tracing::warn!(op, attempts = attempt + 1, waited_ms = start.elapsed().as_millis() as u64,
                    error = %status.message(), "metadata call gave up");
                return Err(ClientError::remote(op, status));
            };
            if waiting_since.is_none() {
                waiting_since = Some(Instant::now());
                self.waits.begin(op, wait, status.message());
            }
            tracing::debug!(op, attempt, error = %status.message(), "metadata call failed, retrying");
            tokio::time::sleep(sleep).await;
            attempt += 1;
        }
    }
}
