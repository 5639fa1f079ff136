use super::*;
use crate::state::Chunk;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn id(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

fn up() -> NodeView {
    NodeView {
        presence: Presence::Up,
        decommissioned: false,
        free: 1 << 30,
    }
}

fn nodes(spec: &[(&str, NodeView)]) -> Nodes {
    spec.iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}

fn chunk(replicas: &[(&str, ReplicaStatus)]) -> Chunk {
    Chunk {
        len: 10,
        refcount: 1,
        zero_since_ms: None,
        created_ms: 0,
        replicas: replicas.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        wants: Default::default(),
    }
}

fn state_with(chunks: Vec<(ChunkId, Chunk)>, names: &[&str]) -> State {
    let mut s = State::new();
    s.add_test_nodes(names, 1);
    s.chunks.extend(chunks);
    s
}

const AV: ReplicaStatus = ReplicaStatus::Available;

#[test]
fn a_gone_replica_is_recopied_but_an_away_one_is_waited_for() {
    let s = state_with(
        vec![(id(1), chunk(&[("a", AV), ("b", AV), ("c", AV)]))],
        &["a", "b", "c", "d"],
    );
    let mut rng = StdRng::seed_from_u64(1);
    let away = NodeView {
        presence: Presence::Away,
        ..up()
    };
    let n = nodes(&[("a", up()), ("b", up()), ("c", away), ("d", up())]);
    assert_eq!(
        plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng),
        Plan::default()
    );
    let gone = NodeView {
        presence: Presence::Gone,
        ..up()
    };
    let n = nodes(&[("a", up()), ("b", up()), ("c", gone), ("d", up())]);
    let p = plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng);
    assert_eq!(p.enqueue.len(), 1);
    assert_eq!(p.enqueue[0].1, "d", "the only eligible target");
    assert!(["a", "b"].contains(&p.enqueue[0].2.as_str()));
}

#[test]
fn most_endangered_chunks_come_first_and_unreferenced_are_skipped() {
    let gone = NodeView {
        presence: Presence::Gone,
        ..up()
    };
    let mut garbage = chunk(&[("a", AV)]);
    garbage.refcount = 0;
    let s = state_with(
        vec![
            (id(1), chunk(&[("a", AV), ("b", AV), ("c", AV)])),
            (id(2), chunk(&[("a", AV), ("c", AV), ("d", AV)])),
            (id(3), garbage),
        ],
        &["a", "b", "c", "d", "e", "f"],
    );
    let n = nodes(&[
        ("a", up()),
        ("b", up()),
        ("c", gone.clone()),
        ("d", gone),
        ("e", up()),
        ("f", up()),
    ]);
    let p = plan(
        &s,
        Window::ALL,
        &n,
        3,
        0,
        (1000, 0),
        &mut StdRng::seed_from_u64(2),
    );
    let ids: Vec<ChunkId> = p.enqueue.iter().map(|e| e.0).collect();
    assert_eq!(ids, vec![id(2), id(2), id(1)], "one copy left goes first");
}

#[test]
fn queued_copies_count_and_a_decommissioned_node_is_drained_once_copies_exist() {
    let decom = NodeView {
        decommissioned: true,
        ..up()
    };
    let mut s = state_with(
        vec![(id(1), chunk(&[("a", AV), ("b", AV), ("c", AV)]))],
        &["a", "b", "c", "d"],
    );
    let n = nodes(&[("a", up()), ("b", up()), ("c", decom), ("d", up())]);
    let mut rng = StdRng::seed_from_u64(3);
    let p = plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng);
    assert_eq!(p.enqueue, vec![(id(1), "d".into(), "a".into())]);
    assert!(p.drain.is_empty(), "not before a copy exists elsewhere");
    crate::heal::apply(
        &mut s,
        &crate::heal::HealCommand::Enqueue {
            items: p.enqueue,
            now_ms: 0,
        },
    )
    .unwrap();
    assert_eq!(
        plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng),
        Plan::default(),
        "queued"
    );
    s.chunks
        .get_mut(&id(1))
        .unwrap()
        .replicas
        .insert("d".into(), AV);
    let p = plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng);
    assert_eq!(p.drain, vec![(id(1), "c".into())]);
}

#[test]
fn surplus_copies_go_from_the_fullest_node_once_nothing_is_in_flight() {
    let full = NodeView {
        free: 1 << 20,
        ..up()
    };
    let four = chunk(&[("a", AV), ("b", AV), ("c", AV), ("d", AV)]);
    let mut s = state_with(vec![(id(1), four.clone())], &["a", "b", "c", "d"]);
    let n = nodes(&[("a", up()), ("b", full), ("c", up()), ("d", up())]);
    let mut rng = StdRng::seed_from_u64(5);
    let p = plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng);
    assert_eq!(
        p.drain,
        vec![(id(1), "b".into())],
        "the fullest node's copy"
    );
    assert!(p.enqueue.is_empty());
    assert_eq!(
        plan(&s, Window::ALL, &n, 2, 0, (1000, 0), &mut rng)
            .drain
            .len(),
        2,
        "two surplus copies at replication 2"
    );

    // A copy of the chunk still landing: nothing is dropped yet.
    let mut landing = four.clone();
    landing.replicas.insert("e".into(), ReplicaStatus::Pending);
    s.chunks.insert(id(1), landing);
    let n5 = nodes(&[
        ("a", up()),
        ("b", up()),
        ("c", up()),
        ("d", up()),
        ("e", up()),
    ]);
    assert!(
        plan(&s, Window::ALL, &n5, 3, 0, (1000, 0), &mut rng)
            .drain
            .is_empty()
    );

    // A copy on a node that is away does not count: no surplus.
    s.chunks.insert(id(1), four);
    let away = NodeView {
        presence: Presence::Away,
        ..up()
    };
    let n = nodes(&[("a", up()), ("b", up()), ("c", up()), ("d", away)]);
    assert_eq!(
        plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng),
        Plan::default()
    );
}

#[test]
fn due_jobs_respect_backoff_and_the_per_node_limit() {
    let mut s = state_with(
        vec![
            (id(1), chunk(&[("a", AV)])),
            (id(2), chunk(&[("a", AV)])),
            (id(3), chunk(&[("a", AV), ("b", AV)])),
        ],
        &["a", "b", "c"],
    );
    crate::heal::apply(
        &mut s,
        &crate::heal::HealCommand::Enqueue {
            items: vec![
                (id(1), "c".into(), "a".into()),
                (id(2), "c".into(), "a".into()),
                (id(3), "c".into(), "a".into()),
            ],
            now_ms: 0,
        },
    )
    .unwrap();
    s.heal
        .queue
        .get_mut(&(id(2), "c".into()))
        .unwrap()
        .next_try_ms = 500;
    let n = nodes(&[("a", up()), ("b", up()), ("c", up())]);
    let running = BTreeSet::new();
    let jobs = due_jobs(&s, &n, 100, None, &running, &mut BTreeMap::new(), 1, 10);
    assert_eq!(jobs.len(), 1, "c takes one copy at a time");
    assert_eq!(jobs[0].id, id(1), "one copy left before two");
    let jobs = due_jobs(&s, &n, 100, None, &running, &mut BTreeMap::new(), 5, 10);
    assert_eq!(jobs.len(), 2, "id 2 is backing off");
    // recover runs everything of the node now.
    let jobs = due_jobs(
        &s,
        &n,
        100,
        Some("c"),
        &running,
        &mut BTreeMap::new(),
        1,
        usize::MAX,
    );
    assert_eq!(jobs.len(), 3);
    // A target that is not up waits.
    let away = NodeView {
        presence: Presence::Away,
        ..up()
    };
    let n = nodes(&[("a", up()), ("b", up()), ("c", away)]);
    assert!(due_jobs(&s, &n, 1000, None, &running, &mut BTreeMap::new(), 5, 10).is_empty());
}

/// A state where chunk 1 (copies on a and b) has a queued copy to c.
fn queued_to_c() -> State {
    let mut s = state_with(
        vec![(id(1), chunk(&[("a", AV), ("b", AV)]))],
        &["a", "b", "c", "d"],
    );
    crate::heal::apply(
        &mut s,
        &crate::heal::HealCommand::Enqueue {
            items: vec![(id(1), "c".into(), "a".into())],
            now_ms: 0,
        },
    )
    .unwrap();
    s
}

fn four_up() -> Nodes {
    nodes(&[("a", up()), ("b", up()), ("c", up()), ("d", up())])
}

/// Lists chunk 1's copy on `node` with `status`.
fn list(s: &mut State, node: &str, status: ReplicaStatus) {
    s.chunks
        .get_mut(&id(1))
        .unwrap()
        .replicas
        .insert(node.into(), status);
}

/// One pass over four Up nodes at replication 3, a 1 s pending timeout and
/// a failed-target hold of `hold` ms.
fn plan4(s: &State, now: u64, hold: u64, seed: u64) -> Plan {
    plan(
        s,
        Window::ALL,
        &four_up(),
        3,
        now,
        (1000, hold),
        &mut StdRng::seed_from_u64(seed),
    )
}

#[test]
fn a_queued_copy_whose_designation_vanished_is_designated_again_keeping_its_attempts() {
    let mut s = queued_to_c();
    let key = (id(1), "c".to_string());
    s.heal.queue.get_mut(&key).unwrap().attempts = 2;
    // What a crash between the queue and the chunk table left behind.
    s.chunks.get_mut(&id(1)).unwrap().replicas.remove("c");
    let p = plan4(&s, 0, 0, 7);
    assert_eq!(p.enqueue, vec![(id(1), "c".into(), "a".into())]);
    assert!(p.cancel.is_empty() && p.done.is_empty());
    crate::heal::apply(
        &mut s,
        &crate::heal::HealCommand::Enqueue {
            items: p.enqueue,
            now_ms: 5,
        },
    )
    .unwrap();
    assert_eq!(s.chunks[&id(1)].replicas["c"], ReplicaStatus::Pending);
    assert_eq!(s.heal.queue[&key].attempts, 2, "the entry is kept");
    assert_eq!(plan4(&s, 0, 0, 7), Plan::default(), "consistent again");
}

#[test]
fn queued_copies_already_listed_are_done_and_those_of_dead_chunks_dropped() {
    let mut s = queued_to_c();
    list(&mut s, "c", AV);
    let p = plan4(&s, 0, 0, 8);
    assert_eq!(p.done, vec![(id(1), "c".into())]);

    let mut s = queued_to_c();
    s.chunks.get_mut(&id(1)).unwrap().refcount = 0;
    let p = plan4(&s, 0, 0, 8);
    assert_eq!(p.unqueue, vec![(id(1), "c".into())]);
    assert!(p.cancel.is_empty(), "not a failure");

    let mut s = queued_to_c();
    s.chunks.remove(&id(1));
    let p = plan4(&s, 0, 0, 8);
    assert_eq!(p.unqueue, vec![(id(1), "c".into())]);
}

#[test]
fn a_target_that_failed_a_chunk_is_not_picked_for_it_again() {
    let mut s = queued_to_c();
    crate::heal::apply(
        &mut s,
        &crate::heal::HealCommand::Finish {
            outcomes: vec![crate::heal::RepairOutcome {
                id: id(1),
                target: "c".into(),
                error: Some("disk full".into()),
                next_try_ms: 0,
                give_up: true,
            }],
            now_ms: 1,
        },
    )
    .unwrap();
    for seed in 0..20 {
        let p = plan4(&s, 1, 500, seed);
        assert_eq!(p.enqueue, vec![(id(1), "d".into(), "a".into())]);
    }
    // Past the hold, c may be picked again.
    let picked: BTreeSet<String> = (0..20)
        .map(|seed| plan4(&s, 501, 500, seed))
        .map(|p| p.enqueue[0].1.clone())
        .collect();
    assert!(picked.contains("c"), "{picked:?}");
    // With no other node, the failed one gets another try at once.
    let three = nodes(&[("a", up()), ("b", up()), ("c", up())]);
    let p = plan(
        &s,
        Window::ALL,
        &three,
        3,
        1,
        (1000, 500),
        &mut StdRng::seed_from_u64(1),
    );
    assert_eq!(p.enqueue, vec![(id(1), "c".into(), "a".into())]);
}

#[test]
fn waiting_copies_are_dropped_when_the_chunk_has_enough_copies_again() {
    let mut s = queued_to_c();
    // The node that held the third copy came back.
    list(&mut s, "d", AV);
    let p = plan4(&s, 0, 0, 9);
    assert_eq!(p.unqueue, vec![(id(1), "c".into())]);
    assert!(
        p.enqueue.is_empty() && p.drain.is_empty(),
        "the dropped entry's designation is not queued again: {p:?}"
    );
    // Past the pending timeout too.
    let p2 = plan4(&s, 5000, 0, 9);
    assert_eq!(p2, p, "stable past the pending timeout");
    crate::heal::apply(
        &mut s,
        &crate::heal::HealCommand::Unqueue { items: p.unqueue },
    )
    .unwrap();
    assert!(s.heal.queue.is_empty());
    assert!(
        !s.chunks[&id(1)].replicas.contains_key("c"),
        "designation dropped"
    );

    // A copy already running is left to finish.
    let mut s = queued_to_c();
    list(&mut s, "d", AV);
    crate::heal::apply(
        &mut s,
        &crate::heal::HealCommand::Start {
            items: vec![(id(1), "c".into(), "a".into())],
        },
    )
    .unwrap();
    let p = plan4(&s, 0, 0, 9);
    assert!(p.unqueue.is_empty());
}

#[test]
fn a_stale_designation_is_dropped_when_no_copy_is_missing_and_queued_when_one_is() {
    let mut s = state_with(
        vec![(
            id(1),
            chunk(&[
                ("a", AV),
                ("b", AV),
                ("c", AV),
                ("d", ReplicaStatus::Pending),
            ]),
        )],
        &["a", "b", "c", "d"],
    );
    let p = plan4(&s, 5000, 0, 10);
    assert_eq!(p.drain, vec![(id(1), "d".into())]);
    assert!(p.enqueue.is_empty());
    s.chunks.get_mut(&id(1)).unwrap().replicas.remove("c");
    let p = plan4(&s, 5000, 0, 10);
    assert!(p.drain.is_empty());
    assert_eq!(p.enqueue.len(), 1);
    assert_eq!(p.enqueue[0].1, "d", "the stale designation gets its copy");
}

#[test]
fn each_chunk_is_healed_and_trimmed_to_the_highest_count_of_its_files() {
    // Two copies; its files want 2 and 4: two more copies are made.
    let mut raised = chunk(&[("a", AV), ("b", AV)]);
    raised.wants = [(2, 1), (4, 1)].into_iter().collect();
    // Three copies; its only file wants 1: two go.
    let mut lowered = chunk(&[("a", AV), ("b", AV), ("c", AV)]);
    lowered.wants = [(1, 1)].into_iter().collect();
    // References not counted by replication: the default (3) applies.
    let legacy = chunk(&[("a", AV), ("b", AV), ("c", AV)]);
    let s = state_with(
        vec![(id(1), raised), (id(2), lowered), (id(3), legacy)],
        &["a", "b", "c", "d"],
    );
    let n = nodes(&[("a", up()), ("b", up()), ("c", up()), ("d", up())]);
    let mut rng = StdRng::seed_from_u64(7);
    let p = plan(&s, Window::ALL, &n, 3, 0, (1000, 0), &mut rng);
    let mut targets: Vec<&str> = p
        .enqueue
        .iter()
        .filter(|(c, ..)| *c == id(1))
        .map(|(_, t, _)| t.as_str())
        .collect();
    targets.sort();
    assert_eq!(targets, ["c", "d"], "{p:?}");
    assert_eq!(p.enqueue.len(), 2, "{p:?}");
    assert_eq!(p.drain.len(), 2, "{p:?}");
    assert!(p.drain.iter().all(|(c, _)| *c == id(2)), "{p:?}");
}

#[test]
fn slices_of_the_chunk_table_cover_it_once_per_round_then_start_over() {
    let chunks: Vec<(ChunkId, Chunk)> = (1..=10).map(|n| (id(n), chunk(&[("a", AV)]))).collect();
    let s = state_with(chunks, &["a"]);
    // A table within the batch is looked at whole.
    assert_eq!(Window::next(&s, None, 10), (Window::ALL, None));
    let mut cursor = None;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (w, next) = Window::next(&s, cursor, 4);
        seen.extend(w.chunks(&s).map(|(i, _)| i.0[0]));
        cursor = next;
    }
    assert_eq!(seen, (1..=10).collect::<Vec<u8>>());
    assert_eq!(cursor, None, "after the last slice the next starts over");
    let (w, _) = Window::next(&s, cursor, 4);
    assert_eq!(
        w.chunks(&s).map(|(i, _)| i.0[0]).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

#[test]
fn a_slice_plans_its_own_chunks_and_every_chunk_with_a_queued_copy() {
    // Chunks 1..=6 each miss a copy (one of three wanted); chunk 6 has a
    // copy queued to e, a node that is gone.
    let chunks: Vec<(ChunkId, Chunk)> = (1..=6)
        .map(|n| (id(n), chunk(&[("a", AV), ("b", AV)])))
        .collect();
    let mut s = state_with(chunks, &["a", "b", "c", "d"]);
    s.heal.queue.insert(
        (id(6), "e".into()),
        RepairEntry {
            source: "a".into(),
            status: RepairStatus::Pending,
            attempts: 0,
            last_error: String::new(),
            next_try_ms: 0,
            created_ms: 0,
            done_ms: 0,
        },
    );
    let (w, _) = Window::next(&s, None, 2);
    let p = plan(
        &s,
        w,
        &four_up(),
        3,
        0,
        (1000, 0),
        &mut StdRng::seed_from_u64(1),
    );
    let planned: BTreeSet<u8> = p.enqueue.iter().map(|(i, ..)| i.0[0]).collect();
    // Chunks 1 and 2 are in the slice, 6 has a queued copy: its copy to
    // the gone node is cancelled and made elsewhere. 3..=5 wait.
    assert_eq!(planned, BTreeSet::from([1, 2, 6]));
    assert_eq!(
        p.cancel,
        vec![(id(6), "e".to_string(), "target gone or decommissioned")]
    );
    let all = plan(
        &s,
        Window::ALL,
        &four_up(),
        3,
        0,
        (1000, 0),
        &mut StdRng::seed_from_u64(1),
    );
    assert_eq!(all.enqueue.len(), 6);
}
