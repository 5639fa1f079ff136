//! Metadata snapshots: `snapshot.bin` as read back at start, and a
//! snapshot body as a leader sends it to `install_snapshot`.
//!
//! Properties: no panic and no huge allocation on any bytes; a bad magic,
//! version or body is an `Err`; a decoded state answers the reads a
//! member serves from it at once (the root's attributes, a status page)
//! without a panic.
#![no_main]

use bigfs_fuzz::{CappedAlloc, Input};
use bigfs_metadata::raft::machine::{
    MAGIC, SNAPSHOT_VERSION, decode_snapshot_body, decode_snapshot_file,
};
use bigfs_metadata::state::State;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fn serve_from(state: &State) {
    let _ = state.attr(1);
    for ino in state.inodes.keys().take(64) {
        let _ = state.attr(*ino);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        // The file as it is on disk, magic and version included.
        0 => {
            if let Ok((_, state)) = decode_snapshot_file(input.rest()) {
                serve_from(&state);
            }
        }
        // Behind a valid header, so the body decoder sees every input.
        1 => {
            let mut file = MAGIC.to_vec();
            file.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
            file.extend_from_slice(input.rest());
            if let Ok((_, state)) = decode_snapshot_file(&file) {
                serve_from(&state);
            }
        }
        // What install_snapshot receives from the leader.
        _ => {
            if let Ok((_, state)) = decode_snapshot_body(input.rest()) {
                serve_from(&state);
            }
        }
    }
});
