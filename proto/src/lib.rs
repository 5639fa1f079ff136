//! The BigFS wire contract and the few pieces of code every crate shares.
//!
//! `pb` is generated from `proto/bigfs.proto`; `common` holds chunk ids,
//! limits, name validation and the retry policy; `leader` finds the
//! metadata leader among the members.

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("bigfs");
}

pub mod common;
pub mod daemon;
pub mod leader;
pub mod message_limit;

pub use common::*;
pub use leader::{MetaChannel, MetaClient};
