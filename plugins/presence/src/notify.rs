//! The NOTIFY requests of one subscription dialog, written from a template.
//!
//! Everything in a NOTIFY but its CSeq, Subscription-State and body is fixed for the life of
//! the dialog (Request-URI, From with our tag, To, Call-ID, route set, Contact, Event), so it
//! is written once when the subscription is created or restored, and each NOTIFY of a
//! thousand-watcher fan-out is a few copies into one buffer instead of a request built field
//! by field. The bytes are exactly those [`huddle_sdk::NewRequest`] writes for the same
//! dialog (a unit test holds the two together).

use huddle_sdk::Bytes;

use crate::core::SubscriptionRecord;

/// What the host adds nothing for: only failures of our NOTIFYs come back (see the host's
/// `Huddle-Report`), so the 2xx of each of the thousands of NOTIFYs of a busy presentity is
/// not handed to us.
const REPORT: &[u8] = b"Huddle-Report: failures\r\n";

/// The fixed parts of a dialog's NOTIFYs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTemplate {
    /// The request line to Call-ID (the CSeq follows).
    head: Box<[u8]>,
    /// Route set, Contact, Huddle-Report and Event (Subscription-State follows).
    tail: Box<[u8]>,
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl NotifyTemplate {
    /// The template of `rec`'s dialog.
    pub fn new(rec: &SubscriptionRecord) -> NotifyTemplate {
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"NOTIFY ");
        head.extend_from_slice(rec.target.as_bytes());
        head.extend_from_slice(b" SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <");
        head.extend_from_slice(rec.local_uri.as_bytes());
        head.extend_from_slice(b">;tag=");
        head.extend_from_slice(rec.local_tag.as_bytes());
        head.extend_from_slice(b"\r\n");
        header(&mut head, "To", &rec.remote);
        header(&mut head, "Call-ID", &rec.call_id);
        let mut tail = Vec::with_capacity(128);
        for r in &rec.route {
            header(&mut tail, "Route", r);
        }
        header(&mut tail, "Contact", &rec.contact);
        tail.extend_from_slice(REPORT);
        header(&mut tail, "Event", &rec.event);
        NotifyTemplate {
            head: head.into_boxed_slice(),
            tail: tail.into_boxed_slice(),
        }
    }

    /// The NOTIFY with CSeq `cseq`, Subscription-State `state` and a body of `content_type`;
    /// also where its body starts.
    pub fn request(
        &self,
        cseq: u32,
        state: &str,
        content_type: &str,
        body: &str,
    ) -> (Bytes, usize) {
        let mut out = Vec::with_capacity(
            self.head.len() + self.tail.len() + state.len() + content_type.len() + body.len() + 96,
        );
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"CSeq: ");
        push_decimal(&mut out, cseq as usize);
        out.extend_from_slice(b" NOTIFY\r\n");
        out.extend_from_slice(&self.tail);
        header(&mut out, "Subscription-State", state);
        header(&mut out, "Content-Type", content_type);
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(&mut out, body.len());
        out.extend_from_slice(b"\r\n\r\n");
        let body_at = out.len();
        out.extend_from_slice(body.as_bytes());
        (Bytes::from(out), body_at)
    }
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Package;
    use huddle_sdk::{Message, Method, NewRequest};

    fn record(route: &[&str]) -> SubscriptionRecord {
        SubscriptionRecord {
            id: 7,
            package: Package::Presence,
            presentity: "bob@example.test".into(),
            watcher: "alice@example.test".into(),
            event: "presence;id=1".into(),
            call_id: "c-1@x".into(),
            local_tag: "t42".into(),
            remote: "\"Alice\" <sip:alice@example.test>;tag=a1".into(),
            local_uri: "sip:bob@example.test".into(),
            target: "sip:df7jal23@ls4bb8ooqn.invalid;transport=ws".into(),
            route: route.iter().map(|r| (*r).to_owned()).collect(),
            contact: "<sip:bob@127.0.0.1:5060>".into(),
            local_cseq: 1,
            remote_cseq: 1,
            expires_at_ms: 0,
            started_ms: 0,
            over_connection: true,
            allowed: true,
        }
    }

    /// What the SDK's request builder writes for the same NOTIFY.
    fn built(rec: &SubscriptionRecord, cseq: u32, state: &str, body: &str) -> Bytes {
        let mut req = NewRequest::new(Method::Notify, &rec.target)
            .from(&format!("<{}>;tag={}", rec.local_uri, rec.local_tag))
            .to(&rec.remote)
            .call_id(&rec.call_id)
            .cseq(cseq);
        for r in &rec.route {
            req = req.header("Route", r);
        }
        req.header("Contact", &rec.contact)
            .header("Huddle-Report", "failures")
            .header("Event", &rec.event)
            .header("Subscription-State", state)
            .body(rec.package.content_type(), body.as_bytes())
            .build()
    }

    #[test]
    fn a_templated_notify_is_the_request_the_sdk_builds() {
        for route in [
            &[][..],
            &[
                "<sip:127.0.0.1:5060;transport=tcp;lr>",
                "<sip:tok@127.0.0.1:5060;transport=ws;lr>",
            ][..],
        ] {
            let rec = record(route);
            let t = NotifyTemplate::new(&rec);
            for (cseq, state, body) in [
                (1, "active;expires=300", "<presence/>"),
                (1_048_577, "terminated;reason=timeout", ""),
                (0x7fff_ffff, "active;expires=1", "x"),
            ] {
                let (bytes, body_at) = t.request(cseq, state, "application/pidf+xml", body);
                assert_eq!(
                    bytes,
                    built(&rec, cseq, state, body),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
                assert_eq!(&bytes[body_at..], body.as_bytes());
                let m = Message::parse(bytes).unwrap();
                assert_eq!(m.cseq().unwrap().seq, cseq);
                assert_eq!(
                    m.header_list(&huddle_sdk::HeaderName::Route).count(),
                    route.len()
                );
            }
        }
    }

    #[test]
    fn decimals_are_written_in_full() {
        for n in [0, 9, 10, 4_294_967_295, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
