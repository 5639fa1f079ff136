//! Plumbing every BigFS daemon shares: logging setup, the readiness
//! notification for systemd (`Type=notify`), the Prometheus recorder, the
//! admin HTTP listener (served by [`crate::admin_http`]), and a gRPC layer that counts and times requests.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets of request latencies, in seconds: from a cached
/// metadata lookup (~100 µs) to a 64 MiB chunk over a slow link (~10 s).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Starts logging to stderr (journald keeps it under systemd). `RUST_LOG`
/// wins over the configured level so an operator can raise it for one run.
pub fn init_logging(config_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(config_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Checks a `log_level` value (`info`, `debug`, `bigfs_metadata=debug,info`).
pub fn validate_log_level(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("log_level {level:?} is not a level or filter: {e}"))
}

/// Parses an `admin_listen` value: empty disables the admin HTTP server.
pub fn parse_admin_listen(value: &str) -> Result<Option<SocketAddr>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| format!("admin_listen {value:?} is not an ip:port address: {e}"))
}

/// Tells systemd the daemon is ready (a no-op outside `Type=notify` units).
pub fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        Ok(()) => tracing::info!("told systemd we are ready"),
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("the bucket list is a non-empty constant");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows nothing");
        }
        handle
    })
}

/// `/metrics`: the recorder's text in the Prometheus exposition format,
/// followed by `extra` (gauges computed at scrape time).
pub fn metrics_response(extra: &str) -> axum::response::Response {
    let mut body = prometheus().render();
    body.push_str(extra);
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Binds the admin HTTP listener; `None` when it is disabled or cannot be
/// bound. The admin port is optional: a daemon whose port is taken (a
/// second daemon on the machine kept the default) logs a warning that says
/// how to pick another and keeps serving its real work without it.
pub async fn bind_admin(addr: Option<SocketAddr>) -> Option<tokio::net::TcpListener> {
    let addr = addr?;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(
                %addr,
                error = %e,
                "admin HTTP not started: cannot listen on {addr}: {e}; serving without it \
                 (no /healthz, /metrics or status page). Set admin_listen to a free \
                 HOST:PORT, or \"\" to turn it off"
            );
            None
        }
    }
}

/// A tower layer for tonic servers: counts requests by method and status
/// (`bigfs_grpc_requests_total`) and times them
/// (`bigfs_grpc_request_duration_seconds`).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            // An error status comes "trailers-only", in the headers; a
            // success carries its status in the trailers, after the body.
            let code = match &out {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("Ok".to_string(), |c| {
                        format!("{:?}", tonic::Code::from_i32(c))
                    }),
                Err(_) => "TransportError".to_string(),
            };
            metrics::counter!("bigfs_grpc_requests_total", "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("bigfs_grpc_request_duration_seconds", "method" => method)
                .record(start.elapsed().as_secs_f64());
            out
        })
    }
}

/// Appends one gauge in Prometheus text format (with HELP and TYPE lines).
pub fn push_gauge(out: &mut String, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
    use std::fmt::Write;
    if !out.contains(&format!("# TYPE {name} ")) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
    }
    let _ = write!(out, "{name}");
    if !labels.is_empty() {
        let parts: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect();
        let _ = write!(out, "{{{}}}", parts.join(","));
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the Prometheus text format wants it: backslash, double
/// quote and newline escaped, so a value (a node id, an operation name) can
/// never end the sample line or start a new one.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_listen_empty_disables_and_garbage_names_the_key() {
        assert_eq!(parse_admin_listen(""), Ok(None));
        assert_eq!(
            parse_admin_listen("127.0.0.1:9480").unwrap(),
            Some("127.0.0.1:9480".parse().unwrap())
        );
        assert!(
            parse_admin_listen("nope")
                .unwrap_err()
                .starts_with("admin_listen")
        );
    }

    #[test]
    fn log_levels_are_checked() {
        assert!(validate_log_level("info").is_ok());
        assert!(validate_log_level("bigfs_metadata=debug,warn").is_ok());
        assert!(
            validate_log_level("loud=[")
                .unwrap_err()
                .starts_with("log_level")
        );
    }

    #[test]
    fn gauges_render_with_one_type_line() {
        let mut s = String::new();
        push_gauge(&mut s, "x_nodes", "Nodes.", &[("state", "up")], 2.0);
        push_gauge(&mut s, "x_nodes", "Nodes.", &[("state", "down")], 1.0);
        assert_eq!(s.matches("# TYPE x_nodes gauge").count(), 1);
        assert!(s.contains("x_nodes{state=\"down\"} 1\n"), "{s}");
    }

    #[test]
    fn label_values_cannot_inject_lines() {
        let mut s = String::new();
        let evil = "n1\"} 1\nbigfs_fake{x=\"y\\";
        push_gauge(&mut s, "x_nodes", "Nodes.", &[("node", evil)], 1.0);
        let samples: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), 1, "{s}");
        assert!(!s.contains("\nbigfs_fake"), "{s}");
        assert_eq!(
            samples[0],
            "x_nodes{node=\"n1\\\"} 1\\nbigfs_fake{x=\\\"y\\\\\"} 1"
        );
    }

    /// The `metrics` exporter escapes label values itself: a counter
    /// labelled with a newline and a quote stays one sample line.
    #[test]
    fn exporter_escapes_label_values() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("x_reports_total", "op" => "a\"} 1\ny_fake 2").increment(1);
        });
        let text = handle.render();
        assert!(!text.lines().any(|l| l.starts_with("y_fake")), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("x_reports_total"))
                .count(),
            1,
            "{text}"
        );
    }
}
