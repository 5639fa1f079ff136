use std::collections::BTreeMap;

use super::*;
use crate::repair::NodeView;
use crate::state::Chunk;

fn id(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

fn chunk(refcount: u64, zero: Option<u64>, r: &[(&str, ReplicaStatus)]) -> Chunk {
    Chunk {
        len: 1,
        refcount,
        zero_since_ms: zero,
        created_ms: 0,
        replicas: r.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        wants: Default::default(),
    }
}

fn view(p: Presence) -> NodeView {
    NodeView {
        presence: p,
        decommissioned: false,
        free: 0,
    }
}

#[test]
fn only_unreferenced_chunks_past_grace_are_marked() {
    let mut s = State::new();
    s.chunks
        .insert(id(1), chunk(0, Some(0), &[("a", ReplicaStatus::Available)]));
    s.chunks.insert(
        id(2),
        chunk(0, Some(90), &[("a", ReplicaStatus::Available)]),
    );
    s.chunks
        .insert(id(3), chunk(2, None, &[("a", ReplicaStatus::Available)]));
    s.chunks
        .insert(id(4), chunk(0, Some(0), &[("a", ReplicaStatus::Deleting)]));
    let grace = |ms| Grace {
        upload_ms: ms,
        release_ms: ms,
    };
    assert_eq!(
        mark_candidates(&s, Window::ALL, 100, grace(50), 10),
        vec![id(1)]
    );
    assert_eq!(
        mark_candidates(&s, Window::ALL, 1000, grace(50), 1),
        vec![id(1)]
    );
}

#[test]
fn released_chunks_go_after_the_short_grace_and_fresh_uploads_after_the_long_one() {
    let mut s = State::new();
    // Uploaded at 0, released at 20 s.
    let mut released = chunk(0, Some(20_000), &[("a", ReplicaStatus::Available)]);
    released.created_ms = 0;
    s.chunks.insert(id(1), released);
    // Uploaded at 20 s, not committed yet.
    let mut fresh = chunk(0, Some(20_000), &[("a", ReplicaStatus::Available)]);
    fresh.created_ms = 20_000;
    s.chunks.insert(id(2), fresh);
    let grace = Grace {
        upload_ms: 10_000,
        release_ms: 100,
    };
    assert!(mark_candidates(&s, Window::ALL, 20_050, grace, 10).is_empty());
    assert_eq!(
        mark_candidates(&s, Window::ALL, 20_100, grace, 10),
        vec![id(1)]
    );
    assert_eq!(
        mark_candidates(&s, Window::ALL, 30_000, grace, 10),
        vec![id(1), id(2)]
    );
}

#[test]
fn a_nearly_full_cluster_collects_released_chunks_at_once() {
    let config = crate::heal::HealConfig::default();
    assert_eq!(
        Grace::now(&config, 50, 100).release_ms,
        config.gc_release_grace_ms
    );
    let urgent = Grace::now(&config, 5, 100);
    assert_eq!(urgent.release_ms, 0);
    assert_eq!(
        urgent.upload_ms, config.gc_grace_ms,
        "uploads keep their grace"
    );
}

#[test]
fn deletions_go_to_up_nodes_and_gone_nodes_are_forgotten() {
    let mut s = State::new();
    s.chunks.insert(
        id(1),
        chunk(
            0,
            Some(0),
            &[
                ("a", ReplicaStatus::Deleting),
                ("b", ReplicaStatus::Deleting),
                ("c", ReplicaStatus::Deleting),
                ("d", ReplicaStatus::Pending),
            ],
        ),
    );
    s.heal.trash.insert(("a".into(), id(2)));
    s.heal.trash.insert(("c".into(), id(3)));
    let nodes: Nodes = BTreeMap::from([
        ("a".to_string(), view(Presence::Up)),
        ("b".to_string(), view(Presence::Away)),
        ("c".to_string(), view(Presence::Gone)),
        ("d".to_string(), view(Presence::Up)),
    ]);
    let sw = deletions(&s, Window::ALL, &nodes, 100);
    assert_eq!(
        sw.delete,
        vec![
            Deletion {
                id: id(1),
                node: "a".into(),
                trash: false
            },
            Deletion {
                id: id(2),
                node: "a".into(),
                trash: true
            },
        ]
    );
    assert_eq!(sw.forget, vec![(id(1), "c".to_string())]);
    assert_eq!(sw.drop_trash, vec![("c".to_string(), id(3))]);
}
