//! A server with two UDP listeners (127.0.0.1 and 127.0.0.2): what it sends a UDP peer leaves
//! from the listening socket that peer talks to. A response goes from the address its request
//! came to (RFC 3261 §18.2.2), and a request to a binding from the socket its REGISTER came to:
//! a phone that checks the source, or a NAT that let its datagrams out, drops anything else.
//! Before, every datagram left from the first listener of the peer's address family; the
//! dialog's requests (ACK for the 200, BYE) follow the Record-Route, which names each side's
//! socket.
//!
//! The phones here are bare UDP sockets (the harness's `Conn` does not report a datagram's
//! source); the messages are the harness's. Linux only: the second listener is on 127.0.0.2,
//! which other systems' loopback does not answer without configuration.

use std::net::SocketAddr;

use bytes::Bytes;
use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    ack_for_failure, method_of, new_tag, response, text, Challenge, Dialog, DigestSession, Session,
    Ua, WAIT,
};
use huddle_e2e::{test_config, TestServer, DOMAIN};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;
use tokio::net::UdpSocket;

/// A UDP phone: one socket on 127.0.0.1, every datagram read with its source.
struct Phone {
    socket: UdpSocket,
    name: &'static str,
}

impl Phone {
    async fn new(name: &'static str) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("UDP bind");
        Phone { socket, name }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local address")
    }

    async fn send(&self, to: SocketAddr, message: &str) {
        self.socket
            .send_to(message.as_bytes(), to)
            .await
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.name));
    }

    /// The next datagram that `pred` accepts (others are skipped: 100 Trying, a stray
    /// retransmission) and where it came from, within [`WAIT`].
    async fn next(&self, what: &str, pred: impl Fn(&Message) -> bool) -> (Message, SocketAddr) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = vec![0u8; 65_536];
        loop {
            let (len, from) =
                match tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await {
                    Ok(Ok(got)) => got,
                    Ok(Err(e)) => panic!("{}: recv failed: {e}", self.name),
                    Err(_) => panic!("{}: no {what} within {WAIT:?}", self.name),
                };
            let msg = Message::parse(Bytes::copy_from_slice(&buf[..len]))
                .unwrap_or_else(|e| panic!("{}: unparseable datagram: {e}", self.name));
            if pred(&msg) {
                return (msg, from);
            }
        }
    }

    /// The final response to `call_id` / `cseq`, and where it came from.
    async fn final_response(&self, call_id: &str, cseq: u32) -> (Message, SocketAddr) {
        self.next(&format!("final response to {call_id} CSeq {cseq}"), |m| {
            !m.is_request()
                && m.call_id() == Some(call_id)
                && m.cseq().is_ok_and(|c| c.seq == cseq)
                && m.status().is_some_and(|s| s >= 200)
        })
        .await
    }
}

fn cseq_of(request: &str) -> u32 {
    Message::parse(Bytes::copy_from_slice(request.as_bytes()))
        .expect("our own request parses")
        .cseq()
        .expect("our own request has a CSeq")
        .seq
}

/// Sends `first` (no credentials) to `server`, expects a 407 from `server`, ACKs it for an
/// INVITE, and sends the request again with credentials (CSeq + 1); returns it.
async fn through_407(
    phone: &Phone,
    ua: &Ua,
    server: SocketAddr,
    s: &mut Session,
    method: &str,
    build: impl Fn(&Session, Option<&str>) -> String,
) -> String {
    let first = build(s, None);
    phone.send(server, &first).await;
    let (challenge, from) = phone.final_response(&s.call_id, s.cseq).await;
    assert_eq!(challenge.status(), Some(407), "{}", text(&challenge));
    assert_eq!(
        from, server,
        "the 407 leaves from the socket the {method} came to"
    );
    if method == "INVITE" {
        let own = Message::parse(Bytes::copy_from_slice(first.as_bytes())).expect("parses");
        phone.send(server, &ack_for_failure(&own, &challenge)).await;
    }
    let mut auth = DigestSession::new(Challenge::of(&challenge), &ua.user, &ua.password);
    s.cseq += 1;
    let value = auth.authorize(method, &format!("sip:bob@{DOMAIN}"));
    let second = build(s, Some(&value));
    phone.send(server, &second).await;
    second
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_leave_from_the_socket_the_peer_talks_to() {
    let dir = tempfile::tempdir().expect("temporary folder");
    // A port free on 127.0.0.2 a moment ago (a listen spec with port 0 would be bound, but
    // the server reports only each transport's first listener).
    let second: SocketAddr = std::net::UdpSocket::bind("127.0.0.2:0")
        .and_then(|s| s.local_addr())
        .expect("a free port on 127.0.0.2");
    let config = test_config(dir.path(), DOMAIN, "").replacen(
        "\"udp:127.0.0.1:0\"",
        &format!("\"udp:127.0.0.1:0\", \"udp:{second}\""),
        1,
    );
    let server = TestServer::start_in(dir, &config).await;
    let first = server.addr(Transport::Udp);
    assert_ne!(first.ip(), second.ip());

    // An OPTIONS to each listener is answered from that listener.
    let probe = Phone::new("probe").await;
    let probe_ua = Ua::udp("carol", "carol-pw", probe.addr());
    for to in [second, first, second] {
        let call_id = format!("options-{}", new_tag());
        let options = format!(
            "OPTIONS sip:{to} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:carol@{DOMAIN}>;tag={}\r\n\
             To: <sip:{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            probe_ua.via(),
            new_tag()
        );
        probe.send(to, &options).await;
        let (answer, from) = probe.final_response(&call_id, 1).await;
        assert_eq!(
            from,
            to,
            "answered from the listener it was sent to:\n{}",
            text(&answer)
        );
    }

    // Bob registers over the second listener: the 401 and the 200 come from it.
    let bob_phone = Phone::new("bob").await;
    let bob = Ua::udp("bob", "bob-pw", bob_phone.addr());
    let mut s = Session::new();
    s.cseq += 1;
    let register = bob.register_request(&s, Some(&bob.register_contact(300)), None, None);
    bob_phone.send(second, &register).await;
    let (challenge, from) = bob_phone.final_response(&s.call_id, s.cseq).await;
    assert_eq!(challenge.status(), Some(401), "{}", text(&challenge));
    assert_eq!(
        from, second,
        "the 401 leaves from the socket the REGISTER came to"
    );
    let mut auth = DigestSession::new(Challenge::of(&challenge), "bob", "bob-pw");
    s.cseq += 1;
    let value = auth.authorize("REGISTER", &bob.registrar_uri());
    let register = bob.register_request(&s, Some(&bob.register_contact(300)), None, Some(&value));
    bob_phone.send(second, &register).await;
    let (ok, from) = bob_phone.final_response(&s.call_id, s.cseq).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    assert_eq!(
        from, second,
        "the 200 leaves from the socket the REGISTER came to"
    );

    // Alice, over the first listener, sends bob a MESSAGE: her answers come from the first
    // listener, the copy reaches bob from the second (where his binding was registered),
    // with our Via naming the second.
    let alice_phone = Phone::new("alice").await;
    let alice = Ua::udp("alice", "alice-pw", alice_phone.addr());
    let mut s = Session::new();
    let message = through_407(&alice_phone, &alice, first, &mut s, "MESSAGE", |s, auth| {
        alice.message_request("bob", s, "hello", auth)
    })
    .await;
    let (copy, from) = bob_phone
        .next("the forwarded MESSAGE", |m| {
            method_of(m).as_deref() == Some("MESSAGE") && m.call_id() == Some(s.call_id.as_str())
        })
        .await;
    assert_eq!(
        from,
        second,
        "a request to a binding leaves from the socket its REGISTER came to:\n{}",
        text(&copy)
    );
    let top_via = copy.header(&HeaderName::Via).expect("a Via").to_owned();
    assert!(
        top_via.contains(&second.to_string()),
        "our Via names the socket the request leaves from: {top_via}"
    );
    bob_phone
        .send(
            from,
            &response(&copy, 200, "OK", Some(&new_tag()), &[], None),
        )
        .await;
    let (done, from) = alice_phone
        .final_response(&s.call_id, cseq_of(&message))
        .await;
    assert_eq!(done.status(), Some(200), "{}", text(&done));
    assert_eq!(
        from, first,
        "the 200 leaves from the socket the MESSAGE came to"
    );

    // A call the same way: the INVITE reaches bob from the second listener; his 486 reaches
    // alice from the first, and the proxy's ACK for it reaches bob from the second.
    let mut s = Session::new();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    let invite = through_407(&alice_phone, &alice, first, &mut s, "INVITE", |s, auth| {
        alice.invite_request("bob", s, sdp, auth)
    })
    .await;
    let is_call = |method: &'static str| {
        let call_id = s.call_id.clone();
        move |m: &Message| {
            method_of(m).as_deref() == Some(method) && m.call_id() == Some(call_id.as_str())
        }
    };
    let (copy, from) = bob_phone
        .next("the forwarded INVITE", is_call("INVITE"))
        .await;
    assert_eq!(
        from,
        second,
        "the INVITE leaves from bob's socket:\n{}",
        text(&copy)
    );
    bob_phone
        .send(
            from,
            &response(&copy, 486, "Busy Here", Some(&new_tag()), &[], None),
        )
        .await;
    let (busy, from) = alice_phone
        .final_response(&s.call_id, cseq_of(&invite))
        .await;
    assert_eq!(busy.status(), Some(486), "{}", text(&busy));
    assert_eq!(
        from, first,
        "the 486 leaves from the socket the INVITE came to"
    );
    alice_phone
        .send(
            first,
            &ack_for_failure(
                &Message::parse(Bytes::copy_from_slice(invite.as_bytes())).expect("parses"),
                &busy,
            ),
        )
        .await;
    let (_, from) = bob_phone.next("the proxy's ACK", is_call("ACK")).await;
    assert_eq!(from, second, "the proxy's ACK leaves from bob's socket");

    // A call answered: the dialog's requests follow our Record-Route, which names the socket
    // each side talks to, so the ACK for the 200 reaches bob from the second listener and
    // bob's BYE reaches alice from the first; each answer leaves where its request came.
    let mut s = Session::new();
    let invite = through_407(&alice_phone, &alice, first, &mut s, "INVITE", |s, auth| {
        alice.invite_request("bob", s, sdp, auth)
    })
    .await;
    let call_id = s.call_id.clone();
    let in_call = |method: &'static str| {
        let call_id = call_id.clone();
        move |m: &Message| {
            method_of(m).as_deref() == Some(method) && m.call_id() == Some(call_id.as_str())
        }
    };
    let (copy, from) = bob_phone
        .next("the forwarded INVITE", in_call("INVITE"))
        .await;
    assert_eq!(from, second, "{}", text(&copy));
    let bob_tag = new_tag();
    let contact = format!("<{}>", bob.contact_uri);
    bob_phone
        .send(
            from,
            &response(
                &copy,
                200,
                "OK",
                Some(&bob_tag),
                &[("Contact", &contact)],
                Some(("application/sdp", sdp)),
            ),
        )
        .await;
    let (ok, from) = alice_phone
        .final_response(&s.call_id, cseq_of(&invite))
        .await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    assert_eq!(
        from, first,
        "the 200 leaves from the socket the INVITE came to"
    );
    let mut caller = Dialog::caller(&invite, &ok, None);
    alice_phone
        .send(first, &caller.request(&alice, "ACK", &[], None))
        .await;
    let (ack, from) = bob_phone.next("the ACK for the 200", in_call("ACK")).await;
    assert_eq!(
        from,
        second,
        "the ACK for the 200 leaves from bob's socket:\n{}",
        text(&ack)
    );
    let mut callee = Dialog::callee(&copy, &bob_tag);
    let bye = callee.request(&bob, "BYE", &[], None);
    bob_phone.send(second, &bye).await;
    let (bye_copy, from) = alice_phone.next("bob's BYE", in_call("BYE")).await;
    assert_eq!(
        from,
        first,
        "bob's BYE leaves from alice's socket:\n{}",
        text(&bye_copy)
    );
    alice_phone
        .send(from, &response(&bye_copy, 200, "OK", None, &[], None))
        .await;
    let (done, from) = bob_phone.final_response(&call_id, cseq_of(&bye)).await;
    assert_eq!(done.status(), Some(200), "{}", text(&done));
    assert_eq!(
        from, second,
        "the BYE's 200 leaves from the socket the BYE came to"
    );

    server.stop().await;
}
