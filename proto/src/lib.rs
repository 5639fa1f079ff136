//! The BigFS wire contract and the few pieces of code every crate shares.
//!
//! `pb` is generated from `proto/bigfs.proto`; `common` holds chunk ids,
//! limits, name validation and the retry policy; `tls`, `auth` and `certs`
//! the mutual TLS every process speaks and the identities it carries.

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("bigfs");
}

pub mod auth;
pub mod certs;
pub mod common;
pub mod daemon;
pub mod tls;

pub use common::*;
