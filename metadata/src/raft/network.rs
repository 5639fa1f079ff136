//! Raft's RPCs over the metadata member's own gRPC port (service `Raft` in
//! `raft.proto`): the sending side openraft calls, and the receiving side
//! that hands each request to the local Raft.
//!
//! Payloads are openraft's values bincode-encoded; a response carries the
//! remote `Result`, so a refusal arrives as openraft's own error. Channels
//! are kept per address: openraft asks for a client per heartbeat round.
//! Snapshots go in openraft's chunks (`snapshot_max_chunk_size`), each one
//! gRPC message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bigfs_proto::pb::{self, raft_client::RaftClient, raft_server};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{NodeId, Raft, TypeConfig};
use crate::store::{decode, encode};

/// Largest Raft message: an AppendEntries batch or a snapshot chunk
/// (openraft's default chunk is 3 MiB) plus headers.
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;

/// Makes clients for openraft, one cached channel per member address.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Network {
    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, bigfs_proto::ChannelError> {
        let mut g = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match g.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = bigfs_proto::channel(addr)?;
                g.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(RaftClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE))
    }
}

/// A client to one member.
pub struct Conn {
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Conn {
        Conn {
            target,
            addr: node.addr.clone(),
            client: self.client(&node.addr).ok(),
        }
    }
}

#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

type Rpc<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Conn {
    /// Sends `req` with `send` and decodes the remote result.
    async fn call<Q, T, E, F, Fut>(&mut self, req: &Q, option: &RPCOption, send: F) -> Rpc<T, E>
    where
        Q: Serialize,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Request<pb::RaftPayload>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<pb::RaftPayload>, Status>>,
    {
        let Some(client) = self.client.clone() else {
            let e = Failed(format!("bad member address {:?}", self.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(pb::RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match send(client, request).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let e = Failed(format!(
                    "member {} at {}: {}",
                    self.target,
                    self.addr,
                    s.message()
                ));
                return Err(match s.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        let out: Result<T, RaftError<NodeId, E>> =
            decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        out.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(&rpc, &option, |mut c, r| async move {
            c.install_snapshot(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }
}

/// The receiving side: the `Raft` gRPC service of a member.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
        RaftService { raft }
    }

    pub fn server(self) -> raft_server::RaftServer<RaftService> {
        raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }
}

fn payload<T: DeserializeOwned>(r: Request<pb::RaftPayload>) -> Result<T, Status> {
    decode(&r.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
}

fn reply<T: Serialize>(out: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = encode(out).map_err(|e| Status::internal(format!("encoding a Raft reply: {e}")))?;
    Ok(Response::new(pb::RaftPayload { data }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = payload(request)?;
        reply(&self.raft.append_entries(req).await)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req: VoteRequest<NodeId> = payload(request)?;
        reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = payload(request)?;
        reply(&self.raft.install_snapshot(req).await)
    }
}
