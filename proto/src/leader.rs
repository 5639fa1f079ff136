//! Finding the metadata leader: a gRPC channel over the list of metadata
//! members that sends each call to the member it believes leads and
//! follows "not the leader" answers.
//!
//! The contract with the server side:
//! - a member that is not the leader answers any Metadata/Admin/Ops call
//!   with `UNAVAILABLE`, a message beginning `not the leader`, and, when it
//!   knows the leader, the response header [`LEADER_HEADER`] holding the
//!   leader's gRPC address (`host:port`); build it with [`not_leader`];
//! - a member that cannot reach a majority answers `UNAVAILABLE` with a
//!   message beginning `no leader` and no header; build it with
//!   [`no_leader`].
//!
//! [`MetaChannel`] buffers each request (every metadata RPC is unary and
//! small), sends it to the believed leader and, on such an answer or a
//! connection error, resends it: to the hinted leader when there is a hint,
//! else to the next member. One call makes at most one pass over the list
//! plus a few hint follows; waiting for an election is the caller's retry
//! loop's business. The leader found is remembered for the next call.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt;

use crate::pb;

/// Response header naming the leader's gRPC address (`host:port`).
pub const LEADER_HEADER: &str = "bigfs-leader";

/// Request header asking the metadata service to confine the caller to a
/// subtree (`/path`, below its export if it has one): a mount's `subdir`.
pub const SUBDIR_HEADER: &str = "bigfs-subdir";

/// Message prefix of a member that knows it does not lead.
pub const NOT_LEADER: &str = "not the leader";

/// Message prefix of a member that cannot reach a majority.
pub const NO_LEADER: &str = "no leader";

/// The answer of a member that is not the leader; `hint` is the leader's
/// gRPC address when this member knows it.
pub fn not_leader(hint: Option<&str>) -> tonic::Status {
    let mut md = tonic::metadata::MetadataMap::new();
    let message = match hint {
        Some(addr) => {
            if let Ok(v) = addr.parse() {
                md.insert(LEADER_HEADER, v);
            }
            format!("{NOT_LEADER}; the leader is {addr}")
        }
        None => NOT_LEADER.to_string(),
    };
    tonic::Status::with_metadata(tonic::Code::Unavailable, message, md)
}

/// The answer of a member that cannot reach a majority.
pub fn no_leader() -> tonic::Status {
    tonic::Status::unavailable(NO_LEADER)
}

/// The leader hint a status carries, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<&str> {
    status.metadata().get(LEADER_HEADER)?.to_str().ok()
}

/// Splits a metadata address list ("a:9400,b:9400" or one address) into
/// its addresses, trimmed, empty items dropped.
pub fn parse_addrs(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// Reads a metadata address list from a config file as one string: either
/// `"a:9400,b:9400"` or `["a:9400", "b:9400"]`. Use it as
/// `#[serde(deserialize_with = "bigfs_proto::leader::addr_list")]`.
pub fn addr_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrList {
        One(String),
        List(Vec<String>),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        OneOrList::One(s) => s,
        OneOrList::List(l) => l.join(","),
    })
}

/// Why a metadata address list was refused.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("no metadata address given")]
    Empty,
    #[error("bad metadata address {addr:?}: {source}")]
    Bad {
        addr: String,
        source: crate::ChannelError,
    },
}

/// Hint follows allowed per call beyond the pass over the list: a leader
/// that moves once or twice during the call; more means an election is
/// still going on, which the caller's backoff waits out.
const MAX_HINT_FOLLOWS: usize = 2;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Member {
    addr: String,
    channel: Channel,
}

struct Members {
    list: Vec<Member>,
    /// Index in `list` of the member believed to lead.
    leader: usize,
}

/// A gRPC channel over the metadata members that finds and follows the
/// leader; use it as `MetadataClient<MetaChannel>`, `AdminClient<...>` or
/// `OpsClient<...>`. Clones share the members and the leader found.
#[derive(Clone)]
pub struct MetaChannel {
    members: Arc<Mutex<Members>>,
    /// Headers added to every request (see [`MetaChannel::confined_to`]).
    headers: Arc<http::HeaderMap>,
}

/// `host:port` without a scheme, so a hint matches a configured URL.
fn bare(addr: &str) -> &str {
    let a = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    a.trim_end_matches('/')
}

impl MetaChannel {
    /// A channel over the members in `list` ("a,b,c" or one address);
    /// connects lazily, the first member is tried first.
    pub fn new(list: &str) -> Result<Self, AddrError> {
        let addrs = parse_addrs(list);
        if addrs.is_empty() {
            return Err(AddrError::Empty);
        }
        let list = addrs
            .into_iter()
            .map(|addr| Self::member(&addr))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MetaChannel {
            members: Arc::new(Mutex::new(Members { list, leader: 0 })),
            headers: Arc::default(),
        })
    }

    /// The same channel, asking the service to confine every call to the
    /// subtree `subdir` ([`SUBDIR_HEADER`]); `""` or `/` is the whole
    /// namespace (or export).
    pub fn confined_to(mut self, subdir: &str) -> Result<Self, String> {
        if subdir.is_empty() || subdir == "/" {
            return Ok(self);
        }
        let value = http::HeaderValue::from_str(subdir)
            .map_err(|_| format!("subdir {subdir:?} cannot travel in a header"))?;
        let mut headers = (*self.headers).clone();
        headers.insert(SUBDIR_HEADER, value);
        self.headers = Arc::new(headers);
        Ok(self)
    }

    fn member(addr: &str) -> Result<Member, AddrError> {
        let channel = crate::channel(addr).map_err(|source| AddrError::Bad {
            addr: addr.to_string(),
            source,
        })?;
        Ok(Member {
            addr: addr.to_string(),
            channel,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address of the member believed to lead.
    pub fn leader(&self) -> String {
        let m = self.lock();
        m.list[m.leader].addr.clone()
    }

    /// The members' addresses, in the order given (hinted ones appended).
    pub fn addrs(&self) -> Vec<String> {
        self.lock().list.iter().map(|m| m.addr.clone()).collect()
    }

    /// The order of one pass: the believed leader first, then the others
    /// in list order.
    fn pass(&self) -> Vec<(String, Channel)> {
        let m = self.lock();
        let n = m.list.len();
        (0..n)
            .map(|i| &m.list[(m.leader + i) % n])
            .map(|x| (x.addr.clone(), x.channel.clone()))
            .collect()
    }

    /// The channel of the hinted leader, adding it to the members if it is
    /// new.
    fn hinted(&self, hint: &str) -> Option<(String, Channel)> {
        let mut m = self.lock();
        if let Some(x) = m.list.iter().find(|x| bare(&x.addr) == bare(hint)) {
            return Some((x.addr.clone(), x.channel.clone()));
        }
        match Self::member(hint) {
            Ok(x) => {
                tracing::info!(
                    member = hint,
                    "metadata leader hint names a new member; adding it"
                );
                let found = (x.addr.clone(), x.channel.clone());
                m.list.push(x);
                Some(found)
            }
            Err(e) => {
                tracing::warn!(hint, error = %e, "metadata leader hint is not an address");
                None
            }
        }
    }

    /// Remembers `addr` as the leader for the next calls.
    fn found_leader(&self, addr: &str) {
        let mut m = self.lock();
        if let Some(i) = m.list.iter().position(|x| x.addr == addr)
            && i != m.leader
        {
            m.leader = i;
            tracing::info!(leader = addr, "metadata leader found");
        }
    }

    async fn send(self, req: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let (mut parts, body) = req.into_parts();
        for (name, value) in self.headers.iter() {
            parts.headers.insert(name.clone(), value.clone());
        }
        // Every metadata RPC is unary: the body is one small message.
        let bytes: Bytes = body.collect().await?.to_bytes();
        let request = |parts: &http::request::Parts| {
            http::Request::from_parts(
                parts.clone(),
                Body::new(http_body_util::Full::new(bytes.clone())),
            )
        };
        let mut pass = self.pass().into_iter();
        let mut hint: Option<(String, Channel)> = None;
        let mut hints_left = MAX_HINT_FOLLOWS + self.lock().list.len();
        let mut last: Option<Result<http::Response<Body>, BoxError>> = None;
        let mut tried: Vec<String> = Vec::new();
        loop {
            let next = hint
                .take()
                .or_else(|| pass.find(|(a, _)| !tried.contains(a)));
            let Some((addr, channel)) = next else {
                break;
            };
            tried.push(addr.clone());
            match channel.oneshot(request(&parts)).await {
                Err(e) => {
                    tracing::debug!(member = %addr, error = %e, "metadata member unreachable; trying the next");
                    last = Some(Err(e.into()));
                }
                Ok(resp) => match unavailable_answer(&resp) {
                    None => {
                        self.found_leader(&addr);
                        return Ok(resp);
                    }
                    Some(h) => {
                        tracing::debug!(member = %addr, hint = ?h, "metadata member does not lead");
                        if let Some(h) = h
                            && hints_left > 0
                        {
                            hints_left -= 1;
                            hint = self.hinted(&h);
                        }
                        last = Some(Ok(resp));
                    }
                },
            }
        }
        // No member led: the last answer tells the caller why.
        last.unwrap_or_else(|| Err("no metadata member to try".into()))
    }
}

/// For a trailers-only `UNAVAILABLE` answer: `Some(hint)` (the leader's
/// address if the member named it). `None` for any other answer.
fn unavailable_answer(resp: &http::Response<Body>) -> Option<Option<String>> {
    let code = resp.headers().get("grpc-status")?.to_str().ok()?;
    if code.parse::<i32>().ok()? != tonic::Code::Unavailable as i32 {
        return None;
    }
    let hint = resp
        .headers()
        .get(LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    Some(hint)
}

impl tower::Service<http::Request<Body>> for MetaChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call readies the member's channel it picks.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.clone().send(req))
    }
}

/// A Metadata client over the member list: [`crate::metadata_client`].
pub type MetaClient = pb::metadata_client::MetadataClient<MetaChannel>;

/// An Admin client over the member list: [`admin_client`].
pub type AdminClient = pb::admin_client::AdminClient<MetaChannel>;

/// An Ops client over the member list: [`ops_client`].
pub type OpsClient = pb::ops_client::OpsClient<MetaChannel>;

/// A Locks client over the member list (the mount builds it on its
/// metadata channel, so it is confined as that channel is).
pub type LocksClient = pb::locks_client::LocksClient<MetaChannel>;

/// A Snapshots client (trash and snapshots) over the member list.
pub type SnapshotsClient = pb::snapshots_client::SnapshotsClient<MetaChannel>;

/// A Snapshots client over `list` ("a,b,c" or one address) with BigFS's
/// message limits.
pub fn snapshots_client(list: &str) -> Result<SnapshotsClient, AddrError> {
    Ok(
        pb::snapshots_client::SnapshotsClient::new(MetaChannel::new(list)?)
            .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::MAX_MESSAGE_SIZE),
    )
}

/// An Admin client over `list` ("a,b,c" or one address) with BigFS's
/// message limits.
pub fn admin_client(list: &str) -> Result<AdminClient, AddrError> {
    Ok(pb::admin_client::AdminClient::new(MetaChannel::new(list)?)
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE))
}

/// An Ops client over `list` ("a,b,c" or one address) with BigFS's
/// message limits.
pub fn ops_client(list: &str) -> Result<OpsClient, AddrError> {
    Ok(pb::ops_client::OpsClient::new(MetaChannel::new(list)?)
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE))
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
