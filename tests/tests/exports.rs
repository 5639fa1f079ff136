//! Exports, with real processes and real mounts: a client mounts only the
//! subtree its export grants, cannot reach outside it (`..`, a hard link
//! made across the border, a guessed inode number), a read-only export
//! refuses writes with EROFS, squash maps owners, a client in no export is
//! refused with a clear message, and SIGHUP reloads the file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use bigfs_proto::errno::{EACCES, EPERM, EROFS};
use bigfs_proto::pb::{self, metadata_client::MetadataClient};
use bigfs_proto::{channel_with, errno_of};
use bigfs_tests::{Cluster, Mount, certs, deadline, random_bytes, read_file, write_file};
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(120);

const EXPORTS: &str = r#"
[[export]]
clients = ["web"]
path = "/srv/web"
squash = "root"

[[export]]
clients = ["reader"]
path = "/srv/web"
access = "ro"

[[export]]
clients = ["pub"]
path = "/pub"
squash = "all"
anon_uid = 4242
anon_gid = 4243
"#;

/// A raw gRPC client calling as `client:<name>`.
fn raw_client(c: &Cluster, name: &str) -> MetadataClient<Channel> {
    let dir = format!("raw-{name}");
    c.issue(&format!("client:{name}"), &dir);
    let tls = certs::client_tls(&c.tls_dir(&dir));
    MetadataClient::new(channel_with(&c.meta_addr, Some(tls)).expect("channel"))
}

fn errno<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) -> i32 {
    match r {
        Err(s) => errno_of(&s),
        Ok(v) => panic!("{what}: expected a refusal, got {v:?}"),
    }
}

fn os_errno<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Err(e) => e.raw_os_error().unwrap_or(-1),
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_only_their_export_with_its_access_and_squash() {
    let _deadline = deadline(DEADLINE);
    let files = tempfile::tempdir().expect("tempdir");
    let exports = files.path().join("exports.toml");
    std::fs::write(&exports, EXPORTS).expect("write exports");
    let c = Cluster::start_with(3, &format!("exports_file = \"{}\"", exports.display())).await;

    // The operator (admin:, never confined) lays out the namespace.
    let admin = c.client().await;
    let root = admin.root();
    let srv = admin.mkdir(root, "srv", 0o755).await.unwrap().ino;
    let web = admin.mkdir(srv, "web", 0o777).await.unwrap().ino;
    let secret = admin.mkdir(srv, "secret", 0o755).await.unwrap().ino;
    admin.mkdir(root, "pub", 0o777).await.unwrap();
    let hello = random_bytes(300_000, 1);
    let key = random_bytes(5_000, 2);
    write_file(&admin, "/srv/web/hello", &hello).await;
    write_file(&admin, "/srv/secret/key", &key).await;
    let key_ino = admin.resolve("/srv/secret/key").await.unwrap().ino;
    // A hard link across the export's border, made by the operator.
    admin.link(key_ino, web, "key-link").await.unwrap();
    // A private file of user 1000 inside the export.
    write_file(&admin, "/srv/web/private", b"mine").await;
    let private = admin.resolve("/srv/web/private").await.unwrap().ino;
    admin
        .setattr(pb::SetAttrRequest {
            ino: private,
            mode: Some(0o600),
            uid: Some(1000),
            gid: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();

    // --- client:web mounts /srv/web read-write, root squashed.
    let m = Mount::as_client(&c, "web", &[]).expect("web mount");
    let mnt = m.path();
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), hello);
    assert_eq!(
        names(mnt),
        ["hello", "private"],
        "the border-crossing link is not listed"
    );
    // Root acts as nobody: another user's private file is closed to it.
    assert_eq!(
        os_errno("read private", std::fs::read(mnt.join("private"))),
        EACCES
    );
    assert_eq!(
        os_errno("write private", std::fs::write(mnt.join("private"), b"x")),
        EACCES
    );
    assert_eq!(
        os_errno(
            "chmod private",
            std::fs::set_permissions(mnt.join("private"), std::fs::Permissions::from_mode(0o666))
        ),
        EPERM
    );
    assert_eq!(
        os_errno("stat key-link", std::fs::metadata(mnt.join("key-link"))),
        EACCES
    );
    // Root (this test runs as root) creates files owned by nobody.
    let data = random_bytes(70_000, 3);
    std::fs::write(mnt.join("new"), &data).unwrap();
    let md = std::fs::metadata(mnt.join("new")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    assert_eq!(std::fs::read(mnt.join("new")).unwrap(), data);
    assert_eq!(
        os_errno(
            "chown to root",
            std::os::unix::fs::chown(mnt.join("new"), Some(0), None)
        ),
        EPERM
    );
    std::fs::create_dir(mnt.join("d")).unwrap();
    std::fs::rename(mnt.join("new"), mnt.join("d/moved")).unwrap();
    assert_eq!(std::fs::read(mnt.join("d/moved")).unwrap(), data);
    assert_eq!(read_file(&admin, "/srv/web/d/moved").await, data);

    // The same client over raw gRPC, trying every way out.
    let mut raw = raw_client(&c, "web");
    let attr = |r: Result<tonic::Response<pb::AttrReply>, tonic::Status>| {
        r.unwrap().into_inner().attr.unwrap()
    };
    let top = attr(
        raw.resolve_path(pb::ResolvePathRequest { path: "/".into() })
            .await,
    );
    assert_eq!(top.ino, 1, "the export's root is the client's inode 1");
    let up = raw
        .resolve_path(pb::ResolvePathRequest {
            path: "/../secret/key".into(),
        })
        .await;
    assert_eq!(
        up.unwrap_err().code(),
        Code::NotFound,
        "`..` stops at the root"
    );
    let getattr = raw.get_attr(pb::InodeRequest { ino: key_ino }).await;
    assert_eq!(errno("getattr outside", getattr), EACCES);
    let listing = raw
        .read_dir(pb::ReadDirRequest {
            ino: srv,
            ..Default::default()
        })
        .await;
    assert_eq!(errno("readdir outside", listing), EACCES);
    let peek = raw
        .lookup(pb::LookupRequest {
            parent: secret,
            name: "key".into(),
        })
        .await;
    assert_eq!(errno("lookup outside", peek), EACCES);
    let steal = raw
        .link(pb::LinkRequest {
            ino: key_ino,
            new_parent: 1,
            new_name: "stolen".into(),
            id: None,
        })
        .await;
    assert_eq!(errno("link from outside", steal), EACCES);
    let smuggle = raw
        .rename(pb::RenameRequest {
            parent: 1,
            name: "hello".into(),
            new_parent: secret,
            new_name: "hello".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(errno("rename out", smuggle), EACCES);
    let wipe = raw
        .unlink(pb::NameRequest {
            parent: secret,
            name: "key".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(errno("unlink outside", wipe), EACCES);
    let layout = raw.get_layout(pb::InodeRequest { ino: key_ino }).await;
    assert_eq!(errno("layout outside", layout), EACCES);
    assert_eq!(read_file(&admin, "/srv/secret/key").await, key);
    drop(m);

    // --- client:reader mounts the same subtree read-only.
    let m = Mount::as_client(&c, "reader", &[]).expect("reader mount");
    let mnt = m.path();
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), hello);
    assert_eq!(
        os_errno("create", std::fs::write(mnt.join("x"), b"x")),
        EROFS
    );
    assert_eq!(
        os_errno("unlink", std::fs::remove_file(mnt.join("hello"))),
        EROFS
    );
    assert_eq!(os_errno("mkdir", std::fs::create_dir(mnt.join("y"))), EROFS);
    // The service refuses by itself, whatever the mount does.
    let mut raw = raw_client(&c, "reader");
    let create = raw
        .create(pb::CreateRequest {
            parent: 1,
            name: "x".into(),
            kind: pb::FileKind::File as i32,
            mode: 0o644,
            ..Default::default()
        })
        .await;
    assert_eq!(errno("create on ro", create), EROFS);
    let truncate = raw
        .set_attr(pb::SetAttrRequest {
            ino: top.ino,
            mode: Some(0o700),
            ..Default::default()
        })
        .await;
    assert_eq!(errno("chmod on ro", truncate), EROFS);
    assert_eq!(read_file(&admin, "/srv/web/hello").await, hello);
    drop(m);

    // --- client:pub, every user squashed to 4242:4243.
    let m = Mount::as_client(&c, "pub", &[]).expect("pub mount");
    std::fs::write(m.path().join("p"), b"first").unwrap();
    let md = std::fs::metadata(m.path().join("p")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4243));
    // Everyone acts as 4242: the file is theirs to rewrite and chmod.
    std::fs::write(m.path().join("p"), b"public").unwrap();
    std::fs::set_permissions(m.path().join("p"), std::fs::Permissions::from_mode(0o644)).unwrap();
    write_file(&admin, "/pub/root-only", b"r").await;
    let ro = admin.resolve("/pub/root-only").await.unwrap().ino;
    admin
        .setattr(pb::SetAttrRequest {
            ino: ro,
            mode: Some(0o600),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        os_errno("read root-only", std::fs::read(m.path().join("root-only"))),
        EACCES
    );
    drop(m);

    // --- a client in no export is refused, and says so.
    let err = Mount::as_client(&c, "stranger", &[])
        .err()
        .expect("a mount outside every export must fail");
    assert!(
        err.contains("client:stranger from 127.0.0.1 is in no export"),
        "{err}"
    );

    // --- SIGHUP reloads the file: now the stranger may read /pub.
    let grown = format!(
        "{EXPORTS}\n[[export]]\nclients = [\"stranger\"]\npath = \"/pub\"\naccess = \"ro\"\n"
    );
    std::fs::write(&exports, grown).unwrap();
    c.signal_metadata(libc::SIGHUP);
    let mut raw = raw_client(&c, "stranger");
    let t0 = std::time::Instant::now();
    while raw.export(pb::Empty {}).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "exports not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = Mount::as_client(&c, "stranger", &[]).expect("stranger mount after reload");
    assert_eq!(std::fs::read(m.path().join("p")).unwrap(), b"public");
    assert_eq!(
        os_errno("write", std::fs::write(m.path().join("q"), b"q")),
        EROFS
    );
}
