//! Certificates for test clusters: one CA per test process, made in memory
//! on first use (rcgen: milliseconds), written into each cluster's
//! directory, which then holds a TLS directory per process it starts.
//!
//! The test process itself talks to every cluster as `admin:tests`
//! (installed as its process-wide client TLS setting on first use), so the
//! harness's status polls and the tests' direct gRPC calls pass every check
//! but the node-only ones.

use std::path::Path;
use std::sync::OnceLock;

use bigfs_proto::auth::Identity;
use bigfs_proto::certs;
use bigfs_proto::tls::{CA_FILE, TlsMaterial};

struct Ca {
    pem: String,
    key: String,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("bigfs-test-ca-")
            .tempdir()
            .expect("tempdir");
        certs::init_ca(dir.path(), "tests").expect("test CA");
        let ca = Ca {
            pem: std::fs::read_to_string(dir.path().join(CA_FILE)).expect("ca.pem"),
            key: std::fs::read_to_string(dir.path().join(certs::CA_KEY_FILE)).expect("ca.key"),
        };
        let admin = dir.path().join("admin");
        issue_into(dir.path(), "admin:tests", &admin);
        let m = TlsMaterial::load(&admin).expect("admin TLS dir");
        bigfs_proto::tls::install_client(Some(std::sync::Arc::new(m)));
        ca
    })
}

/// Makes the test process talk TLS as `admin:tests` (idempotent).
pub fn install_client() {
    ca();
}

/// Writes the test CA (`ca.pem`, `ca.key`) into `dir`.
pub fn write_ca(dir: &Path) {
    let ca = ca();
    std::fs::create_dir_all(dir).expect("CA dir");
    std::fs::write(dir.join(CA_FILE), &ca.pem).expect("write ca.pem");
    std::fs::write(dir.join(certs::CA_KEY_FILE), &ca.key).expect("write ca.key");
}

/// Issues a certificate for `identity` (`role:name`) from the CA in
/// `ca_dir` into the TLS directory `out`; returns its serial.
pub fn issue_into(ca_dir: &Path, identity: &str, out: &Path) -> String {
    let id = Identity::parse(identity).expect("identity");
    let issued = certs::issue(ca_dir, &id, &[], 1).expect("issue certificate");
    issued.write_tls_dir(out, ca_dir).expect("write TLS dir");
    issued.serial
}

/// A TLS client setting from a TLS directory (for a test that calls as
/// another identity than the process's own).
pub fn client_tls(dir: &Path) -> tonic::transport::ClientTlsConfig {
    TlsMaterial::load(dir).expect("TLS dir").client_config()
}
