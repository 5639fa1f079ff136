//! The metadata service as a Raft group of three members, with real
//! processes on loopback: a leader killed with -9 loses nothing
//! acknowledged and another takes over; a member cut off from the majority
//! serves no reads and takes no writes, then catches up; a member whose
//! data directory is wiped rejoins through a snapshot; a retried mutation
//! is answered once.

use std::time::{Duration, Instant};

use bigfs_proto::pb;
use bigfs_proto::pb::metadata_client::MetadataClient;
use bigfs_tests::group::Group;
use tonic::transport::Channel;

const ROOT: u64 = 1;

fn mkdir(name: &str) -> pb::CreateRequest {
    pb::CreateRequest {
        parent: ROOT,
        name: name.into(),
        kind: pb::FileKind::Directory as i32,
        mode: 0o755,
        ..Default::default()
    }
}

/// Creates `names` on the leader, retrying (by following the leader) until
/// each is acknowledged; returns nothing until all are.
async fn create_all(g: &Group, names: &[String]) {
    for name in names {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let l = g.wait_leader(Duration::from_secs(30)).await;
            match g.client_of(l).create(mkdir(name)).await {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::AlreadyExists => break,
                Err(s) => {
                    assert!(Instant::now() < deadline, "create {name}: {s:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

async fn lookup(c: &mut MetadataClient<Channel>, name: &str) -> Result<u64, tonic::Status> {
    c.lookup(pb::LookupRequest {
        parent: ROOT,
        name: name.into(),
    })
    .await
    .map(|r| r.into_inner().attr.map_or(0, |a| a.ino))
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn assert_all_present(g: &Group, names: &[String]) {
    let l = g.wait_leader(Duration::from_secs(30)).await;
    let mut c = g.client_of(l);
    for n in names {
        let ino = lookup(&mut c, n)
            .await
            .unwrap_or_else(|e| panic!("{n} acknowledged but missing on leader {}: {e:?}", l + 1));
        assert!(ino > ROOT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_nothing_and_another_member_takes_over() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(180));
    let mut g = Group::start(3).await;
    let first = names("a", 40);
    create_all(&g, &first).await;
    for round in 0..3 {
        let old = g.wait_leader(Duration::from_secs(30)).await;
        let start = Instant::now();
        if round % 2 == 0 {
            g.kill(old);
        } else {
            g.terminate(old);
        }
        let new = g.wait_leader(Duration::from_secs(30)).await;
        assert_ne!(new, old, "a dead member cannot lead");
        eprintln!(
            "round {round}: member {} took over in {:?}",
            new + 1,
            start.elapsed()
        );
        assert_all_present(&g, &first).await;
        let more = names(&format!("r{round}-"), 20);
        create_all(&g, &more).await;
        assert_all_present(&g, &more).await;
        g.start_member(old);
        // The restarted member catches up with everything committed.
        let target = g.status_of(new).await.expect("leader status").commit_index;
        g.wait_applied(old, target, Duration::from_secs(30)).await;
    }
    // A follower answers nothing itself: it points at the leader.
    let l = g.wait_leader(Duration::from_secs(30)).await;
    let f = (l + 1) % 3;
    let err = lookup(&mut g.client_of(f), "a0").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let hint = err
        .metadata()
        .get("bigfs-leader")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(hint.as_deref(), Some(g.addrs[l].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_the_majority_serves_nothing_and_catches_up_after() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(180));
    // Every member runs as a user of its own, so iptables can tell their
    // traffic from this test's (uid 0), which must still reach them all.
    let mut g = Group::start_with(3, &[65531, 65532, 65533], &[]).await;
    let before = names("b", 20);
    create_all(&g, &before).await;
    // Cut off the leader itself: the harder case.
    let cut = g.wait_leader(Duration::from_secs(30)).await;
    let others: Vec<u32> = [65531u32, 65532, 65533]
        .into_iter()
        .filter(|u| *u != 65531 + cut as u32)
        .collect();
    // One rule per other uid: each may not reach the cut member.
    g.isolate(cut, 65531 + cut as u32, others[0]);
    g.isolate(cut, 65531 + cut as u32, others[1]);
    let t0 = Instant::now();
    // The majority elects another leader and takes writes.
    let new = 'found: loop {
        // Asked of the majority only: the cut-off member may still call
        // itself leader, and asked first it would hide the new one.
        for i in (0..3).filter(|&i| i != cut) {
            if let Some(s) = g.status_of(i).await
                && s.state == "Leader"
            {
                break 'found i;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the majority elected no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let during = names("d", 20);
    for n in &during {
        g.client_of(new)
            .create(mkdir(n))
            .await
            .unwrap_or_else(|e| panic!("the majority refused {n}: {e:?}"));
    }
    // The cut-off member answers neither reads nor writes.
    let mut c = g.client_of(cut);
    let read = tokio::time::timeout(Duration::from_secs(15), lookup(&mut c, "b0"))
        .await
        .expect("a refused read is answered, not hung");
    assert_eq!(
        read.as_ref().map_err(|e| e.code()),
        Err(tonic::Code::Unavailable),
        "a member without a majority served a read: {read:?}"
    );
    let stale = tokio::time::timeout(Duration::from_secs(15), lookup(&mut c, "d0"))
        .await
        .expect("answered");
    assert!(
        stale.is_err(),
        "the cut-off member served a read: {stale:?}"
    );
    let write = tokio::time::timeout(Duration::from_secs(15), c.create(mkdir("lost")))
        .await
        .expect("a refused write is answered, not hung");
    assert_eq!(
        write.as_ref().map(|_| ()).map_err(|e| e.code()),
        Err(tonic::Code::Unavailable),
        "a member without a majority took a write"
    );
    // Rejoined, it catches up with what the majority did meanwhile.
    g.heal_partition();
    let target = g.status_of(new).await.expect("leader status").commit_index;
    g.wait_applied(cut, target, Duration::from_secs(30)).await;
    assert_all_present(&g, &before).await;
    assert_all_present(&g, &during).await;
    let l = g.wait_leader(Duration::from_secs(30)).await;
    assert!(
        lookup(&mut g.client_of(l), "lost").await.is_err(),
        "the write the cut-off member refused must not appear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_is_wiped_rejoins_through_a_snapshot() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(180));
    let mut g = Group::start(3).await;
    let l = g.wait_leader(Duration::from_secs(30)).await;
    let victim = (l + 1) % 3;
    g.kill(victim);
    std::fs::remove_dir_all(g.data_dir(victim)).expect("wipe");
    // Enough entries that the leader snapshots (every 200) and drops the
    // log the wiped member would need.
    let files = names("s", 320);
    create_all(&g, &files).await;
    let leader = g.wait_leader(Duration::from_secs(30)).await;
    let st = g.status_of(leader).await.expect("status");
    assert!(
        st.snapshot_index > 0,
        "the leader has not snapshotted: {st:?}"
    );
    g.start_member(victim);
    g.wait_applied(victim, st.commit_index, Duration::from_secs(60))
        .await;
    let vs = g.status_of(victim).await.expect("victim status");
    assert!(
        vs.snapshot_index > 0,
        "the wiped member caught up without a snapshot: {vs:?}"
    );
    // Now lose another member: the wiped one is part of the majority that
    // still has everything.
    let other = (0..3)
        .find(|i| *i != victim && *i != leader)
        .expect("third");
    g.kill(leader);
    let _ = other;
    assert_all_present(&g, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_mutation_is_answered_as_the_first_time_by_three_members() {
    let _deadline = bigfs_tests::deadline(Duration::from_secs(120));
    // Every member drops the reply to every second client mutation it
    // applies, after applying it.
    let g = Group::start_with(3, &[], &[("BIGFS_TEST_DROP_REPLY", "2")]).await;
    let l = g.wait_leader(Duration::from_secs(30)).await;
    let mut c = g.client_of(l);
    let mut seen_drop = false;
    for i in 0..6u64 {
        let mut req = mkdir(&format!("once{i}"));
        req.id = Some(pb::RequestId {
            client: 0xfeed,
            slot: 0,
            seq: i + 1,
        });
        let first = c.create(req.clone()).await;
        let ino = match first {
            Ok(r) => r.into_inner().attr.expect("attr").ino,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                seen_drop = true;
                // The retry: the same id. Not EEXIST: the first answer.
                c.create(req.clone())
                    .await
                    .unwrap_or_else(|e| panic!("retry of once{i} answered {e:?}"))
                    .into_inner()
                    .attr
                    .expect("attr")
                    .ino
            }
        };
        assert_eq!(lookup(&mut c, &format!("once{i}")).await.unwrap(), ino);
        // The same retry again, later: still the first answer.
        let again = c.create(req).await.expect("late retry").into_inner();
        assert_eq!(again.attr.expect("attr").ino, ino);
    }
    assert!(seen_drop, "the fault never fired");
}
