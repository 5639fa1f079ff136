//! [`MetaChannel`] against small in-process Ops servers on loopback that
//! play leader, follower (answering "not the leader" with a hint) or
//! member without a leader.

use std::sync::{Arc, Mutex};

use super::*;
use crate::pb::ops_server::{Ops, OpsServer};

/// What a test server answers.
#[derive(Clone)]
enum Role {
    Leader,
    /// Not the leader; names this address as the leader.
    Follower(String),
    /// Cannot reach a majority.
    NoLeader,
}

/// A test member: answers Fsck as its role says; a leader answers with
/// `files` = its id and `chunks` = the request's `probe_timeout_ms`, so a
/// test sees who served the call and that the request arrived intact.
#[derive(Clone)]
struct TestMember {
    id: u64,
    role: Arc<Mutex<Role>>,
    calls: Arc<Mutex<u64>>,
}

#[tonic::async_trait]
impl Ops for TestMember {
    async fn fsck(
        &self,
        req: tonic::Request<pb::FsckRequest>,
    ) -> Result<tonic::Response<pb::FsckReply>, tonic::Status> {
        *self.calls.lock().unwrap() += 1;
        let role = self.role.lock().unwrap().clone();
        match role {
            Role::Leader => Ok(tonic::Response::new(pb::FsckReply {
                files: self.id,
                chunks: u64::from(req.into_inner().probe_timeout_ms),
                ..Default::default()
            })),
            Role::Follower(leader) => Err(not_leader(Some(&leader))),
            Role::NoLeader => Err(no_leader()),
        }
    }
}

struct Server {
    addr: String,
    member: TestMember,
}

impl Server {
    fn set(&self, role: Role) {
        *self.member.role.lock().unwrap() = role;
    }
    fn calls(&self) -> u64 {
        *self.member.calls.lock().unwrap()
    }
}

async fn serve(id: u64, role: Role) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let member = TestMember {
        id,
        role: Arc::new(Mutex::new(role)),
        calls: Arc::default(),
    };
    let svc = OpsServer::new(member.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Server { addr, member }
}

/// A loopback port nothing listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Calls Fsck through `client`; the id of the member that served it.
async fn served_by(client: &mut OpsClient, probe: u32) -> Result<u64, tonic::Status> {
    let r = client
        .fsck(pb::FsckRequest {
            repair: false,
            probe_timeout_ms: probe,
        })
        .await?
        .into_inner();
    assert_eq!(r.chunks, u64::from(probe), "the request arrived intact");
    Ok(r.files)
}

#[tokio::test]
async fn calls_land_on_the_leader_after_a_not_leader_hint() {
    let leader = serve(2, Role::Leader).await;
    let follower = serve(1, Role::Follower(leader.addr.clone())).await;
    let mut c = ops_client(&format!("{},{}", follower.addr, leader.addr)).unwrap();
    assert_eq!(served_by(&mut c, 7).await.unwrap(), 2);
    // Remembered: the next calls go straight to the leader.
    assert_eq!(served_by(&mut c, 8).await.unwrap(), 2);
    assert_eq!(served_by(&mut c, 9).await.unwrap(), 2);
    assert_eq!(follower.calls(), 1, "the follower was asked once");
    assert_eq!(leader.calls(), 3);
}

#[tokio::test]
async fn a_hint_naming_an_unlisted_member_adds_it() {
    let leader = serve(3, Role::Leader).await;
    let follower = serve(1, Role::Follower(leader.addr.clone())).await;
    let ch = MetaChannel::new(&follower.addr).unwrap();
    let mut c = pb::ops_client::OpsClient::new(ch.clone());
    assert_eq!(served_by(&mut c, 1).await.unwrap(), 3);
    assert_eq!(ch.addrs(), vec![follower.addr.clone(), leader.addr.clone()]);
    assert_eq!(ch.leader(), leader.addr);
}

#[tokio::test]
async fn a_leader_move_is_followed() {
    let a = serve(1, Role::Leader).await;
    let b = serve(2, Role::Follower(a.addr.clone())).await;
    let mut c = ops_client(&format!("{},{}", a.addr, b.addr)).unwrap();
    assert_eq!(served_by(&mut c, 1).await.unwrap(), 1);
    // The leadership moves to b; a now points there.
    a.set(Role::Follower(b.addr.clone()));
    b.set(Role::Leader);
    assert_eq!(served_by(&mut c, 2).await.unwrap(), 2);
    assert_eq!(served_by(&mut c, 3).await.unwrap(), 2);
    assert_eq!(a.calls(), 2, "a was asked once after the move");
}

#[tokio::test]
async fn a_dead_first_member_is_skipped() {
    let leader = serve(5, Role::Leader).await;
    let mut c = ops_client(&format!("{},{}", dead_addr(), leader.addr)).unwrap();
    assert_eq!(served_by(&mut c, 4).await.unwrap(), 5);
    assert_eq!(served_by(&mut c, 5).await.unwrap(), 5);
}

#[tokio::test]
async fn a_member_without_leader_passes_to_the_next() {
    let lost = serve(1, Role::NoLeader).await;
    let leader = serve(2, Role::Leader).await;
    let mut c = ops_client(&format!("{},{}", lost.addr, leader.addr)).unwrap();
    assert_eq!(served_by(&mut c, 1).await.unwrap(), 2);
}

#[tokio::test]
async fn with_no_leader_anywhere_the_call_fails_unavailable_after_one_pass() {
    let a = serve(1, Role::NoLeader).await;
    let b = serve(2, Role::NoLeader).await;
    let mut c = ops_client(&format!("{},{},{}", a.addr, dead_addr(), b.addr)).unwrap();
    let e = served_by(&mut c, 1).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().starts_with(NO_LEADER), "{e:?}");
    assert_eq!((a.calls(), b.calls()), (1, 1));
}

#[tokio::test]
async fn followers_pointing_at_each_other_do_not_loop() {
    let a = serve(1, Role::NoLeader).await;
    let b = serve(2, Role::NoLeader).await;
    a.set(Role::Follower(b.addr.clone()));
    b.set(Role::Follower(a.addr.clone()));
    let mut c = ops_client(&format!("{},{}", a.addr, b.addr)).unwrap();
    let e = served_by(&mut c, 1).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().starts_with(NOT_LEADER), "{e:?}");
    // One pass plus the bounded hint follows.
    assert!(a.calls() + b.calls() <= 2 + 2 + MAX_HINT_FOLLOWS as u64);
}

#[test]
fn not_leader_carries_the_hint_and_the_message_prefix() {
    let s = not_leader(Some("10.0.0.2:9400"));
    assert_eq!(s.code(), tonic::Code::Unavailable);
    assert!(s.message().starts_with(NOT_LEADER));
    assert_eq!(leader_hint(&s), Some("10.0.0.2:9400"));
    assert_eq!(leader_hint(&not_leader(None)), None);
    assert!(no_leader().message().starts_with(NO_LEADER));
}

#[test]
fn address_lists_split_on_commas() {
    assert_eq!(parse_addrs("a:1"), vec!["a:1"]);
    assert_eq!(parse_addrs(" a:1, b:2 ,,c:3 "), vec!["a:1", "b:2", "c:3"]);
    assert!(matches!(MetaChannel::new(" , "), Err(AddrError::Empty)));
    assert_eq!(bare("http://h:1/"), "h:1");
}
