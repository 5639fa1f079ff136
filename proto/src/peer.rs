//! Channels to a peer that must be a particular identity: a storage node
//! pushing a replica checks that the server it reached holds the
//! certificate of `node:<the target's id>`, so a chunk never goes to an
//! address that is not that registered node (another role's certificate
//! from the same CA, a squatter on a freed port, a mistyped address).
//!
//! tonic's `ClientTlsConfig` verifies a server only by the CA and the name
//! dialled, so these channels make their own TLS connection: rustls's
//! WebPKI verifier first (CA, validity, name), then the certificate's URI
//! SAN (see [`crate::auth`]) and the revocation list, before a byte of a
//! request is sent.

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
use crate::tls::{Revoked, TlsError, TlsMaterial};

/// A server certificate that verified against the CA but is not the
/// identity the caller wanted.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate {0}")]
struct WrongPeer(String);

/// WebPKI verification, then: the certificate names exactly `expected`
/// and is not revoked.
#[derive(Debug)]
struct ExpectIdentity {
    webpki: Arc<WebPkiServerVerifier>,
    expected: Identity,
    revoked: Revoked,
}

impl ExpectIdentity {
    fn check_identity(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let (id, serial) = identity_of_cert(cert.as_ref())?;
        if self.revoked.contains(&serial) {
            return Err(format!("of {id} (serial {serial}) is revoked"));
        }
        if id != self.expected {
            return Err(format!("names {id}, not {}", self.expected));
        }
        Ok(())
    }
}

impl ServerCertVerifier for ExpectIdentity {
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
            tracing::warn!(expected = %self.expected, "peer refused: its certificate {reason}");
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
/// certificate, and accepting only a server that is `expected`.
fn client_config(m: &TlsMaterial, expected: Identity) -> Result<rustls::ClientConfig, TlsError> {
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
        .with_custom_certificate_verifier(Arc::new(ExpectIdentity {
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
    let Some(m) = crate::tls::client_material() else {
        return crate::channel_with(addr, None).map_err(|e| TlsError::Setup(e.to_string()));
    };
    let config = Arc::new(client_config(&m, expected.clone())?);
    // http:// so that tonic leaves the TLS to the connector.
    let host_port = addr.rsplit("://").next().unwrap_or(addr);
    let endpoint = crate::endpoint(&format!("http://{host_port}"))
        .map_err(|e| TlsError::Setup(format!("bad peer address {addr:?}: {e}")))?;
    Ok(endpoint.connect_with_connector_lazy(Connector { config }))
}
