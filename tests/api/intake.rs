//! The Shopify webhook intake: what is accepted, what is refused with which code, and that a
//! refused delivery leaves nothing behind.

use base64::Engine as _;
use shipgate::delivery::Origin;
use shipgate::intake::shopify::sign;
use shipgate::sandbox::webhooks::{ShopifyDelivery, Tamper, sample_order};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn order(webhook_id: &str) -> ShopifyDelivery {
    ShopifyDelivery::new(
        SHOP,
        "orders/create",
        webhook_id,
        sample_order(820982911946154508, 7001, "buyer@example.com", "1 Long Road"),
        SECRET,
    )
}

fn origin() -> Origin {
    Origin::Shopify { shop: SHOP.into() }
}

#[tokio::test]
async fn a_valid_delivery_is_stored_raw_before_the_200() {
    let app = spawn_app().await;
    let delivery = order("wh-valid");
    let (status, _) = app.send(&delivery).await;
    assert_eq!(status, 200);
    let seq = app
        .daemon
        .store()
        .delivery_seq(&origin(), "wh-valid")
        .unwrap()
        .expect("stored");
    let stored = app.daemon.store().delivery(seq).unwrap().unwrap();
    assert_eq!(
        stored.body, delivery.body,
        "the exact signed bytes are kept"
    );
    assert_eq!(stored.topic, "orders/create");
    assert_eq!(stored.header("x-shopify-api-version"), Some("2026-10"));
    assert!(stored.header("x-shopify-event-id").is_some());
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn the_previous_secret_is_accepted_during_rotation() {
    let app = spawn_app().await;
    let mut delivery = order("wh-old-secret");
    delivery.secret = OLD_SECRET.to_vec();
    assert_eq!(app.send(&delivery).await.0, 200);
    // A secret of another shop is not a secret of this one.
    let mut delivery = order("wh-other-secret");
    delivery.secret = OTHER_SECRET.to_vec();
    assert_eq!(app.send(&delivery).await.0, 401);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn every_bad_signature_is_401_and_stores_nothing() {
    let app = spawn_app().await;
    let body = order("x").body;
    let good = sign(SECRET, &body);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&good)
        .unwrap();
    let cases: Vec<(&str, Tamper)> = vec![
        ("missing", Tamper::NoSignature),
        ("empty", Tamper::Signature(String::new())),
        ("truncated", Tamper::Signature(good[..20].to_string())),
        ("over-long", Tamper::Signature(format!("{good}{good}"))),
        ("hex-encoded", Tamper::Signature(hex::encode(&raw))),
        (
            "wrong secret",
            Tamper::Signature(sign(b"not-the-secret", &body)),
        ),
        ("re-serialized body", Tamper::Reserialized),
    ];
    for (i, (what, tamper)) in cases.into_iter().enumerate() {
        let delivery = order(&format!("wh-bad-{i}")).tampered(tamper);
        let (status, text) = app.send(&delivery).await;
        assert_eq!(status, 401, "{what}: {text}");
        assert!(!text.is_empty(), "{what}: the answer says what is wrong");
    }
    assert_eq!(app.daemon.store().delivery_count(), 0);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn each_missing_header_is_named_in_a_400_and_stores_nothing() {
    let app = spawn_app().await;
    for header in [
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
        "X-Shopify-Webhook-Id",
        "X-Shopify-API-Version",
    ] {
        let delivery = order("wh-missing").tampered(Tamper::DropHeader(header));
        let (status, text) = app.send(&delivery).await;
        assert_eq!(status, 400, "{header}: {text}");
        assert!(text.contains(header), "{header} not named in {text:?}");
    }
    assert_eq!(app.daemon.store().delivery_count(), 0);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_shop_is_refused() {
    let app = spawn_app().await;
    let mut delivery = order("wh-unknown");
    delivery.shop = "stranger.myshopify.com".into();
    let (status, _) = app.send(&delivery).await;
    assert_eq!(status, 401);
    assert_eq!(app.daemon.store().delivery_count(), 0);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_body_is_413_whether_declared_or_streamed() {
    let app = spawn_app().await;
    let big = vec![b'x'; 65537];
    // Declared: Content-Length over the limit is refused before any of the body is read.
    let delivery = ShopifyDelivery::new(SHOP, "orders/create", "wh-big", big.clone(), SECRET);
    let (status, _) = app.send(&delivery).await;
    assert_eq!(status, 413);
    // Streamed in chunks without a length: refused while reading, once the limit is passed.
    let (headers, body) = delivery.wire();
    let mut head = String::from("POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    let mut stream = TcpStream::connect(app.daemon.public_addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(8192) {
        // The server may answer and close before the last chunk; the answer is still readable.
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 64];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(app.daemon.store().delivery_count(), 0);
    app.daemon.stop().await.unwrap();
}

/// One raw HTTP/1.1 exchange on `stream`: writes `request`, reads one answer (head and the
/// body its Content-Length announces) and returns the head, lower-cased, and the body.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (String, String) {
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the answer was cut short: {head}");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            return (head, body);
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The raw request a delivery makes, with `extra` headers and `body` in place of its own.
fn raw_request(delivery: &ShopifyDelivery, extra: &str, body: &[u8]) -> Vec<u8> {
    let (headers, _) = delivery.wire();
    let mut head = String::from("POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(extra);
    head.push_str("\r\n");
    [head.as_bytes(), body].concat()
}

#[tokio::test]
async fn a_refusal_that_leaves_the_body_unread_says_it_closes_the_connection() {
    let app = spawn_app().await;
    // A delivery that is accepted keeps the connection open for the next one.
    let first = order("wh-keep-1");
    let (_, body) = first.wire();
    let mut stream = TcpStream::connect(app.daemon.public_addr()).await.unwrap();
    let request = raw_request(
        &first,
        &format!("Content-Length: {}\r\n", body.len()),
        &body,
    );
    let (head, _) = exchange(&mut stream, &request).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    // On the same connection: a declared length over the limit is refused before its body is
    // read, and the answer says the connection closes, which it then does.
    let big = order("wh-keep-2");
    let request = raw_request(&big, "Content-Length: 70000\r\n", b"");
    let (head, body) = exchange(&mut stream, &request).await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(body.contains("larger than"), "{body}");
    let mut rest = Vec::new();
    let n = stream.read_to_end(&mut rest).await.unwrap_or(0);
    assert_eq!(
        n, 0,
        "nothing follows the refusal: the server closed the connection"
    );
    // A refusal for a missing header, with its body never read, says the same.
    let mut stream = TcpStream::connect(app.daemon.public_addr()).await.unwrap();
    let no_topic = order("wh-keep-3").tampered(Tamper::DropHeader("X-Shopify-Topic"));
    let (_, body) = no_topic.wire();
    let request = raw_request(
        &no_topic,
        &format!("Content-Length: {}\r\n", body.len()),
        &body,
    );
    let (head, body) = exchange(&mut stream, &request).await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(body.contains("X-Shopify-Topic"), "{body}");
    assert_eq!(app.daemon.store().delivery_count(), 1);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn duplicates_are_stored_once_even_when_concurrent() {
    let app = spawn_app().await;
    let delivery = order("wh-dup");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = app.client.clone();
        let base = app.base.clone();
        let delivery = delivery.clone();
        tasks.push(tokio::spawn(async move {
            delivery.send(&client, &base).await.unwrap().0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.send(&delivery).await.0, 200, "a later replay too");
    assert_eq!(app.daemon.store().delivery_count(), 1);
    // And no second effect: the order was triggered by one delivery.
    app.daemon.wait_idle().await;
    let triggers = app.daemon.store().order_triggers(SHOP).unwrap();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].1.deliveries, 1);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_503_and_a_retry_succeeds() {
    let app = spawn_app().await;
    app.daemon.store().inject_write_fault(true);
    let (status, text) = app.send(&order("wh-503")).await;
    assert_eq!(status, 503);
    assert!(
        !text.contains("injected"),
        "internals stay out of the answer: {text}"
    );
    app.daemon.store().inject_write_fault(false);
    assert_eq!(app.daemon.store().delivery_count(), 0);
    assert_eq!(app.send(&order("wh-503")).await.0, 200);
    assert_eq!(app.daemon.store().delivery_count(), 1);
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.daemon.public_addr()).await.unwrap();
    stream
        .write_all(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The headers never finish; the server must close the connection on its own (after the
    // 300 ms header timeout of the test config). A read returning means it did.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408() {
    let app = spawn_app().await;
    let delivery = order("wh-slow");
    let (headers, body) = delivery.wire();
    let mut head = String::from("POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut stream = TcpStream::connect(app.daemon.public_addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await
    .expect("answered within 10 s");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.daemon.store().delivery_count(), 0);
    app.daemon.stop().await.unwrap();
}
