//! GETs against the admin HTTP servers: plain HTTP (daemons run
//! `--insecure`) and HTTPS trusting the cluster CA, with an admin client
//! certificate, a bearer token, or neither.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bigfs_proto::tls::TlsMaterial;
use tokio_rustls::rustls;

/// How a GET proves it may read the page.
#[derive(Debug, Clone, Copy)]
pub enum AdminAuth<'a> {
    /// Nothing: no certificate, no Authorization header.
    Nothing,
    /// The client certificate of this TLS directory.
    Cert(&'a Path),
    /// `Authorization: Bearer TOKEN`.
    Token(&'a str),
}

/// Sends an HTTP/1.0 GET on `stream` and reads the answer to its end (the
/// admin servers close after a 1.0 answer): the status code and the body.
fn get_on(
    stream: &mut (impl Read + Write),
    addr: &str,
    path: &str,
    auth: AdminAuth<'_>,
) -> std::io::Result<(u16, String)> {
    let header = match auth {
        AdminAuth::Token(t) => format!("Authorization: Bearer {t}\r\n"),
        _ => String::new(),
    };
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{header}\r\n"
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify: keep what came.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

fn connect(addr: &str) -> std::io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// A plain HTTP/1.0 GET: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get_as(addr, path, AdminAuth::Nothing)
}

/// A plain HTTP/1.0 GET with `auth` (only a token makes sense here).
pub fn http_get_as(addr: &str, path: &str, auth: AdminAuth<'_>) -> std::io::Result<(u16, String)> {
    get_on(&mut connect(addr)?, addr, path, auth)
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// An HTTPS GET trusting the CA in TLS directory `ca_dir` (its `ca.pem`),
/// presenting what `auth` says. A handshake the server refuses is an error.
pub fn https_get(
    addr: &str,
    path: &str,
    ca_dir: &Path,
    auth: AdminAuth<'_>,
) -> std::io::Result<(u16, String)> {
    let mut stream = https_stream(addr, ca_dir, &auth)?;
    get_on(&mut stream, addr, path, auth)
}

/// A TLS connection to `addr` trusting the CA in `ca_dir`, presenting the
/// certificate `auth` names if it names one (the handshake completes on
/// first use).
pub fn https_stream(
    addr: &str,
    ca_dir: &Path,
    auth: &AdminAuth<'_>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    https_connect(addr, &https_config(ca_dir, auth)?)
}

/// The client TLS setting [`https_stream`] uses, to share among many
/// connections (it keeps their sessions for resumption).
pub fn https_config(
    ca_dir: &Path,
    auth: &AdminAuth<'_>,
) -> std::io::Result<Arc<rustls::ClientConfig>> {
    let ca = TlsMaterial::load(ca_dir).map_err(other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .with_root_certificates(ca.roots().map_err(other)?);
    let config = match auth {
        AdminAuth::Cert(dir) => {
            let (chain, key) = TlsMaterial::load(dir)
                .and_then(|m| m.cert_and_key())
                .map_err(other)?;
            builder.with_client_auth_cert(chain, key).map_err(other)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A TLS connection to `addr` with `config`.
pub fn https_connect(
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(other)?;
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).map_err(other)?;
    Ok(rustls::StreamOwned::new(conn, connect(addr)?))
}
