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
/// Bump `VERSION` whenever the serialized shape changes and teach `decode` to read the old one
/// by implementing `upgrade` (the old shapes live in `legacy.rs`).
pub trait Record: Serialize + DeserializeOwned {
    /// The format version written in the first byte.
    const VERSION: u8;
    /// A name used in error messages.
    const NAME: &'static str;

    /// Reads a value stored at an older format `version` (`bytes` without the version byte)
    /// and converts it into the current shape. `None` means this build cannot read that version,
    /// which `decode` reports as a version error rather than guessing at the bytes.
    fn upgrade(_version: u8, _bytes: &[u8]) -> Option<Result<Self, DecodeError>> {
        None
    }
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
    #[error("{record}: {left} bytes left over after reading format version {version}")]
    Trailing {
        record: &'static str,
        version: u8,
        left: usize,
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

/// Decodes a value written by `encode`, upgrading older format versions the record knows how to
/// read and refusing the others (and every newer one: a newer build's shape cannot be guessed).
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or(DecodeError::Empty { record: T::NAME })?;
    let refused = DecodeError::Version {
        record: T::NAME,
        found: version,
        expected: T::VERSION,
    };
    if version == T::VERSION {
        postcard::from_bytes(rest).map_err(|source| DecodeError::Postcard {
            record: T::NAME,
            source,
        })
    } else if version < T::VERSION {
        T::upgrade(version, rest).unwrap_or(Err(refused))
    } else {
        Err(refused)
    }
}

/// Reads an old shape for `Record::upgrade`. Unlike the current version's decoding, every byte
/// must be used: the old shapes are hand-kept copies, and a value that leaves bytes over was not
/// written in the shape it is being read as, so it is refused instead of misread.
pub(super) fn decode_legacy<Old: DeserializeOwned>(
    record: &'static str,
    version: u8,
    bytes: &[u8],
) -> Result<Old, DecodeError> {
    let (value, left) = postcard::take_from_bytes(bytes)
        .map_err(|source| DecodeError::Postcard { record, source })?;
    if !left.is_empty() {
        return Err(DecodeError::Trailing {
            record,
            version,
            left: left.len(),
        });
    }
    Ok(value)
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

    /// A record that gained `c` at version 2 and reads version 1 through `upgrade`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Grown {
        a: u64,
        c: Option<String>,
    }
    impl Record for Grown {
        const VERSION: u8 = 2;
        const NAME: &'static str = "grown";

        fn upgrade(version: u8, bytes: &[u8]) -> Option<Result<Self, DecodeError>> {
            #[derive(Deserialize)]
            struct GrownV1 {
                a: u64,
            }
            (version == 1).then(|| {
                decode_legacy::<GrownV1>(Self::NAME, version, bytes)
                    .map(|old| Grown { a: old.a, c: None })
            })
        }
    }

    #[test]
    fn older_versions_are_read_through_the_upgrade_hook_and_newer_ones_refused() {
        let mut v1 = vec![1u8];
        v1.extend(postcard::to_stdvec(&(7u64,)).unwrap());
        assert_eq!(
            decode::<Grown>(&v1).unwrap(),
            Grown { a: 7, c: None },
            "version 1 is upgraded"
        );
        // A version the hook does not know, older or newer, is the version error.
        for version in [0u8, 3] {
            let mut bytes = v1.clone();
            bytes[0] = version;
            assert!(matches!(
                decode::<Grown>(&bytes),
                Err(DecodeError::Version { found, expected: 2, .. }) if found == version
            ));
        }
        // Bytes left over mean the value was not written in the old shape.
        let mut longer = v1.clone();
        longer.push(0);
        assert!(matches!(
            decode::<Grown>(&longer),
            Err(DecodeError::Trailing {
                version: 1,
                left: 1,
                ..
            })
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
