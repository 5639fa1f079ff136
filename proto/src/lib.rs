//! The BigFS wire contract and the few pieces of code every crate shares.
//!
//! `pb` is generated from `proto/bigfs.proto`; `common` holds chunk ids,
//! limits, name validation and the retry policy; `leader` finds the
//! metadata leader among the members; `tls`, `auth` and `certs` the mutual
//! TLS every process speaks and the identities it carries; `peer` the
//! channels that accept only one identity; `receipt` the storage nodes'
//! proofs of the copies they hold; `admin_http` who may read the admin
//! pages.

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("bigfs");
}

pub mod admin_http;
pub mod auth;
pub mod certs;
pub mod common;
pub mod daemon;
pub mod leader;
pub mod message_limit;
pub mod peer;
pub mod receipt;
pub mod tls;

pub use common::*;
pub use leader::{LocksClient, MetaChannel, MetaClient};
