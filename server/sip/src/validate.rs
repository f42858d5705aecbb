//! Semantic validation of received messages, after parsing and before any routing: the checks
//! every element must make (RFC 3261 §8.2, §16.3) and our own framing rules. A request that
//! fails is answered with the [`Rejection`]'s status and a reason phrase naming the fault; a
//! response that fails is dropped.

use crate::headers::{NameAddr, Via};
use crate::message::{HeaderName, Message, ParseLimits, StartLine};

/// Header fields a proxy may add when forwarding (Via, two Record-Route, Max-Forwards, and
/// some slack).
const FORWARD_HEADROOM: usize = 8;
use crate::syntax;
use crate::uri::UriError;

/// Why a request is refused, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    /// For `420 Bad Extension`: the `Unsupported` header value.
    pub unsupported: Option<String>,
}

impl Rejection {
    fn new(status: u16, reason: &'static str) -> Rejection {
        Rejection {
            status,
            reason,
            unsupported: None,
        }
    }
}

/// What the element supports, for Require/Proxy-Require checks.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Option tags this element supports as a proxy (Proxy-Require).
    pub proxy_options: Vec<String>,
}

const SINGLE: [(HeaderName, &str, &str); 4] = [
    (
        HeaderName::CallId,
        "Bad Request - Missing Call-ID",
        "Bad Request - Multiple Call-ID",
    ),
    (
        HeaderName::CSeq,
        "Bad Request - Missing CSeq",
        "Bad Request - Multiple CSeq",
    ),
    (
        HeaderName::From,
        "Bad Request - Missing From",
        "Bad Request - Multiple From",
    ),
    (
        HeaderName::To,
        "Bad Request - Missing To",
        "Bad Request - Multiple To",
    ),
];

/// Validates a request. `Ok` means it may be routed.
pub fn validate_request(msg: &Message, caps: &Capabilities) -> Result<(), Rejection> {
    if let Some(defect) = msg.defect() {
        return Err(Rejection::new(400, defect.reason()));
    }
    let StartLine::Request {
        method, version, ..
    } = msg.start_line()
    else {
        return Err(Rejection::new(400, "Bad Request - Not A Request"));
    };
    if !msg.text(*version).eq_ignore_ascii_case("SIP/2.0") {
        return Err(Rejection::new(505, "Version Not Supported"));
    }
    // A proxy adds Via, Record-Route and Max-Forwards: leave room so what it forwards still
    // parses at the next hop (found by fuzzing).
    if msg.headers().len() + FORWARD_HEADROOM > ParseLimits::default().max_headers {
        return Err(Rejection::new(
            513,
            "Message Too Large - Too Many Header Fields",
        ));
    }
    check_common(msg).map_err(|reason| Rejection::new(400, reason))?;
    let cseq = msg
        .cseq()
        .map_err(|_| Rejection::new(400, "Bad Request - Invalid CSeq"))?;
    if &cseq.method != method {
        return Err(Rejection::new(400, "Bad Request - CSeq Method Mismatch"));
    }
    match msg.header_count(&HeaderName::MaxForwards) {
        0 => {}
        1 => {
            msg.max_forwards()
                .transpose()
                .map_err(|_| Rejection::new(400, "Bad Request - Invalid Max-Forwards"))?;
        }
        _ => return Err(Rejection::new(400, "Bad Request - Multiple Max-Forwards")),
    }
    if let Some(Err(_)) = msg.expires() {
        return Err(Rejection::new(400, "Bad Request - Invalid Expires"));
    }
    for (i, contact) in msg.header_list(&HeaderName::Contact).enumerate() {
        if contact == "*" {
            continue;
        }
        let addr = msg
            .contact_at(i, contact)
            .map_err(|_| Rejection::new(400, "Bad Request - Malformed Contact"))?;
        if let Some(expires) = addr.param("expires") {
            if expires.and_then(syntax::parse_u32).is_none() {
                return Err(Rejection::new(400, "Bad Request - Invalid Contact expires"));
            }
        }
    }
    for route in msg.header_list(&HeaderName::Route) {
        NameAddr::parse(route).map_err(|_| Rejection::new(400, "Bad Request - Malformed Route"))?;
    }
    if let Some(date) = msg.header(&HeaderName::Date) {
        if !date.trim_end().ends_with("GMT") {
            return Err(Rejection::new(400, "Bad Request - Invalid Date"));
        }
    }
    match msg.request_sip_uri().unwrap_or(Err(UriError::Malformed)) {
        Ok(parsed) if parsed.headers.is_some() => {
            return Err(Rejection::new(400, "Bad Request - Headers In Request-URI"));
        }
        Ok(_) => {}
        Err(UriError::UnsupportedScheme) => {
            return Err(Rejection::new(416, "Unsupported URI Scheme"));
        }
        Err(_) => return Err(Rejection::new(400, "Bad Request - Malformed Request-URI")),
    }
    let unsupported: Vec<&str> = msg
        .header_list(&HeaderName::ProxyRequire)
        .filter(|tag| !tag.is_empty())
        .filter(|tag| {
            !caps
                .proxy_options
                .iter()
                .any(|o| o.eq_ignore_ascii_case(tag))
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(Rejection {
            status: 420,
            reason: "Bad Extension",
            unsupported: Some(unsupported.join(", ")),
        });
    }
    Ok(())
}

/// Validates a response; `Err` carries why it is dropped.
pub fn validate_response(msg: &Message) -> Result<(), &'static str> {
    if msg.defect().is_some() {
        return Err("malformed response");
    }
    check_common(msg)?;
    msg.cseq().map_err(|_| "invalid CSeq")?;
    Ok(())
}

fn check_common(msg: &Message) -> Result<(), &'static str> {
    // How many of each: found by the pass over the fields that the lookups by name make
    // anyway.
    for (name, missing, multiple) in &SINGLE {
        match msg.noted_count(name) {
            0 => return Err(*missing),
            1 => {}
            _ => return Err(*multiple),
        }
    }
    if msg.noted_count(&HeaderName::Via) == 0 {
        return Err("Bad Request - Missing Via");
    }
    check_views(msg)
}

/// The views every later step reads (top Via, From, To), parsed once here, every other Via
/// element checked, and the Call-ID not empty. Apart from the counts only to be read on its
/// own; no reason of cost.
fn check_views(msg: &Message) -> Result<(), &'static str> {
    // The top Via through the message's memoised view: the transaction layer and the
    // response builder read it again, and parsing it once serves all three.
    msg.top_via().map_err(|_| "Bad Request - Malformed Via")?;
    // Every other element: the kept view tells whether the first field holds more than the
    // top one, so a one-element field (nearly every first Via) is not split again.
    let more = msg.top_via_element().is_some_and(|(_, more)| more);
    let mut fields = msg.header_values(&HeaderName::Via);
    let first = fields.next().filter(|_| more);
    let rest_of_first = first
        .into_iter()
        .flat_map(|f| syntax::split_list(f).skip(1));
    for via in rest_of_first.chain(fields.flat_map(syntax::split_list)) {
        Via::parse(via).map_err(|_| "Bad Request - Malformed Via")?;
    }
    msg.from_header()
        .map_err(|_| "Bad Request - Malformed From")?;
    msg.to_header().map_err(|_| "Bad Request - Malformed To")?;
    if msg.call_id().is_none_or(str::is_empty) {
        return Err("Bad Request - Empty Call-ID");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const FIELDS: [&str; 5] = [
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
        "Call-ID: c",
        "CSeq: 1 OPTIONS",
        "From: <sip:a@b>;tag=1",
        "To: <sip:a@b>",
    ];

    fn request(fields: &[&str]) -> Message {
        let text = format!(
            "OPTIONS sip:a@b SIP/2.0\r\n{}\r\nl: 0\r\n\r\n",
            fields.join("\r\n")
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    #[test]
    fn mandatory_fields_exactly_once() {
        let caps = Capabilities::default();
        assert_eq!(validate_request(&request(&FIELDS), &caps), Ok(()));
        for (i, reason) in [
            "Bad Request - Missing Via",
            "Bad Request - Missing Call-ID",
            "Bad Request - Missing CSeq",
            "Bad Request - Missing From",
            "Bad Request - Missing To",
        ]
        .into_iter()
        .enumerate()
        {
            let mut fields = FIELDS.to_vec();
            fields.remove(i);
            let r = validate_request(&request(&fields), &caps).unwrap_err();
            assert_eq!((r.status, r.reason), (400, reason));
        }
        for (i, reason) in [
            "Bad Request - Multiple Call-ID",
            "Bad Request - Multiple CSeq",
            "Bad Request - Multiple From",
            "Bad Request - Multiple To",
        ]
        .into_iter()
        .enumerate()
        {
            let mut fields = FIELDS.to_vec();
            fields.push(FIELDS[i + 1]);
            let r = validate_request(&request(&fields), &caps).unwrap_err();
            assert_eq!((r.status, r.reason), (400, reason));
        }
    }

    #[test]
    fn every_via_element_is_checked_as_a_split_of_every_field_checks_it() {
        let a = "SIP/2.0/UDP h;branch=z9hG4bK1";
        let firsts = [
            a.to_owned(),
            format!("{a}, SIP/2.0/UDP b"),
            format!("{a}, bad"),
            format!("{a},"),
            format!("{a};x=\"p,bad\""),
            format!("{a} , , SIP/2.0/UDP b"),
            "bad".to_owned(),
        ];
        for first in &firsts {
            for second in [
                "",
                "\r\nVia: SIP/2.0/UDP c",
                "\r\nVia: bad",
                "\r\nVia: SIP/2.0/UDP c, x",
            ] {
                let via = format!("Via: {first}{second}");
                let m = request(&[&via, FIELDS[1], FIELDS[2], FIELDS[3], FIELDS[4]]);
                let all_parse = m
                    .header_list(&HeaderName::Via)
                    .all(|v| Via::parse(v).is_ok());
                let got = validate_request(&m, &Capabilities::default());
                assert_eq!(
                    got.is_ok(),
                    all_parse,
                    "{via:?}: {:?}",
                    got.err().map(|r| r.reason)
                );
            }
        }
    }
}
