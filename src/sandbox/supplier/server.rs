//! The agent's HTTP side: the message endpoint and the lookup of docs/suppliers.md section 2.
//!
//! Connections are served with hyper directly rather than `axum::serve`, because the drop switch
//! must close a connection without answering, after the message was recorded: each connection's
//! requests carry a [`Connection`] handle, and a handler that is to lose its answer fires it and
//! never returns, so the connection's task drops the connection and the socket closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Inner;
use super::orders::Acceptance;
use super::wire;
use crate::suppliers::signature;

/// How long a client may take to send its headers; loopback clients take microseconds.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in progress may run once the agent stops.
const GRACE: Duration = Duration::from_secs(1);

/// Closes the connection a request arrived on, without an answer.
#[derive(Clone)]
struct Connection(CancellationToken);

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/orders", post(message))
        .route("/orders/{*key}", get(lookup))
        .with_state(inner)
}

/// Accepts connections until the agent stops, then lets requests in progress finish.
pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let router = router(inner.clone());
    let cancel = inner.cancel.clone();
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let stream = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: the condition clears as other
                    // connections close, so back off a moment instead of spinning.
                    tracing::warn!(error = %e, "sandbox agent: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let kill = CancellationToken::new();
        let handle = Connection(kill.clone());
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(handle.clone());
                request
            });
        let connection = graceful.watch(
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
        );
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "sandbox agent: connection ended with an error");
                    }
                }
                // Dropping the connection closes the socket with the answer unsent.
                _ = kill.cancelled() => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            "sandbox agent: requests still running after the grace period are abandoned"
        );
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

fn unavailable() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the supplier is down (sandbox switch)",
    )
}

/// Checks the `Shipgate-Signature` against the raw body with the real clock.
fn check_signature(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let value = match headers.get(signature::HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "the Shipgate-Signature header is not text".to_string())?,
        ),
    };
    signature::verify(
        value,
        body,
        [inner.secret.as_slice()],
        signature::now_secs(),
    )
    .map_err(|e| e.to_string())
}

/// Delays the answer if the slow switch is on, then gives it, or closes the connection without
/// it when `lose` is set.
async fn deliver(
    inner: &Inner,
    connection: Connection,
    response: Response,
    lose: bool,
) -> Response {
    let slow = inner.state().switches.slow;
    if let Some(delay) = slow {
        // Stopping cuts the delay short, so that stop() is not held up by a long switch.
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = inner.cancel.cancelled() => {}
        }
    }
    if lose {
        connection.0.cancel();
        // The connection's task drops this request with the connection; nothing is answered.
        std::future::pending::<()>().await;
    }
    response
}

/// `POST {endpoint}`: one message.
async fn message(
    State(inner): State<Arc<Inner>>,
    Extension(connection): Extension<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string));
    if let Some(Ok(key)) = &key {
        inner.state().count_post(key);
    }
    if inner.is_down() {
        return unavailable();
    }
    let (response, lose) = match check_signature(&inner, &headers, &body) {
        Err(e) => (text(StatusCode::UNAUTHORIZED, e), false),
        Ok(()) => act(&inner, &headers, key, &body),
    };
    deliver(&inner, connection, response, lose).await
}

/// Reads a signed message and acts on it. Returns the answer and whether it is to be lost.
fn act(
    inner: &Inner,
    headers: &HeaderMap,
    key: Option<Result<String, axum::http::header::ToStrError>>,
    body: &[u8],
) -> (Response, bool) {
    let refuse = |message: String| (text(StatusCode::BAD_REQUEST, message), false);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return refuse(format!(
            "Content-Type must be application/json, got `{content_type}`"
        ));
    }
    let key = match key {
        None => return refuse("missing Idempotency-Key header".into()),
        Some(Err(_)) => return refuse("the Idempotency-Key header is not text".into()),
        Some(Ok(key)) => key,
    };
    let (message, value) = match wire::parse(body) {
        Ok(parsed) => parsed,
        Err(e) => return refuse(e),
    };
    if message.key != key {
        return refuse(format!(
            "the Idempotency-Key header `{key}` differs from the body's `key` `{}`",
            message.key
        ));
    }
    let (acceptance, lose) = inner.state().receive(message, value);
    let ok = |supplier_ref: Option<String>| {
        let body = match supplier_ref {
            Some(supplier_ref) => json!({ "supplier_ref": supplier_ref }),
            None => json!({}),
        };
        (StatusCode::OK, axum::Json(body)).into_response()
    };
    match acceptance {
        Acceptance::New { supplier_ref } => {
            inner.wake.notify_one();
            (ok(supplier_ref), lose)
        }
        Acceptance::Duplicate { supplier_ref } => (ok(supplier_ref), lose),
        Acceptance::Refused(reason) => (text(StatusCode::UNPROCESSABLE_ENTITY, reason), false),
    }
}

/// `GET {endpoint}/{key}`: whether a message was received (docs/suppliers.md 2.3).
async fn lookup(
    State(inner): State<Arc<Inner>>,
    Extension(connection): Extension<Connection>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.state().lookups += 1;
    if inner.is_down() {
        return unavailable();
    }
    let response = match check_signature(&inner, &headers, &body) {
        Err(e) => text(StatusCode::UNAUTHORIZED, e),
        Ok(()) => {
            let found = inner.state().find(&key).map(|m| m.supplier_ref.clone());
            match found {
                Some(supplier_ref) => axum::Json(json!({
                    "key": key,
                    "status": "received",
                    "supplier_ref": supplier_ref,
                }))
                .into_response(),
                None => text(
                    StatusCode::NOT_FOUND,
                    format!("no message with key `{key}` was received"),
                ),
            }
        }
    };
    deliver(&inner, connection, response, false).await
}
