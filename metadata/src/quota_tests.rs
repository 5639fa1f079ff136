use bigfs_proto::ROOT_INO;
use bigfs_proto::errno::{EDQUOT, EXDEV};

use super::*;
use crate::state::{Command, Reply, Time, apply};

fn t() -> Time {
    Time { secs: 1, nanos: 0 }
}

fn mk(s: &mut State, parent: u64, name: &str, kind: Kind) -> Result<u64, MetaError> {
    match apply(s, &Command::create_for_test(parent, name, kind, t()))? {
        Reply::Ino(i) => Ok(i),
        other => panic!("{other:?}"),
    }
}

fn resize(s: &mut State, ino: u64, size: u64) -> Result<Reply, MetaError> {
    apply(s, &Command::resize_for_test(ino, size, t()))
}

fn limit(s: &mut State, ino: u64, bytes: Option<u64>, inodes: Option<u64>) {
    apply(
        s,
        &Command::SetQuota {
            ino,
            change: QuotaChange::Limits {
                max_bytes: bytes,
                max_inodes: inodes,
            },
        },
    )
    .unwrap();
}

fn usage(s: &State, ino: u64) -> (u64, u64) {
    let q = &s.quotas[&ino];
    (q.bytes, q.inodes)
}

fn errno(e: MetaError) -> i32 {
    match e {
        MetaError::Namespace { errno, .. } => errno,
        other => panic!("not a namespace error: {other:?}"),
    }
}

fn unlink(s: &mut State, parent: u64, name: &str, open_lease_ms: u64) {
    apply(
        s,
        &Command::Unlink {
            parent,
            name: name.into(),
            open_lease_ms,
            trash_retention_ms: 0,
            now: t(),
        },
    )
    .unwrap();
}

fn rename(s: &mut State, from: (u64, &str), to: (u64, &str)) -> Result<Reply, MetaError> {
    apply(
        s,
        &Command::Rename {
            parent: from.0,
            name: from.1.into(),
            new_parent: to.0,
            new_name: to.1.into(),
            noreplace: false,
            exchange: false,
            open_lease_ms: 0,
            trash_retention_ms: 0,
            now: t(),
        },
    )
}

#[test]
fn a_new_quota_counts_what_is_already_there() {
    let mut s = State::new();
    let d = mk(&mut s, ROOT_INO, "d", Kind::Directory).unwrap();
    let sub = mk(&mut s, d, "sub", Kind::Directory).unwrap();
    let f = mk(&mut s, sub, "f", Kind::File).unwrap();
    resize(&mut s, f, 1000).unwrap();
    apply(
        &mut s,
        &Command::Link {
            ino: f,
            new_parent: d,
            new_name: "link".into(),
            now: t(),
        },
    )
    .unwrap();
    limit(&mut s, d, Some(5000), None);
    // sub and f (once, though it has two names); not d itself.
    assert_eq!(usage(&s, d), (1000, 2));
}

#[test]
fn usage_follows_creates_writes_truncates_and_deletes() {
    let mut s = State::new();
    let d = mk(&mut s, ROOT_INO, "d", Kind::Directory).unwrap();
    limit(&mut s, d, Some(10_000), Some(10));
    let sub = mk(&mut s, d, "sub", Kind::Directory).unwrap();
    let f = mk(&mut s, sub, "f", Kind::File).unwrap();
    assert_eq!(usage(&s, d), (0, 2));
    resize(&mut s, f, 4000).unwrap();
    assert_eq!(usage(&s, d), (4000, 2));
    resize(&mut s, f, 1000).unwrap();
    assert_eq!(usage(&s, d), (1000, 2));
    // Outside the quota: not counted.
    let out = mk(&mut s, ROOT_INO, "out", Kind::File).unwrap();
    resize(&mut s, out, 50_000).unwrap();
    assert_eq!(usage(&s, d), (1000, 2));
    unlink(&mut s, sub, "f", 0);
    assert_eq!(usage(&s, d), (0, 1));
    apply(
        &mut s,
        &Command::Rmdir {
            parent: d,
            name: "sub".into(),
            now: t(),
        },
    )
    .unwrap();
    assert_eq!(usage(&s, d), (0, 0));
}

#[test]
fn an_unlinked_open_file_stops_counting_at_once() {
    let mut s = State::new();
    let d = mk(&mut s, ROOT_INO, "d", Kind::Directory).unwrap();
    limit(&mut s, d, Some(10_000), None);
    let f = mk(&mut s, d, "f", Kind::File).unwrap();
    resize(&mut s, f, 3000).unwrap();
    unlink(&mut s, d, "f", 60_000);
    assert!(s.orphans.contains_key(&f));
    assert_eq!(usage(&s, d), (0, 0));
    // Writes to it through an open handle do not count either.
    resize(&mut s, f, 20_000).unwrap();
    assert_eq!(usage(&s, d), (0, 0));
    apply(&mut s, &Command::ReleaseInode { ino: f, now: t() }).unwrap();
    assert_eq!(usage(&s, d), (0, 0));
}

#[test]
fn growth_past_a_limit_is_refused_with_edquot_and_changes_nothing() {
    let mut s = State::new();
    let d = mk(&mut s, ROOT_INO, "d", Kind::Directory).unwrap();
    limit(&mut s, d, Some(1000), Some(2));
    let f = mk(&mut s, d, "f", Kind::File).unwrap();
    resize(&mut s, f, 1000).unwrap();
    assert_eq!(errno(resize(&mut s, f, 1001).unwrap_err()), EDQUOT);
    assert_eq!(s.inodes[&f].size, 1000);
    mk(&mut s, d, "g", Kind::File).unwrap();
    assert_eq!(errno(mk(&mut s, d, "h", Kind::File).unwrap_err()), EDQUOT);
    assert!(!s.dirs[&d].entries.contains_key("h"));
    // Shrinking and deleting are always allowed, and make room.
    resize(&mut s, f, 10).unwrap();
    unlink(&mut s, d, "g", 0);
    mk(&mut s, d, "h", Kind::File).unwrap();
    assert_eq!(usage(&s, d), (10, 2));
}

#[test]
fn nested_quotas_all_count_and_the_tightest_refuses() {
    let mut s = State::new();
    let outer = mk(&mut s, ROOT_INO, "outer", Kind::Directory).unwrap();
    let inner = mk(&mut s, outer, "inner", Kind::Directory).unwrap();
    limit(&mut s, outer, Some(100), None);
    limit(&mut s, inner, Some(1000), None);
    let f = mk(&mut s, inner, "f", Kind::File).unwrap();
    resize(&mut s, f, 60).unwrap();
    assert_eq!(usage(&s, inner), (60, 1));
    assert_eq!(usage(&s, outer), (60, 2));
    assert_eq!(errno(resize(&mut s, f, 101).unwrap_err()), EDQUOT);
    assert_eq!(above(&s, inner), vec![inner, outer]);
}

#[test]
fn renames_and_links_across_quota_borders_are_exdev_within_are_free() {
    let mut s = State::new();
    let a = mk(&mut s, ROOT_INO, "a", Kind::Directory).unwrap();
    let a2 = mk(&mut s, a, "a2", Kind::Directory).unwrap();
    let b = mk(&mut s, ROOT_INO, "b", Kind::Directory).unwrap();
    limit(&mut s, a, Some(10_000), None);
    let f = mk(&mut s, a, "f", Kind::File).unwrap();
    resize(&mut s, f, 500).unwrap();
    assert_eq!(
        errno(rename(&mut s, (a, "f"), (b, "f")).unwrap_err()),
        EXDEV
    );
    assert_eq!(
        errno(
            apply(
                &mut s,
                &Command::Link {
                    ino: f,
                    new_parent: ROOT_INO,
                    new_name: "l".into(),
                    now: t(),
                },
            )
            .unwrap_err()
        ),
        EXDEV
    );
    rename(&mut s, (a, "f"), (a2, "g")).unwrap();
    assert_eq!(usage(&s, a), (500, 2));
    // Replacing a file inside the quota frees the replaced one.
    let h = mk(&mut s, a, "h", Kind::File).unwrap();
    resize(&mut s, h, 100).unwrap();
    rename(&mut s, (a, "h"), (a2, "g")).unwrap();
    assert_eq!(usage(&s, a), (100, 2));
    // The quota directory itself moves freely where no other quota is.
    rename(&mut s, (ROOT_INO, "a"), (b, "a")).unwrap();
    assert_eq!(usage(&s, a), (100, 2));
}

#[test]
fn clearing_and_removing_forget_the_quota() {
    let mut s = State::new();
    let d = mk(&mut s, ROOT_INO, "d", Kind::Directory).unwrap();
    limit(&mut s, d, Some(1), None);
    apply(
        &mut s,
        &Command::SetQuota {
            ino: d,
            change: QuotaChange::Clear,
        },
    )
    .unwrap();
    assert!(s.quotas.is_empty());
    limit(&mut s, d, None, Some(5));
    apply(
        &mut s,
        &Command::Rmdir {
            parent: ROOT_INO,
            name: "d".into(),
            now: t(),
        },
    )
    .unwrap();
    assert!(s.quotas.is_empty());
    let f = mk(&mut s, ROOT_INO, "f", Kind::File).unwrap();
    assert!(
        apply(
            &mut s,
            &Command::SetQuota {
                ino: f,
                change: QuotaChange::Clear
            }
        )
        .is_err()
    );
}

#[test]
fn dir_path_names_a_directory() {
    let mut s = State::new();
    let a = mk(&mut s, ROOT_INO, "a", Kind::Directory).unwrap();
    let b = mk(&mut s, a, "b", Kind::Directory).unwrap();
    assert_eq!(dir_path(&s, b, ROOT_INO).as_deref(), Some("/a/b"));
    assert_eq!(dir_path(&s, b, a).as_deref(), Some("/b"));
    assert_eq!(dir_path(&s, ROOT_INO, ROOT_INO).as_deref(), Some("/"));
    assert_eq!(dir_path(&s, a, b), None);
}
