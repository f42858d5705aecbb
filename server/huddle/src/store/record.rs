//! Versioned, self-describing values: one format byte, then a JSON body.
//!
//! The format byte says how the rest is encoded (1 = JSON), so a later build can change the
//! encoding and still read what an older one wrote, and an older build refuses what a newer one
//! wrote with [`StoreError::RecordVersion`] instead of misreading it. The body is plain JSON,
//! readable with any tool (`redis-cli`, a redb dump), and schema evolution within one format
//! follows serde's rules: add fields with `#[serde(default)]`, never change a field's meaning.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{Result, StoreError};

/// Encoding and decoding of store values: a format byte ([`Self::FORMAT_VERSION`]), then the
/// value as JSON. Add fields with `#[serde(default)]` so that older records still decode.
#[derive(Debug, Clone, Copy)]
pub struct Record;

impl Record {
    /// The format byte this build writes, and the only one it reads.
    pub const FORMAT_VERSION: u8 = 1;

    /// Encodes `value` as a record: [`Self::FORMAT_VERSION`] followed by its JSON.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
        // Room for a typical record (a binding is ~300 bytes of JSON) without regrowing.
        let mut out = Vec::with_capacity(384);
        out.push(Self::FORMAT_VERSION);
        serde_json::to_writer(&mut out, value).map_err(StoreError::RecordEncode)?;
        Ok(out)
    }

    /// Decodes a record written by [`Self::encode`]. Unknown format bytes (from a newer build, or
    /// a value that is not a record at all) are refused before the body is looked at.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        let (&format, body) = bytes.split_first().ok_or(StoreError::RecordEmpty)?;
        if format != Self::FORMAT_VERSION {
            return Err(StoreError::RecordVersion {
                found: format,
                supported: Self::FORMAT_VERSION,
            });
        }
        serde_json::from_slice(body).map_err(StoreError::RecordDecode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct BindingV1 {
        contact: String,
        expires: u64,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct BindingV2 {
        contact: String,
        expires: u64,
        #[serde(default)]
        q: Option<f32>,
    }

    #[test]
    fn round_trip_and_self_describing() {
        let b = BindingV1 {
            contact: "sip:alice@10.0.0.1".into(),
            expires: 3600,
        };
        let bytes = Record::encode(&b).unwrap();
        assert_eq!(bytes[0], Record::FORMAT_VERSION);
        assert_eq!(
            &bytes[1..],
            br#"{"contact":"sip:alice@10.0.0.1","expires":3600}"#
        );
        assert_eq!(Record::decode::<BindingV1>(&bytes).unwrap(), b);
        // An upgrade that adds a defaulted field reads what the old build wrote.
        let v2: BindingV2 = Record::decode(&bytes).unwrap();
        assert_eq!(v2.q, None);
        assert_eq!(v2.expires, 3600);
    }

    #[test]
    fn refuses_future_versions_empty_and_garbage() {
        let mut bytes = Record::encode(&1u32).unwrap();
        bytes[0] = 2;
        let err = Record::decode::<u32>(&bytes).unwrap_err();
        assert!(matches!(
            err,
            StoreError::RecordVersion {
                found: 2,
                supported: 1
            }
        ));
        assert!(err.to_string().contains("newer Huddle"), "{err}");
        assert!(matches!(
            Record::decode::<u32>(b""),
            Err(StoreError::RecordEmpty)
        ));
        assert!(matches!(
            Record::decode::<u32>(b"{\"a\":1}"),
            Err(StoreError::RecordVersion { found: b'{', .. })
        ));
        assert!(matches!(
            Record::decode::<u32>(b"\x01nope"),
            Err(StoreError::RecordDecode(_))
        ));
    }
}
