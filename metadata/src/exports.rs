//! Exports: which part of the namespace each client may mount, and how.
//!
//! In the spirit of MooseFS's `mfsexports.cfg`, a TOML file
//! (`exports_file`) lists entries; the first one that matches a caller's
//! certificate name (and, optionally, its source network) decides:
//! - the subtree that is the client's root (`path`);
//! - `ro` or `rw` (`access`);
//! - `squash`: `none`, `root` (uid/gid 0 become `anon_uid`/`anon_gid`) or
//!   `all` (every uid/gid does);
//! - whether the client may ask for more copies than the cluster default
//!   (`replication`).
//!
//! A client that matches no entry is refused. Without an exports file
//! every client gets the whole namespace read-write, as before exports
//! existed. Operators (`admin:`) and members (`meta:`) are never confined.
//!
//! The service enforces a [`Scope`] on every namespace request: the
//! client's inode 1 is its export root, every inode it names must lie
//! inside the export (a directory by its parents, a file by the directory
//! it was created in or last moved to), and the root's own attributes are
//! reported as inode 1. So `..` at the root, a hard link made outside the
//! export and an inode number guessed by a client all stop at the border.

use std::net::IpAddr;
use std::path::Path;

use bigfs_proto::ROOT_INO;
use bigfs_proto::auth::{Caller, Role};
use bigfs_proto::errno::{EACCES, EPERM, EROFS};
use serde::Deserialize;
use tonic::Status;

use crate::error::MetaError;
use crate::namespace;
use crate::state::State;

/// The uid and gid squashed callers get unless the entry says otherwise
/// (`nobody`/`nogroup` on Debian).
pub const DEFAULT_ANON_ID: u32 = 65534;

/// Most entries an exports file may hold.
pub const MAX_EXPORTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    #[default]
    Rw,
    Ro,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Squash {
    /// Ids are kept as the client sends them.
    #[default]
    None,
    /// uid 0 and gid 0 become the anonymous ids.
    Root,
    /// Every uid and gid becomes the anonymous ids.
    All,
}

/// One entry of the exports file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// Client certificate names (`client:NAME`); `"*"` is any client.
    clients: Vec<String>,
    /// Source networks (`10.0.0.0/8`, `::1/128`, a bare address); empty:
    /// any.
    #[serde(default)]
    networks: Vec<String>,
    /// The subtree that is the client's root. Default `/`.
    #[serde(default = "root_path")]
    path: String,
    #[serde(default)]
    access: Access,
    #[serde(default)]
    squash: Squash,
    #[serde(default = "anon_id")]
    anon_uid: u32,
    #[serde(default = "anon_id")]
    anon_gid: u32,
    /// May ask for more copies than the cluster default. Default false.
    #[serde(default)]
    replication: bool,
}

fn root_path() -> String {
    "/".into()
}

fn anon_id() -> u32 {
    DEFAULT_ANON_ID
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    export: Vec<Entry>,
}

/// A network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Network {
    addr: IpAddr,
    bits: u32,
}

impl Network {
    fn parse(s: &str) -> Result<Network, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a network (10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Network { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - self.bits;
        a >> shift == b >> shift
    }
}

/// What an export grants, with its root still a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The matching entry's position in the file (for messages), 1-based.
    pub entry: usize,
    pub path: String,
    pub access: Access,
    pub squash: Squash,
    pub anon_uid: u32,
    pub anon_gid: u32,
    pub replication: bool,
}

/// The parsed exports file.
#[derive(Debug, Clone, Default)]
pub struct Exports {
    /// Where it was read from; `None`: no exports file, every client gets
    /// the whole namespace.
    source: Option<String>,
    entries: Vec<(Entry, Vec<Network>)>,
}

impl Exports {
    /// Every client may mount everything read-write.
    pub fn open() -> Exports {
        Exports::default()
    }

    pub fn load(path: &Path) -> Result<Exports, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the exports file {}: {e}", path.display()))?;
        Exports::parse(&text, &path.display().to_string())
            .map_err(|e| format!("exports file {}: {e}", path.display()))
    }

    pub fn parse(text: &str, source: &str) -> Result<Exports, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.export.len() > MAX_EXPORTS {
            return Err(format!("more than {MAX_EXPORTS} [[export]] entries"));
        }
        let mut entries = Vec::with_capacity(file.export.len());
        for (i, e) in file.export.into_iter().enumerate() {
            let at = |m: String| format!("[[export]] #{}: {m}", i + 1);
            if e.clients.is_empty() {
                return Err(at("`clients` is empty (use [\"*\"] for any client)".into()));
            }
            for c in &e.clients {
                if c != "*" {
                    bigfs_proto::auth::Identity::new(Role::Client, c)
                        .map_err(|m| at(format!("client {c:?}: {m}")))?;
                }
            }
            if !e.path.starts_with('/') || e.path.split('/').any(|p| p == "..") {
                return Err(at(format!(
                    "path {:?} must be absolute, without `..`",
                    e.path
                )));
            }
            let nets = e
                .networks
                .iter()
                .map(|n| Network::parse(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            entries.push((e, nets));
        }
        Ok(Exports {
            source: Some(source.to_string()),
            entries,
        })
    }

    /// Entries in the file (0 without one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The grant for client `name` calling from `ip`, or why it has none.
    pub fn grant(&self, name: &str, ip: Option<IpAddr>) -> Result<Grant, String> {
        let Some(source) = &self.source else {
            return Ok(Grant {
                entry: 0,
                path: "/".into(),
                access: Access::Rw,
                squash: Squash::None,
                anon_uid: DEFAULT_ANON_ID,
                anon_gid: DEFAULT_ANON_ID,
                replication: true,
            });
        };
        let found = self.entries.iter().enumerate().find(|(_, (e, nets))| {
            e.clients.iter().any(|c| c == "*" || c == name)
                && (nets.is_empty() || ip.is_some_and(|ip| nets.iter().any(|n| n.contains(ip))))
        });
        match found {
            Some((i, (e, _))) => Ok(Grant {
                entry: i + 1,
                path: e.path.clone(),
                access: e.access,
                squash: e.squash,
                anon_uid: e.anon_uid,
                anon_gid: e.anon_gid,
                replication: e.replication,
            }),
            None => Err(format!(
                "client:{name} from {} is in no export of {source}",
                ip.map_or("an unknown address".to_string(), |ip| ip.to_string())
            )),
        }
    }
}

/// A scope with its export root resolved (`None`: not confined).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    root: Option<u64>,
}

impl View {
    /// As [`Scope::inode`].
    pub fn inode(&self, state: &State, ino: u64) -> Result<u64, MetaError> {
        let Some(root) = self.root else {
            return Ok(ino);
        };
        let ino = if ino == ROOT_INO { root } else { ino };
        if namespace::is_within(state, ino, root) {
            Ok(ino)
        } else {
            Err(MetaError::ns(
                EACCES,
                format!("inode {ino} lies outside this client's export"),
            ))
        }
    }

    /// As [`Scope::attr`].
    pub fn attr(&self, state: &State, ino: u64) -> Result<bigfs_proto::pb::Attr, MetaError> {
        let ino = self.inode(state, ino)?;
        let mut attr = state.attr(ino)?;
        if self.root == Some(ino) {
            attr.ino = ROOT_INO;
        }
        Ok(attr)
    }
}

/// What one request may touch.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// An operator, a member, or a client of an export of `/` with no
    /// restriction: nothing to check.
    Full,
    Confined(Grant),
}

impl Scope {
    /// The scope of a caller.
    pub fn of(exports: &Exports, caller: &Caller, ip: Option<IpAddr>) -> Result<Scope, Status> {
        let name = match caller {
            Caller::Anonymous => "",
            Caller::Peer(id) => match id.role {
                Role::Admin | Role::Meta => return Ok(Scope::Full),
                _ => id.name.as_str(),
            },
        };
        if exports.source.is_none() {
            return Ok(Scope::Full);
        }
        let grant = exports.grant(name, ip).map_err(Status::permission_denied)?;
        let unrestricted = grant.path == "/"
            && grant.access == Access::Rw
            && grant.squash == Squash::None
            && grant.replication;
        Ok(if unrestricted {
            Scope::Full
        } else {
            Scope::Confined(grant)
        })
    }

    /// This scope narrowed to the subtree `subdir` (a mount's `subdir`
    /// option: `/path` below the export root), confined as an export is.
    /// `/` leaves it as it is.
    pub fn within(self, subdir: &str) -> Result<Scope, Status> {
        let Some(rest) = subdir.strip_prefix('/') else {
            return Err(Status::invalid_argument(format!(
                "subdir {subdir:?} is not an absolute path"
            )));
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        for p in &parts {
            if *p == "." || *p == ".." {
                return Err(Status::invalid_argument(format!(
                    "subdir {subdir:?} has a {p:?} component"
                )));
            }
            bigfs_proto::validate_name(p)
                .map_err(|e| Status::invalid_argument(format!("subdir {subdir:?}: {e}")))?;
        }
        if parts.is_empty() {
            return Ok(self);
        }
        let mut grant = match self {
            Scope::Confined(g) => g,
            Scope::Full => Grant {
                entry: 0,
                path: String::new(),
                access: Access::Rw,
                squash: Squash::None,
                anon_uid: 0,
                anon_gid: 0,
                replication: true,
            },
        };
        grant.path = format!("{}/{}", grant.path.trim_end_matches('/'), parts.join("/"));
        Ok(Scope::Confined(grant))
    }

    fn grant(&self) -> Option<&Grant> {
        match self {
            Scope::Full => None,
            Scope::Confined(g) => Some(g),
        }
    }

    /// Refuses a change on a read-only export.
    pub fn writable(&self) -> Result<(), MetaError> {
        match self.grant() {
            Some(g) if g.access == Access::Ro => Err(MetaError::ns(
                EROFS,
                format!("export #{} ({}) is read-only", g.entry, g.path),
            )),
            _ => Ok(()),
        }
    }

    /// A uid and gid as stored for this caller (`squash`).
    pub fn owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        match self.grant() {
            Some(g) if g.squash == Squash::All => (g.anon_uid, g.anon_gid),
            Some(g) if g.squash == Squash::Root => (
                if uid == 0 { g.anon_uid } else { uid },
                if gid == 0 { g.anon_gid } else { gid },
            ),
            _ => (uid, gid),
        }
    }

    /// A chown/chgrp: squashed callers may not give a file to root, and
    /// under `all` they may not change owners at all.
    pub fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(), MetaError> {
        let Some(g) = self.grant() else {
            return Ok(());
        };
        let refused = match g.squash {
            Squash::None => false,
            Squash::Root => uid == Some(0) || gid == Some(0),
            Squash::All => {
                uid.is_some_and(|u| u != g.anon_uid) || gid.is_some_and(|x| x != g.anon_gid)
            }
        };
        if refused {
            return Err(MetaError::ns(
                EPERM,
                format!(
                    "export #{} squashes {}: ownership cannot be given away",
                    g.entry,
                    if g.squash == Squash::All {
                        "every user"
                    } else {
                        "root"
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Refuses more copies than the cluster default unless the export
    /// allows it.
    pub fn replication(&self, wanted: u32, default: u32) -> Result<(), MetaError> {
        match self.grant() {
            Some(g) if !g.replication && wanted > default => Err(MetaError::ns(
                EPERM,
                format!(
                    "export #{} may not raise replication above the cluster's {default}",
                    g.entry
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `wanted` copies, or at most `default` on an export that may not
    /// raise replication (a chunk upload of a file an operator gave more).
    pub fn replication_cap(&self, wanted: u32, default: u32) -> u32 {
        match self.grant() {
            Some(g) if !g.replication => wanted.min(default),
            _ => wanted,
        }
    }

    /// The export's root inode in `state`.
    pub fn root(&self, state: &State) -> Result<u64, MetaError> {
        match self.grant() {
            None => Ok(ROOT_INO),
            Some(g) => {
                let ino = namespace::resolve_path(state, &g.path).map_err(|_| {
                    MetaError::ns(
                        EACCES,
                        format!("export #{}: {} does not exist", g.entry, g.path),
                    )
                })?;
                if state.inode(ino)?.kind != crate::state::Kind::Directory {
                    return Err(MetaError::ns(
                        EACCES,
                        format!("export #{}: {} is not a directory", g.entry, g.path),
                    ));
                }
                Ok(ino)
            }
        }
    }

    /// The export's root resolved in `state`, once for a request that
    /// checks several inodes.
    pub fn view(&self, state: &State) -> Result<View, MetaError> {
        Ok(View {
            root: match self.grant() {
                None => None,
                Some(_) => Some(self.root(state)?),
            },
        })
    }

    /// The server's inode for the client's `ino`: the client's 1 is the
    /// export root. Refuses an inode outside the export.
    pub fn inode(&self, state: &State, ino: u64) -> Result<u64, MetaError> {
        if self.grant().is_none() {
            return Ok(ino);
        }
        self.view(state)?.inode(state, ino)
    }

    /// The attributes of the client's `ino` as it sees them: refused
    /// outside its export, the export's root numbered 1.
    pub fn attr(&self, state: &State, ino: u64) -> Result<bigfs_proto::pb::Attr, MetaError> {
        self.view(state)?.attr(state, ino)
    }

    /// The grant as the `Export` RPC tells it.
    pub fn describe(&self) -> bigfs_proto::pb::ExportReply {
        let Some(g) = self.grant() else {
            return bigfs_proto::pb::ExportReply {
                path: "/".into(),
                squash: "none".into(),
                anon_uid: DEFAULT_ANON_ID,
                anon_gid: DEFAULT_ANON_ID,
                replication: true,
                ..Default::default()
            };
        };
        bigfs_proto::pb::ExportReply {
            path: g.path.clone(),
            read_only: g.access == Access::Ro,
            squash: match g.squash {
                Squash::None => "none",
                Squash::Root => "root",
                Squash::All => "all",
            }
            .into(),
            anon_uid: g.anon_uid,
            anon_gid: g.anon_gid,
            replication: g.replication,
            entry: g.entry as u32,
            inline_max_bytes: 0,
        }
    }

    /// The export's path as a prefix for a client's absolute path.
    pub fn path(&self, path: &str) -> String {
        match self.grant() {
            None => path.to_string(),
            Some(g) => namespace::confined_path(&g.path, path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[export]]
        clients = ["web"]
        networks = ["10.1.0.0/16", "127.0.0.1"]
        path = "/srv/web"
        access = "ro"
        squash = "root"

        [[export]]
        clients = ["*"]
        path = "/pub"
        squash = "all"
        anon_uid = 1000
    "#;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_first_matching_entry_decides() {
        let x = Exports::parse(FILE, "t").unwrap();
        let g = x.grant("web", ip("10.1.2.3")).unwrap();
        assert_eq!(
            (g.entry, g.path.as_str(), g.access),
            (1, "/srv/web", Access::Ro)
        );
        // From another network the client falls through to the catch-all.
        let g = x.grant("web", ip("192.168.0.1")).unwrap();
        assert_eq!((g.entry, g.squash, g.anon_uid), (2, Squash::All, 1000));
        assert_eq!(x.grant("web", ip("::ffff:127.0.0.1")).unwrap().entry, 1);
        assert_eq!(x.grant("other", None).unwrap().entry, 2);
    }

    #[test]
    fn no_match_is_refused_and_no_file_grants_everything() {
        let x = Exports::parse("[[export]]\nclients = [\"a\"]\n", "f").unwrap();
        let e = x.grant("b", ip("127.0.0.1")).unwrap_err();
        assert!(
            e.contains("client:b from 127.0.0.1 is in no export of f"),
            "{e}"
        );
        let open = Exports::open().grant("b", None).unwrap();
        assert_eq!((open.path.as_str(), open.access), ("/", Access::Rw));
    }

    #[test]
    fn a_subdir_narrows_the_export_or_confines_a_full_scope() {
        let x = Exports::parse(FILE, "t").unwrap();
        let web = Scope::Confined(x.grant("web", ip("10.1.2.3")).unwrap());
        match web.clone().within("/site/static/").unwrap() {
            Scope::Confined(g) => {
                assert_eq!(g.path, "/srv/web/site/static");
                assert_eq!((g.access, g.squash), (Access::Ro, Squash::Root), "kept");
            }
            Scope::Full => panic!("still confined"),
        }
        assert_eq!(web.clone().within("/").unwrap(), web);
        match Scope::Full.within("/home/ann").unwrap() {
            Scope::Confined(g) => {
                assert_eq!((g.path.as_str(), g.access), ("/home/ann", Access::Rw))
            }
            Scope::Full => panic!("a subdir confines"),
        }
        for bad in ["home", "/a/../b", "/a/./b"] {
            assert!(Scope::Full.within(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let bad = |t: &str| Exports::parse(t, "f").unwrap_err();
        assert!(bad("[[export]]\nclients = []").contains("`clients` is empty"));
        assert!(bad("[[export]]\nclients = [\"a b\"]").contains("client \"a b\""));
        assert!(bad("[[export]]\nclients = [\"*\"]\npath = \"x\"").contains("absolute"));
        assert!(bad("[[export]]\nclients = [\"*\"]\npath = \"/a/../b\"").contains("`..`"));
        assert!(
            bad("[[export]]\nclients = [\"*\"]\nnetworks = [\"10.0.0.0/33\"]").contains("0..=32")
        );
        assert!(bad("[[export]]\nclients = [\"*\"]\naccess = \"rx\"").contains("rx"));
        assert!(bad("[[export]]\nclients = [\"*\"]\nroot = 1").contains("root"));
    }

    #[test]
    fn networks_match_by_prefix() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.255.4".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            Network::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            !Network::parse("::1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
    }

    fn confined(squash: Squash, access: Access) -> Scope {
        Scope::Confined(Grant {
            entry: 1,
            path: "/e".into(),
            access,
            squash,
            anon_uid: 7,
            anon_gid: 8,
            replication: false,
        })
    }

    #[test]
    fn squash_maps_owners_and_refuses_giving_files_away() {
        let root = confined(Squash::Root, Access::Rw);
        assert_eq!(root.owner(0, 0), (7, 8));
        assert_eq!(root.owner(5, 0), (5, 8));
        assert!(root.chown(Some(0), None).is_err());
        assert!(root.chown(Some(5), Some(6)).is_ok());
        let all = confined(Squash::All, Access::Rw);
        assert_eq!(all.owner(5, 6), (7, 8));
        assert!(all.chown(Some(5), None).is_err());
        assert!(all.chown(Some(7), Some(8)).is_ok());
        assert_eq!(Scope::Full.owner(0, 0), (0, 0));
    }

    fn mk(s: &mut State, parent: u64, name: &str, kind: crate::state::Kind) -> u64 {
        let req = namespace::NewInode {
            parent,
            name,
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            symlink_target: "",
            exclusive: true,
            rdev: 0,
            chunk_size: 1 << 20,
            replication: 3,
            umask: 0,
        };
        namespace::create(s, &req, crate::state::Time::default()).unwrap()
    }

    #[test]
    fn a_confined_client_numbers_its_root_1_and_cannot_leave_it() {
        use crate::state::Kind::{Directory, File};
        let mut s = State::new();
        let root = confined(Squash::None, Access::Rw);
        // The export's directory does not exist yet: refused, not the root.
        assert_eq!(root.inode(&s, ROOT_INO).unwrap_err().errno(), Some(EACCES));
        let e = mk(&mut s, ROOT_INO, "e", Directory);
        let inside = mk(&mut s, e, "f", File);
        let outside = mk(&mut s, ROOT_INO, "g", File);
        assert_eq!(root.inode(&s, ROOT_INO).unwrap(), e);
        assert_eq!(root.inode(&s, inside).unwrap(), inside);
        assert_eq!(root.inode(&s, e).unwrap(), e);
        assert_eq!(root.inode(&s, outside).unwrap_err().errno(), Some(EACCES));
        assert_eq!(root.inode(&s, 999).unwrap_err().errno(), Some(EACCES));
        assert_eq!(root.attr(&s, e).unwrap().ino, ROOT_INO);
        assert_eq!(root.attr(&s, inside).unwrap().ino, inside);
        assert_eq!(root.path("/../f"), "/e/f");
        assert_eq!(Scope::Full.inode(&s, outside).unwrap(), outside);
    }

    #[test]
    fn read_only_and_replication_limits() {
        assert!(confined(Squash::None, Access::Ro).writable().is_err());
        assert!(confined(Squash::None, Access::Rw).writable().is_ok());
        assert!(
            confined(Squash::None, Access::Rw)
                .replication(4, 3)
                .is_err()
        );
        assert!(confined(Squash::None, Access::Rw).replication(3, 3).is_ok());
        assert!(Scope::Full.replication(9, 3).is_ok());
        // Uploads are capped, not refused: healing makes the rest.
        assert_eq!(confined(Squash::None, Access::Rw).replication_cap(4, 3), 3);
        assert_eq!(Scope::Full.replication_cap(4, 3), 4);
    }
}
