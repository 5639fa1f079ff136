use super::*;
use crate::state::{Command, State, Time, apply};
use bigfs_proto::ROOT_INO;
use bigfs_proto::errno::{EACCES, EINVAL};

fn errno(e: MetaError) -> i32 {
    bigfs_proto::errno_of(&tonic::Status::from(e))
}

/// An ACL value from (tag, perm, id) entries.
fn value(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = VERSION.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const U: u32 = UNDEFINED_ID;

/// user::rw-, user:1001:rw-, group::r--, mask::rw-, other::---
fn with_user_1001() -> Vec<u8> {
    value(&[
        (USER_OBJ, 6, U),
        (USER, 6, 1001),
        (GROUP_OBJ, 4, U),
        (MASK, 6, U),
        (OTHER, 0, U),
    ])
}

fn set(s: &mut State, ino: u64, name: &str, v: Vec<u8>) -> Result<(), MetaError> {
    apply(
        s,
        &Command::SetXattr {
            ino,
            name: name.into(),
            value: v,
            flags: 0,
            now: Time::default(),
        },
    )
    .map(|_| ())
}

fn chmod(s: &mut State, ino: u64, mode: u32) {
    apply(
        s,
        &Command::SetAttr {
            ino,
            mode: Some(mode),
            uid: None,
            gid: None,
            size: None,
            atime: None,
            mtime: None,
            now: Time::default(),
        },
    )
    .unwrap();
}

fn create(s: &mut State, parent: u64, name: &str, kind: Kind, mode: u32, umask: u32) -> u64 {
    let mut create = Command::create_for_test(parent, name, kind, Time::default());
    if let Command::Create {
        mode: m,
        symlink_target,
        ..
    } = &mut create
    {
        *m = mode;
        if kind == Kind::Symlink {
            *symlink_target = "target".into();
        }
    }
    let cmd = Command::CreateMasked {
        umask,
        create: Box::new(create),
    };
    match apply(s, &cmd).unwrap() {
        crate::state::Reply::Ino(ino) => ino,
        other => panic!("create answered {other:?}"),
    }
}

#[test]
fn malformed_values_are_refused_with_einval() {
    let ok = with_user_1001();
    assert!(Acl::parse(&ok).unwrap().is_some());
    assert_eq!(Acl::parse(&value(&[])).unwrap(), None, "header only");
    let bad = [
        ok[..ok.len() - 1].to_vec(),
        {
            let mut v = ok.clone();
            v[0] = 1;
            v
        },
        // No mask with a named user.
        value(&[
            (USER_OBJ, 6, U),
            (USER, 6, 1001),
            (GROUP_OBJ, 4, U),
            (OTHER, 0, U),
        ]),
        // Out of order.
        value(&[(GROUP_OBJ, 4, U), (USER_OBJ, 6, U), (OTHER, 0, U)]),
        // Repeated named user.
        value(&[
            (USER_OBJ, 6, U),
            (USER, 6, 7),
            (USER, 4, 7),
            (GROUP_OBJ, 4, U),
            (MASK, 6, U),
            (OTHER, 0, U),
        ]),
        // No other entry, a bad permission, an unknown tag.
        value(&[(USER_OBJ, 6, U), (GROUP_OBJ, 4, U)]),
        value(&[(USER_OBJ, 8, U), (GROUP_OBJ, 4, U), (OTHER, 0, U)]),
        value(&[(USER_OBJ, 6, U), (0x40, 4, U), (OTHER, 0, U)]),
    ];
    for v in bad {
        assert_eq!(errno(Acl::parse(&v).unwrap_err()), EINVAL, "{v:?}");
    }
    let mut s = State::new();
    let f = create(&mut s, ROOT_INO, "f", Kind::File, 0o644, 0);
    let err = set(&mut s, f, ACCESS, value(&[(USER_OBJ, 6, U)])).unwrap_err();
    assert_eq!(errno(err), EINVAL);
    assert!(s.inode(f).unwrap().xattrs.is_empty());
}

#[test]
fn an_access_acl_sets_the_mode_and_a_minimal_one_is_not_kept() {
    let mut s = State::new();
    let f = create(&mut s, ROOT_INO, "f", Kind::File, 0o4600, 0);
    set(&mut s, f, ACCESS, with_user_1001()).unwrap();
    let i = s.inode(f).unwrap();
    assert_eq!(i.mode, 0o4660, "group bits from the mask, setuid kept");
    assert_eq!(i.xattrs[ACCESS], with_user_1001());

    set(
        &mut s,
        f,
        ACCESS,
        value(&[(USER_OBJ, 7, U), (GROUP_OBJ, 5, U), (OTHER, 1, U)]),
    )
    .unwrap();
    let i = s.inode(f).unwrap();
    assert_eq!(i.mode, 0o4751);
    assert!(!i.xattrs.contains_key(ACCESS), "the mode says it all");
}

#[test]
fn a_default_acl_only_goes_on_a_directory() {
    let mut s = State::new();
    let f = create(&mut s, ROOT_INO, "f", Kind::File, 0o644, 0);
    let err = set(&mut s, f, DEFAULT, with_user_1001()).unwrap_err();
    assert_eq!(errno(err), EACCES);
    set(&mut s, ROOT_INO, DEFAULT, with_user_1001()).unwrap();
    assert_eq!(s.inode(ROOT_INO).unwrap().mode, 0o755, "mode unchanged");
}

#[test]
fn chmod_rewrites_owner_mask_and_other() {
    let mut s = State::new();
    let f = create(&mut s, ROOT_INO, "f", Kind::File, 0o600, 0);
    set(&mut s, f, ACCESS, with_user_1001()).unwrap();
    chmod(&mut s, f, 0o741);
    let i = s.inode(f).unwrap();
    assert_eq!(i.mode, 0o741);
    assert_eq!(
        i.xattrs[ACCESS],
        value(&[
            (USER_OBJ, 7, U),
            (USER, 6, 1001),
            (GROUP_OBJ, 4, U),
            (MASK, 4, U),
            (OTHER, 1, U),
        ]),
        "the named user and owning group stay, the mask follows"
    );
}

#[test]
fn new_entries_inherit_the_default_acl_and_skip_the_umask() {
    let mut s = State::new();
    let d = create(&mut s, ROOT_INO, "d", Kind::Directory, 0o777, 0o022);
    assert_eq!(s.inode(d).unwrap().mode, 0o755, "no default ACL: umask");
    let default = value(&[
        (USER_OBJ, 7, U),
        (USER, 7, 1001),
        (GROUP_OBJ, 5, U),
        (MASK, 7, U),
        (OTHER, 5, U),
    ]);
    set(&mut s, d, DEFAULT, default.clone()).unwrap();

    let f = create(&mut s, d, "f", Kind::File, 0o666, 0o077);
    let i = s.inode(f).unwrap();
    assert_eq!(i.mode, 0o664, "masked by the create mode, not the umask");
    assert_eq!(
        i.xattrs[ACCESS],
        value(&[
            (USER_OBJ, 6, U),
            (USER, 7, 1001),
            (GROUP_OBJ, 5, U),
            (MASK, 6, U),
            (OTHER, 4, U),
        ])
    );
    assert!(!i.xattrs.contains_key(DEFAULT), "a file has no default ACL");

    let sub = create(&mut s, d, "sub", Kind::Directory, 0o777, 0o077);
    let i = s.inode(sub).unwrap();
    assert_eq!(i.mode, 0o775);
    assert_eq!(i.xattrs[DEFAULT], default, "a directory passes it on");
    assert!(i.xattrs.contains_key(ACCESS));

    let l = create(&mut s, d, "l", Kind::Symlink, 0o777, 0o077);
    let i = s.inode(l).unwrap();
    assert_eq!(i.mode, 0o777);
    assert!(i.xattrs.is_empty(), "a symlink has no ACL");

    // A minimal default ACL gives the mode only.
    set(
        &mut s,
        d,
        DEFAULT,
        value(&[(USER_OBJ, 7, U), (GROUP_OBJ, 7, U), (OTHER, 0, U)]),
    )
    .unwrap();
    let g = create(&mut s, d, "g", Kind::File, 0o644, 0o022);
    let i = s.inode(g).unwrap();
    assert_eq!(i.mode, 0o640);
    assert!(i.xattrs.is_empty());
}
