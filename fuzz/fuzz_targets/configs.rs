//! The configuration parsers: the metadata service's and the storage
//! node's TOML, the mount's TOML, `-o` options and fstab source, the
//! metadata peer list and the certificate revocation list.
//!
//! Properties: no panic and no huge allocation on any text; a bad value
//! is an `Err` naming it; a configuration that parses and validates
//! serializes back to TOML that parses to the same configuration.
#![no_main]

use bigfs_client::mount_config::MountConfig;
use bigfs_fuzz::{CappedAlloc, Input};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// `value` written as TOML and read back is `value` again.
fn round_trips<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    // Some values have no TOML form (a NaN, a None inside a list); only
    // what serializes must come back the same.
    let Ok(text) = toml::to_string(value) else {
        return;
    };
    let back: T = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("serialized config does not parse: {e}\n{text}"));
    assert_eq!(&back, value, "config changed in a TOML round trip:\n{text}");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let which = input.u8();
    let Ok(text) = std::str::from_utf8(input.rest()) else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(c) = bigfs_metadata::Config::from_toml(text)
                && c.validate().is_ok()
            {
                let _ = bigfs_metadata::raft::parse_peers(&c.peers);
                round_trips(&c);
            }
        }
        1 => {
            if let Ok(c) = bigfs_storagenode::Config::from_toml(text) {
                let _ = c.listen_addr();
                let _ = c.advertise_addr();
                if c.validate().is_ok() {
                    round_trips(&c);
                }
            }
        }
        2 => {
            if let Ok(c) = toml::from_str::<MountConfig>(text)
                && c.validate().is_ok()
            {
                let _ = c.meta_wait();
                let _ = c.client_config();
            }
        }
        3 => {
            let mut c = MountConfig::default();
            if c.apply_options(text).is_ok() && c.validate().is_ok() {
                let _ = c.meta_wait();
                let _ = c.client_config();
            }
        }
        4 => {
            let mut c = MountConfig::default();
            c.apply_source(text);
            let _ = c.validate();
            let _ = bigfs_proto::leader::parse_addrs(&c.client.metadata);
        }
        5 => {
            let _ = bigfs_metadata::raft::parse_peers(text);
        }
        _ => {
            let revoked = bigfs_proto::tls::Revoked::parse(text);
            let _ = revoked.contains(text.lines().next().unwrap_or(""));
        }
    }
});
