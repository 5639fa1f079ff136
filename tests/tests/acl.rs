//! POSIX ACLs through a real mount, with `setfacl`/`getfacl` and a second
//! uid: a named entry grants what the mode denies, the mask limits it,
//! chmod moves the mask, only the owner sets ACLs, default ACLs are
//! inherited (and replace the umask), and other mounts and snapshots see
//! the same ACLs. Every expected `getfacl` listing is what ext4 prints for
//! the same commands.

use std::path::Path;
use std::time::Duration;

use bigfs_tests::{Cluster, Mount, as_user, deadline};

/// The second user; root owns everything it meets.
const USER: u32 = 1001;
const DENIED: &str = "Permission denied"; // EACCES
const NOT_PERMITTED: &str = "Operation not permitted"; // EPERM

/// Runs `script` with `sh` in `dir` under umask 022, as root; its stdout.
fn sh(dir: &Path, script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask 022 && {script}"))
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `script` with `sh` in `dir` as `USER`: None if it succeeded, else
/// its stderr.
fn as_second_user(dir: &Path, script: &str) -> Option<String> {
    let script = format!("cd '{}' && {script}", dir.display());
    as_user(USER, USER, &[&"sh", &"-c", &script])
}

fn getfacl(dir: &Path, name: &str) -> String {
    sh(dir, &format!("getfacl --omit-header --numeric {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_grant_limit_inherit_and_follow_chmod() {
    let _deadline = deadline(Duration::from_secs(120));
    let c = Cluster::start_with(2, "replication = 2\n").await;
    let m = Mount::new(&c, &["allow_other"]);
    let root = m.path();
    let write = |name: &str| as_second_user(root, &format!("echo more >> {name}"));
    let read = |name: &str| as_second_user(root, &format!("cat {name} >/dev/null"));

    // A root file with mode 0600: the second user gets in only through a
    // named entry, and `ls -l` shows the ACL.
    sh(root, "echo hi > f && chmod 600 f");
    let err = write("f").expect("wrote a 0600 root file");
    assert!(err.contains(DENIED), "{err}");
    sh(root, "setfacl -m u:1001:rw f");
    assert_eq!(
        getfacl(root, "f"),
        "user::rw-\nuser:1001:rw-\ngroup::---\nmask::rw-\nother::---\n\n"
    );
    assert_eq!(write("f"), None, "user:1001:rw- grants write");
    assert_eq!(&sh(root, "ls -l f")[..11], "-rw-rw----+");

    // The mask limits the named entry.
    sh(root, "setfacl -m m::r f");
    assert_eq!(
        getfacl(root, "f"),
        "user::rw-\nuser:1001:rw-\t#effective:r--\ngroup::---\nmask::r--\nother::---\n\n"
    );
    let err = write("f").expect("wrote past a read-only mask");
    assert!(err.contains(DENIED), "{err}");
    assert_eq!(read("f"), None);

    // chmod's group bits are the mask.
    sh(root, "chmod 660 f");
    assert_eq!(
        getfacl(root, "f"),
        "user::rw-\nuser:1001:rw-\ngroup::---\nmask::rw-\nother::---\n\n"
    );
    assert_eq!(write("f"), None);
    sh(root, "chmod g=r f");
    assert_eq!(
        getfacl(root, "f"),
        "user::rw-\nuser:1001:rw-\t#effective:r--\ngroup::---\nmask::r--\nother::---\n\n"
    );

    // Only the owner sets ACLs.
    let err = as_second_user(root, "setfacl -m u:1001:rwx f").expect("set another's ACL");
    assert!(err.contains(NOT_PERMITTED), "{err}");

    // Removing the entry takes the access away again.
    sh(root, "setfacl -x u:1001 f");
    assert_eq!(
        getfacl(root, "f"),
        "user::rw-\ngroup::---\nmask::---\nother::---\n\n"
    );
    assert_eq!(sh(root, "stat -c %a f"), "600\n");
    let err = read("f").expect("read after the entry was removed");
    assert!(err.contains(DENIED), "{err}");

    // Without a default ACL the umask applies (the file system applies it).
    sh(root, "umask 027 && touch x && mkdir xd");
    assert_eq!(sh(root, "stat -c %a x xd"), "640\n750\n");

    // A default ACL: new files and directories inherit it, masked by the
    // create mode and not by the umask; directories pass it on.
    sh(root, "mkdir d && setfacl -d -m u:1001:rwx d");
    assert_eq!(
        getfacl(root, "d"),
        "user::rwx\ngroup::r-x\nother::r-x\ndefault:user::rwx\ndefault:user:1001:rwx\n\
         default:group::r-x\ndefault:mask::rwx\ndefault:other::r-x\n\n"
    );
    sh(
        root,
        "touch d/new && mkdir d/sub && (umask 077 && touch d/new077)",
    );
    let file_acl = "user::rw-\nuser:1001:rwx\t#effective:rw-\ngroup::r-x\t#effective:r--\n\
                    mask::rw-\nother::r--\n\n";
    assert_eq!(getfacl(root, "d/new"), file_acl);
    assert_eq!(getfacl(root, "d/new077"), file_acl);
    assert_eq!(
        getfacl(root, "d/sub"),
        "user::rwx\nuser:1001:rwx\ngroup::r-x\nmask::rwx\nother::r-x\ndefault:user::rwx\n\
         default:user:1001:rwx\ndefault:group::r-x\ndefault:mask::rwx\ndefault:other::r-x\n\n"
    );
    assert_eq!(
        sh(root, "stat -c %a d/new d/sub d/new077"),
        "664\n775\n664\n"
    );
    assert_eq!(write("d/new"), None, "the inherited entry grants write");
    assert_eq!(as_second_user(root, "touch d/sub/mine"), None);
    assert_eq!(sh(root, "stat -c %u d/sub/mine"), "1001\n");

    // The ACLs live in the metadata service: another mount and a snapshot
    // see the same.
    let m2 = Mount::new(&c, &[]);
    assert_eq!(getfacl(m2.path(), "d/new"), file_acl);
    // An ACL set through the other mount holds here once this mount's
    // attribute cache (200 ms in tests) has expired.
    sh(root, "echo hi > g && chmod 600 g");
    assert!(read("g").is_some());
    sh(m2.path(), "setfacl -m u:1001:r g");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(read("g"), None, "the other mount's ACL grants read");
    c.cli_ok(&["snapshot", "/d", "/d-snap"]);
    assert_eq!(getfacl(root, "d-snap/new"), file_acl);
}
