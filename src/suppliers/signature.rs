//! The `Shipgate-Signature` scheme shared by both directions of the supplier channel:
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with a 5-minute tolerance that
//! also defeats replays (docs/suppliers.md section 1).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header that carries the signature.
pub const HEADER: &str = "shipgate-signature";

/// How far a signed timestamp may be from our clock.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused. The texts name the problem, never a secret or a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Shipgate-Signature header")]
    Missing,
    #[error("malformed Shipgate-Signature header: {0}")]
    Malformed(&'static str),
    #[error("signature timestamp is {0} s away from now (tolerance {TOLERANCE_SECS} s)")]
    Stale(i64),
    #[error("signature does not match the body")]
    Mismatch,
    #[error("no secret is configured for this sender")]
    NoSecret,
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed at `t` (Unix seconds) with `secret`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let digest = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(digest))
}

/// Checks a header value against the body with any of `secrets`, at `now` (Unix seconds).
pub fn verify<'a>(
    header: Option<&str>,
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a [u8]>,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("expected name=value pairs"))?;
        match name {
            "t" => {
                t = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not an integer"))?,
                )
            }
            "v1" => candidates
                .push(hex::decode(value).map_err(|_| SignatureError::Malformed("v1 is not hex"))?),
            // Other schemes may be added by a sender; they are ignored, not refused.
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no t= timestamp"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no v1= signature"));
    }
    let skew = now - t;
    if skew.abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale(skew));
    }
    let mut any_secret = false;
    for secret in secrets {
        any_secret = true;
        let expected = mac(secret, t, body).finalize().into_bytes();
        for candidate in &candidates {
            if candidate.len() == expected.len() && bool::from(candidate.ct_eq(&expected)) {
                return Ok(());
            }
        }
    }
    if !any_secret {
        return Err(SignatureError::NoSecret);
    }
    Err(SignatureError::Mismatch)
}

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    (crate::delivery::now_ms() / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_documented_example() {
        let header = sign(b"agent-secret", 1764064800, br#"{"id":"evt_1"}"#);
        assert!(header.starts_with("t=1764064800,v1="));
        assert_eq!(header.len(), "t=1764064800,v1=".len() + 64);
        verify(
            Some(&header),
            br#"{"id":"evt_1"}"#,
            [b"agent-secret".as_slice()],
            1764064800,
        )
        .unwrap();
    }

    #[test]
    fn refuses_what_it_should() {
        let body = b"{}";
        let good = sign(b"s", 1000, body);
        let ok = |h: &str, now| verify(Some(h), body, [b"old".as_slice(), b"s".as_slice()], now);
        assert_eq!(ok(&good, 1000), Ok(()));
        assert_eq!(ok(&good, 1300), Ok(()), "inside the tolerance");
        assert_eq!(ok(&good, 1301), Err(SignatureError::Stale(301)));
        assert_eq!(ok(&good, 699), Err(SignatureError::Stale(-301)));
        assert_eq!(
            verify(None, body, [b"s".as_slice()], 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(&good), b"{ }", [b"s".as_slice()], 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&good), body, std::iter::empty(), 1000),
            Err(SignatureError::NoSecret)
        );
        assert!(matches!(
            ok("t=1000", 1000),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            ok("v1=00", 1000),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            ok("t=x,v1=00", 1000),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            ok("t=1000,v1=zz", 1000),
            Err(SignatureError::Malformed(_))
        ));
        // A rotation: two signatures, one made with a secret we no longer know.
        let rotated = format!(
            "{},v1={}",
            sign(b"new", 1000, body),
            &good[good.find("v1=").unwrap() + 3..]
        );
        assert_eq!(ok(&rotated, 1000), Ok(()));
    }
}
