//! TLS material of a process and the choice between mutual TLS and an
//! explicit `--insecure`.
//!
//! A TLS directory holds `ca.pem` (the cluster CA), `cert.pem` and
//! `key.pem` (this process's certificate and key, issued by that CA with
//! `bigfs admin cert issue`) and, optionally, `revoked.txt` (serials of
//! certificates this process refuses; see [`Revoked`]).
//!
//! Servers require a client certificate signed by the cluster CA; clients
//! verify the server's certificate against the same CA (by the address they
//! dial, so certificates carry DNS/IP names), refuse it if its serial is in
//! their own `revoked.txt` (see [`crate::peer`]), and present their own.
//! Outgoing connections made with [`crate::channel`] use the process-wide
//! client setting installed once at start with [`install_client`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};

use crate::auth::{self, Identity};

/// The cluster CA's certificate in a TLS directory.
pub const CA_FILE: &str = "ca.pem";
/// This process's certificate.
pub const CERT_FILE: &str = "cert.pem";
/// This process's private key (mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// Serials of revoked certificates, one per line (optional).
pub const REVOKED_FILE: &str = "revoked.txt";

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("{0}")]
    Setup(String),
}

/// Serials (lowercase hex, no separators) of certificates to refuse.
///
/// `revoked.txt` lists one serial per line as `bigfs admin cert list`
/// prints it; `#` starts a comment. Every process reads it at start (a
/// server refuses such a caller, a caller such a server), so a revocation
/// takes effect on each process when it restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked(BTreeSet<String>);

impl Revoked {
    pub fn parse(text: &str) -> Revoked {
        Revoked(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or_default().trim())
                .filter(|l| !l.is_empty())
                .map(normalize_serial)
                .collect(),
        )
    }

    pub fn contains(&self, serial: &str) -> bool {
        self.0.contains(&normalize_serial(serial))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `01:AB:cd` and `01abcd` name the same serial.
pub fn normalize_serial(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
        .trim_start_matches('0')
        .to_string()
}

/// A TLS directory, loaded and checked.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub dir: PathBuf,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// The identity in `cert.pem`.
    pub identity: Identity,
    pub revoked: Revoked,
}

fn read(path: PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
}

impl TlsMaterial {
    /// Reads `ca.pem`, `cert.pem`, `key.pem` and `revoked.txt` (if present)
    /// from `dir`, and the identity the certificate names.
    pub fn load(dir: &Path) -> Result<TlsMaterial, TlsError> {
        let ca_pem = read(dir.join(CA_FILE))?;
        let cert_pem = read(dir.join(CERT_FILE))?;
        let key_pem = read(dir.join(KEY_FILE))?;
        let cert_path = dir.join(CERT_FILE);
        let der = auth::first_pem_der(&cert_pem).ok_or_else(|| TlsError::Bad {
            path: cert_path.clone(),
            reason: "no CERTIFICATE block".into(),
        })?;
        let (identity, _serial) = auth::identity_of_cert(&der).map_err(|reason| TlsError::Bad {
            path: cert_path,
            reason,
        })?;
        let revoked_path = dir.join(REVOKED_FILE);
        let revoked = if revoked_path.exists() {
            Revoked::parse(&String::from_utf8_lossy(&read(revoked_path)?))
        } else {
            Revoked::default()
        };
        Ok(TlsMaterial {
            dir: dir.to_path_buf(),
            ca_pem,
            cert_pem,
            key_pem,
            identity,
            revoked,
        })
    }

    /// Server side: our certificate, and client certificates required,
    /// signed by the cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Client side as tonic expresses it: trust only the cluster CA,
    /// present our certificate. It cannot check revocation: the process's
    /// own channels use [`crate::peer::checked_channel`]; this is for
    /// tests calling as another identity.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// The cluster CA as a rustls trust store (for the connections tonic's
    /// TLS settings cannot express: the admin HTTPS, checked peers).
    pub fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let bad = |reason: String| TlsError::Bad {
            path: self.dir.join(CA_FILE),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no CERTIFICATE block".into()));
        }
        Ok(roots)
    }

    /// Our certificate chain and key, as rustls takes them.
    pub fn cert_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Bad {
                path: self.dir.join(CERT_FILE),
                reason: e.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| TlsError::Bad {
            path: self.dir.join(KEY_FILE),
            reason: e.to_string(),
        })?;
        Ok((chain, key))
    }
}

/// How a process talks to the cluster: mutual TLS, or plaintext without any
/// authentication because the operator said `--insecure`.
#[derive(Debug, Clone)]
pub enum Security {
    Tls(Arc<TlsMaterial>),
    Insecure,
}

impl Security {
    /// The security a process runs with, from its `--tls-dir`/`tls_dir` and
    /// `--insecure`/`insecure` settings (see [`check_settings`]).
    pub fn from_settings(
        program: &str,
        tls_dir: Option<&Path>,
        insecure: bool,
    ) -> Result<Security, TlsError> {
        check_settings(program, tls_dir, insecure).map_err(TlsError::Setup)?;
        match tls_dir {
            Some(dir) => Ok(Security::Tls(Arc::new(TlsMaterial::load(dir)?))),
            None => Ok(Security::Insecure),
        }
    }

    /// A daemon's start: [`Security::from_settings`], logged, and installed
    /// for the daemon's own outgoing calls.
    pub fn start_daemon(
        program: &str,
        tls_dir: Option<&Path>,
        insecure: bool,
    ) -> Result<Security, TlsError> {
        let security = Security::from_settings(program, tls_dir, insecure)?;
        security.log_start(program);
        security.install_client();
        Ok(security)
    }

    /// Logs what the process runs with; `--insecure` warns at every start.
    pub fn log_start(&self, program: &str) {
        match self {
            Security::Tls(m) => tracing::info!(
                identity = %m.identity,
                tls_dir = %m.dir.display(),
                revoked = m.revoked.len(),
                "{program}: mutual TLS"
            ),
            Security::Insecure => tracing::warn!(
                "{program}: running with --insecure: no TLS, no authentication, every \
                 caller may do anything; use only on a trusted network or for a test"
            ),
        }
    }

    /// The identity of our certificate (None when insecure).
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Security::Tls(m) => Some(&m.identity),
            Security::Insecure => None,
        }
    }

    /// Makes every later [`crate::channel`] of this process use our
    /// certificate (or plaintext when insecure).
    pub fn install_client(&self) {
        install_client(match self {
            Security::Tls(m) => Some(m.clone()),
            Security::Insecure => None,
        });
    }

    /// A tonic server builder serving TLS with client certificates
    /// required (or plaintext when insecure).
    pub fn server(&self) -> Result<tonic::transport::Server, TlsError> {
        let builder = tonic::transport::Server::builder();
        match self {
            Security::Tls(m) => builder
                .tls_config(m.server_config())
                .map_err(|e| TlsError::Setup(format!("TLS server setup: {e}"))),
            Security::Insecure => Ok(builder),
        }
    }

    /// The layer that checks each request's caller against `policy`
    /// (insecure: lets every request through as anonymous).
    pub fn auth_layer(&self, policy: auth::Policy) -> auth::AuthLayer {
        match self {
            Security::Tls(m) => auth::AuthLayer::checking(policy, m.revoked.clone()),
            Security::Insecure => auth::AuthLayer::anonymous(),
        }
    }
}

/// Exactly one of a TLS directory and `insecure` must be set; the error
/// says what to pass. `program` names the binary in it.
pub fn check_settings(program: &str, tls_dir: Option<&Path>, insecure: bool) -> Result<(), String> {
    match (tls_dir, insecure) {
        (Some(_), true) => Err(format!(
            "{program}: both a TLS directory and insecure are set; choose one"
        )),
        (None, false) => Err(format!(
            "{program} runs with mutual TLS and has no certificate: pass --tls-dir DIR \
             (or tls_dir in its config file) naming a directory with ca.pem, cert.pem and \
             key.pem (make them with `bigfs admin ca init` and `bigfs admin cert issue`), \
             or --insecure (insecure = true) to run without TLS or authentication"
        )),
        _ => Ok(()),
    }
}

/// The process-wide TLS material of outgoing connections, used by
/// [`crate::channel`] and [`crate::peer`].
static CLIENT: RwLock<Option<Arc<TlsMaterial>>> = RwLock::new(None);

/// Sets the TLS material of this process's outgoing connections (None:
/// plaintext). Call once at start, before any channel is made.
pub fn install_client(material: Option<Arc<TlsMaterial>>) {
    *CLIENT.write().unwrap_or_else(|p| p.into_inner()) = material;
}

/// The installed TLS material, if any.
pub fn client_material() -> Option<Arc<TlsMaterial>> {
    CLIENT.read().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_serials_ignore_case_colons_comments_and_leading_zeros() {
        let r = Revoked::parse("# revoked\n01:AB:cd  # node:n3\n\n7f\n");
        assert_eq!(r.len(), 2);
        assert!(r.contains("1abcd"));
        assert!(r.contains("0001ABCD"));
        assert!(r.contains("7F"));
        assert!(!r.contains("abcd"));
    }

    #[test]
    fn neither_tls_dir_nor_insecure_says_what_to_pass() {
        let e = Security::from_settings("bigfs-x", None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-dir") && e.contains("--insecure"), "{e}");
        assert!(Security::from_settings("x", Some(Path::new("/nope")), true).is_err());
        assert!(matches!(
            Security::from_settings("x", None, true),
            Ok(Security::Insecure)
        ));
    }
}
