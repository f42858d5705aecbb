//! PIDF (RFC 3863) documents: validating what publishers send, composing several devices'
//! publications into the one document watchers get, and the documents the server makes up
//! itself (open from a registration, closed, and the RFC 3857 watcher-info list).
//!
//! Composition copies each publication's elements byte for byte (roxmltree keeps every node's
//! byte range), so extensions we do not understand (RPID, `dm:person`, capabilities) reach
//! watchers untouched; only the root element is rewritten, with the namespace declarations the
//! copied elements rely on. The order follows the PIDF schema: every `<tuple>` first, then
//! `<note>`s, then elements of other namespaces; the publications are given in order of
//! relevance (open devices first, newest first), because simple clients such as SIPml5 read
//! only the first tuple.

use std::fmt::Write as _;

/// The PIDF namespace.
pub const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
/// The Content-Type of PIDF bodies.
pub const PIDF_TYPE: &str = "application/pidf+xml";
/// The Content-Type of watcher-info bodies (RFC 3857).
pub const WINFO_TYPE: &str = "application/watcherinfo+xml";

/// Why a body is not an acceptable PIDF document. Each maps to a `400` reason phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PidfError {
    /// Not UTF-8.
    NotUtf8,
    /// Not well-formed XML; the text is the parser's position and fault.
    Malformed(String),
    /// The root element is not `presence` in the PIDF namespace.
    NotPidf,
    /// The default namespace of the root is not PIDF (prefixed PIDF roots are not composed).
    PrefixedRoot,
    /// `<presence>` has no `entity` attribute.
    NoEntity,
    /// A `<tuple>` has no `id` or no `<status>`.
    BadTuple,
}

impl PidfError {
    /// The reason phrase of the `400` this error causes.
    pub fn reason(&self) -> String {
        match self {
            PidfError::NotUtf8 => "Bad Request - PIDF Body Is Not UTF-8".to_owned(),
            PidfError::Malformed(why) => format!("Bad Request - Malformed PIDF XML ({why})"),
            PidfError::NotPidf => "Bad Request - Root Element Is Not PIDF <presence>".to_owned(),
            PidfError::PrefixedRoot => {
                "Bad Request - PIDF Must Be The Default Namespace".to_owned()
            }
            PidfError::NoEntity => "Bad Request - PIDF <presence> Without entity".to_owned(),
            PidfError::BadTuple => "Bad Request - PIDF <tuple> Without id Or <status>".to_owned(),
        }
    }
}

/// A validated publication body, reduced to what composition needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Namespace declarations of the root other than the default one: `(prefix, uri)`.
    pub namespaces: Vec<(String, String)>,
    /// `<tuple>` elements, verbatim, with their `id`.
    pub tuples: Vec<(String, String)>,
    /// `<note>` elements, verbatim.
    pub notes: Vec<String>,
    /// Other child elements (extensions), verbatim.
    pub others: Vec<String>,
    /// Whether any tuple says `<basic>open</basic>`.
    pub open: bool,
}

/// Validates a PIDF body and splits it into the parts composition uses.
pub fn parse(body: &[u8]) -> Result<Parsed, PidfError> {
    let text = std::str::from_utf8(body).map_err(|_| PidfError::NotUtf8)?;
    let doc = roxmltree::Document::parse(text).map_err(|e| {
        // One line, no control characters: it becomes part of a reason phrase.
        let why: String = e
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(120)
            .collect();
        PidfError::Malformed(why)
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "presence" || root.tag_name().namespace() != Some(PIDF_NS) {
        return Err(PidfError::NotPidf);
    }
    if root.lookup_namespace_uri(None) != Some(PIDF_NS) {
        return Err(PidfError::PrefixedRoot);
    }
    if root.attribute("entity").is_none_or(|e| e.trim().is_empty()) {
        return Err(PidfError::NoEntity);
    }
    let mut parsed = Parsed {
        namespaces: root
            .namespaces()
            .filter_map(|ns| ns.name().map(|p| (p.to_owned(), ns.uri().to_owned())))
            .collect(),
        tuples: Vec::new(),
        notes: Vec::new(),
        others: Vec::new(),
        open: false,
    };
    for child in root.children().filter(roxmltree::Node::is_element) {
        let raw = text[child.range()].to_owned();
        let pidf = child.tag_name().namespace() == Some(PIDF_NS);
        match (pidf, child.tag_name().name()) {
            (true, "tuple") => {
                let id = child.attribute("id").unwrap_or("");
                let status = child
                    .children()
                    .find(|n| n.is_element() && n.tag_name().name() == "status");
                let Some(status) = status.filter(|_| !id.is_empty()) else {
                    return Err(PidfError::BadTuple);
                };
                let open = status.children().any(|n| {
                    n.is_element()
                        && n.tag_name().name() == "basic"
                        && n.text().is_some_and(|t| t.trim() == "open")
                });
                parsed.open |= open;
                parsed.tuples.push((id.to_owned(), raw));
            }
            (true, "note") => parsed.notes.push(raw),
            _ => parsed.others.push(raw),
        }
    }
    Ok(parsed)
}

/// Escapes text for an attribute value or element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, entity: &str, namespaces: &[(String, String)]) {
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"{PIDF_NS}\""
    );
    for (prefix, uri) in namespaces {
        let _ = write!(out, " xmlns:{prefix}=\"{}\"", escape(uri));
    }
    let _ = writeln!(out, " entity=\"{}\">", escape(entity));
}

/// A document with one tuple whose basic status is `open` or `closed`: what watchers get for a
/// presentity that published nothing (open while registered), that is offline, or whom they
/// may not see (the same closed document, so a refusal looks like an offline user and does not
/// reveal that the user exists).
pub fn basic(entity: &str, open: bool) -> String {
    let mut out = String::with_capacity(256);
    header(&mut out, entity, &[]);
    let status = if open { "open" } else { "closed" };
    let _ = write!(
        out,
        "<tuple id=\"huddle\"><status><basic>{status}</basic></status></tuple>\n</presence>\n"
    );
    out
}

/// Composes publications (most relevant first) into one document for `entity`.
///
/// Namespace prefixes are declared once, first declaration wins; a later publication that
/// binds a prefix already taken to another URI keeps only its PIDF tuples and notes (its
/// extension elements could change meaning under the other binding). Duplicate tuple ids
/// (two devices both calling their tuple `t1`) are made unique by skipping the later tuple's
/// duplicate only when identical, else by renaming it `id-N`.
pub fn compose<'a>(entity: &str, parts: impl IntoIterator<Item = &'a Parsed>) -> String {
    let parts: Vec<&Parsed> = parts.into_iter().collect();
    let mut namespaces: Vec<(String, String)> = Vec::new();
    let mut conflicted = vec![false; parts.len()];
    for (i, p) in parts.iter().enumerate() {
        for (prefix, uri) in &p.namespaces {
            match namespaces.iter().find(|(q, _)| q == prefix) {
                Some((_, u)) if u != uri => conflicted[i] = true,
                Some(_) => {}
                None => namespaces.push((prefix.clone(), uri.clone())),
            }
        }
    }
    let mut out = String::with_capacity(parts.iter().map(|p| p.len_hint()).sum::<usize>() + 256);
    header(&mut out, entity, &namespaces);
    let mut ids: Vec<String> = Vec::new();
    for p in &parts {
        for (id, raw) in &p.tuples {
            if ids.contains(id) {
                let mut n = 2;
                let fresh = loop {
                    let candidate = format!("{id}-{n}");
                    if !ids.contains(&candidate) {
                        break candidate;
                    }
                    n += 1;
                };
                out.push_str(&rename_id(raw, id, &fresh));
                ids.push(fresh);
            } else {
                out.push_str(raw);
                ids.push(id.clone());
            }
            out.push('\n');
        }
    }
    for p in &parts {
        for raw in &p.notes {
            out.push_str(raw);
            out.push('\n');
        }
    }
    for (p, conflicted) in parts.iter().zip(conflicted) {
        if conflicted {
            continue;
        }
        for raw in &p.others {
            out.push_str(raw);
            out.push('\n');
        }
    }
    out.push_str("</presence>\n");
    out
}

impl Parsed {
    /// Roughly the bytes this publication adds to a composed document.
    pub fn len_hint(&self) -> usize {
        self.tuples.iter().map(|(_, t)| t.len()).sum::<usize>()
            + self.notes.iter().map(String::len).sum::<usize>()
            + self.others.iter().map(String::len).sum::<usize>()
    }
}

/// Rewrites the first `id="old"` (or `id='old'`) of a tuple's start tag.
fn rename_id(raw: &str, old: &str, new: &str) -> String {
    let end_of_tag = raw.find('>').unwrap_or(raw.len());
    for quote in ['"', '\''] {
        let needle = format!("id={quote}{old}{quote}");
        if let Some(at) = raw[..end_of_tag].find(&needle) {
            // Only a whole attribute name: `id=` preceded by whitespace.
            if raw[..at].ends_with(char::is_whitespace) {
                let mut s = String::with_capacity(raw.len() + new.len());
                s.push_str(&raw[..at]);
                let _ = write!(s, "id={quote}{new}{quote}");
                s.push_str(&raw[at + needle.len()..]);
                return s;
            }
        }
    }
    raw.to_owned()
}

/// One watcher in a watcher-info document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherEntry {
    /// A stable id for this subscription.
    pub id: String,
    /// The watcher's URI.
    pub uri: String,
    /// `active` or `terminated` (RFC 3857 §3.1).
    pub status: &'static str,
    /// `subscribe`, `approved`, `rejected`, `timeout`, … (RFC 3857 §3.2).
    pub event: &'static str,
    /// Seconds the subscription has been going.
    pub duration: u64,
}

/// An RFC 3857 watcher-info document (always full state) for `resource`'s presence.
pub fn watcherinfo(resource: &str, version: u64, watchers: &[WatcherEntry]) -> String {
    let mut out = String::with_capacity(256 + watchers.len() * 160);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<watcherinfo xmlns=\"urn:ietf:params:xml:ns:watcherinfo\" version=\"{version}\" state=\"full\">\n<watcher-list resource=\"{}\" package=\"presence\">\n",
        escape(resource)
    );
    for w in watchers {
        let _ = writeln!(
            out,
            "<watcher id=\"{}\" status=\"{}\" event=\"{}\" duration-subscribed=\"{}\">{}</watcher>",
            escape(&w.id),
            w.status,
            w.event,
            w.duration,
            escape(&w.uri)
        );
    }
    out.push_str("</watcher-list>\n</watcherinfo>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPML5: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n xmlns:im=\"urn:ietf:params:xml:ns:pidf:im\" entity=\"sip:bob@example.test\">\n<tuple id=\"s8794\">\n<status>\n   <basic>open</basic>\n   <im:im>away</im:im>\n</status>\n<contact priority=\"0.8\">tel:+33600000000</contact>\n<note  xml:lang=\"fr\">Bonjour de Paris :)</note>\n</tuple>\n</presence>";

    fn doc(id: &str, basic: &str, extra: &str) -> String {
        format!("<presence xmlns=\"{PIDF_NS}\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" entity=\"sip:bob@example.test\"><tuple id=\"{id}\"><status><basic>{basic}</basic></status></tuple><note>n-{id}</note>{extra}</presence>")
    }

    #[test]
    fn accepts_what_sipml5_publishes() {
        let p = parse(SIPML5.as_bytes()).unwrap();
        assert!(p.open);
        assert_eq!(p.tuples.len(), 1);
        assert_eq!(p.tuples[0].0, "s8794");
        assert_eq!(
            p.namespaces,
            vec![("im".into(), "urn:ietf:params:xml:ns:pidf:im".into())]
        );
        // The composed document is itself valid PIDF and keeps the im: extension.
        let composed = compose("sip:bob@example.test", [&p]);
        let again = parse(composed.as_bytes()).unwrap();
        assert!(again.tuples[0].1.contains("<im:im>away</im:im>"));
    }

    #[test]
    fn rejects_precisely() {
        assert!(matches!(
            parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple>"),
            Err(PidfError::Malformed(_))
        ));
        assert_eq!(parse(b"<a/>"), Err(PidfError::NotPidf));
        assert_eq!(
            parse(b"<presence xmlns='urn:other'/>"),
            Err(PidfError::NotPidf)
        );
        assert_eq!(
            parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>"),
            Err(PidfError::NoEntity)
        );
        assert_eq!(
            parse(b"<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf' entity='x'/>"),
            Err(PidfError::PrefixedRoot)
        );
        assert_eq!(
            parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple id='a'/></presence>"),
            Err(PidfError::BadTuple)
        );
        assert_eq!(parse(&[0xff, 0xfe]), Err(PidfError::NotUtf8));
        let reason = parse(b"<presence").unwrap_err().reason();
        assert!(
            reason.starts_with("Bad Request - Malformed PIDF XML"),
            "{reason}"
        );
        assert!(!reason.contains('\n'));
    }

    #[test]
    fn composes_two_devices_tuples_first_and_unique_ids() {
        let a = parse(doc("t1", "open", "<dm:person id='p'/>").as_bytes()).unwrap();
        let b = parse(doc("t1", "closed", "").as_bytes()).unwrap();
        let c = compose("sip:bob@example.test", [&a, &b]);
        let d = roxmltree::Document::parse(&c).unwrap();
        let names: Vec<_> = d
            .root_element()
            .children()
            .filter(|n| n.is_element())
            .map(|n| n.tag_name().name().to_owned())
            .collect();
        assert_eq!(names, ["tuple", "tuple", "note", "note", "person"]);
        let ids: Vec<_> = d
            .descendants()
            .filter(|n| n.tag_name().name() == "tuple")
            .map(|n| n.attribute("id").unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["t1", "t1-2"]);
        assert!(parse(c.as_bytes()).unwrap().open);
    }

    #[test]
    fn a_conflicting_prefix_drops_only_the_later_extensions() {
        let a = parse(doc("a", "open", "<dm:person id='p1'/>").as_bytes()).unwrap();
        let other = format!("<presence xmlns=\"{PIDF_NS}\" xmlns:dm=\"urn:x\" entity=\"sip:bob@example.test\"><tuple id=\"b\"><status><basic>open</basic></status></tuple><dm:thing/></presence>");
        let b = parse(other.as_bytes()).unwrap();
        let c = compose("sip:bob@example.test", [&a, &b]);
        assert!(roxmltree::Document::parse(&c).is_ok());
        assert!(c.contains("p1") && !c.contains("thing") && c.contains("id=\"b\""));
    }

    #[test]
    fn made_up_documents_are_valid() {
        for open in [true, false] {
            let d = basic("sip:a&b@example.test", open);
            assert_eq!(parse(d.as_bytes()).unwrap().open, open);
        }
        let w = watcherinfo(
            "sip:bob@example.test",
            3,
            &[WatcherEntry {
                id: "1".into(),
                uri: "sip:alice@example.test".into(),
                status: "active",
                event: "subscribe",
                duration: 5,
            }],
        );
        let d = roxmltree::Document::parse(&w).unwrap();
        assert_eq!(d.root_element().attribute("version"), Some("3"));
    }
}
