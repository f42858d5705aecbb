//! The server side of a dialog as a plugin that answers requests keeps it (RFC 3261 §12.1.2):
//! what it needs to send requests of its own in the dialog — a BYE when a call's media ends
//! first, a NOTIFY for a subscription — and the answers every call-taking plugin gives the same
//! way (a refused SDP offer).
//!
//! The plugin's 200 carries its own Request-URI (without parameters) as Contact, so the peer's
//! in-dialog requests come back to it; the Record-Route values the host added to the request
//! (its address and, for a browser, the connection's flow token) become the route set of the
//! plugin's requests, which is how they reach a client whose Contact is `*.invalid`.

use huddle_sip::headers::NameAddr;
use huddle_sip::{HeaderName, Method};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::message::{NewRequest, Request};

/// One dialog, from the side that answered the dialog-creating request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UasDialog {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag (To of the peer's requests, From of ours).
    pub local_tag: String,
    /// Our URI: the From of our requests and our Contact.
    pub local_uri: String,
    /// The peer's From, with its tag: the To of our requests.
    pub remote: String,
    /// The peer's Contact: the Request-URI of our requests (empty when it sent none).
    pub remote_target: String,
    /// The Record-Route values of the dialog-creating request, in order: our Route set.
    pub routes: Vec<String>,
    /// The CSeq of the last request we sent (our own number space, RFC 3261 §12.2.1.1).
    pub local_cseq: u32,
}

impl UasDialog {
    /// The dialog a dialog-creating request (INVITE, SUBSCRIBE) starts when we answer it with
    /// [`Request::local_tag`] as our tag.
    pub fn accept(request: &Request) -> UasDialog {
        let message = request.message();
        UasDialog {
            call_id: message.call_id().unwrap_or_default().to_owned(),
            local_tag: request.local_tag().to_owned(),
            local_uri: strip_params(request.uri()).to_owned(),
            remote: message
                .header(&HeaderName::From)
                .unwrap_or_default()
                .to_owned(),
            remote_target: contact_uri(request).unwrap_or_default(),
            routes: message
                .header_list(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect(),
            local_cseq: 0,
        }
    }

    /// A target refresh (re-INVITE, re-SUBSCRIBE): the peer's new Contact, if it sent one.
    pub fn refresh_target(&mut self, request: &Request) {
        if let Some(target) = contact_uri(request) {
            self.remote_target = target;
        }
    }

    /// A new request in the dialog (From, To, Call-ID, the next CSeq and the Route set set);
    /// add headers and a body, then [`NewRequest::build`].
    pub fn request(&mut self, method: Method) -> NewRequest {
        self.local_cseq += 1;
        let mut request = NewRequest::new(method, &self.remote_target)
            .from(&format!("<{}>;tag={}", self.local_uri, self.local_tag))
            .to(&self.remote)
            .call_id(&self.call_id)
            .cseq(self.local_cseq);
        for route in &self.routes {
            request = request.header("Route", route);
        }
        request
    }

    /// Ends the dialog from our side: sends a BYE.
    pub fn send_bye(&mut self, host: &Host) -> Result<()> {
        host.send_request(&self.request(Method::Bye).build())
            .map(|_| ())
    }
}

/// Whether a request belongs to a dialog (its To has a tag).
pub fn is_in_dialog(request: &Request) -> bool {
    request
        .message()
        .to_header()
        .ok()
        .and_then(|t| t.tag())
        .is_some()
}

/// Answers an INVITE whose offer [`Host::media_answer`] refused with `error`: the host's
/// status and reason (with its explanation as a `Warning`) for an SDP it cannot answer, 503
/// with `Retry-After` when the media engine is busy. Other errors are returned for the SDK
/// to answer (500).
pub fn refuse_offer(host: &Host, request: &Request, error: Error) -> Result<()> {
    let txn = request.transaction().ok_or(Error::UnknownTransaction)?;
    match error {
        Error::Sdp(refusal) => {
            let mut response = request.response(refusal.status, &refusal.reason);
            let warning;
            if let Some(w) = &refusal.warning {
                warning = format!("399 huddle \"{}\"", w.replace('"', "'"));
                response = response.header("Warning", &warning);
            }
            host.respond(txn, &response.build())
        }
        Error::Busy => {
            let response = request
                .response(503, "Service Unavailable - Media Busy")
                .header("Retry-After", "5")
                .build();
            host.respond(txn, &response)
        }
        e => Err(e),
    }
}

/// The URI of the request's Contact.
pub fn contact_uri(request: &Request) -> Option<String> {
    let value = request.message().header(&HeaderName::Contact)?;
    NameAddr::parse(value).ok().map(|a| a.uri.to_owned())
}

/// A URI without its parameters (`sip:echo@example.test;transport=ws` →
/// `sip:echo@example.test`).
pub fn strip_params(uri: &str) -> &str {
    uri.split(';').next().unwrap_or(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{RequestInfo, TransactionId, Transport};

    const INVITE: &str = "INVITE sip:echo@example.test;transport=ws SIP/2.0\r\n\
        Via: SIP/2.0/WS h.invalid;branch=z9hG4bK1\r\n\
        Record-Route: <sip:127.0.0.1:5060;lr;ftag=x>\r\n\
        Record-Route: <sip:127.0.0.1:8080;transport=ws;lr>\r\n\
        Max-Forwards: 70\r\nFrom: \"Al\" <sip:alice@example.test>;tag=a1\r\n\
        To: <sip:echo@example.test>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\
        Contact: <sip:a@x.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n";

    fn request(text: &str) -> Request {
        Request::parse(
            Some(TransactionId(1)),
            crate::Bytes::copy_from_slice(text.as_bytes()),
            RequestInfo::new(Transport::Ws, None),
        )
        .unwrap()
    }

    #[test]
    fn a_bye_goes_to_the_contact_through_the_record_route_with_our_own_cseq() {
        let invite = request(INVITE);
        assert!(!is_in_dialog(&invite));
        let mut dialog = UasDialog::accept(&invite);
        assert_eq!(dialog.local_uri, "sip:echo@example.test");
        let bye = dialog.request(Method::Bye).build();
        let bye = huddle_sip::Message::parse(bye).unwrap();
        assert_eq!(bye.request_uri(), Some("sip:a@x.invalid;transport=ws"));
        let routes: Vec<&str> = bye.header_list(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            [
                "<sip:127.0.0.1:5060;lr;ftag=x>",
                "<sip:127.0.0.1:8080;transport=ws;lr>"
            ]
        );
        assert_eq!(bye.cseq().unwrap().seq, 1);
        assert_eq!(bye.to_header().unwrap().tag(), Some("a1"));
        assert_eq!(bye.from_header().unwrap().tag(), Some(invite.local_tag()));
        let again = huddle_sip::Message::parse(dialog.request(Method::Bye).build()).unwrap();
        assert_eq!(
            again.cseq().unwrap().seq,
            2,
            "the next request, the next CSeq"
        );
    }
}
