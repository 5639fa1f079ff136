//! Metadata round trips a mount spends per operation, counted at the
//! metadata service: a create, mkdir, rename or unlink in a directory
//! costs its own call and no GETATTR of the directory afterwards (the
//! change's reply carries the directory's new attrs), and what the mount
//! answers from them is what the service holds; opening a file to read it
//! takes its attrs and chunk locations in one call.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, deadline, drop_caches, random_bytes};

/// Calls of `method` the metadata service has answered.
fn calls(c: &Cluster, method: &str) -> f64 {
    c.metric(
        &c.meta_admin_addr,
        "bigfs_grpc_requests_total",
        &[("method", method)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_in_a_directory_cost_no_getattr_of_it() {
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(1, "").await;
    let m = Mount::new(&c, &[]);
    let d = m.path().join("d");
    std::fs::create_dir(&d).unwrap();
    let _ = std::fs::metadata(&d).unwrap();

    const ROUNDS: u32 = 20;
    let before = calls(&c, "GetAttr");
    let mut last = std::fs::metadata(&d).unwrap();
    for i in 0..ROUNDS {
        std::fs::File::create(d.join(format!("f{i}"))).unwrap();
        std::fs::create_dir(d.join(format!("s{i}"))).unwrap();
        std::fs::rename(d.join(format!("f{i}")), d.join(format!("g{i}"))).unwrap();
        if i % 2 == 0 {
            std::fs::remove_file(d.join(format!("g{i}"))).unwrap();
        }
        // What the mount answers is the directory after the change.
        let now = std::fs::metadata(&d).unwrap();
        assert_eq!(
            now.nlink(),
            2 + u64::from(i) + 1,
            "round {i}: a subdir more"
        );
        assert!(
            (now.mtime(), now.mtime_nsec()) > (last.mtime(), last.mtime_nsec())
                || i == 0 && (now.mtime(), now.mtime_nsec()) >= (last.mtime(), last.mtime_nsec()),
            "round {i}: mtime moves on"
        );
        last = now;
    }
    let getattrs = calls(&c, "GetAttr") - before;
    assert!(
        getattrs <= 2.0,
        "{getattrs} GetAttr calls for {ROUNDS} rounds of create, mkdir, rename, unlink and stat"
    );

    // Past the attribute TTL the kernel asks the service: the same attrs.
    std::thread::sleep(Duration::from_millis(1500));
    let fresh = std::fs::metadata(&d).unwrap();
    assert_eq!(
        (
            fresh.nlink(),
            fresh.mtime(),
            fresh.mtime_nsec(),
            fresh.ctime(),
            fresh.ctime_nsec()
        ),
        (
            last.nlink(),
            last.mtime(),
            last.mtime_nsec(),
            last.ctime(),
            last.ctime_nsec()
        )
    );
    assert!(
        calls(&c, "GetAttr") - before > getattrs,
        "asked the service"
    );
    let names = std::fs::read_dir(&d).unwrap().count() as u32;
    assert_eq!(names, ROUNDS + ROUNDS / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_read_of_a_small_file_is_a_lookup_and_one_layout_call() {
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(2, "replication = 2\n").await;
    let m = Mount::new(&c, &[]);
    let d = m.path().join("r");
    std::fs::create_dir(&d).unwrap();
    const FILES: usize = 20;
    let data: Vec<Vec<u8>> = (0..FILES)
        .map(|i| random_bytes(4096 + i, i as u64))
        .collect();
    for (i, bytes) in data.iter().enumerate() {
        std::fs::write(d.join(format!("f{i}")), bytes).unwrap();
    }
    drop_caches();

    let (attrs, layouts) = (calls(&c, "GetAttr"), calls(&c, "GetLayout"));
    for (i, bytes) in data.iter().enumerate() {
        let got = std::fs::read(d.join(format!("f{i}"))).unwrap();
        assert!(got == *bytes, "f{i} reads back");
    }
    let attrs = calls(&c, "GetAttr") - attrs;
    let layouts = calls(&c, "GetLayout") - layouts;
    assert_eq!(layouts, FILES as f64, "one layout call per file");
    assert!(attrs <= 2.0, "{attrs} GetAttr calls for {FILES} cold reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_names_in_a_directory_made_here_are_not_looked_up() {
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(1, "").await;
    let (a, b) = (Mount::new(&c, &["negative_lookups"]), Mount::new(&c, &[]));
    let d = a.path().join("made");
    std::fs::create_dir(&d).unwrap();

    const ROUNDS: u32 = 20;
    let before = calls(&c, "Lookup");
    for i in 0..ROUNDS {
        std::fs::File::create(d.join(format!("f{i}"))).unwrap();
        std::fs::create_dir(d.join(format!("s{i}"))).unwrap();
        std::fs::rename(d.join(format!("f{i}")), d.join(format!("g{i}"))).unwrap();
        std::fs::write(d.join(format!("s{i}")).join("inner"), b"x").unwrap();
    }
    let lookups = calls(&c, "Lookup") - before;
    assert!(
        lookups <= 2.0,
        "{lookups} Lookup calls for {ROUNDS} rounds of create, mkdir, rename and create below"
    );
    // Names already there are still found.
    assert!(std::fs::metadata(d.join("g3")).unwrap().is_file());
    assert!(std::fs::metadata(d.join("f3")).is_err());

    // Another mount adds a name: the next change here shows the directory
    // changed behind this mount's back, and the name is looked up.
    std::fs::write(b.path().join("made").join("theirs"), b"b").unwrap();
    std::fs::File::create(d.join("mine")).unwrap();
    assert_eq!(std::fs::read(d.join("theirs")).unwrap(), b"b");
    // And with no change here, at most the attribute TTL later.
    std::fs::write(b.path().join("made").join("later"), b"c").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(std::fs::read(d.join("later")).unwrap(), b"c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tars_attribute_calls_on_a_file_it_writes_cost_no_getattr() {
    use std::os::unix::fs::PermissionsExt;
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(1, "").await;
    let m = Mount::new(&c, &[]);
    let d = m.path().join("x");
    std::fs::create_dir(&d).unwrap();

    // What GNU tar does per file it extracts: create, write, then
    // futimens, fchown and fchmod on the open descriptor, and close.
    const FILES: u32 = 10;
    let before = (calls(&c, "GetAttr"), calls(&c, "SetAttr"));
    for i in 0..FILES {
        let f = std::fs::File::create(d.join(format!("f{i}"))).unwrap();
        std::io::Write::write_all(&mut &f, &random_bytes(3000, u64::from(i))).unwrap();
        let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + u64::from(i));
        f.set_times(std::fs::FileTimes::new().set_modified(mtime))
            .unwrap();
        std::os::unix::fs::fchown(&f, Some(1000 + i), Some(2000 + i)).unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o640))
            .unwrap();
        drop(f);
    }
    let getattrs = calls(&c, "GetAttr") - before.0;
    let setattrs = calls(&c, "SetAttr") - before.1;
    assert_eq!(setattrs, f64::from(3 * FILES), "one SetAttr per call");
    // One per file is the kernel's, after the write; none follows a
    // change (each answers the attrs it made).
    assert!(
        getattrs <= f64::from(FILES) + 2.0,
        "{getattrs} GetAttr calls for {FILES} files (each change answers its attrs)"
    );
    // What the mount answered is what the service holds, seen from a
    // fresh mount.
    let fresh = Mount::new(&c, &[]);
    for i in 0..FILES {
        let a = std::fs::metadata(fresh.path().join(format!("x/f{i}"))).unwrap();
        assert_eq!(
            (a.uid(), a.gid(), a.mode() & 0o7777, a.size(), a.mtime()),
            (
                1000 + i,
                2000 + i,
                0o640,
                3000,
                1_600_000_000 + i64::from(i)
            ),
            "f{i}"
        );
    }
}
