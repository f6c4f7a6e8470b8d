//! Shopify webhook verification.
//!
//! [`Verifier::verify`] is the only way to obtain a [`VerifiedDelivery`]: code that holds one
//! knows the headers were present and well formed and the HMAC matched the raw body bytes under
//! one of the shop's secrets. The body is never parsed here; Shopify escapes `/` and `&` in its
//! JSON, so only the bytes as received verify.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

use super::IntakeError;
use crate::delivery::{Delivery, Origin, now_ms};

type HmacSha256 = Hmac<Sha256>;

/// The HMAC header. Its absence is an authentication failure (401), not a malformed request.
pub const HMAC_HEADER: &str = "X-Shopify-Hmac-Sha256";
/// The headers besides the HMAC that every Shopify delivery carries (Shopify's own library
/// treats these as required).
pub const REQUIRED_HEADERS: [&str; 4] = [
    "X-Shopify-Topic",
    "X-Shopify-Shop-Domain",
    "X-Shopify-Webhook-Id",
    "X-Shopify-API-Version",
];
/// Optional headers kept with the delivery when present.
const OPTIONAL_HEADERS: [&str; 3] = [
    "X-Shopify-Triggered-At",
    "X-Shopify-Event-Id",
    "X-Shopify-Name",
];

/// A delivery whose signature was checked. Only [`Verifier::verify`] creates one.
#[derive(Debug)]
pub struct VerifiedDelivery(Delivery);

impl VerifiedDelivery {
    /// The delivery, ready to be stored.
    pub fn delivery(&self) -> &Delivery {
        &self.0
    }
}

/// The well-formed headers of a delivery, read before the body.
#[derive(Debug, Clone)]
pub struct DeliveryHeaders {
    /// The shop domain, lowercased.
    pub shop: String,
    /// The topic, e.g. `orders/create`.
    pub topic: String,
    /// The unique delivery id.
    pub webhook_id: String,
    signature: Vec<u8>,
    kept: Vec<(String, String)>,
}

/// Reads and checks the headers. A missing or undecodable signature is a 401; any other missing
/// or malformed header is a 400 that names it.
pub fn read_headers(headers: &HeaderMap) -> Result<DeliveryHeaders, IntakeError> {
    let signature = match headers.get(HMAC_HEADER) {
        None => return Err(IntakeError::MissingSignature),
        // A signature that is not base64 of exactly 32 bytes can never match: hex-encoded,
        // truncated and empty values all end here.
        Some(v) => match BASE64.decode(v.as_bytes()) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            _ => return Err(IntakeError::BadSignature),
        },
    };
    let mut kept = Vec::with_capacity(8);
    let mut required = [""; 4];
    for (slot, name) in required.iter_mut().zip(REQUIRED_HEADERS) {
        let value = headers
            .get(name)
            .ok_or(IntakeError::MissingHeader(name))?
            .to_str()
            .map_err(|_| IntakeError::InvalidHeader(name, "not visible ASCII"))?
            .trim();
        if value.is_empty() {
            return Err(IntakeError::InvalidHeader(name, "empty"));
        }
        if value.len() > 255 {
            return Err(IntakeError::InvalidHeader(name, "longer than 255 bytes"));
        }
        *slot = value;
        kept.push((name.to_ascii_lowercase(), value.to_string()));
    }
    let [topic, shop, webhook_id, _api_version] = required;
    if !topic.contains('/')
        || !topic
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'/')
    {
        return Err(IntakeError::InvalidHeader(
            "X-Shopify-Topic",
            "not a topic like orders/create",
        ));
    }
    for name in OPTIONAL_HEADERS {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            kept.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    Ok(DeliveryHeaders {
        shop: shop.to_ascii_lowercase(),
        topic: topic.to_string(),
        webhook_id: webhook_id.to_string(),
        signature,
        kept,
    })
}

/// The keys one shop's deliveries may be signed with: the current secret first, then the
/// previous ones that stay valid while a rotation settles.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({} keys)", self.keys.len())
    }
}

impl Verifier {
    /// A verifier for these secrets (current first).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Verifier {
        Verifier {
            keys: secrets
                .into_iter()
                .map(|s| HmacSha256::new_from_slice(s).expect("HMAC accepts keys of any length"))
                .collect(),
        }
    }

    /// Checks the signature over the raw body against each secret in constant time.
    pub fn verify(
        &self,
        headers: DeliveryHeaders,
        body: Vec<u8>,
    ) -> Result<VerifiedDelivery, IntakeError> {
        let matched = self.keys.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(&body);
            mac.verify_slice(&headers.signature).is_ok()
        });
        if !matched {
            return Err(IntakeError::BadSignature);
        }
        Ok(VerifiedDelivery(Delivery {
            origin: Origin::Shopify { shop: headers.shop },
            id: headers.webhook_id,
            topic: headers.topic,
            received_at_ms: now_ms(),
            headers: headers.kept,
            body,
            redacted: false,
        }))
    }
}

/// Signs a body as Shopify does: base64 of HMAC-SHA256 over the raw bytes. Used by the demo,
/// the sandbox and the tests to send deliveries the intake must accept.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(body: &[u8], secret: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HMAC_HEADER,
            HeaderValue::from_str(&sign(secret, body)).unwrap(),
        );
        h.insert("x-shopify-topic", HeaderValue::from_static("orders/create"));
        h.insert(
            "x-shopify-shop-domain",
            HeaderValue::from_static("Shop.myshopify.com"),
        );
        h.insert("x-shopify-webhook-id", HeaderValue::from_static("w-1"));
        h.insert("x-shopify-api-version", HeaderValue::from_static("2026-10"));
        h.insert(
            "x-shopify-triggered-at",
            HeaderValue::from_static("2026-11-25T10:00:00Z"),
        );
        h
    }

    #[test]
    fn a_signature_by_the_current_or_previous_secret_verifies() {
        let verifier = Verifier::new([b"new".as_slice(), b"old".as_slice()]);
        for secret in [b"new".as_slice(), b"old"] {
            let body = br#"{"id":1,"note":"a\/b \u0026 c"}"#.to_vec();
            let h = read_headers(&headers(&body, secret)).unwrap();
            let d = verifier.verify(h, body.clone()).unwrap();
            assert_eq!(d.delivery().body, body);
            assert_eq!(d.delivery().origin.sender(), "shop.myshopify.com");
            assert_eq!(
                d.delivery().header("x-shopify-triggered-at"),
                Some("2026-11-25T10:00:00Z")
            );
        }
    }

    #[test]
    fn a_reserialized_body_does_not_verify() {
        let verifier = Verifier::new([b"k".as_slice()]);
        let signed = br#"{"url":"https:\/\/x"}"#.to_vec();
        let reserialized =
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&signed).unwrap())
                .unwrap();
        assert_ne!(signed, reserialized);
        let h = read_headers(&headers(&signed, b"k")).unwrap();
        assert!(matches!(
            verifier.verify(h, reserialized),
            Err(IntakeError::BadSignature)
        ));
    }

    #[test]
    fn malformed_signatures_are_refused_before_the_body_is_read() {
        let body = b"{}";
        let good = sign(b"k", body);
        let raw = BASE64.decode(&good).unwrap();
        for bad in [
            String::new(),
            good[..good.len() - 4].to_string(),
            hex::encode(&raw),
            format!("{good}AAAA"),
            "not base64!".to_string(),
        ] {
            let mut h = headers(body, b"k");
            h.insert(HMAC_HEADER, HeaderValue::from_str(&bad).unwrap());
            assert!(
                matches!(read_headers(&h), Err(IntakeError::BadSignature)),
                "{bad:?} was not refused"
            );
        }
    }

    #[test]
    fn each_missing_header_is_named() {
        for name in REQUIRED_HEADERS {
            let mut h = headers(b"{}", b"k");
            h.remove(name);
            match read_headers(&h) {
                Err(IntakeError::MissingHeader(n)) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        let mut h = headers(b"{}", b"k");
        h.remove(HMAC_HEADER);
        assert!(matches!(
            read_headers(&h),
            Err(IntakeError::MissingSignature)
        ));
    }
}
