//! Who is calling: the identity a peer certificate names, and the checks
//! every gRPC server applies with it.
//!
//! A certificate names its holder with one URI subject alternative name,
//! `bigfs://<role>/<name>`, e.g. `bigfs://node/node-3`; the subject's common
//! name repeats it as `<role>:<name>` for people reading the certificate,
//! but only the URI counts. Roles:
//! - `node:<id>` a storage node (the name is its node id);
//! - `meta:<id>` a metadata member;
//! - `client:<name>` a mount or a CLI;
//! - `admin:<name>` an operator.
//!
//! [`AuthLayer`] sits in front of a server's services: for each request it
//! reads the peer certificate, refuses revoked serials and roles the
//! server's [`Policy`] does not allow for the method, and leaves a
//! [`Caller`] in the request's extensions for finer checks in the handler
//! ([`require_node`]: a node acts only for its own id).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::tls::Revoked;

/// URI scheme of the identity in a certificate.
pub const IDENTITY_SCHEME: &str = "bigfs://";

/// Longest name after the role (a node id is at most this long too).
pub const MAX_IDENTITY_NAME_LEN: usize = 128;

/// What a certificate holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Node,
    Meta,
    Client,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Node, Role::Meta, Role::Client, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Meta => "meta",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role and a name: `node:node-3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    /// Checks the name: 1..=128 bytes of letters, digits, `.`, `_`, `-`
    /// (so it fits a URI, a log line and a file name unchanged).
    pub fn new(role: Role, name: &str) -> Result<Identity, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > MAX_IDENTITY_NAME_LEN || !name.chars().all(ok_char) {
            return Err(format!(
                "identity name {name:?} must be 1..={MAX_IDENTITY_NAME_LEN} letters, digits, '.', '_' or '-'"
            ));
        }
        Ok(Identity {
            role,
            name: name.to_string(),
        })
    }

    /// `role:name`, e.g. from a `--role`/name pair or a log line.
    pub fn parse(s: &str) -> Result<Identity, String> {
        let (role, name) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not role:name"))?;
        let role = Role::parse(role)
            .ok_or_else(|| format!("{role:?} is not a role (node, meta, client, admin)"))?;
        Identity::new(role, name)
    }

    /// The URI subject alternative name naming this identity.
    pub fn uri(&self) -> String {
        format!("{IDENTITY_SCHEME}{}/{}", self.role, self.name)
    }

    /// Parses [`Identity::uri`]'s form.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(IDENTITY_SCHEME)?;
        let (role, name) = rest.split_once('/')?;
        Identity::new(Role::parse(role)?, name).ok()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.name)
    }
}

/// The DER of the first certificate in a PEM file.
pub fn first_pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
}

/// The identity a certificate names and its serial (lowercase hex, as
/// [`crate::tls::normalize_serial`] writes it).
pub fn identity_of_cert(der: &[u8]) -> Result<(Identity, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let serial = crate::tls::normalize_serial(&hex::encode(cert.raw_serial()));
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("the certificate has no subjectAltName, so no BigFS identity")?;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with(IDENTITY_SCHEME) => Some(*u),
        _ => None,
    });
    let uri = ids
        .next()
        .ok_or("the certificate names no bigfs://ROLE/NAME identity")?;
    if ids.next().is_some() {
        return Err("the certificate names more than one BigFS identity".into());
    }
    let id = Identity::from_uri(uri).ok_or_else(|| format!("{uri:?} is not a BigFS identity"))?;
    Ok((id, serial))
}

/// Who made a request, as the server's [`AuthLayer`] established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The server runs `--insecure`: nobody is checked.
    Anonymous,
    /// The identity of a verified client certificate.
    Peer(Identity),
}

/// The roles allowed to call a gRPC method (`/bigfs.Metadata/Lookup`);
/// None for a method the server does not know, which is refused.
pub type Policy = fn(&str) -> Option<&'static [Role]>;

/// The caller of `request`. A request that did not pass an [`AuthLayer`]
/// has no caller and is refused: a server built without the layer must
/// fail closed, not open.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Caller>().ok_or_else(|| {
        Status::internal("no caller identity: the server runs without its auth layer")
    })
}

/// The caller, if its role is one of `roles` (anyone when anonymous).
pub fn require<T>(request: &tonic::Request<T>, roles: &[Role]) -> Result<Caller, Status> {
    let c = caller(request)?;
    match c {
        Caller::Peer(id) if !roles.contains(&id.role) => Err(Status::permission_denied(format!(
            "{id} may not make this call (needs {})",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
        _ => Ok(c.clone()),
    }
}

/// Refuses a storage node acting for another node: a `node:` caller must
/// be `node:<node_id>`. Other roles (allowed by the policy) pass.
pub fn require_node<T>(request: &tonic::Request<T>, node_id: &str) -> Result<(), Status> {
    match caller(request)? {
        Caller::Peer(id) if id.role == Role::Node && id.name != node_id => {
            Err(Status::permission_denied(format!(
                "{id} may act only for node {:?}, not for {node_id:?}",
                id.name
            )))
        }
        _ => Ok(()),
    }
}

/// Identifies the caller of every request and enforces a [`Policy`].
#[derive(Clone)]
pub struct AuthLayer {
    check: Option<Arc<(Policy, Revoked)>>,
}

impl AuthLayer {
    /// Every request must carry a certificate of a role `policy` allows
    /// for its method, whose serial is not in `revoked`.
    pub fn checking(policy: Policy, revoked: Revoked) -> AuthLayer {
        AuthLayer {
            check: Some(Arc::new((policy, revoked))),
        }
    }

    /// `--insecure`: every request passes as [`Caller::Anonymous`].
    pub fn anonymous() -> AuthLayer {
        AuthLayer { check: None }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            check: self.check.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    check: Option<Arc<(Policy, Revoked)>>,
}

/// The caller of an HTTP request carrying a gRPC call, or why it is refused.
fn authenticate<B>(
    req: &http::Request<B>,
    policy: Policy,
    revoked: &Revoked,
) -> Result<Identity, Status> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let (id, serial) = identity_of_cert(leaf.as_ref()).map_err(Status::unauthenticated)?;
    if revoked.contains(&serial) {
        return Err(Status::unauthenticated(format!(
            "the certificate of {id} (serial {serial}) is revoked"
        )));
    }
    let method = req.uri().path();
    let allowed = policy(method)
        .ok_or_else(|| Status::permission_denied(format!("{method} is not a known method")))?;
    if !allowed.contains(&id.role) {
        return Err(Status::permission_denied(format!(
            "{id} may not call {method}"
        )));
    }
    Ok(id)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let caller = match &self.check {
            None => Caller::Anonymous,
            Some(check) => match authenticate(&req, check.0, &check.1) {
                Ok(id) => Caller::Peer(id),
                Err(status) => {
                    tracing::warn!(method = %req.uri().path(), "refused: {}", status.message());
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            },
        };
        req.extensions_mut().insert(caller);
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        let id = Identity::parse("node:node-3").unwrap();
        assert_eq!(id.uri(), "bigfs://node/node-3");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id.clone()));
        assert_eq!(id.to_string(), "node:node-3");
        assert!(Identity::parse("root:x").is_err());
        assert!(Identity::parse("node:a/b").is_err());
        assert!(Identity::parse("node:").is_err());
        assert!(Identity::from_uri("bigfs://node/a\nb").is_none());
    }

    fn request_from(caller: Option<Caller>) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        if let Some(c) = caller {
            r.extensions_mut().insert(c);
        }
        r
    }

    #[test]
    fn a_node_acts_only_for_itself_and_a_missing_caller_fails_closed() {
        let node = |n: &str| Some(Caller::Peer(Identity::new(Role::Node, n).unwrap()));
        assert!(require_node(&request_from(node("a")), "a").is_ok());
        let e = require_node(&request_from(node("a")), "b").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(require_node(&request_from(Some(Caller::Anonymous)), "b").is_ok());
        assert!(require_node(&request_from(None), "a").is_err());
        assert!(require(&request_from(node("a")), &[Role::Admin]).is_err());
        assert!(require(&request_from(node("a")), &[Role::Node]).is_ok());
    }
}
