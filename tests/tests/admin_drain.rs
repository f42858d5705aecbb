//! Drain through the admin API finishes what is in progress: a call established before
//! `POST /drain` stays up — its in-dialog requests (INFO, BYE) still route both ways — while a
//! new INVITE and a new REGISTER are answered `503` with `Retry-After`. SIPml5-shaped clients
//! over WebSocket (`tests/sip_client.rs`), a real server on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use huddle_e2e::sip_client::{
    answer, chrome_sdp, register, response, ring, send_through_407, text, Conn, Dialog, Session, Ua,
};
use huddle_e2e::{TestServer, DOMAIN};
use huddle_sip::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "drain-token";

/// One HTTP/1.1 exchange; returns the status.
async fn http(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8(raw).expect("UTF-8")
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the admin API answers within 10 s");
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_established_before_drain_stays_up_until_bye() {
    let server = TestServer::start_with(
        DOMAIN,
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    )
    .await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut b = Conn::ws(&url, "bob").await;
    huddle_e2e::sip_client::register_ok(&mut a, &alice, 300).await;
    huddle_e2e::sip_client::register_ok(&mut b, &bob, 300).await;

    // Alice calls bob; bob answers; alice ACKs: the call is up.
    let offer = chrome_sdp("actpass", 0);
    let mut s = Session::new();
    let invite = send_through_407(
        &mut a,
        &alice,
        &mut s,
        "INVITE",
        "sip:bob@example.test",
        |s, auth| alice.invite_request("bob", s, &offer, auth),
    )
    .await;
    let inv = b.recv_request("INVITE").await;
    let bob_tag = ring(&mut b, &bob, &inv).await;
    answer(&mut b, &bob, &inv, &bob_tag, &chrome_sdp("active", 0)).await;
    let ok = loop {
        let r = a.next_response(&s.call_id, s.cseq).await;
        if r.status().is_some_and(|st| st >= 200) {
            break r;
        }
    };
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    let mut ad = Dialog::caller(&invite, &ok, s.auth.clone());
    a.send(&ad.request(&alice, "ACK", &[], None)).await;
    b.recv_request("ACK").await;

    // Drain.
    assert_eq!(http(admin, "POST", "/drain").await, 200);
    assert_eq!(http(admin, "GET", "/ready").await, 503);

    // A new call is refused with 503 and Retry-After (before any challenge: nothing new).
    let s2 = Session::new();
    let second_invite = alice.invite_request("bob", &s2, &offer, None);
    let second = a.request(&second_invite).await;
    assert_eq!(second.status(), Some(503), "{}", text(&second));
    assert!(
        text(&second).contains("Retry-After:"),
        "503 says when to retry:\n{}",
        text(&second)
    );
    let sent = Message::parse(bytes::Bytes::from(second_invite)).expect("our INVITE parses");
    a.send(&huddle_e2e::sip_client::ack_for_failure(&sent, &second))
        .await;
    // So does a new registration.
    let ua_carol = Ua::sipml5("carol", "carol-pw");
    let mut c = Conn::ws(&url, "carol").await;
    let mut sc = Session::new();
    let refused = register(
        &mut c,
        &ua_carol,
        &mut sc,
        Some(&ua_carol.register_contact(300)),
        None,
    )
    .await;
    assert_eq!(refused.status(), Some(503), "{}", text(&refused));
    assert!(
        text(&refused).contains("Retry-After:"),
        "{}",
        text(&refused)
    );

    // The established call still works both ways: an INFO from bob, then alice's BYE.
    let mut bd = Dialog::callee(&inv, &bob_tag);
    b.send(&bd.request(&bob, "INFO", &[], Some(("text/plain", "still here"))))
        .await;
    let info = a.recv_request("INFO").await;
    a.send(&response(&info, 200, "OK", None, &[], None)).await;
    let r = b.final_response(&bd.call_id, bd.cseq).await;
    assert_eq!(
        r.status(),
        Some(200),
        "in-dialog INFO while draining: {}",
        text(&r)
    );

    a.send(&ad.request(&alice, "BYE", &[], None)).await;
    let bye = b.recv_request("BYE").await;
    b.send(&response(&bye, 200, "OK", None, &[], None)).await;
    let r = a.final_response(&s.call_id, ad.cseq).await;
    assert_eq!(r.status(), Some(200), "BYE while draining: {}", text(&r));

    // Drain ends: new registrations are taken again.
    assert_eq!(http(admin, "DELETE", "/drain").await, 200);
    let mut sc = Session::new();
    let taken = register(
        &mut c,
        &ua_carol,
        &mut sc,
        Some(&ua_carol.register_contact(300)),
        None,
    )
    .await;
    assert_eq!(taken.status(), Some(200), "{}", text(&taken));
    server.stop().await;
}
