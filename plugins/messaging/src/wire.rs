//! The formats the messaging store reads and writes, none of them SIP framing (the SDK owns
//! that): CPIM headers (RFC 3862) to find an IMDN request (RFC 5438), the IMDN
//! positive-delivery document, the is-composing content type (RFC 3994), HTTP/SIP dates, and
//! the store records (the host's convention: a format byte, then JSON).

use huddle_sdk::serde::{Deserialize, Serialize};

/// The content type of is-composing indications (RFC 3994): relayed, never stored.
pub const ISCOMPOSING: &str = "application/im-iscomposing+xml";
/// The content type of CPIM-wrapped messages (RFC 3862).
pub const CPIM: &str = "message/cpim";
/// The content type of delivery notices (RFC 5438).
pub const IMDN: &str = "message/imdn+xml";
/// The record format byte the host's store convention uses for JSON.
pub const RECORD_FORMAT: u8 = 1;

/// What a sender asked for: a positive-delivery notice naming its message id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
pub struct ImdnAsk {
    /// The sender's `imdn.Message-ID` (or `Message-ID` header in the header form).
    pub message_id: String,
    /// Whether the request was CPIM: the notice is then CPIM-wrapped too (RFC 5438 §6).
    pub cpim: bool,
}

/// Where the IMDN request is looked for (`imdn` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
pub enum ImdnForm {
    /// `Disposition-Notification` and `imdn.Message-ID` inside a `message/cpim` body.
    Cpim,
    /// `Disposition-Notification` and `Message-ID` SIP headers on a plain MESSAGE.
    Header,
    /// Either.
    Both,
    /// Never send notices.
    Off,
}

/// Whether a `Disposition-Notification` value asks for a positive-delivery notice.
fn wants_positive(value: &str) -> bool {
    value
        .split(',')
        .any(|v| v.trim().eq_ignore_ascii_case("positive-delivery"))
}

/// The IMDN request of a CPIM body, if it makes one: its message headers (up to the first
/// blank line) name the `imdn` namespace prefix, `Disposition-Notification` and `Message-ID`.
pub fn cpim_imdn(body: &[u8]) -> Option<ImdnAsk> {
    let text = std::str::from_utf8(body).ok()?;
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let head = head.split("\n\n").next().unwrap_or(head);
    // The namespace prefix is the sender's choice (`NS: imdn <urn:ietf:params:imdn>`).
    let mut prefix = "imdn".to_owned();
    let mut dn = None;
    let mut id = None;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("NS") && value.contains("urn:ietf:params:imdn") {
            if let Some(p) = value
                .split_whitespace()
                .next()
                .filter(|p| !p.starts_with('<'))
            {
                prefix = p.to_owned();
            }
        }
        if let Some((ns, local)) = name.split_once('.') {
            if ns == prefix {
                if local.eq_ignore_ascii_case("Disposition-Notification") {
                    dn = Some(value.to_owned());
                } else if local.eq_ignore_ascii_case("Message-ID") {
                    id = Some(value.to_owned());
                }
            }
        }
    }
    match (dn, id) {
        (Some(dn), Some(id)) if wants_positive(&dn) && !id.is_empty() => Some(ImdnAsk {
            message_id: id,
            cpim: true,
        }),
        _ => None,
    }
}

/// The header form: `Disposition-Notification: positive-delivery` and `Message-ID: <id>`.
pub fn header_imdn(disposition: Option<&str>, message_id: Option<&str>) -> Option<ImdnAsk> {
    match (disposition, message_id) {
        (Some(dn), Some(id)) if wants_positive(dn) && !id.trim().is_empty() => Some(ImdnAsk {
            message_id: id.trim().to_owned(),
            cpim: false,
        }),
        _ => None,
    }
}

/// Escapes text for XML character data.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// The positive-delivery notice (RFC 5438 §7.2.1.1) for message `ask` that `recipient`
/// received at `now_ms`, as `(content type, body)`: CPIM-wrapped when the request was.
pub fn imdn_notice(ask: &ImdnAsk, recipient: &str, sender: &str, now_ms: u64) -> (String, Vec<u8>) {
    let when = rfc3339(now_ms);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\r\n\
         <message-id>{}</message-id>\r\n\
         <datetime>{when}</datetime>\r\n\
         <recipient-uri>{}</recipient-uri>\r\n\
         <original-recipient-uri>{}</original-recipient-uri>\r\n\
         <delivery-notification><status><delivered/></status></delivery-notification>\r\n\
         </imdn>\r\n",
        xml_escape(&ask.message_id),
        xml_escape(recipient),
        xml_escape(recipient),
    );
    if !ask.cpim {
        return (IMDN.to_owned(), xml.into_bytes());
    }
    let cpim = format!(
        "From: <{recipient}>\r\nTo: <{sender}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: {}\r\nDateTime: {when}\r\n\r\n\
         Content-Type: {IMDN}\r\nContent-Disposition: notification\r\nContent-Length: {}\r\n\r\n{xml}",
        crate::engine::notice_id(&ask.message_id, now_ms),
        xml.len()
    );
    (CPIM.to_owned(), cpim.into_bytes())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `Thu, 26 Nov 2026 10:20:00 GMT`: the SIP `Date` form (RFC 3261 §20.17, RFC 1123).
pub fn sip_date(unix_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = (unix_ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `2026-11-26T10:20:00.000Z` (RFC 3339), for IMDN and the history listing.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Encodes a record: the format byte, then JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_sized(value, 64)
}

/// [`encode`] into a buffer of `capacity` bytes at first: a record grown from a few bytes is
/// reallocated at each doubling (six or seven times for a stored message).
pub fn encode_sized<T: Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity.max(1));
    out.push(RECORD_FORMAT);
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

/// JSON written by hand for the two records written per message (a stored message, a history
/// entry), byte for byte what `serde_json` writes for them (`json_is_what_serde_json_writes`):
/// through serde, a record cost about 4–5 k instructions (a call per field and per key, and
/// strings escaped a byte at a time), most of the plugin's work on an offline message.
pub(crate) mod json {
    /// Appends `s` as a JSON string: quoted, with `"`, `\\` and control characters escaped
    /// as `serde_json` escapes them (`\n`-style where JSON has one, else `\u00xx`).
    pub fn string(out: &mut Vec<u8>, s: &str) {
        out.push(b'"');
        let bytes = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        // Eight bytes at a time while none of them needs escaping (the usual case).
        while i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            if needs_escape(u64::from_le_bytes(word)) {
                break;
            }
            i += 8;
        }
        while i < bytes.len() {
            let b = bytes[i];
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => {
                    out.extend_from_slice(&bytes[start..i]);
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]);
                    i += 1;
                    start = i;
                    continue;
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escape);
            i += 1;
            start = i;
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }

    /// Whether any of eight bytes is a control character, `"` or `\\` (SWAR: a byte below
    /// 0x20, or equal to one of the two, sets its top bit in the result).
    #[inline]
    fn needs_escape(w: u64) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let bs = w ^ (ONES * u64::from(b'\\'));
        let backslash = bs.wrapping_sub(ONES) & !bs;
        (below_space | quote | backslash) & HIGH != 0
    }

    /// Appends a number as `serde_json` writes one.
    pub fn number(out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Appends `"key":` (keys are the records' own field names, which need no escaping).
    pub fn key(out: &mut Vec<u8>, first: bool, key: &str) {
        if !first {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    }
}

/// Decodes a record written by [`encode`] (or by the host, for `location/`).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, body)) => serde_json::from_slice(body).ok(),
        _ => None,
    }
}

/// A body as stored in JSON: text when it is UTF-8, else lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
pub enum Body {
    /// UTF-8 text, as is.
    Text(String),
    /// Anything else, as hex.
    Hex(String),
}

impl Body {
    /// Wraps bytes.
    pub fn of(bytes: &[u8]) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(t) => Body::Text(t.to_owned()),
            Err(_) => Body::Hex(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }

    /// Appends the body as `serde_json` writes it (`{"text":"…"}` or `{"hex":"…"}`).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let (key, value) = match self {
            Body::Text(t) => ("text", t),
            Body::Hex(h) => ("hex", h),
        };
        out.push(b'{');
        json::key(out, true, key);
        json::string(out, value);
        out.push(b'}');
    }

    /// Wraps bytes it takes: text kept without a copy.
    pub fn from_vec(bytes: Vec<u8>) -> Body {
        match String::from_utf8(bytes) {
            Ok(t) => Body::Text(t),
            Err(e) => Body::of(e.as_bytes()),
        }
    }

    /// The length of the bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Text(t) => t.len(),
            Body::Hex(h) => h.len() / 2,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, borrowed when they are kept as they are.
    pub fn as_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Body::Text(text) => std::borrow::Cow::Borrowed(text.as_bytes()),
            Body::Hex(_) => std::borrow::Cow::Owned(self.bytes()),
        }
    }

    /// The bytes back.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Text(t) => t.as_bytes().to_vec(),
            Body::Hex(h) => h
                .as_bytes()
                .chunks(2)
                .filter_map(|p| {
                    std::str::from_utf8(p)
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok())
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc1123_and_rfc3339() {
        // 2026-11-26 10:20:00 UTC is a Thursday.
        let ms = 1_795_688_400_000;
        assert_eq!(sip_date(ms), "Thu, 26 Nov 2026 10:20:00 GMT");
        assert_eq!(rfc3339(ms + 5), "2026-11-26T10:20:00.005Z");
        assert_eq!(sip_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn cpim_imdn_request_is_found_with_any_prefix() {
        let body = "From: <sip:alice@example.test>\r\nTo: <sip:bob@example.test>\r\n\
                    NS: n <urn:ietf:params:imdn>\r\nn.Message-ID: 34jk324j\r\n\
                    n.Disposition-Notification: positive-delivery, display\r\n\r\n\
                    Content-Type: text/plain\r\n\r\nhi";
        assert_eq!(
            cpim_imdn(body.as_bytes()),
            Some(ImdnAsk {
                message_id: "34jk324j".into(),
                cpim: true
            })
        );
        let negative = body.replace("positive-delivery, display", "negative-delivery");
        assert_eq!(cpim_imdn(negative.as_bytes()), None);
        assert_eq!(cpim_imdn(b"\xff\xfe"), None);
    }

    #[test]
    fn header_form_and_notice() {
        let ask = header_imdn(Some("positive-delivery"), Some(" m1 ")).unwrap();
        assert_eq!(ask.message_id, "m1");
        assert_eq!(header_imdn(Some("display"), Some("m1")), None);
        let (ct, body) = imdn_notice(&ask, "sip:bob@x", "sip:alice@x", 0);
        assert_eq!(ct, IMDN);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("<message-id>m1</message-id>"));
        assert!(text.contains("<delivered/>"));
        let (ct, body) = imdn_notice(
            &ImdnAsk {
                message_id: "a<b".into(),
                cpim: true,
            },
            "sip:bob@x",
            "sip:alice@x",
            0,
        );
        assert_eq!(ct, CPIM);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("<message-id>a&lt;b</message-id>"));
        assert!(text.contains("Content-Type: message/imdn+xml"));
    }

    #[test]
    fn bodies_round_trip() {
        for b in [&b"h\xc3\xa9llo"[..], b"\x00\xff"] {
            assert_eq!(Body::of(b).bytes(), b);
        }
    }

    /// Strings of every length up to 40 (across the eight-byte steps) from characters that
    /// need escaping and ones that do not, in random order: the hand-written JSON is
    /// `serde_json`'s, byte for byte, and so is a body's.
    #[test]
    fn json_is_what_serde_json_writes() {
        let mut pool: Vec<char> = (0u8..0x20).map(char::from).collect();
        pool.extend([
            '"', '\\', '/', '\u{7f}', 'a', 'Z', ' ', '<', 'é', '€', '😀', '\u{2028}',
        ]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..4000 {
            let len = round % 41;
            let plain = next() % 3 == 0;
            let s: String = (0..len)
                .map(|_| {
                    if plain {
                        char::from(b'a' + (next() % 26) as u8)
                    } else {
                        pool[(next() % pool.len() as u64) as usize]
                    }
                })
                .collect();
            let mut ours = Vec::new();
            json::string(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
            let body = if next() % 2 == 0 {
                Body::Text(s.clone())
            } else {
                Body::of(s.as_bytes())
            };
            let mut ours = Vec::new();
            body.write_json(&mut ours);
            assert_eq!(ours, serde_json::to_vec(&body).unwrap());
            let n = next() >> (next() % 64);
            let mut ours = Vec::new();
            json::number(&mut ours, n);
            assert_eq!(ours, serde_json::to_vec(&n).unwrap());
        }
    }
}
