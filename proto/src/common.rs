//! Ids, limits, name rules and the retry policy shared by every BigFS crate.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pb;

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// Default bytes per chunk. 4 MiB keeps a chunk in one gRPC message, gives
/// enough chunks per file for parallel transfers, and deduplicates well.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// Largest chunk any node accepts. Bounds the memory one request can pin.
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;

/// Largest gRPC message: one maximal chunk plus framing and fields.
pub const MAX_MESSAGE_SIZE: usize = MAX_CHUNK_SIZE as usize + 1024 * 1024;

/// Longest file name, in bytes (as in Linux's NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;

/// Longest symlink target, in bytes (as in Linux's PATH_MAX).
pub const MAX_SYMLINK_LEN: usize = 4096;

/// Longest extended attribute name, in bytes (Linux XATTR_NAME_MAX).
pub const MAX_XATTR_NAME_LEN: usize = 255;
/// The extended attribute that reads and sets a file's or directory's
/// replication through a mount (not stored as an attribute, not listed).
pub const REPLICATION_XATTR: &str = "user.bigfs.replication";

/// Largest extended attribute value, in bytes (Linux XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE_LEN: usize = 65536;

/// Default copies per chunk.
pub const DEFAULT_REPLICATION: u32 = 3;

/// A chunk's id: the SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of these bytes.
    pub fn of(data: &[u8]) -> Self {
        let digest = Sha256::digest(data);
        let mut id = [0u8; 32];
        id.copy_from_slice(&digest);
        ChunkId(id)
    }

    /// Parses an id received on the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidChunkId> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| InvalidChunkId(bytes.len()))?;
        Ok(ChunkId(arr))
    }

    /// Parses a 64-character hex id.
    pub fn from_hex(s: &str) -> Result<Self, InvalidChunkId> {
        let bytes = hex::decode(s).map_err(|_| InvalidChunkId(s.len() / 2))?;
        Self::from_slice(&bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short prefix for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Whether `data` hashes to this id.
    pub fn matches(&self, data: &[u8]) -> bool {
        ChunkId::of(data) == *self
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a chunk id is 32 bytes (SHA-256), got {0}")]
pub struct InvalidChunkId(pub usize);

impl From<InvalidChunkId> for tonic::Status {
    fn from(e: InvalidChunkId) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Why a directory entry name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name {0:?} is reserved")]
    Reserved(String),
    #[error("name contains '/' or NUL")]
    BadChar,
    #[error("name is {0} bytes, the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
}

/// Checks one path component.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_string()));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(NameError::BadChar);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    Ok(())
}

/// How a caller retries an operation that can fail transiently.
///
/// Attempt `n` (0-based) that failed is followed by a sleep of
/// `min(base_delay * multiplier^n, max_delay)` with ±20% jitter, so clients
/// that failed together do not retry together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt (so `max_retries + 1` attempts).
    pub max_retries: u32,
    /// Sleep after the first failure, in milliseconds.
    pub base_delay_ms: u64,
    /// Upper bound of one sleep, in milliseconds.
    pub max_delay_ms: u64,
    /// Growth of the sleep per failed attempt.
    pub multiplier: f64,
    /// Deadline of one attempt, in milliseconds.
    pub attempt_timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            // 5 retries spanning ~3 s of sleeps: rides out a node restart
            // or a metadata failover without hanging an application.
            max_retries: 5,
            base_delay_ms: 100,
            max_delay_ms: 2_000,
            multiplier: 2.0,
            // A 4 MiB chunk takes well under a second on any link we
            // target; 10 s means the peer is stuck, not slow.
            attempt_timeout_ms: 10_000,
        }
    }
}

impl RetryConfig {
    /// The sleep after failed attempt `attempt` (0-based), without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.base_delay_ms as f64;
        let factor = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let ms = (base * factor).min(self.max_delay_ms as f64);
        Duration::from_millis(ms as u64)
    }

    /// The sleep after failed attempt `attempt`, with ±20% jitter.
    pub fn backoff_jittered(&self, attempt: u32) -> Duration {
        let d = self.backoff(attempt).as_secs_f64();
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        Duration::from_secs_f64(d * jitter)
    }

    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }

    /// Checks the values make sense; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(format!(
                "retry.multiplier must be >= 1.0, got {}",
                self.multiplier
            ));
        }
        if self.max_delay_ms < self.base_delay_ms {
            return Err("retry.max_delay_ms must be >= retry.base_delay_ms".into());
        }
        if self.attempt_timeout_ms == 0 {
            return Err("retry.attempt_timeout_ms must be > 0".into());
        }
        Ok(())
    }
}

/// Linux errno values carried on namespace errors, so a client (the FUSE
/// layer) can answer the exact errno without parsing messages.
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EMLINK: i32 = 31;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const ELOOP: i32 = 40;
    pub const ENODATA: i32 = 61;
    pub const ESTALE: i32 = 116;
    pub const EDQUOT: i32 = 122;
    pub const E2BIG: i32 = 7;
    pub const ERANGE: i32 = 34;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EINTR: i32 = 4;
    pub const EAGAIN: i32 = 11;
    pub const EDEADLK: i32 = 35;
    pub const ENOLCK: i32 = 37;
}

/// gRPC metadata key holding the errno of a failed namespace operation.
pub const ERRNO_KEY: &str = "x-bigfs-errno";

/// A status that also carries `errno` under [`ERRNO_KEY`].
pub fn status_with_errno(
    code: tonic::Code,
    errno: i32,
    message: impl Into<String>,
) -> tonic::Status {
    let mut md = tonic::metadata::MetadataMap::new();
    if let Ok(v) = errno.to_string().parse() {
        md.insert(ERRNO_KEY, v);
    }
    tonic::Status::with_metadata(code, message, md)
}

/// The errno a status carries, or one derived from its code.
pub fn errno_of(status: &tonic::Status) -> i32 {
    if let Some(n) = status
        .metadata()
        .get(ERRNO_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    match status.code() {
        tonic::Code::NotFound => errno::ENOENT,
        tonic::Code::AlreadyExists => errno::EEXIST,
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => errno::EINVAL,
        tonic::Code::PermissionDenied => errno::EACCES,
        tonic::Code::ResourceExhausted => errno::ENOSPC,
        _ => errno::EIO,
    }
}

/// Now as a wire timestamp.
pub fn now_timestamp() -> pb::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    pb::Timestamp {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A shared chunk buffer as `Bytes` without copying it: every request that
/// carries the chunk (a retry, a forward to each replica) points at the
/// same memory.
pub fn shared_bytes(data: &std::sync::Arc<Vec<u8>>) -> bytes::Bytes {
    struct Shared(std::sync::Arc<Vec<u8>>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_slice()
        }
    }
    bytes::Bytes::from_owner(Shared(std::sync::Arc::clone(data)))
}

/// HTTP/2 flow-control window per stream: two chunks in flight without
/// waiting for a window update.
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;

/// HTTP/2 flow-control window per connection (several streams at once).
pub const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// Largest HTTP/2 frame a peer may send us: a 4 MiB chunk in 4 frames
/// instead of 256 of the default 16 KiB.
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// Why a channel could not be made (a malformed address, unusable TLS
/// material); connection failures come later, from the calls.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A lazily connecting gRPC channel to `addr` ("host:port" or a URL), with
/// the process's client TLS setting ([`crate::tls::install_client`]): a
/// server whose certificate is in our `revoked.txt` is refused at the
/// handshake (see [`crate::peer`]).
pub fn channel(addr: &str) -> Result<tonic::transport::Channel, ChannelError> {
    match crate::tls::client_material() {
        Some(m) => Ok(crate::peer::checked_channel(addr, &m, None)?),
        None => Ok(channel_with(addr, None)?),
    }
}

/// As [`channel`], with an explicit tonic TLS setting (None: plaintext),
/// which checks the server by the CA and the name dialled only (no
/// revocation list): for tests calling as another identity.
pub fn channel_with(
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else if tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = endpoint(&url)?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect_lazy())
}

/// An endpoint for `url` with BigFS's connection settings (timeouts,
/// HTTP/2 windows sized for chunks), TLS not yet chosen.
pub fn endpoint(url: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(Some(MAX_FRAME_SIZE)))
}

/// A Metadata client with BigFS's message limits over the metadata
/// members in `list` ("a:9400,b:9400,c:9400" or one address): each call
/// goes to the leader (see [`crate::leader`]).
pub fn metadata_client(list: &str) -> Result<crate::leader::MetaClient, crate::leader::AddrError> {
    Ok(metadata_client_over(crate::leader::MetaChannel::new(list)?))
}

/// A Metadata client with BigFS's message limits over `channel`.
pub fn metadata_client_over(channel: crate::leader::MetaChannel) -> crate::leader::MetaClient {
    pb::metadata_client::MetadataClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

type StorageClient = pb::storage_client::StorageClient<tonic::transport::Channel>;

/// Storage clients by node address, one connection each, shared by every
/// caller that talks to storage nodes (clients, peers, the repair worker).
#[derive(Default)]
pub struct StoragePool {
    clients: std::sync::Mutex<std::collections::HashMap<String, StorageClient>>,
    /// Clients that talk only to the node named, by (node id, address).
    checked: std::sync::Mutex<std::collections::HashMap<(String, String), StorageClient>>,
}

impl StoragePool {
    /// The client for `address`, connecting lazily on first use.
    pub fn get(
        &self,
        address: &str,
    ) -> Result<pb::storage_client::StorageClient<tonic::transport::Channel>, ChannelError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let c = storage_client(address)?;
        clients.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// The client for node `node_id` at `address`: the connection is
    /// refused unless the server's certificate names `node:<node_id>`
    /// (see [`crate::peer`]).
    pub fn get_node(
        &self,
        node_id: &str,
        address: &str,
    ) -> Result<StorageClient, crate::tls::TlsError> {
        let key = (node_id.to_string(), address.to_string());
        let mut clients = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let expected = crate::auth::Identity::new(crate::auth::Role::Node, node_id)
            .map_err(crate::tls::TlsError::Setup)?;
        let c =
            pb::storage_client::StorageClient::new(crate::peer::channel_to(address, &expected)?)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE);
        clients.insert(key, c.clone());
        Ok(c)
    }
}

/// A Storage client with BigFS's message limits.
pub fn storage_client(
    addr: &str,
) -> Result<pb::storage_client::StorageClient<tonic::transport::Channel>, ChannelError> {
    Ok(pb::storage_client::StorageClient::new(channel(addr)?)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE))
}

/// Largest request the namespace services (Metadata, Admin, Ops) decode,
/// except `RegisterNode`, which carries a node's inventory. The biggest
/// legitimate namespace request is a `CommitLayout` of
/// [`MAX_COMMIT_LAYOUT_ENTRIES`] references (~200 KiB) or a 64 KiB xattr
/// value; 1 MiB leaves room for both and pins little memory per call.
pub const MAX_REQUEST_SIZE: usize = 1024 * 1024;

/// Most chunk references one `CommitLayout` carries. A client commits
/// every 64 chunks by default; 4096 x 4 MiB is 16 GiB of file per commit
/// and ~200 KiB on the wire, well inside [`MAX_REQUEST_SIZE`].
pub const MAX_COMMIT_LAYOUT_ENTRIES: usize = 4096;

/// Most inodes one `KeepInodes` renews: open files of one mount per call;
/// a mount with more sends several calls. 65536 x 8 bytes is 512 KiB, under
/// [`MAX_REQUEST_SIZE`] even with the widest varints.
pub const MAX_KEEP_INODES: usize = 65_536;

/// Longest path `ResolvePath` takes, in bytes (as Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// Longest storage node id, in bytes: room for a host name and a suffix.
pub const MAX_NODE_ID_LEN: usize = 128;

/// Longest node address ("host:port" or a URL), in bytes: a DNS name is at
/// most 253, plus a port and a scheme.
pub const MAX_NODE_ADDRESS_LEN: usize = 300;

/// Checks a storage node id: 1..=[`MAX_NODE_ID_LEN`] bytes of ASCII letters,
/// digits and `.` `_` `-` `:` `@`. Ids become metric labels, log fields and
/// status page text, so quotes, spaces and newlines are refused.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
        return Err(format!(
            "node id must be 1..={MAX_NODE_ID_LEN} bytes (MAX_NODE_ID_LEN), got {}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        return Err(format!(
            "node id {:?} contains {c:?}; only ASCII letters, digits and . _ - : @ are allowed",
            truncate_utf8(id, 64)
        ));
    }
    Ok(())
}

/// Checks a node address: 1..=[`MAX_NODE_ADDRESS_LEN`] bytes of printable
/// ASCII without spaces, quotes or backslashes.
pub fn check_node_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.len() > MAX_NODE_ADDRESS_LEN {
        return Err(format!(
            "address must be 1..={MAX_NODE_ADDRESS_LEN} bytes (MAX_NODE_ADDRESS_LEN), got {}",
            addr.len()
        ));
    }
    if let Some(c) = addr
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(format!(
            "address {:?} contains {c:?}; only printable ASCII without quotes or backslashes is allowed",
            truncate_utf8(addr, 64)
        ));
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_multiplier_and_caps_at_max_delay() {
        let r = RetryConfig {
            max_retries: 10,
            base_delay_ms: 100,
            max_delay_ms: 1000,
            multiplier: 2.0,
            attempt_timeout_ms: 1,
        };
        let got: Vec<u64> = (0..6).map(|a| r.backoff(a).as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let r = RetryConfig::default();
        for a in 0..8 {
            let plain = r.backoff(a).as_secs_f64();
            let j = r.backoff_jittered(a).as_secs_f64();
            assert!(
                j >= plain * 0.79 && j <= plain * 1.21,
                "attempt {a}: {j} vs {plain}"
            );
        }
    }

    #[test]
    fn retry_config_validation_names_the_key() {
        let r = RetryConfig {
            multiplier: 0.5,
            ..Default::default()
        };
        assert!(r.validate().unwrap_err().contains("retry.multiplier"));
        assert!(RetryConfig::default().validate().is_ok());
    }

    #[test]
    fn errno_travels_in_status_metadata() {
        let s = status_with_errno(
            tonic::Code::FailedPrecondition,
            errno::ENOTEMPTY,
            "dir not empty",
        );
        assert_eq!(errno_of(&s), errno::ENOTEMPTY);
        assert_eq!(errno_of(&tonic::Status::not_found("x")), errno::ENOENT);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(".."), Err(NameError::Reserved("..".into())));
        assert_eq!(validate_name("a/b"), Err(NameError::BadChar));
        assert_eq!(
            validate_name(&"x".repeat(256)),
            Err(NameError::TooLong(256))
        );
        assert!(validate_name(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn chunk_id_round_trips_and_checks_data() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(id.matches(b"hello"));
        assert!(!id.matches(b"hellO"));
        assert!(ChunkId::from_slice(&[0u8; 31]).is_err());
    }

    #[test]
    fn node_ids_with_quotes_newlines_or_spaces_are_refused() {
        assert!(check_node_id("node-1").is_ok());
        assert!(check_node_id("rack2.host_3:disk@a").is_ok());
        for bad in ["", "a\nb", "a\"b", "a b", "a{b}", "é"] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
        let err = check_node_id(&"x".repeat(MAX_NODE_ID_LEN + 1)).unwrap_err();
        assert!(err.contains("MAX_NODE_ID_LEN"), "{err}");
    }

    #[test]
    fn addresses_must_be_printable_ascii_without_quotes() {
        assert!(check_node_address("127.0.0.1:9500").is_ok());
        assert!(check_node_address("http://[::1]:9500").is_ok());
        for bad in ["", "a b:1", "a\n:1", "\"a\":1"] {
            assert!(check_node_address(bad).is_err(), "{bad:?}");
        }
        assert!(check_node_address(&"x".repeat(MAX_NODE_ADDRESS_LEN + 1)).is_err());
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
