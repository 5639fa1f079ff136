//! The metadata member's logs as read back from disk: `raft.log` (framing
//! and bincode entries), `raft.vote`, and the legacy `commands.log`.
//!
//! Properties: no panic and no huge allocation on any bytes; a decode
//! failure is an `Err`; the valid prefix lies inside the input; what
//! decodes re-encodes to bytes that decode to the same entries; every
//! decoded entry applies to a state machine without a panic (a replaying
//! member applies whatever its log holds).
#![no_main]

use bigfs_fuzz::{CappedAlloc, Input};
use bigfs_metadata::machine::Core;
use bigfs_metadata::raft::NodeId;
use bigfs_metadata::raft::log::{decode_log, decode_vote_file, encode_log};
use bigfs_metadata::raft::machine::apply_entry;
use bigfs_metadata::state::State;
use bigfs_metadata::store::{push_record, replay_command_log};
use openraft::LogId;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// Frames each u16-prefixed slice of `input` as a log record, so the
/// payload decoder sees arbitrary bytes behind a valid checksum.
fn framed(input: &mut Input<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut index = input.u64() % 1_000;
    while !input.is_empty() {
        push_record(&mut out, index, input.chunk());
        index += 1;
    }
    out
}

fn check_log(bytes: &[u8], purged: Option<LogId<NodeId>>) {
    let Ok((entries, valid)) = decode_log(bytes, purged) else {
        return;
    };
    assert!(valid <= bytes.len(), "valid prefix past the end");
    if let Some(p) = purged {
        assert!(entries.keys().all(|i| *i > p.index), "a purged entry kept");
    }
    let again = encode_log(&entries).expect("decoded entries encode");
    let (round, end) = decode_log(&again, None).expect("an encoded log decodes");
    assert_eq!(end, again.len(), "an encoded log has no tail");
    assert_eq!(round, entries, "round trip changed the entries");
    let mut core = Core::new(State::new());
    for entry in entries.values() {
        let _ = apply_entry(&mut core, entry);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.u8() % 4 {
        0 => check_log(input.rest(), None),
        1 => {
            let bytes = framed(&mut input);
            check_log(&bytes, None);
        }
        2 => {
            let vote = input.chunk();
            let Ok(purged) = decode_vote_file(vote) else {
                return;
            };
            let bytes = framed(&mut input);
            check_log(&bytes, purged);
        }
        _ => {
            let after = input.u64();
            let bytes = framed(&mut input);
            let mut state = State::new();
            if let Ok(r) = replay_command_log(&mut state, &bytes, after) {
                assert!(r.valid <= bytes.len(), "valid prefix past the end");
                assert!(r.last >= after, "replay went backwards");
            }
        }
    }
});
