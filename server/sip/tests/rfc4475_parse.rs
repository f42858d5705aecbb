//! Every RFC 4475 torture message through the parser and validator, checked against the
//! verdict in `shared/corpus/rfc4475/INDEX.tsv`. The full receive path (transport, core,
//! responses on the wire) is covered by the end-to-end runner in `tests/`.

use bytes::Bytes;
use huddle_sip::validate::{validate_request, validate_response, Capabilities};
use huddle_sip::Message;

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/rfc4475")
}

/// What our parser + validator do with a message: Ok(None) accepted, Ok(Some(code)) answered
/// with an error code, Err(()) dropped.
fn outcome(raw: &[u8]) -> Result<Option<u16>, ()> {
    let msg = Message::parse(Bytes::copy_from_slice(raw)).map_err(|_| ())?;
    if msg.is_request() {
        Ok(validate_request(&msg, &Capabilities::default())
            .err()
            .map(|r| r.status))
    } else {
        validate_response(&msg).map(|_| None).map_err(|_| ())
    }
}

#[test]
fn corpus_verdicts() {
    let index = std::fs::read_to_string(corpus_dir().join("INDEX.tsv")).expect("corpus index");
    let mut failures = Vec::new();
    let mut seen = 0;
    for line in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, verdict, expected) = (cols[0], cols[3], cols[4]);
        let raw = std::fs::read(corpus_dir().join(file)).expect("corpus file");
        seen += 1;
        let got = outcome(&raw);
        let ok = match verdict {
            "valid" => match expected {
                e if e.starts_with("416") => got == Ok(Some(416)),
                "420" => got == Ok(Some(420)),
                // Answered by the element that terminates the request (UAS, registrar, proxy
                // Max-Forwards check): the message itself must pass validation.
                _ => got == Ok(None),
            },
            "reject" | "reject-liberal" => matches!(got, Err(()) | Ok(Some(400))),
            "semantic" => match expected {
                "505" => got == Ok(Some(505)),
                _ => matches!(got, Ok(Some(400)) | Ok(Some(501))),
            },
            other => panic!("unknown verdict {other}"),
        };
        if !ok {
            failures.push(format!("{file}: verdict {verdict} {expected}, got {got:?}"));
        }
    }
    assert!(seen >= 49, "corpus has {seen} entries");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
