//! The client's view of the metadata service: every call goes through one
//! helper with a per-attempt deadline and backoff on transient failures.
//! A mutation goes through [`Meta::mutate`], which names it with a request
//! id so that its retries are answered once, as the first try would be.

use std::future::Future;
use std::sync::Arc;

use bigfs_proto::RetryConfig;
use bigfs_proto::pb::{self, metadata_client::MetadataClient};
use tonic::transport::Channel;

use crate::error::{ClientError, Result};
use crate::request_ids::RequestIds;

#[derive(Clone)]
pub struct Meta {
    client: MetadataClient<Channel>,
    retry: RetryConfig,
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
    pb::SetAttrRequest,
    pb::LinkRequest,
    pb::NameRequest,
    pb::RenameRequest,
    pb::SetXattrRequest,
    pb::XattrNameRequest,
    pb::CommitLayoutRequest
);

/// Codes worth another try: the service is restarting or the link broke.
/// Everything else is the service's considered answer.
fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

impl Meta {
    pub fn new(addr: &str, retry: RetryConfig) -> Result<Self> {
        let client = bigfs_proto::metadata_client(addr).map_err(|e| ClientError::Connect {
            addr: addr.into(),
            message: e.to_string(),
        })?;
        Ok(Meta {
            client,
            retry,
            addr: addr.to_string(),
            ids: RequestIds::new(),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Runs the mutation `f(client, req)` with retries, every attempt
    /// carrying the same request id: the service applies it once and
    /// answers each retry as it answered the first try.
    pub async fn mutate<R, T, F, Fut>(&self, op: &'static str, req: R, f: F) -> Result<T>
    where
        R: Mutation,
        F: Fn(MetadataClient<Channel>, R) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let held = self.ids.next();
        let req = req.with_id(held.id());
        self.call(op, |c| f(c, req.clone())).await
    }

    /// Runs `f` with retries. `f` gets a fresh client handle each attempt
    /// and must build its request anew (requests are cheap to clone).
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(MetadataClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            let outcome =
                tokio::time::timeout(self.retry.attempt_timeout(), f(self.client.clone()))
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("attempt timed out")));
            match outcome {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if transient(status.code()) && attempt < self.retry.max_retries => {
                    tracing::debug!(op, attempt, error = %status.message(), "metadata call failed, retrying");
                    tokio::time::sleep(self.retry.backoff_jittered(attempt)).await;
                    attempt += 1;
                }
                Err(status) => return Err(ClientError::remote(op, status)),
            }
        }
    }
}
