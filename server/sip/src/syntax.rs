//! Lexical helpers shared by the header parsers: RFC 3261 §25.1 character classes, linear
//! white space (which may include a folded CRLF), quoted strings, comma-separated header
//! values and `;name=value` parameter lists.
//!
//! Everything here works on `&str` slices of the original message and never allocates.

/// Byte classes, one table lookup per byte: every header parse tests every byte of its
/// names and parameters.
const TOKEN: u8 = 1;
/// `gen-value` characters outside quoted strings: token characters, `:`, `[` and `]`.
const GEN_VALUE: u8 = 2;
/// Characters of a host name or IPv4 address: letters, digits, `-`, `.`, `_`.
const HOST: u8 = 4;
/// Bytes a plain name-addr's URI may hold between `<` and `>`: all but white space, `"` and
/// `>`.
const ANGLED: u8 = 8;

const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let token = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_') {
            t[b] = TOKEN | GEN_VALUE | HOST;
        } else if token {
            t[b] = TOKEN | GEN_VALUE;
        } else if matches!(c, b':' | b'[' | b']') {
            t[b] = GEN_VALUE;
        }
        if !matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'>') {
            t[b] |= ANGLED;
        }
        b += 1;
    }
    t
};

/// The first `needle` (an ASCII byte) in `s`, by `memchr`: `str::find` with a `char` sets up
/// a searcher per call, a visible share of a REGISTER's instructions in URI and name-addr
/// parsing (bench/NOTES.md).
pub(crate) fn find_byte(s: &str, needle: u8) -> Option<usize> {
    memchr::memchr(needle, s.as_bytes())
}

/// `s` split around the first `needle` (an ASCII byte), like `str::split_once`.
pub(crate) fn split_at_byte(s: &str, needle: u8) -> Option<(&str, &str)> {
    find_byte(s, needle).map(|i| (&s[..i], &s[i + 1..]))
}

/// True when `s` has no CR or LF: a value written after `name: ` stays one header line.
/// By `memchr2`: a `str` search for a set of chars walks it a character at a time.
pub fn is_one_line(s: &str) -> bool {
    memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_none()
}

/// `token` characters (RFC 3261 §25.1).
pub fn is_token_char(b: u8) -> bool {
    CLASSES[usize::from(b)] & TOKEN != 0
}

/// Where the run of bytes from `from` on for which `class` holds ends (`b.len()` at most): the
/// scanners' inner loop, as an iterator search (no bounds check per byte).
#[inline]
pub(crate) fn run_end(b: &[u8], from: usize, class: impl Fn(u8) -> bool) -> usize {
    let rest = b.get(from..).unwrap_or_default();
    from + rest.iter().position(|&c| !class(c)).unwrap_or(rest.len())
}

/// Characters of a host name or IPv4 address (letters, digits, `-`, `.`, `_`), by the table:
/// every Via and URI host is checked byte by byte.
pub(crate) fn is_host_char(b: u8) -> bool {
    CLASSES[usize::from(b)] & HOST != 0
}

/// Bytes of a URI in `<>` that need no second look (not white space, `"` or `>`).
pub(crate) fn is_angled_char(b: u8) -> bool {
    CLASSES[usize::from(b)] & ANGLED != 0
}

/// True when `s` is a non-empty token.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// A parameter value per RFC 3261 `gen-value`: a token, a host (IPv6 references included) or
/// one whole quoted string. Anything else could hide the separators after it (an unclosed `<`
/// or `"` makes every later `;` look quoted), so values are checked before use.
pub fn is_gen_value(v: &str) -> bool {
    if let Some(inner) = v.strip_prefix('"') {
        let b = inner.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return i + 1 == b.len(),
                _ => i += 1,
            }
        }
        return false;
    }
    !v.is_empty() && v.bytes().all(|b| CLASSES[usize::from(b)] & GEN_VALUE != 0)
}

/// Linear white space inside a header value: SP, HTAB and folded line breaks (the parser keeps
/// folds in the raw text so that forwarded messages stay byte-identical).
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims linear white space at both ends.
pub fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let mut start = 0;
    let mut end = b.len();
    while start < end && is_lws(b[start]) {
        start += 1;
    }
    while end > start && is_lws(b[end - 1]) {
        end -= 1;
    }
    // Only ASCII bytes were skipped, so both ends are character boundaries.
    s.get(start..end).unwrap_or("")
}

/// Byte offset of the first `needle` in `s` that is outside quoted strings and angle brackets,
/// or `None`.
///
/// Jumps between the bytes that matter with `memchr` (outside: the needle, `"` and `<`; in
/// brackets: `"` and `>`; in quotes: a backslash and `"`) instead of looking at every byte: header
/// values are split into list elements and parameters several times per message.
pub fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    if matches!(needle, b'"' | b'<' | b'>' | b'\\') {
        return find_unquoted_bytewise(s, needle);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut angle = false;
    loop {
        let rest = bytes.get(i..)?;
        let at = i + if angle {
            memchr::memchr2(b'"', b'>', rest)?
        } else {
            memchr::memchr3(needle, b'"', b'<', rest)?
        };
        match bytes[at] {
            b'"' => i = after_quoted(bytes, at + 1)?,
            b'<' => {
                angle = true;
                i = at + 1;
            }
            b'>' => {
                angle = false;
                i = at + 1;
            }
            _ => return Some(at),
        }
    }
}

/// The offset after the `"` that closes a quoted string whose content starts at `from`, or
/// `None` when it is not closed.
fn after_quoted(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let at = i + memchr::memchr2(b'\\', b'"', bytes.get(i..)?)?;
        if bytes[at] == b'"' {
            return Some(at + 1);
        }
        // A quoted pair: the escaped byte, whatever it is, is content.
        i = at + 2;
    }
}

/// [`find_unquoted`] one byte at a time (for needles that are themselves quoting bytes).
fn find_unquoted_bytewise(s: &str, needle: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut angle = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            match b {
                b'\\' => i += 1,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quotes = true,
                b'<' => angle = true,
                b'>' => angle = false,
                _ if b == needle && !angle => return Some(i),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Splits a header value on the commas that separate list elements (RFC 3261 §7.3.1), ignoring
/// commas in quoted strings and `<…>`. Elements are trimmed; empty elements are kept so that
/// validation can reject `a,,b`.
pub fn split_list(value: &str) -> ListIter<'_> {
    ListIter { rest: Some(value) }
}

/// Iterator returned by [`split_list`].
#[derive(Debug, Clone)]
pub struct ListIter<'a> {
    rest: Option<&'a str>,
}

impl ListIter<'_> {
    /// True when no element is left (the last one had no comma after it).
    pub(crate) fn is_done(&self) -> bool {
        self.rest.is_none()
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        // Most values are one element: with no comma at all there is nothing to split, and the
        // quote- and bracket-aware scan is skipped.
        let comma = match find_byte(rest, b',') {
            Some(_) => find_unquoted(rest, b','),
            None => None,
        };
        match comma {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(trim_lws(&rest[..i]))
            }
            None => {
                self.rest = None;
                Some(trim_lws(rest))
            }
        }
    }
}

/// True when the quoted strings in `s` are balanced.
pub fn quotes_balanced(s: &str) -> bool {
    let bytes = s.as_bytes();
    // Most values quote nothing: one `memchr` instead of a look at every byte.
    let Some(first) = memchr::memchr(b'"', bytes) else {
        return true;
    };
    let mut in_quotes = false;
    let mut i = first;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            _ => {}
        }
        i += 1;
    }
    !in_quotes
}

/// One `;name[=value]` parameter. Names and values are trimmed of LWS; a quoted value keeps
/// its quotes (use [`unquote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a str,
    pub value: Option<&'a str>,
}

/// Iterates the parameters of `s`, which starts at (or before) the first `;`. Anything before
/// the first `;` is skipped.
pub fn params(s: &str) -> ParamIter<'_> {
    // Parameter text as the header parsers keep it starts at its `;`: that is the first
    // unquoted `;`, without a search (most callers pass such text, several times a message).
    let rest = match s.strip_prefix(';') {
        Some(rest) => Some(rest),
        None => find_unquoted(s, b';').map(|i| &s[i + 1..]),
    };
    ParamIter { rest }
}

/// Where text is written: a `String`, or a message's bytes being built (a `Vec<u8>`), so a
/// piece of a header can go straight into the message instead of through a `String` first.
pub trait PushText {
    /// Appends `s`.
    fn push_text(&mut self, s: &str);
}

impl PushText for String {
    fn push_text(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl PushText for Vec<u8> {
    fn push_text(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Appends the parameters of `s` (as [`params`] reads them) to `out` as `;name[=value]`, in
/// order and as written, leaving out those for which `skip(name)` holds.
pub fn push_params_except(out: &mut impl PushText, s: &str, skip: impl Fn(&str) -> bool) {
    for p in params(s).filter(|p| !skip(p.name)) {
        out.push_text(";");
        out.push_text(p.name);
        if let Some(v) = p.value {
            out.push_text("=");
            out.push_text(v);
        }
    }
}

/// Iterator returned by [`params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    rest: Option<&'a str>,
}

/// The parameter at the start of `rest` when it is written plainly: a token name, then
/// optionally `=` and a non-empty run of `gen-value` characters outside quotes (token
/// characters, `:`, `[`, `]`), then `;` or the end. Returns it with the text after that `;`.
///
/// Such an item has no quote, bracket, white space or second `=`, so the general path below
/// reads it the same (the first unquoted `;` is the first `;`, nothing to trim), and it passes
/// the name and value checks validation makes: one pass over its bytes instead of a `memchr`
/// for the `;`, one for the `=`, two trims and the two checks. Anything else gives `None`.
#[inline]
pub(crate) fn plain_param(rest: &str) -> Option<(Param<'_>, Option<&str>)> {
    let b = rest.as_bytes();
    let mut i = run_end(b, 0, |c| CLASSES[usize::from(c)] & TOKEN != 0);
    if i == 0 {
        return None;
    }
    let name = &rest[..i];
    let value = if b.get(i) == Some(&b'=') {
        let start = i + 1;
        i = run_end(b, start, |c| CLASSES[usize::from(c)] & GEN_VALUE != 0);
        if i == start {
            return None;
        }
        Some(&rest[start..i])
    } else {
        None
    };
    let next = match b.get(i) {
        None => None,
        Some(b';') => Some(&rest[i + 1..]),
        Some(_) => return None,
    };
    Some((Param { name, value }, next))
}

impl<'a> ParamIter<'a> {
    /// The next parameter, and whether it was written plainly (see [`plain_param`]): then its
    /// name is a token and its value, if any, a `gen-value`, and callers need not check them.
    pub(crate) fn next_checked(&mut self) -> Option<(Param<'a>, bool)> {
        let rest = self.rest?;
        if let Some((param, next)) = plain_param(rest) {
            self.rest = next;
            return Some((param, true));
        }
        self.next_general().map(|p| (p, false))
    }

    fn next_general(&mut self) -> Option<Param<'a>> {
        let rest = self.rest?;
        let (item, next) = match find_unquoted(rest, b';') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        self.rest = next;
        let param = match find_byte(item, b'=') {
            Some(eq) => Param {
                name: trim_lws(&item[..eq]),
                value: Some(trim_lws(&item[eq + 1..])),
            },
            None => Param {
                name: trim_lws(item),
                value: None,
            },
        };
        Some(param)
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        self.next_checked().map(|(p, _)| p)
    }
}

/// Finds a parameter by case-insensitive name. `Some(None)` means present without a value.
pub fn find_param<'a>(s: &'a str, name: &str) -> Option<Option<&'a str>> {
    params(s)
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value)
}

/// Removes surrounding double quotes and resolves `\x` escapes. Borrowed when no escape occurs.
pub fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return std::borrow::Cow::Borrowed(s);
    };
    if !inner.contains('\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Parses an unsigned decimal number with at most `u32` range, rejecting signs, empty input and
/// overflow (RFC 4475 §3.1.2.4 sends 2^65 to check for wrap-around).
pub fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    // Ten digits fit a `u64`: add them up there and check the range once (`str::parse` costs
    // ~130 instructions for a port, and this runs several times a message).
    let mut n = 0u64;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn params_at_a_leading_semicolon_read_as_the_search_finds_them() {
        for s in [
            ";",
            ";;",
            ";tag=1",
            ";tag=1;x",
            ";x=\"a;b\";y",
            ";<a;b>;c",
            "; a = b ;c",
            "a;b",
            "<sip:a;b>;c",
            "\";\";d",
            "",
        ] {
            let searched = ParamIter {
                rest: find_unquoted(s, b';').map(|i| &s[i + 1..]),
            };
            assert_eq!(
                params(s).collect::<Vec<_>>(),
                searched.collect::<Vec<_>>(),
                "{s:?}"
            );
        }
    }

    /// Inputs for the one-pass scanners' equivalence tests: `bases`, and each with every ASCII
    /// byte and a multi-byte character inserted at every position.
    pub(crate) fn mutations(bases: &[&str]) -> Vec<String> {
        let mut inputs: Vec<String> = bases.iter().map(|s| s.to_string()).collect();
        for base in bases {
            for c in (0u8..0x80).map(char::from).chain(['Ü']) {
                for i in (0..=base.len()).filter(|&i| base.is_char_boundary(i)) {
                    let mut s = base.to_string();
                    s.insert(i, c);
                    inputs.push(s);
                }
            }
        }
        inputs
    }

    #[test]
    fn plain_params_read_as_the_general_path_and_pass_the_checks() {
        let inputs = mutations(&[
            ";branch=z9hG4bK-1;rport",
            ";tag=1a;lr;transport=ws;maddr=[::1]:5",
            ";received=192.0.2.1;x",
            ";a=\"q;r\";b=<c>;d",
            "; a = b ;c=",
            ";;x",
            "",
        ]);
        assert_eq!(
            params(";branch=z9hG4bK-1;rport").next_checked(),
            Some((
                Param {
                    name: "branch",
                    value: Some("z9hG4bK-1")
                },
                true
            ))
        );
        for s in &inputs {
            let mut general = params(s);
            let mut fast = params(s);
            loop {
                let g = general.next_general();
                let f = fast.next_checked();
                assert_eq!(f.map(|(p, _)| p), g, "{s:?}");
                assert_eq!(fast.rest, general.rest, "{s:?}");
                let Some((p, plain)) = f else { break };
                if plain {
                    assert!(is_token(p.name), "{s:?}");
                    assert!(p.value.is_none_or(is_gen_value), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn params_are_copied_as_written_but_the_skipped_ones() {
        let mut out = String::from("<sip:a@h>");
        push_params_except(
            &mut out,
            r#"<sip:a@h>;Expires=60;+sip.instance="<urn:x;y>";lr;q=0.5"#,
            |name| name.eq_ignore_ascii_case("expires"),
        );
        assert_eq!(out, r#"<sip:a@h>;+sip.instance="<urn:x;y>";lr;q=0.5"#);
    }

    #[test]
    fn find_unquoted_agrees_with_the_bytewise_scan() {
        let samples = [
            "",
            "a,b",
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport",
            r#""a, b" <sip:x@y;p=1,2>;q=1 , <sip:z@w>"#,
            r#""esc \" , still quoted", after"#,
            r#""unclosed , quote"#,
            r#""ends in backslash \"#,
            "<unclosed, bracket;x",
            "a>b,c<d,e>f;g",
            r#"<sip:a@b;x="q>,;">,next;p"#,
            r#"x;y="1;2";z"#,
            "\\,;",
        ];
        // The same past memchr's first vector: needles, quotes and brackets before, across
        // and after 32 bytes.
        let long: Vec<String> = samples
            .iter()
            .flat_map(|s| {
                (28..=34).flat_map(move |pad| {
                    [
                        format!("{}{s}", "x".repeat(pad)),
                        format!("{}\"a;b,c\"{s}", "y".repeat(pad)),
                        format!("{}<a;b,c>{s}", "z".repeat(pad)),
                        format!("{}\"q{}\";,{s}", "w".repeat(pad - 10), "v".repeat(12)),
                    ]
                })
            })
            .collect();
        for s in samples
            .iter()
            .copied()
            .chain(long.iter().map(String::as_str))
        {
            for needle in [b',', b';', b'=', b'@', b'"', b'<', b'>', b'\\'] {
                assert_eq!(
                    find_unquoted(s, needle),
                    find_unquoted_bytewise(s, needle),
                    "{s:?} needle {:?}",
                    needle as char
                );
            }
        }
    }

    #[test]
    fn quotes_balance_as_a_scan_of_every_byte_says() {
        fn every_byte(s: &str) -> bool {
            let mut in_quotes = false;
            let mut escaped = false;
            for b in s.bytes() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if in_quotes => escaped = true,
                    b'"' => in_quotes = !in_quotes,
                    _ => {}
                }
            }
            !in_quotes
        }
        for s in [
            "",
            "no quotes at all \\ here",
            r#"\"not an escape outside quotes""#,
            r#""a" <sip:x@y>"#,
            r#""a \" b" <sip:x>"#,
            r#""unclosed"#,
            r#"x="1\""#,
            r#"x="1\\""#,
            r#"""""#,
        ] {
            assert_eq!(quotes_balanced(s), every_byte(s), "{s:?}");
        }
    }

    #[test]
    fn list_respects_quotes_and_angles() {
        let v = r#""a, b" <sip:x@y;p=1,2>;q=1 , <sip:z@w>"#;
        let items: Vec<_> = split_list(v).collect();
        assert_eq!(items, vec![r#""a, b" <sip:x@y;p=1,2>;q=1"#, "<sip:z@w>"]);
    }

    #[test]
    fn params_with_folding() {
        let v = "SIP/2.0/UDP h ;\r\n  branch  =   z9hG4bK9ikj8 ; rport";
        let ps: Vec<_> = params(v).collect();
        assert_eq!(ps[0].name, "branch");
        assert_eq!(ps[0].value, Some("z9hG4bK9ikj8"));
        assert_eq!(ps[1].name, "rport");
        assert_eq!(ps[1].value, None);
    }

    #[test]
    fn unquote_escapes() {
        assert_eq!(unquote(r#""J Rosenberg \\\"""#), r#"J Rosenberg \""#);
        assert_eq!(unquote("plain"), "plain");
    }

    #[test]
    fn character_classes_match_the_grammar() {
        for b in 0..=255u8 {
            let token = b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
            assert_eq!(is_token_char(b), token, "{b}");
            let host = b.is_ascii_alphanumeric() || b"-._".contains(&b);
            assert_eq!(is_host_char(b), host, "{b}");
            assert_eq!(is_angled_char(b), !b" \t\r\n\">".contains(&b), "{b}");
            let gen = token || b":[]".contains(&b);
            assert_eq!(
                is_gen_value(std::str::from_utf8(&[b]).unwrap_or("\"")),
                gen,
                "{b}"
            );
        }
    }

    #[test]
    fn trims_lws_only() {
        assert_eq!(trim_lws(" \t\r\n ü x \r\n"), "ü x");
        assert_eq!(trim_lws(" \t "), "");
        assert_eq!(trim_lws("\u{a0}a\u{a0}"), "\u{a0}a\u{a0}");
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32("0068"), Some(68));
        assert_eq!(parse_u32("36893488147419103232"), None);
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32("4294967296"), None);
        // As the standard parser reads digits, at every length and around the limit.
        let mut inputs: Vec<String> = ["", "+1", " 1", "1 ", "٣", "00000000000", "4294967295"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for len in 1..=11 {
            for d in ['0', '1', '4', '5', '9'] {
                inputs.push(d.to_string().repeat(len));
            }
            inputs.push(format!("{}x", "7".repeat(len)));
        }
        for n in [4_294_967_290u64, 4_294_967_296, 9_999_999_999] {
            for k in 0..8 {
                inputs.push((n + k).to_string());
            }
        }
        for s in &inputs {
            let std = (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten();
            assert_eq!(parse_u32(s), std, "{s:?}");
        }
    }
}
