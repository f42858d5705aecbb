//! Lowercase hexadecimal into caller-provided buffers, so hashing stays off the heap.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `2 * bytes.len()` lowercase hex digits into the front of `out` and returns them.
///
/// Returns an empty string if `out` is too short; callers size `out` for the largest digest, so
/// that never happens, and an empty string fails every comparison rather than panicking.
pub(super) fn encode_into<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    let len = bytes.len() * 2;
    let Some(out) = out.get_mut(..len) else {
        return "";
    };
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// Lowercase hex of `bytes` as a new string.
pub(super) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Value of one hex digit, either case.
pub(super) fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `text` (either case) into exactly `out.len()` bytes; false unless the lengths match
/// and every character is a hex digit.
pub(super) fn decode_into(text: &str, out: &mut [u8]) -> bool {
    let text = text.as_bytes();
    if text.len() != out.len() * 2 {
        return false;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => *byte = (hi << 4) | lo,
            _ => return false,
        }
    }
    true
}

/// Copies `text` into `out` lowercased; false unless `text` is exactly `out.len()` hex digits.
///
/// A stored HA1 is hashed as text, so an uppercase copy from some import tool must be normalised
/// before it goes into the response hash.
pub(super) fn lowercase_into(text: &str, out: &mut [u8]) -> bool {
    let text = text.as_bytes();
    if text.len() != out.len() {
        return false;
    }
    for (o, &c) in out.iter_mut().zip(text) {
        if digit(c).is_none() {
            return false;
        }
        *o = c.to_ascii_lowercase();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x0a];
        let mut buf = [0u8; 10];
        assert_eq!(encode_into(&bytes, &mut buf), "007f80ff0a");
        assert_eq!(encode(&bytes), "007f80ff0a");
        let mut back = [0u8; 5];
        assert!(decode_into("007F80fF0a", &mut back));
        assert_eq!(back, bytes);
        assert!(!decode_into("007f80ff0", &mut back));
        assert!(!decode_into("007f80ff0g", &mut back));
        assert_eq!(encode_into(&bytes, &mut [0u8; 3]), "");
        let mut low = [0u8; 4];
        assert!(lowercase_into("AbC9", &mut low));
        assert_eq!(&low, b"abc9");
        assert!(!lowercase_into("AbC", &mut low));
        assert!(!lowercase_into("AbCz", &mut low));
    }
}
