//! `echo`: the reference Huddle plugin, and the template to copy for a new one.
//!
//! Send a SIP MESSAGE to `sip:echo@<your domain>` and it answers `200 OK`, then sends the same
//! text back to you in a new MESSAGE, which the server delivers to wherever you are registered
//! (a browser tab over WebSocket, a desk phone over UDP).
//!
//! Call `sip:echo@<your domain>` from a WebRTC client (when the server runs its media engine)
//! and you get your own audio and video back, like Janus's EchoTest: the smallest complete
//! media plugin. See [`calls`] for the SIP side (INVITE, re-INVITE for hold/resume, BYE from
//! either side) and the two ways media can flow: the host's fast path (`media_forward`, the
//! default) or through the plugin (`incoming_rtp` → `send_rtp`, `media = "plugin"`).
//!
//! What it shows, in order of appearance:
//!
//! 1. typed configuration from the `[plugins.config]` table (`Config::parse`);
//! 2. claims: telling the server which requests are ours (`Claim`);
//! 3. answering a request (`Request::reply`, `Host::respond`);
//! 4. sending a request of our own (`NewRequest`, `Host::send_request`) and receiving its
//!    response (`Plugin::handle_response`);
//! 5. logging through the server (`huddle_sdk::info!` and friends);
//! 6. exporting it all as a loadable library (`export_plugin!`);
//! 7. unit tests that drive the plugin through the real C ABI with no server (`FakeHost`);
//! 8. media: answering an SDP offer with the host's engine, echoing RTP, ending calls.
//!
//! To start a plugin of your own: copy this folder to `plugins/<name>`, rename the package in
//! `Cargo.toml` and the name in `export_plugin!`, and replace the body of `handle_request`.
//! `sdk/README.md` has the whole walk from zero to a loaded plugin.

pub mod calls;

use std::collections::HashMap;

use huddle_sdk::{
    Capabilities, Claim, Claims, Config, HangupReason, Host, MediaSessionId, Method, NewRequest,
    Plugin, Request, RequestId, Response, Result,
};

use calls::{Calls, MediaPath};

/// The plugin's configuration: the `[plugins.config]` table of its `[[plugins]]` entry in
/// `huddle.toml`. Every field has a default, so no table at all is fine too.
#[derive(Debug, huddle_sdk::serde::Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct EchoConfig {
    /// The Request-URI user this plugin answers (`sip:<user>@<any local domain>`).
    pub user: String,
    /// How echoed media flows: `"forward"` (the host's fast path, no packet enters the
    /// plugin) or `"plugin"` (every packet through `incoming_rtp` and back with `send_rtp`).
    pub media: MediaPath,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            user: "echo".to_owned(),
            media: MediaPath::Forward,
        }
    }
}

/// One instance of the plugin. The server creates it once at start-up (`init`) and calls it
/// one callback at a time; it lives until the server stops.
#[derive(Debug)]
pub struct Echo {
    user: String,
    /// Echoes we sent and have no final response for yet: request id → recipient. Only used
    /// to say something useful in the log when an echo cannot be delivered.
    in_flight: HashMap<RequestId, String>,
    /// Audio/video calls (only when the host has a media engine).
    calls: Calls,
}

impl Plugin for Echo {
    fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
        // A typo in the config (`usr = ...`) fails start-up with a message naming the key,
        // rather than being silently ignored (`deny_unknown_fields`).
        let config: EchoConfig = config.parse()?;

        // Route MESSAGE requests whose Request-URI user is ours to this plugin. Claims are as
        // narrow as possible: another plugin may claim other methods to the same user, and the
        // server refuses to start if two plugins' claims overlap.
        claims.add(Claim::method("MESSAGE").with_user(&config.user));

        // Calls need the host's media engine. It is not required (the plugin still echoes
        // MESSAGE without it), so the capability is checked here rather than in
        // `export_plugin!`; without it, INVITE is left unclaimed and callers get the proxy's
        // answer (404/480) instead of a call that cannot carry media.
        if host.capabilities().contains(Capabilities::MEDIA) {
            claims.add(Claim::method("INVITE").with_user(&config.user));
            claims.add(Claim::method("BYE").with_user(&config.user));
            huddle_sdk::info!(
                host,
                "answering MESSAGE and calls to sip:{}@<domain>",
                config.user
            );
        } else {
            huddle_sdk::info!(
                host,
                "answering MESSAGE to sip:{}@<domain> (no media engine: no calls)",
                config.user
            );
        }
        Ok(Echo {
            calls: Calls::new(config.media),
            user: config.user,
            in_flight: HashMap::new(),
        })
    }

    fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
        if request.method() != &Method::Message {
            return self.calls.handle_request(host, request);
        }
        // The sender: where the echo goes. A MESSAGE without a usable From cannot be echoed.
        let Some(sender) = request.from_uri().map(str::to_owned) else {
            return host.reply(&request, 400, "Bad Request - No Usable From");
        };

        // Accept the message. `reply` builds the complete response from the request (Via,
        // From, To with our tag, Call-ID, CSeq) so a plugin never writes SIP by hand.
        host.reply(&request, 200, "OK")?;

        // Never echo our own echoes: if the server ever routed one of our MESSAGEs back to us,
        // two echo plugins (or one, twice) would bounce it forever.
        if is_user(&sender, &self.user) {
            huddle_sdk::debug!(host, "not echoing a message from {sender}");
            return Ok(());
        }

        // The echo: a new MESSAGE to the sender, from the address they wrote to, with the same
        // body and Content-Type (parameters such as charset included). No Via: the server adds
        // its own and routes the request through its location service to the sender's
        // registered devices.
        let content_type = request.content_type_full().unwrap_or("text/plain");
        let echo = NewRequest::new(Method::Message, &sender)
            .from(&format!("<{}>", request.uri()))
            .to(&format!("<{sender}>"))
            .body(content_type, request.body())
            .build();
        let id = host.send_request(&echo)?;
        self.in_flight.insert(id, sender);
        Ok(())
    }

    fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        // Provisional responses (1xx) are of no interest; the final one settles the echo.
        if !response.is_final() {
            return Ok(());
        }
        let Some(to) = self.in_flight.remove(&response.request_id()) else {
            // Not an echoed MESSAGE: a BYE the call side sent.
            return self.calls.handle_response(host, response);
        };
        match response.status() {
            200..=299 => huddle_sdk::debug!(host, "echo delivered to {to}"),
            // 480: not registered any more; 408: nobody answered. Not our fault, just say so.
            status => huddle_sdk::info!(host, "echo to {to} not delivered: {status}"),
        }
        Ok(())
    }

    fn media_ready(&mut self, host: &Host, session: MediaSessionId) -> Result<()> {
        self.calls.media_ready(host, session)
    }

    fn incoming_rtp(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        self.calls.incoming_rtp(host, session, mid, packet)
    }

    fn incoming_rtcp(&mut self, host: &Host, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        self.calls.incoming_rtcp(host, session, packet)
    }

    fn media_hangup(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        reason: HangupReason,
    ) -> Result<()> {
        self.calls.media_hangup(host, session, reason)
    }
}

/// Whether `uri` is a SIP URI whose user part is `user`.
fn is_user(uri: &str, user: &str) -> bool {
    huddle_sdk::sip::uri::SipUri::parse(uri)
        .ok()
        .and_then(|u| u.user)
        .is_some_and(|u| u == user)
}

// The one exported symbol, `huddle_plugin_entry_v1`. "echo" names the plugin (and its store
// namespace `plugin/echo/`); the capabilities are what it cannot work without: sending requests.
huddle_sdk::export_plugin!(
    Echo,
    "echo",
    env!("CARGO_PKG_VERSION"),
    Capabilities::SEND_REQUEST
);

#[cfg(test)]
mod tests {
    //! Unit tests: the FakeHost starts the plugin through its exported descriptor and the C ABI
    //! trampolines, exactly as the server does, and records what it sends.

    use super::*;
    use huddle_sdk::fake::{sample_request, FakeHost};
    use huddle_sdk::{Error, HeaderName, Level};

    /// The address the plugin answers by default (`sip:echo@example.test`); the tests use it
    /// rather than spelling it out, so a renamed copy of this plugin keeps passing them.
    fn our_uri() -> String {
        format!("sip:{}@example.test", EchoConfig::default().user)
    }

    fn start(config: &str) -> (FakeHost, huddle_sdk::fake::FakePlugin) {
        let host = FakeHost::new();
        let plugin = host
            .start(&huddle_plugin_export::entry(), config)
            .expect("echo starts");
        (host, plugin)
    }

    #[test]
    fn answers_200_and_echoes_the_text_back_to_the_sender() {
        let (host, mut plugin) = start("");
        let txn = plugin
            .request(sample_request("MESSAGE", &our_uri(), "hello, echo"))
            .unwrap();

        let response = host.final_response(txn).expect("answered");
        assert_eq!(response.status(), 200);

        let sent = host.sent_requests();
        assert_eq!(sent.len(), 1, "one echo");
        let echo = &sent[0].message;
        assert_eq!(echo.method(), Some(&Method::Message));
        assert_eq!(echo.request_uri(), Some("sip:alice@example.test"));
        assert_eq!(echo.to_header().unwrap().uri, "sip:alice@example.test");
        assert_eq!(echo.from_header().unwrap().uri, our_uri());
        assert!(echo.from_header().unwrap().tag().is_some());
        assert_eq!(echo.body(), b"hello, echo");
        assert_eq!(echo.content_type(), Some("text/plain"));
        assert!(
            echo.header(&HeaderName::Via).is_none(),
            "the host adds the Via"
        );
    }

    #[test]
    fn keeps_the_content_type_with_its_parameters() {
        let (host, mut plugin) = start("");
        let mut req =
            String::from_utf8(sample_request("MESSAGE", &our_uri(), "hi").to_vec()).unwrap();
        req = req.replace(
            "Content-Type: text/plain",
            "Content-Type: text/plain;charset=UTF-8",
        );
        plugin.request(req).unwrap();
        let echo = &host.sent_requests()[0].message;
        assert_eq!(
            echo.header(&HeaderName::ContentType),
            Some("text/plain;charset=UTF-8")
        );
    }

    #[test]
    fn claims_only_message_to_its_user() {
        let (_, plugin) = start("");
        let user = EchoConfig::default().user;
        assert_eq!(
            plugin.claims(),
            &[Claim::method("MESSAGE").with_user(&user)]
        );
        assert!(!plugin.claims_request(&sample_request("MESSAGE", "sip:bob@example.test", "x")));
        assert!(!plugin.claims_request(&sample_request("OPTIONS", &our_uri(), "")));

        let (_, plugin) = start("user = \"mirror\"");
        assert!(plugin.claims_request(&sample_request("MESSAGE", "sip:mirror@example.test", "x")));
    }

    #[test]
    fn a_config_typo_fails_start_up_naming_the_key() {
        let host = FakeHost::new();
        let err = host
            .start(&huddle_plugin_export::entry(), "usr = \"echo\"")
            .unwrap_err();
        assert!(err.to_string().contains("failed to initialise"), "{err}");
        assert!(host.logged(Level::Warn, "usr"));
    }

    #[test]
    fn does_not_echo_its_own_messages() {
        let (host, mut plugin) = start("");
        let req = String::from_utf8(sample_request("MESSAGE", &our_uri(), "loop?").to_vec())
            .unwrap()
            .replace("sip:alice@example.test", &our_uri());
        let txn = plugin.request(req).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert!(host.sent_requests().is_empty());
    }

    #[test]
    fn logs_an_echo_that_could_not_be_delivered() {
        let (host, mut plugin) = start("");
        plugin
            .request(sample_request("MESSAGE", &our_uri(), "anyone?"))
            .unwrap();
        let sent = host.take_sent_requests();
        plugin.answer(&sent[0], 100, "Trying").unwrap();
        plugin
            .answer(&sent[0], 480, "Temporarily Unavailable")
            .unwrap();
        assert!(host.logged(
            Level::Info,
            "echo to sip:alice@example.test not delivered: 480"
        ));
    }

    // ---- calls (the host's media engine, faked) ----

    use huddle_sdk::fake::{MediaCall, FAKE_SDP_ANSWER};
    use huddle_sdk::{HangupReason, MediaSessionId};

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";

    fn invite(body: &str, extra: &str) -> String {
        let uri = our_uri();
        format!(
            "INVITE {uri};transport=ws SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bKinv1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=al1\r\nTo: <{uri}>\r\n\
             Call-ID: call-1\r\nCSeq: 7 INVITE\r\nContact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\n\
             {extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn in_dialog(method: &str, to_tag: &str, cseq: u32, body: &str) -> String {
        let uri = our_uri();
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bK{method}{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=al1\r\nTo: <{uri}>;tag={to_tag}\r\n\
             Call-ID: call-1\r\nCSeq: {cseq} {method}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn media_host(config: &str) -> (FakeHost, huddle_sdk::fake::FakePlugin) {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        let plugin = host
            .start(&huddle_plugin_export::entry(), config)
            .expect("echo starts");
        (host, plugin)
    }

    #[test]
    fn with_a_media_engine_it_claims_calls_too() {
        let (_, plugin) = media_host("");
        let user = EchoConfig::default().user;
        assert!(plugin
            .claims()
            .contains(&Claim::method("INVITE").with_user(&user)));
        assert!(plugin
            .claims()
            .contains(&Claim::method("BYE").with_user(&user)));
        let (_, plugin) = start("");
        assert!(!plugin.claims_request(&sample_request("INVITE", &our_uri(), "")));
    }

    #[test]
    fn a_call_is_answered_by_the_host_and_echoed_in_the_fast_path() {
        let (host, mut plugin) = media_host("");
        let txn = plugin.request(invite(OFFER, "")).unwrap();
        let ok = host.final_response(txn).unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.message.body(), FAKE_SDP_ANSWER);
        assert_eq!(ok.message.content_type(), Some("application/sdp"));
        assert_eq!(
            ok.message.header(&HeaderName::Contact),
            Some(format!("<{}>", our_uri()).as_str())
        );
        assert!(ok.message.header(&HeaderName::RecordRoute).is_none());
        let calls = host.media_calls();
        let MediaCall::Answer { session, offer } = &calls[0] else {
            panic!("first the answer: {calls:?}");
        };
        assert_eq!(offer, OFFER.as_bytes());
        for mid in ["0", "1"] {
            assert!(
                calls.contains(&MediaCall::Forward {
                    src: *session,
                    src_mid: mid.into(),
                    dst: *session,
                    dst_mid: mid.into()
                }),
                "stream {mid} forwarded into itself: {calls:?}"
            );
        }
    }

    #[test]
    fn hold_renegotiates_the_same_session_and_bye_closes_it() {
        let (host, mut plugin) = media_host("");
        let txn = plugin.request(invite(OFFER, "")).unwrap();
        let ok = host.final_response(txn).unwrap();
        let tag = ok.message.to_header().unwrap().tag().unwrap().to_owned();
        let held = OFFER.replace("a=mid:1", "a=mid:1\r\na=sendonly");
        let txn = plugin.request(in_dialog("INVITE", &tag, 8, &held)).unwrap();
        let ok2 = host.final_response(txn).unwrap();
        assert_eq!(ok2.status(), 200);
        assert_eq!(ok2.message.to_header().unwrap().tag(), Some(tag.as_str()));
        let answers: Vec<_> = host
            .media_calls()
            .into_iter()
            .filter_map(|c| match c {
                MediaCall::Answer { session, .. } => Some(session),
                _ => None,
            })
            .collect();
        assert_eq!(answers.len(), 2);
        assert_eq!(
            answers[0], answers[1],
            "the re-INVITE renegotiates the same session"
        );

        let txn = plugin.request(in_dialog("BYE", &tag, 9, "")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert!(host.media_calls().contains(&MediaCall::Close {
            session: answers[0]
        }));
        // The hang-up that follows a close is not news: no BYE goes out.
        plugin
            .media_hangup(answers[0], HangupReason::Normal)
            .unwrap();
        assert!(host.sent_requests().is_empty());
        // A BYE for a call that is gone.
        let txn = plugin.request(in_dialog("BYE", &tag, 10, "")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 481);
    }

    #[test]
    fn a_failed_transport_ends_the_dialog_with_a_bye_along_the_record_route() {
        let (host, mut plugin) = media_host("");
        let rr = "Record-Route: <sip:127.0.0.1:5060;transport=ws;lr;ftok=abc>\r\nRecord-Route: <sip:127.0.0.1:5060;lr>\r\n";
        let txn = plugin.request(invite(OFFER, rr)).unwrap();
        let ok = host.final_response(txn).unwrap();
        let tag = ok.message.to_header().unwrap().tag().unwrap().to_owned();
        let session = MediaSessionId(match &host.media_calls()[0] {
            MediaCall::Answer { session, .. } => session.0,
            other => panic!("{other:?}"),
        });
        plugin
            .media_hangup(session, HangupReason::Transport)
            .unwrap();
        let sent = host.sent_requests();
        assert_eq!(sent.len(), 1, "one BYE");
        let bye = &sent[0].message;
        assert_eq!(bye.method(), Some(&Method::Bye));
        assert_eq!(
            bye.request_uri(),
            Some("sip:alice@df7jal23ls0d.invalid;transport=ws")
        );
        assert_eq!(bye.call_id(), Some("call-1"));
        assert_eq!(bye.from_header().unwrap().tag(), Some(tag.as_str()));
        assert_eq!(bye.to_header().unwrap().tag(), Some("al1"));
        let routes: Vec<&str> = bye.header_list(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            [
                "<sip:127.0.0.1:5060;transport=ws;lr;ftok=abc>",
                "<sip:127.0.0.1:5060;lr>"
            ]
        );
    }

    #[test]
    fn offers_the_host_refuses_are_answered_with_its_status_and_warning() {
        let (host, mut plugin) = media_host("");
        let phone = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let txn = plugin.request(invite(phone, "")).unwrap();
        let r = host.final_response(txn).unwrap();
        assert_eq!(r.status(), 488);
        assert!(r
            .message
            .header(&HeaderName::Warning)
            .unwrap()
            .starts_with("399 huddle \""));
        let txn = plugin.request(invite("garbage", "")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 400);
        let txn = plugin.request(invite("", "")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 488);
    }

    #[test]
    fn through_the_plugin_packets_go_back_and_key_frame_requests_go_to_the_caller() {
        let (host, mut plugin) = media_host("media = \"plugin\"");
        let txn = plugin.request(invite(OFFER, "")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        let session = MediaSessionId(match &host.media_calls()[0] {
            MediaCall::Answer { session, .. } => session.0,
            other => panic!("{other:?}"),
        });
        assert!(
            !host
                .media_calls()
                .iter()
                .any(|c| matches!(c, MediaCall::Forward { .. })),
            "no fast path"
        );
        let packet = [0x80, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 1, 2, 3];
        plugin.incoming_rtp(session, "1", &packet).unwrap();
        assert!(host.media_calls().contains(&MediaCall::Rtp {
            session,
            mid: "1".into(),
            packet: packet.to_vec()
        }));
        plugin
            .incoming_rtcp(session, &[0x81, 206, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7])
            .unwrap();
        assert!(host.media_calls().contains(&MediaCall::Keyframe {
            session,
            mid: "1".into()
        }));
    }

    /// Echo with a fault injected: panics when the body is "panic". Loaded with
    /// `plugin_entry!`, which builds the same descriptor and trampolines as `export_plugin!`.
    struct PanicOnCue(Echo);

    impl Plugin for PanicOnCue {
        fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
            Echo::init(host, config, claims).map(PanicOnCue)
        }

        fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
            assert_ne!(request.body(), b"panic", "injected fault");
            self.0.handle_request(host, request)
        }
    }

    #[test]
    fn a_panic_is_answered_500_and_the_plugin_keeps_serving() {
        let host = FakeHost::new();
        let entry =
            huddle_sdk::plugin_entry!(PanicOnCue, "faulty", "0", Capabilities::SEND_REQUEST);
        let mut plugin = host.start(&entry, "").unwrap();

        let result = plugin.request(sample_request("MESSAGE", &our_uri(), "panic"));
        assert_eq!(result, Err(Error::Panic));
        let answer = host.responses().pop().unwrap();
        assert_eq!((answer.status(), answer.synthetic), (500, true));
        assert!(host.logged(Level::Error, "panic in handle_request: assertion"));

        let txn = plugin
            .request(sample_request("MESSAGE", &our_uri(), "still there?"))
            .unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert_eq!(host.sent_requests().len(), 1);
    }
}
