//! The echo plugin's calls over SIP alone (no browser, no ICE): a SIPml5-shaped client over
//! WebSocket calls `sip:echo@example.test`.
//!
//! * a WebRTC offer (Chrome-like, 6 KB, BUNDLE, DTLS actpass) is answered 200 by the host's
//!   media engine with ICE-lite, our candidate, a fingerprint, rtcp-mux and BUNDLE; the client
//!   never does ICE, so after `connect_timeout_secs` the leg is torn down and echo ends the
//!   dialog with a BYE that reaches the client's `.invalid` Contact over its connection;
//! * a plain RTP/AVP offer (a SIP phone) gets 488 with a Warning;
//! * malformed SDP gets 400 naming the fault.

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::sip_client::{
    chrome_sdp, register_ok, response, send_through_407, text, Conn, Dialog, Session, Ua,
};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

async fn echo_server() -> PluginServer {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-echo"));
    // A short connect timeout: the client below never does ICE.
    let extra = format!(
        "[media]\nconnect_timeout_secs = 1\n{}",
        plugin_entry(&lib, "")
    );
    PluginServer::start(&extra).await
}

/// Calls echo with `sdp` through the 407 challenge; returns the INVITE sent and the final
/// response.
async fn call_echo(conn: &mut Conn, ua: &Ua, sdp: &str) -> (String, Message) {
    let mut s = Session::new();
    let invite = send_through_407(
        conn,
        ua,
        &mut s,
        "INVITE",
        "sip:echo@example.test",
        |s, auth| ua.invite_request("echo", s, sdp, auth),
    )
    .await;
    let fin = conn.final_response(&s.call_id, s.cseq).await;
    (invite, fin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_that_never_connects_is_torn_down_and_echo_sends_bye() {
    let server = echo_server().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    register_ok(&mut a, &alice, 300).await;

    // SIPml5's Chrome offer, with the video payload types the helper lists but does not
    // describe left out (a real Chrome offer has an rtpmap for every one).
    let offer = chrome_sdp("actpass", 6 * 1024).replace(
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 118 119 120",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45 98 118 120",
    );
    let (invite, ok) = call_echo(&mut a, &alice, &offer).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    let answer = String::from_utf8_lossy(ok.body()).into_owned();
    let media = server.running.media_addr().expect("the media engine runs");
    for needle in [
        "a=ice-lite",
        "a=group:BUNDLE",
        "a=rtcp-mux",
        "a=fingerprint:sha-256 ",
        "a=ice-ufrag:",
        "UDP/TLS/RTP/SAVPF",
        &format!("{} {} typ host", media.ip(), media.port()),
    ] {
        assert!(
            answer.contains(needle),
            "no {needle:?} in the answer:\n{answer}"
        );
    }
    assert!(
        ok.header(&HeaderName::Contact).is_some(),
        "a Contact in the 2xx:\n{}",
        text(&ok)
    );
    let mut dialog = Dialog::caller(&invite, &ok, None);
    a.send(&dialog.request(&alice, "ACK", &[], None)).await;
    assert_eq!(server.running.media_sessions(), 1);

    // No ICE, no DTLS: after the connect timeout the leg goes, and echo hangs up.
    let bye = a.recv_request("BYE").await;
    assert_eq!(bye.call_id(), ok.call_id(), "{}", text(&bye));
    a.send(&response(&bye, 200, "OK", None, &[], None)).await;
    assert_eq!(server.running.media_sessions(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rtp_is_488_with_a_warning_and_malformed_sdp_is_400() {
    let server = echo_server().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    register_ok(&mut a, &alice, 300).await;

    let phone = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";
    let (invite, refused) = call_echo(&mut a, &alice, phone).await;
    assert_eq!(refused.status(), Some(488), "{}", text(&refused));
    let warning = refused.header(&HeaderName::Warning).unwrap_or_default();
    assert!(
        warning.starts_with("399 ") && warning.contains("RTP/AVP"),
        "a Warning explaining the refusal:\n{}",
        text(&refused)
    );
    a.send(&huddle_e2e::sip_client::ack_for_failure(
        &Message::parse(bytes::Bytes::from(invite)).unwrap(),
        &refused,
    ))
    .await;

    let (invite, bad) = call_echo(&mut a, &alice, "v=0\r\nthis is not sdp\r\n").await;
    assert_eq!(bad.status(), Some(400), "{}", text(&bad));
    assert!(
        bad.reason().unwrap_or_default().contains("SDP"),
        "the reason names the SDP:\n{}",
        text(&bad)
    );
    a.send(&huddle_e2e::sip_client::ack_for_failure(
        &Message::parse(bytes::Bytes::from(invite)).unwrap(),
        &bad,
    ))
    .await;
    assert_eq!(server.running.media_sessions(), 0);
    server.stop().await;
}
