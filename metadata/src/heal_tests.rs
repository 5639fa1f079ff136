use super::*;
use crate::state::{Chunk, Command, apply as apply_cmd};
use std::collections::BTreeMap;

fn id(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

fn state() -> State {
    let mut s = State::new();
    s.add_test_nodes(&["a", "b", "c", "d"], 100);
    s.chunks.insert(
        id(1),
        Chunk {
            len: 10,
            refcount: 1,
            zero_since_ms: None,
            created_ms: 0,
            replicas: BTreeMap::from([
                ("a".into(), ReplicaStatus::Available),
                ("b".into(), ReplicaStatus::Available),
            ]),
            wants: Default::default(),
        },
    );
    s
}

fn run(s: &mut State, c: HealCommand) {
    apply_cmd(s, &Command::Heal(c)).unwrap();
}

fn enqueue(s: &mut State) {
    run(
        s,
        HealCommand::Enqueue {
            items: vec![(id(1), "c".into(), "a".into())],
            now_ms: 100,
        },
    );
}

fn fail(s: &mut State, give_up: bool, now_ms: u64) {
    run(
        s,
        HealCommand::Finish {
            outcomes: vec![RepairOutcome {
                id: id(1),
                target: "c".into(),
                error: Some("boom".into()),
                next_try_ms: now_ms + 500,
                give_up,
            }],
            now_ms,
        },
    );
}

#[test]
fn enqueue_designates_the_target_pending_once() {
    let mut s = state();
    enqueue(&mut s);
    enqueue(&mut s);
    assert_eq!(s.heal.queue.len(), 1);
    let e = &s.heal.queue[&(id(1), "c".to_string())];
    assert_eq!(e.status, RepairStatus::Pending);
    assert_eq!(e.next_try_ms, 100);
    assert_eq!(s.chunks[&id(1)].replicas["c"], ReplicaStatus::Pending);
    // Unknown chunk or node: skipped, not an error.
    run(
        &mut s,
        HealCommand::Enqueue {
            items: vec![
                (id(9), "c".into(), "a".into()),
                (id(1), "zz".into(), "a".into()),
            ],
            now_ms: 1,
        },
    );
    assert_eq!(s.heal.queue.len(), 1);
}

#[test]
fn failures_back_off_then_give_up_and_drop_the_designation() {
    let mut s = state();
    enqueue(&mut s);
    run(
        &mut s,
        HealCommand::Start {
            items: vec![(id(1), "c".into(), "b".into())],
        },
    );
    let key = (id(1), "c".to_string());
    assert_eq!(s.heal.queue[&key].status, RepairStatus::InProgress);
    assert_eq!(s.heal.queue[&key].source, "b");
    fail(&mut s, false, 1_000);
    let e = &s.heal.queue[&key];
    assert_eq!(
        (e.status, e.attempts, e.next_try_ms),
        (RepairStatus::Pending, 1, 1_500)
    );
    assert_eq!(e.last_error, "boom");
    fail(&mut s, true, 2_000);
    assert_eq!(s.heal.queue[&key].status, RepairStatus::Failed);
    assert!(!s.chunks[&id(1)].replicas.contains_key("c"));
    // A failed entry can be queued again.
    enqueue(&mut s);
    assert_eq!(s.heal.queue[&key].status, RepairStatus::Pending);
}

#[test]
fn completed_entries_are_counted_and_pruned_after_the_history_window() {
    let mut s = state();
    enqueue(&mut s);
    let ok = |now_ms| HealCommand::Finish {
        outcomes: vec![RepairOutcome {
            id: id(1),
            target: "c".into(),
            error: None,
            next_try_ms: 0,
            give_up: false,
        }],
        now_ms,
    };
    run(&mut s, ok(1_000));
    assert_eq!(s.heal.completed_total, 1);
    assert_eq!(
        s.heal.queue[&(id(1), "c".to_string())].status,
        RepairStatus::Completed
    );
    run(&mut s, ok(1_000 + HISTORY_MS + 1));
    assert!(s.heal.queue.is_empty());
    assert_eq!(s.heal.completed_total, 1);
}

#[test]
fn gc_mark_needs_refcount_zero_past_grace_and_spares_pending() {
    let mut s = state();
    let c = s.chunks.get_mut(&id(1)).unwrap();
    c.replicas.insert("c".into(), ReplicaStatus::Pending);
    let mark = |now_ms| HealCommand::GcMark {
        ids: vec![id(1)],
        now_ms,
        grace_ms: 100,
    };
    run(&mut s, mark(1_000));
    assert_eq!(
        s.chunks[&id(1)].replicas["a"],
        ReplicaStatus::Available,
        "referenced"
    );
    let c = s.chunks.get_mut(&id(1)).unwrap();
    c.refcount = 0;
    c.zero_since_ms = Some(950);
    run(&mut s, mark(1_000));
    assert_eq!(
        s.chunks[&id(1)].replicas["a"],
        ReplicaStatus::Available,
        "in grace"
    );
    run(&mut s, mark(1_050));
    let r = &s.chunks[&id(1)].replicas;
    assert_eq!(r["a"], ReplicaStatus::Deleting);
    assert_eq!(r["b"], ReplicaStatus::Deleting);
    assert_eq!(r["c"], ReplicaStatus::Pending);
    // A chunk being collected is neither a dedup hit nor committable.
    assert!(!crate::chunks::is_dedup_hit(&s.chunks[&id(1)], |_| true));
    assert!(crate::chunks::unusable_reason(&s, &id(1), 10).is_some());

    run(
        &mut s,
        HealCommand::GcDeleted {
            items: vec![
                (id(1), "a".into()),
                (id(1), "b".into()),
                (id(1), "c".into()),
            ],
        },
    );
    // The Pending replica is untouched by the sweep...
    assert_eq!(s.chunks[&id(1)].replicas.len(), 1);
    // ...and an orphan designation past grace goes to the trash.
    run(&mut s, mark(2_000));
    assert!(!s.chunks.contains_key(&id(1)));
    assert!(s.heal.trash.contains(&("c".to_string(), id(1))));
}

#[test]
fn deleted_replicas_remove_the_chunk_and_its_queue_entries() {
    let mut s = state();
    enqueue(&mut s);
    let c = s.chunks.get_mut(&id(1)).unwrap();
    c.refcount = 0;
    c.zero_since_ms = Some(0);
    c.replicas.insert("c".into(), ReplicaStatus::Available);
    run(
        &mut s,
        HealCommand::GcMark {
            ids: vec![id(1)],
            now_ms: 10,
            grace_ms: 5,
        },
    );
    assert!(s.heal.queue.is_empty());
    run(
        &mut s,
        HealCommand::GcDeleted {
            items: vec![
                (id(1), "a".into()),
                (id(1), "b".into()),
                (id(1), "c".into()),
            ],
        },
    );
    assert!(!s.chunks.contains_key(&id(1)));
}

#[test]
fn drain_unlists_into_the_trash_and_decommission_needs_a_known_node() {
    let mut s = state();
    run(
        &mut s,
        HealCommand::Drain {
            items: vec![(id(1), "a".into()), (id(1), "zz".into())],
        },
    );
    assert!(!s.chunks[&id(1)].replicas.contains_key("a"));
    assert_eq!(s.heal.trash.len(), 1);
    run(
        &mut s,
        HealCommand::TrashDone {
            items: vec![("a".into(), id(1))],
        },
    );
    assert!(s.heal.trash.is_empty());
    run(
        &mut s,
        HealCommand::Decommission {
            node: "b".into(),
            on: true,
        },
    );
    assert!(s.nodes["b"].decommissioned);
    let bad = Command::Heal(HealCommand::Decommission {
        node: "zz".into(),
        on: true,
    });
    assert!(apply_cmd(&mut s, &bad).is_err());
}

#[test]
fn only_a_nodes_own_scrub_or_read_report_unlists_its_replica() {
    let mut r = pb::ReportFailureRequest {
        node_id: "a".into(),
        chunk_id: id(1).to_vec(),
        operation: "scrub".into(),
        error: "corrupt".into(),
        reporter: "a".into(),
    };
    assert_eq!(self_reported_loss(&r), Some(id(1)));
    r.reporter = "client-1".into();
    assert_eq!(self_reported_loss(&r), None);
    r.reporter = "a".into();
    r.operation = "replicate".into();
    assert_eq!(self_reported_loss(&r), None);
}

#[test]
fn healing_state_survives_a_store_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut s) = crate::store::Store::open(dir.path(), 3).unwrap();
    let cmds = [
        Command::RegisterNode {
            node_id: "a".into(),
            address: "a:1".into(),
            capacity: 1,
            lost: vec![],
            confirmed: vec![],
        },
        Command::RegisterNode {
            node_id: "c".into(),
            address: "c:1".into(),
            capacity: 1,
            lost: vec![],
            confirmed: vec![],
        },
        Command::RegisterChunk {
            confirmed: vec![],
            id: id(1),
            len: 10,
            node: "a".into(),
            designated: vec![],
            now_ms: 1,
        },
        Command::Heal(HealCommand::Enqueue {
            items: vec![(id(1), "c".into(), "a".into())],
            now_ms: 5,
        }),
        Command::Heal(HealCommand::Drain {
            items: vec![(id(1), "c".into())],
        }),
    ];
    for c in cmds {
        apply_cmd(&mut s, &c).unwrap();
        store.append(&c).unwrap();
        store.maybe_snapshot(&s).unwrap();
    }
    drop(store);
    let (_, s2) = crate::store::Store::open(dir.path(), 3).unwrap();
    assert_eq!(s, s2);
    assert_eq!(s2.heal.queue.len(), 1);
    assert_eq!(s2.heal.trash.len(), 1);
}
