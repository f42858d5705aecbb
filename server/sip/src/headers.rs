//! Typed views of the header fields Huddle reads: Via, name-addr (From, To, Contact, Route,
//! Record-Route) and CSeq. Each borrows from the message text.

use crate::message::Method;
use crate::syntax::{
    self, find_byte, find_param, find_unquoted, is_host_char, is_lws, split_at_byte, trim_lws,
};

/// Why a header value could not be used. Each variant is answered `400` with a reason phrase
/// naming the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A mandatory header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header value does not follow its grammar.
    #[error("invalid {0} header")]
    Invalid(&'static str),
}

/// One Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token as written (`UDP`, `WS`, …).
    pub transport: &'a str,
    /// sent-by host (IPv6 with brackets).
    pub host: &'a str,
    /// sent-by port.
    pub port: Option<u16>,
    /// The parameter text, starting at the first `;` (may be empty).
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Parses one Via element (after list splitting).
    pub fn parse(value: &'a str) -> Result<Via<'a>, HeaderError> {
        Via::parse_found(value).map(|found| found.via)
    }

    /// [`Via::parse`], and what [`Via::branch`] and [`Via::rport`] would then return, found by
    /// the same pass over the parameters that checks them (the transaction layer, the proxy and
    /// responses all ask for the top Via's branch, responses for its `rport`; [`crate::Message`]
    /// keeps them).
    pub(crate) fn parse_found(value: &'a str) -> Result<ViaFound<'a>, HeaderError> {
        match Via::parse_plain(value) {
            Some(found) => Ok(found),
            None => Via::parse_general(value),
        }
    }

    /// The usual Via in one pass: `SIP/2.0/` in any case, a token transport, spaces or tabs, a
    /// name or IPv4 host with an optional port, then plain parameters (`syntax::plain_param`),
    /// nothing else. `None` for anything else, which [`Via::parse_general`] reads: it reads
    /// these the same way (test `plain_vias_read_as_the_general_path`).
    pub(crate) fn parse_plain(value: &'a str) -> Option<ViaFound<'a>> {
        let b = value.as_bytes();
        // As written nearly always by a word compare; any other case by the fold.
        match b.get(..8)? {
            b"SIP/2.0/" => {}
            prefix if prefix.eq_ignore_ascii_case(b"SIP/2.0/") => {}
            _ => return None,
        }
        let mut i = syntax::run_end(b, 8, syntax::is_token_char);
        let transport = &value[8..i];
        if transport.is_empty() {
            return None;
        }
        let spaces = i;
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let host_start = i;
        i = syntax::run_end(b, i, is_host_char);
        if i == spaces || i == host_start {
            return None;
        }
        let host = &value[host_start..i];
        let port = if b.get(i) == Some(&b':') {
            let digits = i + 1;
            i = syntax::run_end(b, digits, |c| c.is_ascii_digit());
            Some(parse_port(&value[digits..i])?)
        } else {
            None
        };
        let params = &value[i..];
        let mut found = ViaFound {
            via: Via {
                transport,
                host,
                port,
                params,
            },
            branch: None,
            rport: None,
        };
        let mut rest = match b.get(i) {
            None => return Some(found),
            Some(b';') => &params[1..],
            Some(_) => return None,
        };
        loop {
            let (p, next) = syntax::plain_param(rest)?;
            found.note(p);
            match next {
                Some(next) => rest = next,
                None => return Some(found),
            }
        }
    }

    fn parse_general(value: &'a str) -> Result<ViaFound<'a>, HeaderError> {
        const E: HeaderError = HeaderError::Invalid("Via");
        let value = trim_lws(value);
        let (head, params) = match find_unquoted(value, b';') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        // `SIP/2.0/` as nearly every Via writes it; the general path allows white space around
        // the slashes (RFC 4475 §3.1.1.1).
        let rest = match head.get(..8) {
            Some(prefix) if prefix.eq_ignore_ascii_case("SIP/2.0/") => trim_lws(&head[8..]),
            _ => {
                let mut parts = head.splitn(3, '/');
                let name = trim_lws(parts.next().ok_or(E)?);
                let version = trim_lws(parts.next().ok_or(E)?);
                let rest = trim_lws(parts.next().ok_or(E)?);
                if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
                    return Err(E);
                }
                rest
            }
        };
        // White space is ASCII, and no byte of a multi-byte character is: a byte search finds
        // the same offset as a character search.
        let split = rest.bytes().position(is_lws).ok_or(E)?;
        let transport = &rest[..split];
        let sent_by = trim_lws(&rest[split..]);
        if !syntax::is_token(transport) || sent_by.is_empty() {
            return Err(E);
        }
        let (host, port) = split_host_port(sent_by).ok_or(E)?;
        let mut found = ViaFound {
            via: Via {
                transport,
                host,
                port,
                params,
            },
            branch: None,
            rport: None,
        };
        let mut list = syntax::params(params);
        while let Some((p, plain)) = list.next_checked() {
            if !plain
                && (!syntax::is_token(p.name) || p.value.is_some_and(|v| !syntax::is_gen_value(v)))
            {
                return Err(E);
            }
            found.note(p);
        }
        Ok(found)
    }

    /// A parameter's value (`Some(None)` when present without value).
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch").flatten()
    }

    /// `rport` as present/absent and its value if filled in.
    pub fn rport(&self) -> Option<Option<&'a str>> {
        self.param("rport")
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.param("received").flatten()
    }
}

/// A parsed Via with the parameters the layers above ask for, found while checking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaFound<'a> {
    pub via: Via<'a>,
    /// The first `branch` parameter as found (`Some(None)` without a value): [`Via::branch`]
    /// is its value.
    pub branch: Option<Option<&'a str>>,
    /// [`Via::rport`].
    pub rport: Option<Option<&'a str>>,
}

impl<'a> ViaFound<'a> {
    /// Takes `p` into account: the first parameter of each name in any case is the one
    /// `find_param` finds; a valueless `branch` is no branch.
    fn note(&mut self, p: syntax::Param<'a>) {
        // The lowercase names by a word compare first (the fold goes byte by byte).
        let name = p.name.as_bytes();
        let branch = matches!(name, b"branch") || name.eq_ignore_ascii_case(b"branch");
        if self.branch.is_none() && branch {
            self.branch = Some(p.value);
        } else if self.rport.is_none()
            && (matches!(name, b"rport") || name.eq_ignore_ascii_case(b"rport"))
        {
            self.rport = Some(p.value);
        }
    }
}

/// Splits `host[:port]`, with bracketed IPv6. Rejects white space and bad ports.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    // Nearly every sent-by is a name or IPv4 address, possibly with a port: one pass over the
    // host finds its end and checks it. Anything else (IPv6, white space before the colon, an
    // empty host) takes the general path below, which reads these the same way.
    let b = s.as_bytes();
    let host_end = b.iter().position(|&c| !is_host_char(c)).unwrap_or(b.len());
    if host_end > 0 {
        match b.get(host_end) {
            None => return Some((s, None)),
            Some(b':') => return Some((&s[..host_end], Some(parse_port(&s[host_end + 1..])?))),
            Some(_) => {}
        }
    }
    split_host_port_general(s)
}

pub(crate) fn parse_port(p: &str) -> Option<u16> {
    syntax::parse_u32(trim_lws(p))
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n != 0)
}

fn split_host_port_general(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = find_byte(rest, b']')?;
        let host = &s[..close + 2];
        let after = &rest[close + 1..];
        match after.strip_prefix(':') {
            Some(p) => (host, Some(trim_lws(p))),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match split_at_byte(s, b':') {
            Some((h, p)) => (trim_lws(h), Some(trim_lws(p))),
            None => (s, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            })
            || host.bytes().all(is_host_char));
    if !host_ok {
        return None;
    }
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => None,
    };
    Some((host, port))
}

/// A name-addr or addr-spec with header parameters (From, To, Contact, Route, Record-Route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written (quoted or a token sequence), if any.
    pub display: Option<&'a str>,
    /// The URI text without `<>`.
    pub uri: &'a str,
    /// True when the URI was enclosed in `<>`.
    pub bracketed: bool,
    /// Header parameters, starting at the first `;` (may be empty).
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Parses one element (after list splitting).
    pub fn parse(value: &'a str) -> Result<NameAddr<'a>, HeaderError> {
        match NameAddr::parse_plain(value) {
            Some((addr, _)) => Ok(addr),
            None => NameAddr::parse_general(value),
        }
    }

    /// [`NameAddr::parse`], and what [`NameAddr::tag`] would then return when the parse found
    /// it on its way (`None`: not looked for). The one-pass reader goes through every
    /// parameter to check it, so From and To keep their tag from the first parse instead of
    /// searching the parameters again (~250 instructions a tag).
    pub(crate) fn parse_found(
        value: &'a str,
    ) -> Result<(NameAddr<'a>, Option<Option<&'a str>>), HeaderError> {
        match NameAddr::parse_plain(value) {
            Some((addr, tag)) => Ok((addr, Some(tag))),
            None => NameAddr::parse_general(value).map(|addr| (addr, None)),
        }
    }

    /// The usual name-addr in one pass: `<uri>`, `"display"<uri>` (no escapes) or
    /// `token <uri>`, the URI with a scheme and no white space or quote, then plain parameters
    /// (`syntax::plain_param`) right after the `>`. `None` for anything else, which
    /// [`NameAddr::parse_general`] reads: it reads these the same way (test
    /// `plain_name_addrs_read_as_the_general_path`).
    fn parse_plain(value: &'a str) -> Option<(NameAddr<'a>, Option<&'a str>)> {
        let b = value.as_bytes();
        let mut i = 0;
        let display = match *b.first()? {
            b'<' => None,
            b'"' => {
                i = 1;
                loop {
                    match *b.get(i)? {
                        b'"' => break,
                        b'\\' => return None,
                        _ => i += 1,
                    }
                }
                i += 1;
                Some(&value[..i])
            }
            _ => {
                i = syntax::run_end(b, i, syntax::is_token_char);
                if i == 0 {
                    return None;
                }
                Some(&value[..i])
            }
        };
        i = syntax::run_end(b, i, is_lws);
        if b.get(i) != Some(&b'<') {
            return None;
        }
        i += 1;
        let uri_start = i;
        if !b.get(i)?.is_ascii_alphabetic() {
            return None;
        }
        while b
            .get(i)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            i += 1;
        }
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = syntax::run_end(b, i, syntax::is_angled_char);
        if b.get(i) != Some(&b'>') {
            return None;
        }
        let uri = &value[uri_start..i];
        let params = &value[i + 1..];
        let mut rest = match params.as_bytes().first() {
            None => None,
            Some(b';') => Some(&params[1..]),
            Some(_) => return None,
        };
        // The first `tag` in any case, as `find_param` finds it; a valueless one goes the
        // general way.
        let mut tag = None;
        while let Some(text) = rest {
            let (p, next) = syntax::plain_param(text)?;
            if p.name.eq_ignore_ascii_case("tag") {
                p.value?;
                tag = tag.or(p.value);
            }
            rest = next;
        }
        Some((
            NameAddr {
                display,
                uri,
                bracketed: true,
                params,
            },
            tag,
        ))
    }

    fn parse_general(value: &'a str) -> Result<NameAddr<'a>, HeaderError> {
        const E: HeaderError = HeaderError::Invalid("address");
        let value = trim_lws(value);
        if !syntax::quotes_balanced(value) {
            return Err(E);
        }
        let (display, after_display) = if value.starts_with('"') {
            let close = closing_quote(value).ok_or(E)?;
            (Some(&value[..=close]), trim_lws(&value[close + 1..]))
        } else {
            match find_byte(value, b'<') {
                None => (None, value),
                Some(lt) => {
                    let disp = trim_lws(&value[..lt]);
                    let ok = disp
                        .split(|c: char| c.is_ascii() && is_lws(c as u8))
                        .filter(|w| !w.is_empty())
                        .all(syntax::is_token);
                    if !ok {
                        return Err(E);
                    }
                    ((!disp.is_empty()).then_some(disp), &value[lt..])
                }
            }
        };
        if let Some(inner) = after_display.strip_prefix('<') {
            let gt = find_byte(inner, b'>').ok_or(E)?;
            let uri = &inner[..gt];
            if uri.is_empty() || uri.bytes().any(is_lws) || !has_scheme(uri) {
                return Err(E);
            }
            let params = trim_lws(&inner[gt + 1..]);
            check_params(params)?;
            Ok(NameAddr {
                display,
                uri,
                bracketed: true,
                params,
            })
        } else {
            if display.is_some() {
                return Err(E);
            }
            let (uri, params) = match find_byte(after_display, b';') {
                Some(i) => (trim_lws(&after_display[..i]), &after_display[i..]),
                None => (after_display, ""),
            };
            // RFC 3261 §20: an addr-spec with `,`, `?` or `;` must be enclosed in `<>`.
            if uri.is_empty()
                || uri.contains([',', '?'])
                || uri.bytes().any(is_lws)
                || !has_scheme(uri)
            {
                return Err(E);
            }
            check_params(params)?;
            Ok(NameAddr {
                display,
                uri,
                bracketed: false,
                params,
            })
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        find_param(self.params, "tag").flatten()
    }

    /// A header parameter.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }
}

fn has_scheme(uri: &str) -> bool {
    find_byte(uri, b':')
        .map(|i| &uri[..i])
        .is_some_and(|scheme| {
            !scheme.is_empty()
                && scheme.as_bytes()[0].is_ascii_alphabetic()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        })
}

fn check_params(params: &str) -> Result<(), HeaderError> {
    if params.is_empty() {
        return Ok(());
    }
    if !params.starts_with(';') {
        return Err(HeaderError::Invalid("address"));
    }
    let mut list = syntax::params(params);
    while let Some((p, plain)) = list.next_checked() {
        let value_ok = match p.value {
            Some(v) => plain || syntax::is_gen_value(v),
            // RFC 3261 §25.1: `tag = "tag" EQUAL token`; a bare `;tag` would hide the tag a
            // response adds.
            None => !p.name.eq_ignore_ascii_case("tag"),
        };
        if !(plain || syntax::is_token(p.name)) || !value_ok {
            return Err(HeaderError::Invalid("address"));
        }
    }
    Ok(())
}

fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The CSeq header (RFC 3261 §20.16): a sequence number below 2^31 and a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method,
    /// The method text as written.
    pub method_text: &'a str,
}

impl<'a> CSeq<'a> {
    /// Parses a CSeq value.
    pub fn parse(value: &'a str) -> Result<CSeq<'a>, HeaderError> {
        const E: HeaderError = HeaderError::Invalid("CSeq");
        let value = trim_lws(value);
        // A byte search: white space is ASCII and never part of a multi-byte character.
        let split = value.bytes().position(is_lws).ok_or(E)?;
        let seq = syntax::parse_u32(&value[..split])
            .filter(|&n| n < 1 << 31)
            .ok_or(E)?;
        let method_text = trim_lws(&value[split..]);
        if !syntax::is_token(method_text) {
            return Err(E);
        }
        Ok(CSeq {
            seq,
            method: Method::parse(method_text),
            method_text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws() {
        let v = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v = Via::parse("SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKq;rport").unwrap();
        assert_eq!(v.rport(), Some(None));
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKa").unwrap();
        assert_eq!((v.host, v.port), ("[2001:db8::9]", Some(5070)));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_err());
        // Values that would hide later parameters, and bogus IPv6 references (from fuzzing).
        assert!(Via::parse("SIP/2.0/UDP h;rport;p=<x").is_err());
        assert!(Via::parse("SIP/2.0/UDP h;branch=\"z9hG4bK1").is_err());
        assert!(Via::parse("SIP/2.0/UDP [<x]").is_err());
        assert!(Via::parse("SIP/2.0/UDP h;received=::1;maddr=\"a;b\"").is_ok());
        assert!(Via::parse("").is_err());
    }

    #[test]
    fn host_and_port_read_as_the_general_path() {
        let mut inputs: Vec<String> = [
            "h",
            "h:5060",
            "127.0.0.1:5060",
            "a_b-c.d",
            "h:",
            "h: 5060",
            "h :5060",
            "h:5060 ",
            "h:0",
            "h:65536",
            "h:99999999999",
            ":5060",
            "",
            "[::1]",
            "[::1]:5061",
            "[::1] :5061",
            "h:50:60",
            "h;x",
            "h\r\n :5060",
            "Ü:1",
            "hÜ:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for c in (0u8..0x80).map(char::from).chain(['Ü']) {
            for base in ["host.test:5060", "h"] {
                for i in 0..=base.len() {
                    let mut s = base.to_owned();
                    s.insert(i, c);
                    inputs.push(s);
                }
            }
        }
        for s in &inputs {
            assert_eq!(split_host_port(s), split_host_port_general(s), "{s:?}");
        }
    }

    #[test]
    fn the_branch_found_while_parsing_is_the_one_branch_finds() {
        for params in [
            "",
            ";branch=z9hG4bK1",
            ";rport;branch=z9hG4bK1;received=1.2.3.4",
            ";BRANCH=z9hG4bKup",
            ";Branch = z9hG4bKsp ;rport",
            ";branch",
            ";branch=",
            ";branch;branch=z9hG4bK2",
            ";branch=z9hG4bK1;branch=z9hG4bK2",
            ";branches=z9hG4bK1;xbranch=2",
            ";x=\"a;branch=q\";branch=z9hG4bK3",
            ";branch=\"z9hG4bK4\"",
            ";branch=z9hG4bK1;p=<x",
        ] {
            let value = format!("SIP/2.0/UDP h:5060{params}");
            assert_eq!(
                Via::parse_found(&value).map(|f| (f.via, f.branch.flatten(), f.rport)),
                Via::parse(&value).map(|via| (via, via.branch(), via.rport())),
                "{value}"
            );
            // And the message keeps it, read through its view.
            let m = crate::Message::parse(bytes::Bytes::from(format!(
                "OPTIONS sip:a@b SIP/2.0\r\nVia: {value}, SIP/2.0/UDP o;branch=z9hG4bKo\r\nl: 0\r\n\r\n"
            )))
            .unwrap();
            assert_eq!(
                m.branch(),
                Via::parse(&value).ok().and_then(|via| via.branch()),
                "{value}"
            );
            // Twice: the second read comes from the kept offsets.
            assert_eq!(m.branch(), m.top_via().ok().and_then(|via| via.branch()));
        }
    }

    #[test]
    fn plain_vias_read_as_the_general_path() {
        let inputs = crate::syntax::tests::mutations(&[
            "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-2;rport",
            "sip/2.0/ws df7jal23ls0d.invalid;rport=5;branch=z9hG4bKx",
            "SIP/2.0/TCP h_1.example:5060",
            "SIP/2.0/UDP h;Branch=b;BRANCH=c;RPORT;rport=1;received=::1",
            "SIP/2.0/TLS [::1]:5061;x=\"a;b\"",
            "SIP / 2.0 / UDP h:0;;",
        ]);
        let mut plain = 0;
        for s in &inputs {
            let general = Via::parse_general(s);
            if let Some(found) = Via::parse_plain(s) {
                plain += 1;
                assert_eq!(Ok(found), general, "{s:?}");
            }
            // What the kept branch and rport stand for.
            if let Ok(found) = general {
                assert_eq!(found.branch.flatten(), found.via.branch(), "{s:?}");
                assert_eq!(found.rport, found.via.rport(), "{s:?}");
            }
        }
        assert!(plain > inputs.len() / 4, "{plain} of {}", inputs.len());
    }

    #[test]
    fn plain_name_addrs_read_as_the_general_path() {
        let inputs = crate::syntax::tests::mutations(&[
            "<sip:user17@huddle.test>;tag=12345SIPpTag0017",
            "\"user17\"<sip:u@h;transport=ws>;expires=600;+sip.ice",
            "caller <sips:[::1]:5061>",
            "<sip:c@example.test>;tag;x=\"<q>\"",
            "Bob Smith <sip:b@h?x=y>;lr",
            "sip:a@b;tag=1",
        ]);
        let mut plain = 0;
        for s in &inputs {
            if let Some((addr, tag)) = NameAddr::parse_plain(s) {
                plain += 1;
                assert_eq!(Ok(addr), NameAddr::parse_general(s), "{s:?}");
                assert_eq!(tag, addr.tag(), "{s:?}");
            }
        }
        assert!(plain > inputs.len() / 4, "{plain} of {}", inputs.len());
    }

    #[test]
    fn via_prefix_shortcut_reads_as_the_general_path() {
        // `SIP/2.0/` is taken whole; any other spelling goes through the slash-by-slash path,
        // and both must agree.
        for (fast, general) in [
            (
                "SIP/2.0/UDP h:5060;branch=z9hG4bK1",
                "SIP / 2.0 / UDP h:5060;branch=z9hG4bK1",
            ),
            ("sip/2.0/tcp h;rport", "sip/2.0 /tcp h;rport"),
            ("SIP/2.0/ UDP h", "SIP /2.0/ UDP h"),
            ("SIP/2.0/UDP\th", "SIP/ 2.0/UDP\th"),
        ] {
            assert_eq!(Via::parse(fast), Via::parse(general), "{fast}");
            assert!(Via::parse(fast).is_ok(), "{fast}");
        }
        for bad in [
            "SIP/2.0/UDP",
            "SIP/2.0/",
            "SIP/2.0/ ",
            "SIP/2.0/U/P h",
            "SIP/2.1/UDP h",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
        // A multi-byte character where the shortcut would cut is not a panic.
        assert!(Via::parse("SIP/2.\u{e9}/UDP h").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some("caller"));
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.tag(), Some("1918181833n"));
        assert!(NameAddr::parse("Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_err());
        assert!(NameAddr::parse(r#""Watson, Thomas" < sip:t.watson@example.org >"#).is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
        assert!(NameAddr::parse(r#""Mr. J. User <sip:j.user@example.com>"#).is_err());
        assert!(NameAddr::parse("<sip:c@example.test>;tag").is_err());
        assert!(NameAddr::parse("<sip:c@example.test>;p=<x").is_err());
        let jssip = r#"<sip:x@y.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:6a86>";expires=600"#;
        assert!(NameAddr::parse(jssip).is_ok());
    }

    #[test]
    fn cseq() {
        let c = CSeq::parse("0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
    }
}
