//! `bigfs admin ca init` and `bigfs admin cert issue|list|revoke`: the
//! cluster CA and its certificates, on local files only (no cluster
//! connection). See `bigfs_proto::certs` for the files they write.

use std::path::PathBuf;

use bigfs_proto::auth::{Identity, Role};
use bigfs_proto::certs;
use clap::Subcommand;

use crate::failure::Failure;
use crate::output::outln;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// The cluster certificate authority.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Certificates issued by the cluster CA.
    #[command(subcommand)]
    Cert(CertCmd),
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// Create a cluster CA in DIR: ca.pem (give it to every host) and
    /// ca.key (mode 0600; keep it off the cluster's hosts).
    Init {
        dir: PathBuf,
        /// A name for the cluster, shown in the CA's subject.
        #[arg(long, default_value = "bigfs")]
        cluster: String,
    },
}

#[derive(Subcommand)]
pub enum CertCmd {
    /// Issue a certificate for ROLE:NAME into --out (cert.pem, key.pem and
    /// a copy of ca.pem: a ready --tls-dir).
    Issue {
        /// The CA directory (`bigfs admin ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// node (NAME = the node id), meta, client or admin.
        #[arg(long)]
        role: String,
        name: String,
        /// The TLS directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Host names and IP addresses the holder serves on, comma
        /// separated. Default: localhost,127.0.0.1.
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = certs::DEFAULT_CERT_DAYS)]
        days: u32,
    },
    /// Every certificate the CA issued: serial, identity, expiry, revoked.
    List {
        #[arg(long)]
        ca: PathBuf,
    },
    /// Revoke a certificate by serial, or every certificate of ROLE:NAME;
    /// then copy the CA's revoked.txt into each daemon's TLS directory and
    /// restart the daemons.
    Revoke {
        #[arg(long)]
        ca: PathBuf,
        what: String,
    },
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::new(e.to_string())
}

pub fn run(cmd: &CertsCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        CertsCmd::Ca(CaCmd::Init { dir, cluster }) => {
            certs::init_ca(dir, cluster).map_err(failed)?;
            outln!(
                "CA created in {}: copy ca.pem to every host; keep ca.key private",
                dir.display()
            );
        }
        CertsCmd::Cert(CertCmd::Issue {
            ca,
            role,
            name,
            out,
            san,
            days,
        }) => {
            let role = Role::parse(role).ok_or_else(|| {
                Failure::usage(format!("--role {role}: one of node, meta, client, admin"))
            })?;
            let id = Identity::new(role, name).map_err(Failure::usage)?;
            let issued = certs::issue(ca, &id, san, *days).map_err(failed)?;
            issued.write_tls_dir(out, ca).map_err(failed)?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"identity": id.to_string(), "serial": issued.serial,
                        "dir": out.display().to_string()})
                );
            } else {
                outln!(
                    "{id}: serial {} in {} (use it as --tls-dir)",
                    issued.serial,
                    out.display()
                );
            }
        }
        CertsCmd::Cert(CertCmd::List { ca }) => {
            let list = certs::list(ca).map_err(failed)?;
            for e in list {
                let left = match certs::remaining(e.not_after_secs) {
                    Some(d) => format!("{} days left", d.as_secs() / 86_400),
                    None => "expired".into(),
                };
                let state = if e.revoked { "revoked" } else { "valid" };
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"serial": e.serial, "identity": e.identity,
                            "not_after": e.not_after_secs, "revoked": e.revoked})
                    );
                } else {
                    outln!("{} {} {state} {left}", e.serial, e.identity);
                }
            }
        }
        CertsCmd::Cert(CertCmd::Revoke { ca, what }) => {
            let serials = certs::revoke(ca, what).map_err(failed)?;
            outln!(
                "{what}: {} serial(s) newly revoked in {}; copy it into every daemon's \
                 TLS directory and restart them",
                serials.len(),
                ca.join(bigfs_proto::tls::REVOKED_FILE).display()
            );
        }
    }
    Ok(())
}
