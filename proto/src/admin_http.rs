//! Who may read a daemon's admin HTTP pages, and the server that serves
//! them: the metadata service's status page and JSON views, a storage
//! node's and a mount's `/metrics`.
//!
//! With TLS material (`--tls-dir`) the admin HTTP speaks HTTPS with the
//! process's own certificate and asks for an optional client certificate
//! signed by the cluster CA. A request is allowed if it comes with
//! - a client certificate of role `admin` whose serial is not revoked, or
//! - `Authorization: Bearer TOKEN` with the token of the daemon's
//!   `admin_token`/`admin_token_file` setting (compared in constant time).
//!
//! With `--insecure` it speaks plain HTTP and still asks for the bearer
//! token when one is configured; without one every page is open, and the
//! daemon says so in a warning at start.
//!
//! A few paths are open to anyone (see [`Access::open_paths`]): `/healthz`,
//! whose answer is a bare `ok` for systemd and load-balancer probes, and
//! the metadata service's status page shell `/`, static HTML whose data
//! comes from `/summary`, which is protected like every other page.
//! A refused request gets `401` and a one-line reason.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;

use crate::auth::{Identity, Role, identity_of_cert};
use crate::tls::{Revoked, Security, TlsError, TlsMaterial};

/// Shortest accepted admin token: 16 characters of a random token (e.g.
/// `openssl rand -hex 16` gives 32) cannot be guessed over HTTP.
pub const MIN_TOKEN_LEN: usize = 16;

/// Longest a TLS handshake on the admin port may take: a client that
/// stalls is dropped instead of holding a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the HTTP server to take them: a burst of
/// scrapes, not a queue to grow without bound.
const ACCEPT_BACKLOG: usize = 64;

/// The role a client certificate needs to read the pages.
pub const ADMIN_ROLE: Role = Role::Admin;

/// The bearer token of the admin HTTP. Never printed.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token from a config's `admin_token` (inline) or
    /// `admin_token_file` (its first line); at most one may be set.
    pub fn load(inline: Option<&str>, file: Option<&Path>) -> Result<Option<AdminToken>, String> {
        let text = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err("admin_token and admin_token_file are both set; choose one".into());
            }
            (Some(t), None) => t.to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("admin_token_file {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let token = text.lines().next().unwrap_or_default().trim();
        if token.len() < MIN_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "admin_token must be at least {MIN_TOKEN_LEN} printable ASCII characters \
                 without spaces (e.g. `openssl rand -hex 16`)"
            ));
        }
        Ok(Some(AdminToken(token.to_string())))
    }

    /// Whether `presented` is this token, in time independent of where
    /// they differ.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// What the admin HTTP knows of a connection: where it comes from and the
/// client certificate it presented, checked at the handshake.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// None: no certificate (or plain HTTP). `Err`: one we refuse, and why.
    pub cert: Option<Result<Identity, String>>,
}

/// The identity of a verified client certificate, unless revoked.
fn peer_cert(
    certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    revoked: &Revoked,
) -> Option<Result<Identity, String>> {
    let leaf = certs?.first()?;
    Some(match identity_of_cert(leaf.as_ref()) {
        Ok((id, serial)) if revoked.contains(&serial) => Err(format!(
            "the certificate of {id} (serial {serial}) is revoked"
        )),
        Ok((id, _)) => Ok(id),
        Err(e) => Err(e),
    })
}

/// Who may read which page of one daemon's admin HTTP.
#[derive(Debug, Clone)]
pub struct Access {
    token: Option<AdminToken>,
    /// Plain HTTP without a token: every page is open.
    open: bool,
    /// Paths anyone may read.
    open_paths: &'static [&'static str],
}

impl Access {
    pub fn new(
        security: &Security,
        token: Option<AdminToken>,
        open_paths: &'static [&'static str],
    ) -> Access {
        let open = matches!(security, Security::Insecure) && token.is_none();
        Access {
            token,
            open,
            open_paths,
        }
    }

    /// Allows the request or says why not (one line).
    pub fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: Option<&Peer>,
    ) -> Result<(), String> {
        if self.open || self.open_paths.contains(&path) {
            return Ok(());
        }
        let cert = peer.and_then(|p| p.cert.as_ref());
        if let Some(Ok(id)) = cert
            && id.role == ADMIN_ROLE
        {
            return Ok(());
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let presented = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
                .ok_or("the Authorization header must be `Bearer TOKEN`")?;
            return match &self.token {
                Some(t) if t.matches(presented) => Ok(()),
                Some(_) => Err("wrong bearer token".into()),
                None => Err(
                    "this daemon has no admin token configured; use an admin client certificate"
                        .into(),
                ),
            };
        }
        Err(match cert {
            Some(Ok(id)) => format!(
                "{id} may not read this page: it needs an {ADMIN_ROLE}: client certificate or Authorization: Bearer TOKEN"
            ),
            Some(Err(reason)) => format!("client certificate refused: {reason}"),
            None => format!(
                "authentication required: an {ADMIN_ROLE}: client certificate or Authorization: Bearer TOKEN"
            ),
        })
    }
}

/// The middleware applying [`Access::check`] to every request.
async fn require_access(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| &c.0);
    match access.check(req.uri().path(), req.headers(), peer) {
        Ok(()) => next.run(req).await,
        Err(reason) => {
            tracing::warn!(
                path = %req.uri().path(),
                peer = ?peer.map(|p| p.addr),
                "admin HTTP request refused: {reason}"
            );
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("{reason}\n"),
            )
                .into_response()
        }
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Plain TCP: no certificate.
struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TcpStream, Peer) {
        let (io, addr) = Listener::accept(&mut self.0).await;
        (io, Peer { addr, cert: None })
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            cert: None,
        })
    }
}

/// TLS: handshakes run in their own tasks (a slow client does not hold up
/// the others) and finished connections queue for the HTTP server.
struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, Peer)>,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl TlsListener {
    fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        revoked: Revoked,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(ACCEPT_BACKLOG);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let revoked = Arc::new(revoked);
        let acceptor_task = tokio::spawn(async move {
            let mut tcp = PlainListener(tcp);
            loop {
                let (io, peer) = tcp.accept().await;
                let (acceptor, tx, revoked) = (acceptor.clone(), tx.clone(), revoked.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => {
                            let cert = peer_cert(tls.get_ref().1.peer_certificates(), &revoked);
                            let _ = tx.send((tls, Peer { cert, ..peer })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer.addr, error = %e, "admin HTTPS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer.addr, "admin HTTPS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            acceptor_task,
        })
    }
}

impl Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            cert: None,
        })
    }
}

/// The HTTPS server side: our certificate, and a client certificate
/// signed by the cluster CA asked for but not required (a bearer token
/// may stand in for it).
fn server_config(m: &TlsMaterial) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(m.roots()?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::Setup(format!("admin HTTPS client verifier: {e}")))?;
    let (chain, key) = m.cert_and_key()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(format!("admin HTTPS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Setup(format!("admin HTTPS certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` on `listener` until `shutdown`, as HTTPS when
/// `security` has TLS material, each request checked by `access`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    security: Security,
    access: Access,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    let router = router.layer(axum::middleware::from_fn_with_state(
        Arc::new(access.clone()),
        require_access,
    ));
    let app = router.into_make_service_with_connect_info::<Peer>();
    let served = match &security {
        Security::Tls(m) => {
            let listener = match server_config(m).and_then(|c| {
                TlsListener::new(listener, Arc::new(c), m.revoked.clone())
                    .map_err(|e| TlsError::Setup(e.to_string()))
            }) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "admin HTTPS not started");
                    return;
                }
            };
            tracing::info!(addr = ?addr, token = access.token.is_some(), "admin HTTPS listening (admin certificate or bearer token)");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Security::Insecure => {
            if access.open {
                tracing::warn!(
                    addr = ?addr,
                    "admin HTTP listening without TLS and without admin_token: every page is open \
                     to anyone who can reach this address"
                );
            } else {
                tracing::info!(addr = ?addr, "admin HTTP listening (plain HTTP, bearer token)");
            }
            axum::serve(PlainListener(listener), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> AdminToken {
        AdminToken::load(Some("0123456789abcdef0123"), None)
            .unwrap()
            .unwrap()
    }

    fn with_cert(id: &str) -> Peer {
        Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
            cert: Some(Identity::parse(id)),
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn tokens_are_checked_when_loaded() {
        assert!(AdminToken::load(None, None).unwrap().is_none());
        assert!(AdminToken::load(Some("short"), None).is_err());
        assert!(AdminToken::load(Some("has a space in it, long"), None).is_err());
        assert!(AdminToken::load(Some("0123456789abcdef"), Some(Path::new("/x"))).is_err());
        assert!(AdminToken::load(None, Some(Path::new("/nonexistent/token"))).is_err());
        let t = token();
        assert!(t.matches("0123456789abcdef0123"));
        assert!(!t.matches("0123456789abcdef012"));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn an_admin_certificate_or_the_token_opens_pages_and_nothing_else_does() {
        let tls = Access {
            token: Some(token()),
            open: false,
            open_paths: &["/healthz"],
        };
        let none = HeaderMap::new();
        assert!(tls.check("/healthz", &none, None).is_ok());
        let e = tls.check("/metrics", &none, None).unwrap_err();
        assert!(e.contains("authentication required"), "{e}");
        assert!(
            tls.check("/metrics", &none, Some(&with_cert("admin:ops")))
                .is_ok()
        );
        let e = tls
            .check("/metrics", &none, Some(&with_cert("client:m")))
            .unwrap_err();
        assert!(e.contains("client:m may not"), "{e}");
        assert!(
            tls.check("/metrics", &bearer("0123456789abcdef0123"), None)
                .is_ok()
        );
        assert_eq!(
            tls.check("/metrics", &bearer("0123456789abcdef0124"), None),
            Err("wrong bearer token".into())
        );
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert!(tls.check("/metrics", &basic, None).is_err());
        let revoked = Peer {
            cert: Some(Err("revoked".into())),
            ..with_cert("admin:x")
        };
        assert!(tls.check("/metrics", &none, Some(&revoked)).is_err());

        // Plain HTTP with a token still needs it; without one, all is open.
        let insecure = Access::new(&Security::Insecure, Some(token()), &[]);
        assert!(insecure.check("/metrics", &none, None).is_err());
        let open = Access::new(&Security::Insecure, None, &[]);
        assert!(open.check("/metrics", &none, None).is_ok());
    }
}
