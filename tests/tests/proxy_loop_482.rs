//! A real forwarding loop ends in 482 (RFC 3261 §16.3 step 4, §16.6 step 8). Bob "registers"
//! from a UDP socket S a Contact naming the server itself (`<sip:bob@127.0.0.1:PORT>`, PORT =
//! the server's UDP port). S then behaves as a misconfigured proxy: every request it gets is
//! sent straight back to the server with S's own Via (new branch) on top and Max-Forwards - 1,
//! everything else unchanged; every response it gets is passed back down the Via path (its own
//! Via removed), as a proxy does.
//!
//! The first copy coming back has a new Request-URI (bob's Contact instead of his AOR): that is
//! a spiral, which a proxy must forward again. The second comes back identical in everything
//! the loop check covers (Request-URI, From tag, To tag, Call-ID, CSeq, Proxy-Require,
//! Proxy-Authorization, Route) and carries the server's own Via from the previous pass: a
//! loop, answered 482. The 482 then travels back through every pass to the sender.

use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    method_of, new_branch, register_ok, text, top_branch, via_list, Conn, Session, Ua,
};
use huddle_e2e::TestServer;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// How many copies S sends back at most before the test gives up.
const MAX_BOUNCES: usize = 10;

/// S's re-send of a request it received: its own Via on top, Max-Forwards - 1, all else kept.
fn bounce(req: &Message, s_via_host: &str) -> String {
    let raw = String::from_utf8(req.raw().to_vec()).expect("the server sends UTF-8 here");
    let (start, rest) = raw.split_once("\r\n").expect("a start line");
    let max_forwards = req
        .max_forwards()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no Max-Forwards in:\n{raw}"));
    assert!(max_forwards > 0, "S would not forward Max-Forwards 0");
    let mut out = format!(
        "{start}\r\nVia: SIP/2.0/UDP {s_via_host};branch={};rport\r\n",
        new_branch()
    );
    let (head, body) = rest.split_once("\r\n\r\n").expect("a header section");
    for line in head.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("max-forwards:") {
            out.push_str(&format!("Max-Forwards: {}\r\n", max_forwards - 1));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// S passing a response back down: its own (top) Via removed, the rest unchanged.
fn pass_down(resp: &Message) -> String {
    let raw = String::from_utf8(resp.raw().to_vec()).expect("the server sends UTF-8 here");
    let mut out = String::with_capacity(raw.len());
    let mut dropped = false;
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header section");
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if !dropped && (lower.starts_with("via:") || lower.starts_with("v:")) {
            dropped = true;
            // One Via element per header line is what the server writes.
            assert!(!line.contains(','), "S drops one Via element: {line}");
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_looping_through_a_misconfigured_hop_is_answered_482() {
    let server = TestServer::start().await;
    let udp = server.addr(Transport::Udp);

    // S registers bob with a Contact naming the server's own UDP address.
    let mut s_conn = Conn::udp(udp, "S").await;
    let s_addr = s_conn.local_addr();
    let mut bob = Ua::udp("bob", "bob-pw", s_addr);
    bob.contact_uri = format!("sip:bob@{udp}");
    register_ok(&mut s_conn, &bob, 300).await;

    // A user of another domain (never challenged) writes to bob.
    let mut eve = Ua::sipml5("eve", "not-ours");
    eve.domain = "foreign.test".to_owned();
    let mut e = Conn::ws(&server.ws_url(), "eve").await;
    let session = Session::new();
    e.send(&eve.message_request_to(
        "sip:bob@example.test",
        &session,
        "round and round",
        None,
        None,
    ))
    .await;

    // S bounces every request back and passes every response down, until a 482 shows up.
    let mut bounces = 0usize;
    let mut uris: Vec<String> = Vec::new();
    let mut sent_branches: Vec<String> = Vec::new();
    let (loop_detected_on, r482) = loop {
        let msg = s_conn
            .wait_for("a request or response for S", |m| {
                m.call_id() == Some(session.call_id.as_str())
            })
            .await;
        if msg.is_request() {
            assert_eq!(
                method_of(&msg).as_deref(),
                Some("MESSAGE"),
                "{}",
                text(&msg)
            );
            assert!(
                bounces < MAX_BOUNCES,
                "no 482 after {MAX_BOUNCES} bounces: the loop is not detected (RFC 3261 §16.3 \
                 step 4); last copy:\n{}",
                text(&msg)
            );
            uris.push(msg.request_uri().unwrap_or_default().to_owned());
            let back = bounce(&msg, &s_addr.to_string());
            sent_branches.push(top_branch(
                &Message::parse(back.clone().into()).expect("our bounce parses"),
            ));
            s_conn.send(&back).await;
            bounces += 1;
            continue;
        }
        let ours = top_branch(&msg);
        let Some(index) = sent_branches.iter().position(|b| *b == ours) else {
            panic!("S only gets responses to its own bounces:\n{}", text(&msg));
        };
        assert_eq!(
            msg.status(),
            Some(482),
            "S's bounce #{} was answered instead of being forwarded, and not with 482:\n{}",
            index + 1,
            text(&msg)
        );
        break (index + 1, msg);
    };
    println!(
        "loop detected on bounce #{loop_detected_on} of {bounces}; Request-URIs S received: \
         {uris:?}"
    );
    assert_eq!(
        uris.first().map(String::as_str),
        Some(bob.contact_uri.as_str()),
        "the first copy targets bob's (self-pointing) Contact"
    );
    assert!(
        loop_detected_on >= 2,
        "the first return has a new Request-URI (a spiral, RFC 3261 §16.3 step 4) and must be \
         forwarded, not answered 482"
    );
    assert_eq!(
        loop_detected_on, 2,
        "the second return is identical to the first in everything §16.3 step 4 compares and \
         carries the server's Via from that pass: it is already a loop"
    );
    assert_eq!(
        via_list(&r482).len(),
        4 + 1,
        "the 482 answers the second return: Vias S, server, S, server, eve:\n{}",
        text(&r482)
    );
    assert!(r482.header(&HeaderName::To).is_some());

    // S passes the 482 down, and each response the server sends it for the earlier passes,
    // until eve has her final response.
    let mut down = Some(r482);
    let mut passed = 0usize;
    let fin = loop {
        if let Some(r) = down.take() {
            s_conn.send(&pass_down(&r)).await;
            passed += 1;
            assert!(passed <= MAX_BOUNCES, "responses keep coming back to S");
        }
        let for_eve = |m: &Message| {
            !m.is_request()
                && m.call_id() == Some(session.call_id.as_str())
                && m.status().is_some_and(|c| c >= 200)
        };
        let for_s = |m: &Message| !m.is_request() && m.call_id() == Some(session.call_id.as_str());
        tokio::select! {
            f = e.wait_for_within(huddle_e2e::sip_client::WAIT, for_eve) => {
                break f.unwrap_or_else(|| panic!("eve got no final response"));
            }
            r = s_conn.wait_for_within(huddle_e2e::sip_client::WAIT, for_s) => {
                down = Some(r.unwrap_or_else(|| panic!("nothing came back to S or eve")));
            }
        }
    };
    assert_eq!(
        fin.status(),
        Some(482),
        "the 482 is the best (only) response of every pass and reaches the sender:\n{}",
        text(&fin)
    );
    assert_eq!(
        via_list(&fin).len(),
        1,
        "only eve's Via is left:\n{}",
        text(&fin)
    );
    println!("eve got the 482 after S passed {passed} responses down");
    server.stop().await;
}
