//! Per-RPC request size limits.
//!
//! tonic limits the decoded message size per service; one service here
//! mixes small namespace calls with a few that carry lists (a node's
//! inventory). [`MessageLimitLayer`] refuses a request body past the limit
//! its method gets, with RESOURCE_EXHAUSTED naming the limit, while the
//! bytes are still arriving: nothing larger is buffered or decoded.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The request limit of one RPC, by its path ("/bigfs.Metadata/Create"):
/// `None` leaves the request to the service's own decoding limit.
pub type LimitFor = fn(&str) -> Option<Limit>;

/// A limit in bytes and the name of the constant or key that sets it, for
/// the refusal message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub bytes: usize,
    pub name: &'static str,
}

/// Bytes of gRPC framing before each message (flag + length).
const GRPC_HEADER: usize = 5;

/// Wraps a server's request bodies with the limit `limit_for` gives.
#[derive(Clone, Copy)]
pub struct MessageLimitLayer {
    limit_for: LimitFor,
}

impl MessageLimitLayer {
    pub fn new(limit_for: LimitFor) -> Self {
        MessageLimitLayer { limit_for }
    }
}

impl<S> tower::Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit {
            inner,
            limit_for: self.limit_for,
        }
    }
}

#[derive(Clone)]
pub struct MessageLimit<S> {
    inner: S,
    limit_for: LimitFor,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for MessageLimit<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(limit) = (self.limit_for)(req.uri().path()) else {
            return self.inner.call(req);
        };
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let method = crate::truncate_utf8(method, 64).to_string();
        let req = req.map(|body| {
            tonic::body::Body::new(Limited {
                inner: body,
                seen: 0,
                limit,
                method,
            })
        });
        self.inner.call(req)
    }
}

/// A request body that fails once more than `limit` bytes arrived.
struct Limited {
    inner: tonic::body::Body,
    seen: usize,
    limit: Limit,
    method: String,
}

impl Body for Limited {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            this.seen = this.seen.saturating_add(data.len());
            if this.seen > this.limit.bytes + GRPC_HEADER {
                metrics::counter!("bigfs_grpc_requests_too_large_total", "method" => this.method.clone())
                    .increment(1);
                return Poll::Ready(Some(Err(refusal(&this.method, this.limit))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status a request over `limit` gets.
pub fn refusal(method: &str, limit: Limit) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "{method} request is larger than {} bytes ({})",
        limit.bytes, limit.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body of fixed data frames.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn limited(chunks: &[&'static [u8]], bytes: usize) -> Limited {
        let frames = chunks.iter().map(|c| Bytes::from_static(c)).collect();
        Limited {
            inner: tonic::body::Body::new(Frames(frames)),
            seen: 0,
            limit: Limit {
                bytes,
                name: "TEST_LIMIT",
            },
            method: "Create".into(),
        }
    }

    /// Every byte of `body`, or its error.
    async fn drain(mut body: Limited) -> Result<Vec<u8>, tonic::Status> {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Some(d) = frame?.data_ref() {
                out.extend_from_slice(d);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes_whole() {
        let got = drain(limited(&[b"12345", b"abc"], 3)).await.unwrap();
        assert_eq!(got, b"12345abc");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_naming_it() {
        let err = drain(limited(&[b"12345", b"abcd"], 3)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("TEST_LIMIT"), "{}", err.message());
        assert!(err.message().contains("Create"), "{}", err.message());
    }
}
