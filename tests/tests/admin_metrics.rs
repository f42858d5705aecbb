//! `/metrics` series added for operators, moving with real traffic: retransmissions the server
//! sends (a UDP phone that does not answer at once gets the MESSAGE again, Timer E) and absorbs
//! (the same REGISTER datagram twice), and open WebSocket connections (up on connect, down on
//! close). A real server on loopback; SIP clients from `tests/sip_client.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    register, register_ok, response, send_through_407, text, Conn, Session, Ua,
};
use huddle_e2e::{TestServer, DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "metrics-token";

async fn metrics(addr: SocketAddr) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8(raw).expect("UTF-8")
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("metrics within 10 s")
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Polls `/metrics` until `pred` holds for `series`, at most 10 s.
async fn wait_for(addr: SocketAddr, series: &str, pred: impl Fn(f64) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(addr).await;
        if sample(&text, series).is_some_and(&pred) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never matched:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmissions_and_connections_move_with_traffic() {
    let server = TestServer::start_with(
        DOMAIN,
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    )
    .await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let sent = "huddle_sip_retransmissions_total";
    let absorbed = "huddle_sip_absorbed_retransmissions_total";
    let ws = "huddle_connections{transport=\"ws\"}";
    let before = metrics(admin).await;
    assert_eq!(sample(&before, sent), Some(0.0), "{before}");
    assert_eq!(sample(&before, absorbed), Some(0.0), "{before}");
    assert_eq!(sample(&before, ws), Some(0.0), "{before}");

    // Bob's phone over UDP; the same REGISTER datagram twice: the second is absorbed.
    let mut b = Conn::udp(server.addr(Transport::Udp), "bob").await;
    let bob = Ua::udp("bob", "bob-pw", b.local_addr());
    register_ok(&mut b, &bob, 300).await;
    let mut s = Session::new();
    let fetch = bob.register_request(&s, None, None, None);
    b.send(&fetch).await;
    b.send(&fetch).await;
    s.cseq += 1;
    wait_for(admin, absorbed, |v| v >= 1.0).await;

    // Alice over WebSocket; two connections open.
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    register_ok(&mut a, &alice, 300).await;
    let extra = Conn::ws(&server.ws_url(), "idle").await;
    wait_for(admin, ws, |v| v == 2.0).await;

    // Alice's MESSAGE reaches bob over UDP; bob answers only after the retransmission.
    let mut sm = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut sm,
        "MESSAGE",
        &format!("sip:bob@{DOMAIN}"),
        |s, auth| alice.message_request("bob", s, "are you there?", auth),
    )
    .await;
    let first = b.recv_request("MESSAGE").await;
    let again = b.recv_request("MESSAGE").await;
    assert_eq!(first.call_id(), again.call_id(), "{}", text(&again));
    b.send(&response(&again, 200, "OK", Some("b1"), &[], None))
        .await;
    let ok = a.final_response(&sm.call_id, sm.cseq).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    wait_for(admin, sent, |v| v >= 1.0).await;

    // A connection closes: the gauge follows.
    drop(extra);
    wait_for(admin, ws, |v| v == 1.0).await;
    let _ = register(&mut a, &alice, &mut Session::new(), None, None).await;
    server.stop().await;
}
