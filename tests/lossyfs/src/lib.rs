//! `bigfs-lossyfs`: a FUSE file system that mirrors a backing directory
//! and loses every write that was not fsync'd when its power is cut, as
//! LazyFS does for Jepsen. BigFS's power-loss test runs the daemons' data
//! directories on it, because SIGKILL alone leaves the page cache intact
//! and so cannot catch a missing fsync.
//!
//! What it models:
//! - File data (writes, truncations, size-extending fallocate) stays in a
//!   per-file [`overlay::Overlay`] in this process's memory; readers see it.
//!   Only `fsync`/`fdatasync` of the file write it to the backing file.
//!   `close` persists nothing.
//! - A power cut ([`fs::LossyFs::power_cut`], asked for on the control
//!   socket) drops every overlay; each unsynced 4 KiB page may reach the
//!   disk anyway with a chosen probability (a cache that was partly written
//!   back), so a cut can also tear a file at page boundaries. The process
//!   then exits; the mount is dead until it is unmounted and mounted again
//!   over the same backing directory, which is what a reboot does.
//!
//! What it does not model:
//! - Namespace changes (create, mkdir, rename, link, unlink, symlink, chmod,
//!   chown, utimes) go straight to the backing directory, as in LazyFS's
//!   default: they survive a cut without an fsync of the directory, so a
//!   missing directory fsync goes unnoticed. `fsyncdir` is a no-op.
//! - Reordering among persisted pages beyond "any subset", metadata
//!   journaling, and bit rot.

pub mod fs;
pub mod overlay;
