//! How keys and values are laid out in sled.
//!
//! Keys are built so that sled's byte order is the order we want: integers are big-endian and
//! composite keys join their parts with a NUL byte, which never occurs in shop domains, webhook ids
//! or topics (HTTP header values cannot contain it). Values start with a one-byte format version
//! followed by the postcard encoding, so a later release can read what an earlier one wrote and
//! migrate it instead of misreading it.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value stored in a tree, with the format version it is written at.
///
/// Bump `VERSION` whenever the serialized shape changes and teach `decode` to read the old one.
pub trait Record: Serialize + DeserializeOwned {
    /// The format version written in the first byte.
    const VERSION: u8;
    /// A name used in error messages.
    const NAME: &'static str;
}

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{record}: empty value")]
    Empty { record: &'static str },
    #[error("{record}: stored at format version {found}, this build reads version {expected}")]
    Version {
        record: &'static str,
        found: u8,
        expected: u8,
    },
    #[error("{record}: {source}")]
    Postcard {
        record: &'static str,
        source: postcard::Error,
    },
    #[error("malformed key: {0}")]
    Key(&'static str),
}

/// Encodes a value as its version byte followed by its postcard bytes.
pub fn encode<T: Record>(value: &T) -> Vec<u8> {
    let out = vec![T::VERSION];
    // Serializing our own plain data types into a Vec cannot fail: postcard only errors on
    // unsupported serde features (none used) or a full fixed-size buffer (not this flavour).
    postcard::to_extend(value, out).expect("postcard serialization of a stored record")
}

/// Decodes a value written by `encode`, refusing other format versions.
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or(DecodeError::Empty { record: T::NAME })?;
    if version != T::VERSION {
        return Err(DecodeError::Version {
            record: T::NAME,
            found: version,
            expected: T::VERSION,
        });
    }
    postcard::from_bytes(rest).map_err(|source| DecodeError::Postcard {
        record: T::NAME,
        source,
    })
}

/// A big-endian u64 key, so numeric order and byte order agree.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads a key written by `u64_key`.
pub fn read_u64_key(bytes: &[u8]) -> Result<u64, DecodeError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| DecodeError::Key("expected an 8-byte big-endian integer"))?;
    Ok(u64::from_be_bytes(array))
}

/// Joins key parts with NUL separators.
pub fn composite_key(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The prefix under which every composite key starting with `parts` sorts.
pub fn composite_prefix(parts: &[&str]) -> Vec<u8> {
    let mut key = composite_key(parts);
    key.push(0);
    key
}

/// Splits a composite key back into its parts.
pub fn split_composite_key(bytes: &[u8]) -> Result<Vec<String>, DecodeError> {
    bytes
        .split(|&b| b == 0)
        .map(|part| {
            String::from_utf8(part.to_vec()).map_err(|_| DecodeError::Key("key part is not UTF-8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u64,
        b: String,
    }
    impl Record for Sample {
        const VERSION: u8 = 3;
        const NAME: &'static str = "sample";
    }

    #[test]
    fn values_round_trip_and_carry_their_version() {
        let value = Sample {
            a: 820982911946154508,
            b: "x".into(),
        };
        let bytes = encode(&value);
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), value);
    }

    #[test]
    fn other_versions_are_refused_not_misread() {
        let mut bytes = encode(&Sample {
            a: 1,
            b: "y".into(),
        });
        bytes[0] = 2;
        let err = decode::<Sample>(&bytes).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");
        assert!(matches!(
            decode::<Sample>(&[]),
            Err(DecodeError::Empty { .. })
        ));
    }

    #[test]
    fn integer_keys_sort_numerically() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 0, 255].map(u64_key).to_vec();
        keys.sort();
        let back: Vec<u64> = keys.iter().map(|k| read_u64_key(k).unwrap()).collect();
        assert_eq!(back, vec![0, 2, 255, 300, 1 << 40]);
    }

    #[test]
    fn composite_keys_split_back_and_prefixes_do_not_bleed() {
        let key = composite_key(&["shop.myshopify.com", "wh-1"]);
        assert_eq!(
            split_composite_key(&key).unwrap(),
            vec!["shop.myshopify.com", "wh-1"]
        );
        // "a.myshopify.com" must not match keys of "a.myshopify.com.evil".
        let prefix = composite_prefix(&["a.myshopify.com"]);
        assert!(!composite_key(&["a.myshopify.com.evil", "x"]).starts_with(&prefix));
        assert!(composite_key(&["a.myshopify.com", "x"]).starts_with(&prefix));
    }
}
