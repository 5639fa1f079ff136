//! The marker file `.bigfs-disk` at the top of every data directory,
//! written at first use, and the start-up decision it allows.
//!
//! A data disk that did not mount leaves an empty mount point behind, which
//! looks exactly like a new, empty disk. Taken as empty, its chunks would
//! be reported gone. So a directory is only used as a disk when it carries
//! the marker, or when the node is new (no data directory has a marker yet:
//! first start, or a node from before markers) or the operator says so
//! (`--init-disks`, after adding or replacing a disk). A directory without
//! a marker on a node whose other disks have one is a bad disk: reported,
//! not initialised.

use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The marker's file name under a data directory.
pub const MARKER_FILE: &str = ".bigfs-disk";

/// What the marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The node that initialised the disk (informational: a disk moved to
    /// another node is adopted, its unlisted chunks quarantined).
    pub node_id: String,
    /// Names this disk; the periodic check compares it.
    pub disk_uuid: String,
}

impl Marker {
    pub fn new(node_id: &str) -> Marker {
        Marker {
            node_id: node_id.to_string(),
            disk_uuid: format!("{:032x}", rand::random::<u128>()),
        }
    }
}

/// Reads the marker of `root`: None when the directory or the marker is
/// missing.
pub fn read(root: &Path) -> std::io::Result<Option<Marker>> {
    let text = match std::fs::read_to_string(root.join(MARKER_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, format!("bad marker: {e}")))
}

/// Writes the marker of `root` durably (temporary file, fsync, rename).
pub fn write(root: &Path, m: &Marker) -> std::io::Result<()> {
    let text = toml::to_string(m).map_err(std::io::Error::other)?;
    let tmp = root.join(format!("{MARKER_FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, root.join(MARKER_FILE))?;
    std::fs::File::open(root)?.sync_all()
}

/// What to do with one data directory at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its marker is there: use it as that disk.
    Use(Marker),
    /// Initialise it as a new disk (write a marker).
    Init,
    /// Do not use it; the reason is logged and reported.
    Bad(String),
}

/// Decides, for each data directory's marker read (in order), whether to
/// use, initialise or refuse it. `init_disks` is the operator's
/// `--init-disks`: every directory without a marker is initialised.
pub fn decide(
    dirs: &[&Path],
    markers: &[std::io::Result<Option<Marker>>],
    init_disks: bool,
) -> Vec<Verdict> {
    let node_is_new = markers.iter().all(|m| matches!(m, Ok(None)));
    dirs.iter()
        .zip(markers)
        .map(|(dir, m)| match m {
            Ok(Some(m)) => Verdict::Use(m.clone()),
            Ok(None) if node_is_new || init_disks => Verdict::Init,
            Ok(None) => Verdict::Bad(format!(
                "{} has no {MARKER_FILE} marker while other data directories of this node do: \
                 not mounted? (start with --init-disks to use it as a new, empty disk)",
                dir.display()
            )),
            Err(e) => Verdict::Bad(format!(
                "cannot read {}: {e}",
                dir.join(MARKER_FILE).display()
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_err() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EIO)
    }

    #[test]
    fn markers_round_trip_and_a_missing_one_reads_as_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        assert_eq!(read(&d.path().join("nope")).unwrap(), None);
        let m = Marker::new("n1");
        write(d.path(), &m).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some(m));
        std::fs::write(d.path().join(MARKER_FILE), "garbage =").unwrap();
        assert!(read(d.path()).is_err());
    }

    #[test]
    fn a_new_node_initialises_every_directory() {
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        let v = decide(&[a, b], &[Ok(None), Ok(None)], false);
        assert_eq!(v, vec![Verdict::Init, Verdict::Init]);
    }

    #[test]
    fn a_directory_without_marker_beside_marked_ones_is_bad_unless_the_operator_says() {
        let (a, b, c) = (Path::new("/a"), Path::new("/b"), Path::new("/c"));
        let m = Marker::new("n1");
        let markers = || [Ok(Some(m.clone())), Ok(None), Err(io_err())];
        let v = decide(&[a, b, c], &markers(), false);
        assert_eq!(v[0], Verdict::Use(m.clone()));
        assert!(
            matches!(&v[1], Verdict::Bad(r) if r.contains("--init-disks")),
            "{v:?}"
        );
        assert!(
            matches!(&v[2], Verdict::Bad(r) if r.contains("/c/.bigfs-disk")),
            "{v:?}"
        );
        let v = decide(&[a, b, c], &markers(), true);
        assert_eq!(v[1], Verdict::Init);
        assert!(
            matches!(v[2], Verdict::Bad(_)),
            "an unreadable disk stays bad"
        );
    }
}
