//! TLS channels that check the server's certificate beyond what tonic's
//! `ClientTlsConfig` can: every outgoing connection of a process with TLS
//! material (mount, CLI, node to metadata, metadata to nodes, Raft between
//! members) refuses a server whose certificate serial is in the caller's
//! `revoked.txt`, and a storage node pushing a replica also checks that the
//! server it reached holds the certificate of `node:<the target's id>`, so
//! a chunk never goes to an address that is not that registered node
//! (another role's certificate from the same CA, a squatter on a freed
//! port, a mistyped address).
//!
//! tonic's `ClientTlsConfig` verifies a server only by the CA and the name
//! dialled, so these channels make their own TLS connection: rustls's
//! WebPKI verifier first (CA, validity, name), then the revocation list
//! and, when one is expected, the certificate's URI SAN identity (see
//! [`crate::auth`]), before a byte of a request is sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use crate::auth::{Identity, identity_of_cert};
use crate::tls::{REVOKED_FILE, Revoked, TlsError, TlsMaterial};

/// A server certificate that verified against the CA but is revoked or
/// not the identity the caller wanted.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate {0}")]
struct WrongPeer(String);

/// WebPKI verification, then: the certificate is not revoked and, if
/// `expected` is set, names exactly that identity.
#[derive(Debug)]
struct CheckServer {
    webpki: Arc<WebPkiServerVerifier>,
    expected: Option<Identity>,
    revoked: Revoked,
}

impl CheckServer {
    fn check_identity(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        if self.expected.is_none() && self.revoked.is_empty() {
            return Ok(());
        }
        let (id, serial) = identity_of_cert(cert.as_ref())?;
        if self.revoked.contains(&serial) {
            return Err(format!(
                "of {id} (serial {serial}) is revoked (listed in our {REVOKED_FILE})"
            ));
        }
        match &self.expected {
            Some(expected) if id != *expected => Err(format!("names {id}, not {expected}")),
            _ => Ok(()),
        }
    }
}

impl ServerCertVerifier for CheckServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.check_identity(end_entity).map_err(|reason| {
            let expected = self.expected.as_ref().map_or("any".into(), |e| e.to_string());
            tracing::warn!(server = %server_name.to_str(), %expected, "server refused: its certificate {reason}");
            rustls::Error::Other(rustls::OtherError(Arc::new(WrongPeer(reason))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A rustls client configuration trusting the cluster CA, presenting our
/// certificate, and accepting only a server whose certificate is not
/// revoked and is `expected` (any identity when None).
fn client_config(
    m: &TlsMaterial,
    expected: Option<Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(m.roots()?), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(format!("server verifier: {e}")))?;
    let (chain, key) = m.cert_and_key()?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CheckServer {
            webpki,
            expected,
            revoked: m.revoked.clone(),
        }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Setup(format!("client certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Dials the host:port of a URI over TCP, then TLS with `config`.
#[derive(Clone)]
struct Connector {
    config: Arc<rustls::ClientConfig>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("no host in the peer address")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().ok_or("no port in the peer address")?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A lazily connecting channel to `addr` that only talks to a server whose
/// certificate names `expected`, with the process's installed TLS material
/// (see [`crate::tls::install_client`]); a plain [`crate::channel`] when
/// the process runs `--insecure`, where nobody can be checked.
pub fn channel_to(addr: &str, expected: &Identity) -> Result<tonic::transport::Channel, TlsError> {
    match crate::tls::client_material() {
        Some(m) => checked_channel(addr, &m, Some(expected.clone())),
        None => crate::channel_with(addr, None).map_err(|e| TlsError::Setup(e.to_string())),
    }
}

/// A lazily connecting TLS channel to `addr` ("host:port" or a URL) with
/// material `m`: the server must verify against the cluster CA, must not
/// be in `m`'s revocation list, and must be `expected` if given.
pub fn checked_channel(
    addr: &str,
    m: &TlsMaterial,
    expected: Option<Identity>,
) -> Result<tonic::transport::Channel, TlsError> {
    let config = Arc::new(client_config(m, expected)?);
    // http:// so that tonic leaves the TLS to the connector.
    let host_port = addr.rsplit("://").next().unwrap_or(addr);
    let endpoint = crate::endpoint(&format!("http://{host_port}"))
        .map_err(|e| TlsError::Setup(format!("bad address {addr:?}: {e}")))?;
    Ok(endpoint.connect_with_connector_lazy(Connector { config }))
}
