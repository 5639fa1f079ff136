//! The cluster CA and the certificates it issues (`bigfs admin ca init`,
//! `bigfs admin cert issue|list|revoke`), made with rcgen.
//!
//! A CA directory holds:
//! - `ca.pem`, `ca.key` (mode 0600): the CA certificate and its key;
//! - `issued.txt`: one line per issued certificate,
//!   `SERIAL ROLE:NAME NOT_AFTER_UNIX_SECS`;
//! - `revoked.txt`: serials refused by every daemon that has a copy of it
//!   in its TLS directory (see [`crate::tls::Revoked`]).
//!
//! Every certificate issued carries its identity as the URI SAN
//! `bigfs://ROLE/NAME` (see [`crate::auth`]) plus DNS/IP SANs, so a server
//! is verified by the address clients dial.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

use crate::auth::Identity;
use crate::tls::{CA_FILE, CERT_FILE, KEY_FILE, REVOKED_FILE, normalize_serial};

/// The CA's private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The index of issued certificates in a CA directory.
pub const ISSUED_FILE: &str = "issued.txt";

/// A CA is valid for ten years: longer than a cluster's hardware.
pub const CA_DAYS: u32 = 3650;
/// A certificate is valid for two years by default: rotated with the
/// machines' regular maintenance, not forgotten for a decade.
pub const DEFAULT_CERT_DAYS: u32 = 730;
/// Names a certificate is valid for when none are given: a one-host cluster.
pub const DEFAULT_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path`; `private` files get mode 0600 from creation on.
fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), CertError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn append_line(path: &Path, line: &str) -> Result<(), CertError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io(path))?;
    writeln!(f, "{line}").map_err(io(path))
}

fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // An hour of slack for machines whose clocks run behind.
    let before = now.saturating_sub(3600);
    let after = now + u64::from(days) * 86_400;
    let at = |s: u64| {
        time::OffsetDateTime::from_unix_timestamp(s as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    (at(before), at(after), after)
}

/// A random positive 128-bit serial and its hex form.
fn new_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    (
        SerialNumber::from_slice(&bytes),
        normalize_serial(&hex::encode(bytes)),
    )
}

/// Creates a cluster CA in `dir` (created if missing); refuses to overwrite
/// an existing one.
pub fn init_ca(dir: &Path, cluster: &str) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key_path = dir.join(CA_KEY_FILE);
    if key_path.exists() {
        return Err(CertError::Invalid(format!(
            "{} already exists: a CA is there; use another directory",
            key_path.display()
        )));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("BigFS cluster CA {cluster}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (before, after, _) = validity(CA_DAYS);
    params.not_before = before;
    params.not_after = after;
    params.serial_number = Some(new_serial().0);
    let cert = params.self_signed(&key)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&dir.join(CA_FILE), cert.pem().as_bytes(), false)?;
    Ok(())
}

/// A certificate and key just issued.
pub struct Issued {
    pub identity: Identity,
    pub serial: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

fn san(name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name
        .try_into()
        .map_err(|_| CertError::Invalid(format!("{name:?} is not a host name or IP address")))?;
    Ok(SanType::DnsName(dns))
}

/// Issues a certificate for `identity`, valid for `sans` (host names and
/// IP addresses; [`DEFAULT_SANS`] if empty) for `days`, signed by the CA in
/// `ca_dir`, and records it in the CA's `issued.txt`.
pub fn issue(
    ca_dir: &Path,
    identity: &Identity,
    sans: &[String],
    days: u32,
) -> Result<Issued, CertError> {
    let ca_path = ca_dir.join(CA_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.to_string());
    let uri = identity
        .uri()
        .try_into()
        .map_err(|_| CertError::Invalid(format!("{identity} does not fit a URI")))?;
    params.subject_alt_names.push(SanType::URI(uri));
    let names: Vec<String> = if sans.is_empty() {
        DEFAULT_SANS.iter().map(|s| s.to_string()).collect()
    } else {
        sans.to_vec()
    };
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        params.subject_alt_names.push(san(n)?);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Every process is both a server and a client of the others.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let (before, after, after_secs) = validity(days);
    params.not_before = before;
    params.not_after = after;
    let (serial_number, serial) = new_serial();
    params.serial_number = Some(serial_number);
    let cert = params.signed_by(&key, &issuer)?;
    append_line(
        &ca_dir.join(ISSUED_FILE),
        &format!("{serial} {identity} {after_secs}"),
    )?;
    Ok(Issued {
        identity: identity.clone(),
        serial,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem,
    })
}

impl Issued {
    /// Writes a TLS directory: `cert.pem`, `key.pem` (0600), `ca.pem`, and
    /// the CA's current `revoked.txt` if it has one.
    pub fn write_tls_dir(&self, out: &Path, ca_dir: &Path) -> Result<(), CertError> {
        std::fs::create_dir_all(out).map_err(io(out))?;
        write_file(&out.join(CERT_FILE), self.cert_pem.as_bytes(), false)?;
        write_file(&out.join(KEY_FILE), self.key_pem.as_bytes(), true)?;
        write_file(&out.join(CA_FILE), self.ca_pem.as_bytes(), false)?;
        let revoked = ca_dir.join(REVOKED_FILE);
        if revoked.exists() {
            std::fs::copy(&revoked, out.join(REVOKED_FILE)).map_err(io(&revoked))?;
        }
        Ok(())
    }
}

/// One line of `issued.txt`, with whether it is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedEntry {
    pub serial: String,
    pub identity: String,
    pub not_after_secs: u64,
    pub revoked: bool,
}

/// Every certificate the CA in `ca_dir` issued, oldest first.
pub fn list(ca_dir: &Path) -> Result<Vec<IssuedEntry>, CertError> {
    let path = ca_dir.join(ISSUED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&path)(e)),
    };
    let revoked = revoked_of(ca_dir)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let serial = parts.next()?.to_string();
            let identity = parts.next()?.to_string();
            let not_after_secs = parts.next()?.parse().ok()?;
            Some(IssuedEntry {
                revoked: revoked.contains(&serial),
                serial,
                identity,
                not_after_secs,
            })
        })
        .collect())
}

fn revoked_of(ca_dir: &Path) -> Result<crate::tls::Revoked, CertError> {
    let path = ca_dir.join(REVOKED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(crate::tls::Revoked::parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Revokes `what`, a serial or a `role:name` (every certificate issued to
/// it), by adding serials to the CA's `revoked.txt`. Returns the serials
/// newly revoked.
pub fn revoke(ca_dir: &Path, what: &str) -> Result<Vec<String>, CertError> {
    let issued = list(ca_dir)?;
    let serials: Vec<String> = match Identity::parse(what) {
        Ok(id) => issued
            .iter()
            .filter(|e| e.identity == id.to_string())
            .map(|e| e.serial.clone())
            .collect(),
        Err(_) => {
            let s = normalize_serial(what);
            issued
                .iter()
                .filter(|e| e.serial == s)
                .map(|e| e.serial.clone())
                .collect()
        }
    };
    if serials.is_empty() {
        return Err(CertError::Invalid(format!(
            "{what}: no certificate with this serial or identity in {}",
            ca_dir.join(ISSUED_FILE).display()
        )));
    }
    let already = revoked_of(ca_dir)?;
    let mut newly = Vec::new();
    for e in issued.iter().filter(|e| serials.contains(&e.serial)) {
        if !already.contains(&e.serial) {
            append_line(
                &ca_dir.join(REVOKED_FILE),
                &format!("{} # {}", e.serial, e.identity),
            )?;
            newly.push(e.serial.clone());
        }
    }
    Ok(newly)
}

/// Seconds until `not_after_secs`, or None if it has passed.
pub fn remaining(not_after_secs: u64) -> Option<Duration> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    not_after_secs.checked_sub(now).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, identity_of_cert};

    #[test]
    fn issued_certificates_carry_their_identity_and_serial() {
        let dir = std::env::temp_dir().join(format!("bigfs-certs-{}", rand::random::<u64>()));
        init_ca(&dir, "test").unwrap();
        assert!(init_ca(&dir, "test").is_err(), "a CA is never overwritten");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let id = Identity::new(Role::Node, "n1").unwrap();
        let issued = issue(&dir, &id, &[], DEFAULT_CERT_DAYS).unwrap();
        let der = crate::auth::first_pem_der(issued.cert_pem.as_bytes()).unwrap();
        let (got, serial) = identity_of_cert(&der).unwrap();
        assert_eq!(got, id);
        assert_eq!(serial, issued.serial);

        let out = dir.join("n1");
        issued.write_tls_dir(&out, &dir).unwrap();
        let m = crate::tls::TlsMaterial::load(&out).unwrap();
        assert_eq!(m.identity, id);

        issue(&dir, &id, &["host-a".into()], 1).unwrap();
        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(revoke(&dir, "node:n1").unwrap().len(), 2);
        assert!(list(&dir).unwrap().iter().all(|e| e.revoked));
        assert!(revoke(&dir, "node:n1").unwrap().is_empty());
        assert!(revoke(&dir, "node:nobody").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
