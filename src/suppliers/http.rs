//! The `http` adapter: shipgate `POST`s each message to the supplier's endpoint, signed, and asks
//! `GET <endpoint>/<key>` when it cannot know whether a message arrived (docs/suppliers.md
//! section 2).
//!
//! The adapter only classifies what happened; retries, pauses and exceptions belong to the
//! workflow. The classification errs on the side of asking: whenever the request may have left
//! this process and no answer came back, the outcome says `maybe_delivered`, so that the next
//! attempt looks the key up instead of sending a second copy blind.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Client, StatusCode, Url};

use super::signature;
use super::{BoxFuture, LookupOutcome, SendOutcome, SupplierAdapter, SupplierMessage};

/// The header that names a message; the same key is repeated in the body as `key`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// How much of a supplier's answer is read. An answer is a short JSON object or a short refusal;
/// anything longer is cut here so a misbehaving endpoint cannot make shipgate buffer without
/// bound.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// How many characters of a refusal are kept for the owner (docs/suppliers.md section 2.2).
const REASON_CHARS: usize = 200;

/// Why an adapter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpAdapterError {
    #[error("supplier endpoint `{endpoint}` is not a valid http or https URL: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("no signing secret is configured for the supplier endpoint `{endpoint}`")]
    NoSecret { endpoint: String },
}

/// The `http` channel to one supplier.
///
/// The client must not follow redirects (`reqwest::redirect::Policy::none()`): reqwest turns a
/// `POST` redirected by 301, 302 or 303 into a body-less `GET`, whose 2xx would look like an
/// accepted order that the supplier never received. A redirect that a client follows anyway is
/// refused rather than trusted (see [`HttpAdapter::send`]).
pub struct HttpAdapter {
    client: Client,
    endpoint: Url,
    /// The current secret first; only it signs. The others are kept so the configuration can
    /// list a rotation the same way for both directions.
    secrets: Vec<Vec<u8>>,
    timeout: Duration,
}

// The secrets never reach a log line through a stray `{:?}`.
impl std::fmt::Debug for HttpAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAdapter")
            .field("endpoint", &self.endpoint.as_str())
            .field("secrets", &self.secrets.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpAdapter {
    /// An adapter that sends to `endpoint`, signing with the first of `secrets`, and gives each
    /// request (connecting, sending and reading the answer) at most `timeout`.
    pub fn new(
        client: Client,
        endpoint: String,
        secrets: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<HttpAdapter, HttpAdapterError> {
        let invalid = |reason: &str| HttpAdapterError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason: reason.to_string(),
        };
        let url = Url::parse(&endpoint).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host"));
        }
        // Lookups append the key as a path segment; a query or fragment would end up in front
        // of it and name another resource.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("it must not have a query or a fragment"));
        }
        if secrets.is_empty() {
            return Err(HttpAdapterError::NoSecret { endpoint });
        }
        Ok(HttpAdapter {
            client,
            endpoint: url,
            secrets,
            timeout,
        })
    }

    /// The endpoint messages are posted to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// `<endpoint>/<key>`, the key percent-encoded as one path segment (keys contain `/`, as in
    /// `SG-1.sub.gid://shopify/LineItem/1.approve`).
    pub fn lookup_url(&self, key: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .expect("the endpoint was checked to be an http(s) URL, which has a path")
            .pop_if_empty()
            .push(key);
        url
    }

    /// The `Shipgate-Signature` value for `body`, signed now with the current secret.
    fn sign(&self, body: &[u8]) -> String {
        signature::sign(&self.secrets[0], signature::now_secs(), body)
    }

    /// Posts one message and classifies the answer (docs/suppliers.md section 2.2).
    pub async fn send(&self, message: &SupplierMessage) -> SendOutcome {
        // A key that cannot be a header value can never be sent; retrying would loop forever, so
        // it is refused here, before anything leaves, and the owner sees why.
        let Ok(key) = HeaderValue::from_str(&message.key) else {
            return SendOutcome::Refused {
                reason: "shipgate could not send this message: its idempotency key is not a \
                         valid header value"
                    .into(),
            };
        };
        let body = message.to_json();
        let signature = self.sign(&body);
        let sent = self
            .client
            .post(self.endpoint.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY_HEADER, key)
            .header(signature::HEADER, signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return self.failed_send(&e),
        };
        let status = response.status();
        if response.url() != &self.endpoint {
            // The client followed a redirect: a POST may have become a GET on the way, so a 2xx
            // here proves nothing. Refusing makes the owner fix the endpoint instead of
            // trusting an answer to another request.
            return SendOutcome::Refused {
                reason: format!(
                    "the endpoint redirected to {} (answer {status}); configure the final URL",
                    response.url()
                ),
            };
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // The status decides; a body that breaks off only loses the optional details.
        let answer = read_answer(response).await;
        classify_send(status, &answer, location.as_deref())
    }

    fn failed_send(&self, e: &reqwest::Error) -> SendOutcome {
        // `is_connect` means the connection was never established (refused, DNS, TLS, connect
        // timeout): the request did not leave, so sending again is safe. It is checked before
        // `is_timeout` because a connect timeout is both.
        if e.is_connect() {
            return SendOutcome::Retry {
                reason: format!("could not connect: {}", describe(e)),
                maybe_delivered: false,
            };
        }
        if e.is_builder() {
            // Nothing was sent and nothing will change by retrying.
            return SendOutcome::Refused {
                reason: format!("shipgate could not build the request: {}", describe(e)),
            };
        }
        // A timeout or a connection that broke once established: the supplier may have the
        // message and its answer got lost, so the next attempt must look the key up first.
        let reason = if e.is_timeout() {
            format!("no answer within {:?}", self.timeout)
        } else {
            format!("the connection broke: {}", describe(e))
        };
        SendOutcome::Retry {
            reason,
            maybe_delivered: true,
        }
    }

    /// Asks the supplier whether it has the message named `key` (docs/suppliers.md section 2.3).
    pub async fn lookup(&self, key: &str) -> LookupOutcome {
        let url = self.lookup_url(key);
        let signature = self.sign(b"");
        let sent = self
            .client
            .get(url)
            .timeout(self.timeout)
            .header(signature::HEADER, signature)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                return LookupOutcome::Unknown {
                    reason: if e.is_timeout() && !e.is_connect() {
                        format!("no answer within {:?}", self.timeout)
                    } else {
                        describe(&e)
                    },
                };
            }
        };
        let status = response.status();
        let answer = read_answer(response).await;
        classify_lookup(key, status, &answer)
    }
}

impl SupplierAdapter for HttpAdapter {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn send<'a>(&'a self, message: &'a SupplierMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(HttpAdapter::send(self, message))
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, LookupOutcome> {
        Box::pin(HttpAdapter::lookup(self, key))
    }
}

/// An error's description without the URL, which the caller already knows and which could carry
/// credentials in its user-info part.
fn describe(e: &reqwest::Error) -> String {
    let mut text = String::new();
    // reqwest's own message is generic ("error sending request for url …"); the useful part,
    // such as "Connection refused", is further down the chain.
    let mut source: Option<&dyn std::error::Error> = match std::error::Error::source(e) {
        Some(inner) => Some(inner),
        None => Some(e),
    };
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = err.source();
    }
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<endpoint>");
    }
    text
}

/// Reads at most [`MAX_ANSWER_BYTES`] of the answer. A body that fails midway yields what
/// arrived: the status was already received and is what counts.
async fn read_answer(mut response: reqwest::Response) -> Vec<u8> {
    let mut answer = Vec::new();
    while answer.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER_BYTES - answer.len();
                answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    answer
}

/// The optional `supplier_ref` of an answer body; anything else about the body is ignored.
fn supplier_ref(answer: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    value
        .get("supplier_ref")?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The first 200 characters of a refusal, as the owner will see them.
fn reason(status: StatusCode, answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let text = text.trim();
    if text.is_empty() {
        return format!("answered {status} without a reason");
    }
    text.chars().take(REASON_CHARS).collect()
}

fn classify_send(status: StatusCode, answer: &[u8], location: Option<&str>) -> SendOutcome {
    match status.as_u16() {
        200..=299 => SendOutcome::Accepted {
            supplier_ref: supplier_ref(answer),
        },
        // The supplier already had this key: the first copy was received.
        409 => SendOutcome::Accepted {
            supplier_ref: supplier_ref(answer),
        },
        408 | 429 | 500..=599 => SendOutcome::Retry {
            reason: format!("answered {status}"),
            maybe_delivered: false,
        },
        // 400, 404, 422 and the other client errors: the same message will never be accepted.
        400..=499 => SendOutcome::Refused {
            reason: reason(status, answer),
        },
        // A redirect (only seen with a client that does not follow them) or an informational
        // or unassigned status: the endpoint is misconfigured, which retrying will not fix and
        // the owner has to see.
        _ => SendOutcome::Refused {
            reason: match location {
                Some(to) => {
                    format!("answered {status} redirecting to {to}; configure the final URL")
                }
                None => format!("answered {status}, which is not an answer to a message"),
            },
        },
    }
}

fn classify_lookup(key: &str, status: StatusCode, answer: &[u8]) -> LookupOutcome {
    match status.as_u16() {
        200 => {
            // The body is optional in spirit but, when present, it must be about this key and
            // say `received`: a 200 that says otherwise is not a yes, and a wrong yes would
            // mean a message that is never sent.
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(answer) {
                let field = |name: &str| value.get(name).and_then(|v| v.as_str());
                if field("key").is_some_and(|other| other != key) {
                    return LookupOutcome::Unknown {
                        reason: "the lookup answered about another key".into(),
                    };
                }
                if let Some(said) = field("status").filter(|said| *said != "received") {
                    return LookupOutcome::Unknown {
                        reason: format!(
                            "the lookup answered 200 with status `{}`",
                            said.chars().take(40).collect::<String>()
                        ),
                    };
                }
            }
            LookupOutcome::Received {
                supplier_ref: supplier_ref(answer),
            }
        }
        404 => LookupOutcome::NotReceived,
        _ => LookupOutcome::Unknown {
            reason: format!("the lookup answered {status}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::{Notify, mpsc};

    use super::*;
    use crate::suppliers::MessageBody;

    const SECRET: &[u8] = b"supplier-secret";

    /// One request as the test supplier saw it.
    #[derive(Debug)]
    struct Seen {
        path: String,
        key: Option<String>,
        content_type: Option<String>,
        signature_ok: bool,
        body: Vec<u8>,
    }

    /// What the test supplier answers, and what it does before answering.
    #[derive(Clone)]
    struct Supplier {
        status: StatusCode,
        body: &'static str,
        seen: mpsc::UnboundedSender<Seen>,
        /// When set, the answer waits until this is notified (the "slow supplier").
        hold: Option<Arc<Notify>>,
        /// The last lookup key the server decoded from the path.
        looked_up: Arc<Mutex<Option<String>>>,
    }

    fn seen(headers: &HeaderMap, path: String, body: Bytes) -> Seen {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let signature_ok = signature::verify(
            header(signature::HEADER).as_deref(),
            &body,
            [SECRET],
            signature::now_secs(),
        )
        .is_ok();
        Seen {
            path,
            key: header(IDEMPOTENCY_KEY_HEADER),
            content_type: header("content-type"),
            signature_ok,
            body: body.to_vec(),
        }
    }

    async fn answer(supplier: &Supplier, seen: Seen) -> (StatusCode, &'static str) {
        let _ = supplier.seen.send(seen);
        if let Some(hold) = &supplier.hold {
            hold.notified().await;
        }
        (supplier.status, supplier.body)
    }

    async fn on_post(
        State(supplier): State<Supplier>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        let seen = seen(&headers, uri.path().to_string(), body);
        answer(&supplier, seen).await
    }

    async fn on_get(
        State(supplier): State<Supplier>,
        Path(key): Path<String>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        *supplier.looked_up.lock().unwrap() = Some(key);
        let seen = seen(&headers, uri.path().to_string(), body);
        answer(&supplier, seen).await
    }

    struct TestSupplier {
        addr: SocketAddr,
        seen: mpsc::UnboundedReceiver<Seen>,
        looked_up: Arc<Mutex<Option<String>>>,
    }

    /// A supplier on a loopback port that answers every request with `status` and `body`.
    async fn supplier_with(
        status: u16,
        body: &'static str,
        hold: Option<Arc<Notify>>,
    ) -> TestSupplier {
        let (tx, rx) = mpsc::unbounded_channel();
        let looked_up = Arc::new(Mutex::new(None));
        let state = Supplier {
            status: StatusCode::from_u16(status).unwrap(),
            body,
            seen: tx,
            hold,
            looked_up: looked_up.clone(),
        };
        let app = Router::new()
            .route("/orders", post(on_post))
            .route("/orders/{key}", get(on_get))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestSupplier {
            addr,
            seen: rx,
            looked_up,
        }
    }

    async fn supplier(status: u16, body: &'static str) -> TestSupplier {
        supplier_with(status, body, None).await
    }

    fn client() -> Client {
        // No proxy: the tests talk to loopback whatever the environment says.
        Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap()
    }

    fn adapter_for(endpoint: String, timeout: Duration) -> HttpAdapter {
        HttpAdapter::new(client(), endpoint, vec![SECRET.to_vec()], timeout).unwrap()
    }

    fn adapter(addr: SocketAddr) -> HttpAdapter {
        adapter_for(format!("http://{addr}/orders"), Duration::from_secs(10))
    }

    fn message() -> SupplierMessage {
        SupplierMessage {
            key: "SG-0000000042.r1".into(),
            shipment_id: "SG-0000000042".into(),
            sent_at: "2026-11-25T10:00:00Z".into(),
            body: MessageBody::Cancellation {
                reason: "order cancelled in Shopify".into(),
            },
        }
    }

    #[test]
    fn endpoints_are_validated_and_named() {
        let make = |endpoint: &str| {
            HttpAdapter::new(
                Client::new(),
                endpoint.to_string(),
                vec![SECRET.to_vec()],
                Duration::from_secs(1),
            )
        };
        for bad in [
            "not a url",
            "ftp://agent.example/orders",
            "mailto:agent@example.com",
            "https://agent.example/orders?x=1",
            "https://agent.example/orders#top",
        ] {
            let err = make(bad).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(make("https://agent.example/orders").is_ok());
        assert!(make("http://127.0.0.1:8080").is_ok());
        assert!(matches!(
            HttpAdapter::new(
                Client::new(),
                "https://agent.example/".into(),
                Vec::new(),
                Duration::from_secs(1)
            ),
            Err(HttpAdapterError::NoSecret { .. })
        ));
    }

    #[test]
    fn lookup_urls_encode_the_key_as_one_segment() {
        let a = adapter_for(
            "https://agent.example/orders/".into(),
            Duration::from_secs(1),
        );
        assert_eq!(
            a.lookup_url("SG-1.sub.gid://shopify/LineItem/1 ?#.approve")
                .as_str(),
            "https://agent.example/orders/SG-1.sub.gid:%2F%2Fshopify%2FLineItem%2F1%20%3F%23.approve"
        );
        let a = adapter_for("https://agent.example".into(), Duration::from_secs(1));
        assert_eq!(
            a.lookup_url("SG-1.r1").as_str(),
            "https://agent.example/SG-1.r1"
        );
    }

    #[tokio::test]
    async fn a_2xx_is_accepted_with_the_supplier_ref_and_the_request_is_signed() {
        let mut s = supplier(201, r#"{"supplier_ref":"PO-7781"}"#).await;
        let outcome = adapter(s.addr).send(&message()).await;
        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                supplier_ref: Some("PO-7781".into())
            }
        );
        let seen = s.seen.recv().await.unwrap();
        assert_eq!(seen.path, "/orders");
        assert_eq!(seen.key.as_deref(), Some("SG-0000000042.r1"));
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        assert!(seen.signature_ok, "the supplier can verify the signature");
        assert_eq!(seen.body, message().to_json());
    }

    #[tokio::test]
    async fn a_2xx_without_a_json_body_is_accepted_without_a_ref() {
        let s = supplier(200, "thanks").await;
        assert_eq!(
            adapter(s.addr).send(&message()).await,
            SendOutcome::Accepted { supplier_ref: None }
        );
    }

    #[tokio::test]
    async fn a_409_is_a_key_already_received() {
        let s = supplier(409, r#"{"supplier_ref":"PO-1"}"#).await;
        assert_eq!(
            adapter(s.addr).send(&message()).await,
            SendOutcome::Accepted {
                supplier_ref: Some("PO-1".into())
            }
        );
    }

    #[tokio::test]
    async fn client_errors_are_refused_with_the_first_200_characters() {
        let long: &'static str = "x".repeat(500).leak();
        for status in [400, 404, 422, 403, 410] {
            let s = supplier(status, "we do not ship to GB").await;
            assert_eq!(
                adapter(s.addr).send(&message()).await,
                SendOutcome::Refused {
                    reason: "we do not ship to GB".into()
                },
                "{status}"
            );
        }
        let s = supplier(422, long).await;
        let SendOutcome::Refused { reason } = adapter(s.addr).send(&message()).await else {
            panic!("not refused")
        };
        assert_eq!(reason.chars().count(), 200);
        let s = supplier(400, "").await;
        let SendOutcome::Refused { reason } = adapter(s.addr).send(&message()).await else {
            panic!("not refused")
        };
        assert!(reason.contains("400"), "{reason}");
    }

    #[tokio::test]
    async fn busy_and_server_errors_are_retried_as_not_delivered() {
        for status in [408, 429, 500, 502, 503, 504] {
            let s = supplier(status, "later").await;
            match adapter(s.addr).send(&message()).await {
                SendOutcome::Retry {
                    maybe_delivered: false,
                    reason,
                } => assert!(reason.contains(&status.to_string()), "{reason}"),
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_redirect_is_refused_naming_where_it_points() {
        let s = supplier(301, "").await;
        let SendOutcome::Refused { reason } = adapter(s.addr).send(&message()).await else {
            panic!("not refused")
        };
        assert!(reason.contains("301"), "{reason}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_as_not_delivered() {
        // A port that was just free: nothing listens there any more.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match adapter(addr).send(&message()).await {
            SendOutcome::Retry {
                maybe_delivered: false,
                reason,
            } => assert!(reason.contains("connect"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    /// A resolver that knows no names, standing in for a DNS failure without asking a real
    /// resolver (the tests stay on loopback).
    struct NoNames;

    impl reqwest::dns::Resolve for NoNames {
        fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            Box::pin(async {
                Err::<reqwest::dns::Addrs, _>(
                    Box::new(std::io::Error::other("no such host")) as Box<_>
                )
            })
        }
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_retried_as_not_delivered() {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(NoNames))
            .build()
            .unwrap();
        let a = HttpAdapter::new(
            client,
            "http://agent.invalid/orders".into(),
            vec![SECRET.to_vec()],
            Duration::from_secs(10),
        )
        .unwrap();
        match a.send(&message()).await {
            SendOutcome::Retry {
                maybe_delivered: false,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            a.lookup("SG-1.r1").await,
            LookupOutcome::Unknown { .. }
        ));
    }

    #[tokio::test]
    async fn a_connection_dropped_after_the_request_may_have_delivered() {
        // A raw listener: it reads the whole request head, says so, and closes without a word.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (read_tx, read_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed first");
                request.extend_from_slice(&buf[..n]);
            }
            let _ = read_tx.send(request);
            drop(stream);
        });
        let outcome = adapter(addr).send(&message()).await;
        let request = read_rx.await.expect("the request reached the supplier");
        assert!(request.starts_with(b"POST /orders "));
        match outcome {
            SendOutcome::Retry {
                maybe_delivered: true,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_timeout_may_have_delivered() {
        let hold = Arc::new(Notify::new());
        let mut s = supplier_with(200, "{}", Some(hold.clone())).await;
        let a = adapter_for(
            format!("http://{}/orders", s.addr),
            Duration::from_millis(500),
        );
        let outcome = a.send(&message()).await;
        // The supplier got the request and is still holding its answer.
        let seen = s
            .seen
            .recv()
            .await
            .expect("the request reached the supplier");
        assert_eq!(seen.key.as_deref(), Some("SG-0000000042.r1"));
        match outcome {
            SendOutcome::Retry {
                maybe_delivered: true,
                reason,
            } => assert!(reason.contains("no answer within"), "{reason}"),
            other => panic!("{other:?}"),
        }
        hold.notify_waiters();
        // The same slowness on a lookup leaves the question open.
        let outcome = a.lookup("SG-0000000042.r1").await;
        hold.notify_waiters();
        assert!(
            matches!(outcome, LookupOutcome::Unknown { ref reason } if reason.contains("no answer")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_lookup_finds_a_received_message_by_its_encoded_key() {
        let key = "SG-1.sub.gid://shopify/LineItem/1001.approve";
        let mut s = supplier(
            200,
            r#"{"key":"SG-1.sub.gid://shopify/LineItem/1001.approve","status":"received","supplier_ref":"PO-9"}"#,
        )
        .await;
        assert_eq!(
            adapter(s.addr).lookup(key).await,
            LookupOutcome::Received {
                supplier_ref: Some("PO-9".into())
            }
        );
        let seen = s.seen.recv().await.unwrap();
        assert_eq!(
            seen.path,
            "/orders/SG-1.sub.gid:%2F%2Fshopify%2FLineItem%2F1001.approve"
        );
        assert!(seen.body.is_empty());
        assert!(seen.signature_ok, "signed over the empty body");
        assert_eq!(s.looked_up.lock().unwrap().as_deref(), Some(key));
    }

    #[tokio::test]
    async fn a_lookup_404_is_not_received_and_anything_else_unknown() {
        let s = supplier(404, "").await;
        assert_eq!(
            adapter(s.addr).lookup("SG-1.r1").await,
            LookupOutcome::NotReceived
        );
        for status in [500, 503, 401, 410, 302] {
            let s = supplier(status, "").await;
            assert!(
                matches!(
                    adapter(s.addr).lookup("SG-1.r1").await,
                    LookupOutcome::Unknown { .. }
                ),
                "{status}"
            );
        }
        // A 200 about another key, or one that does not say received, is not a yes.
        let s = supplier(200, r#"{"key":"SG-2.r1","status":"received"}"#).await;
        assert!(matches!(
            adapter(s.addr).lookup("SG-1.r1").await,
            LookupOutcome::Unknown { .. }
        ));
        let s = supplier(200, r#"{"key":"SG-1.r1","status":"unknown"}"#).await;
        assert!(matches!(
            adapter(s.addr).lookup("SG-1.r1").await,
            LookupOutcome::Unknown { .. }
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(matches!(
            adapter(addr).lookup("SG-1.r1").await,
            LookupOutcome::Unknown { .. }
        ));
    }

    #[tokio::test]
    async fn the_adapter_works_as_a_trait_object() {
        let s = supplier(200, "").await;
        let a: Box<dyn SupplierAdapter> = Box::new(adapter(s.addr));
        assert_eq!(a.kind(), "http");
        assert_eq!(
            a.send(&message()).await,
            SendOutcome::Accepted { supplier_ref: None }
        );
    }
}
