//! Webhooks against a real server and a real HTTP receiver (axum, in the test): registration
//! events arrive signed (HMAC-SHA256, checked independently) and in order; a receiver that is
//! down and comes back gets the events raised meanwhile, within the retry budget; a full queue
//! drops events, counted, while SIP keeps answering.

use std::net::SocketAddr;
use std::time::Duration;

use huddle_e2e::sip_client::{register, register_ok, text, Conn, Session, Ua};
use huddle_e2e::webhook_receiver::Receiver;
use huddle_e2e::{TestServer, DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-secret";
const TOKEN: &str = "hooks-token";
const WAIT: Duration = Duration::from_secs(15);

async fn start(url: &str, extra: &str) -> TestServer {
    TestServer::start_with(
        DOMAIN,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
             [webhooks]\nurls = [\"{url}\"]\nsecret = \"{SECRET}\"\n{extra}"
        ),
    )
    .await
}

/// `/metrics` as text.
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

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Polls `/metrics` until `series` reaches `at_least`, at most [`WAIT`].
async fn wait_metric(addr: SocketAddr, series: &str, at_least: u64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = metrics(addr).await;
        if sample(&text, series) >= at_least {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_events_arrive_signed_and_in_order() {
    let mut receiver = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let server = start(&receiver.url(), "").await;
    let url = server.ws_url();

    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut b = Conn::ws(&url, "bob").await;
    let mut sa = register_ok(&mut a, &alice, 300).await;
    register_ok(&mut b, &bob, 300).await;
    // Alice unregisters (Expires 0); bob's connection closes, which removes his binding.
    let gone = register(
        &mut a,
        &alice,
        &mut sa,
        Some(&alice.register_contact(0)),
        None,
    )
    .await;
    assert_eq!(gone.status(), Some(200), "{}", text(&gone));
    drop(b);

    let expected = [
        ("user.registered", "alice"),
        ("user.registered", "bob"),
        ("user.unregistered", "alice"),
        ("user.unregistered", "bob"),
    ];
    let mut last_id = 0;
    for (kind, user) in expected {
        let ev = receiver.next(kind, WAIT).await;
        assert_eq!(ev.kind(), kind, "{}", ev.body);
        assert_eq!(ev.kind_header, kind, "Huddle-Event names the type");
        assert_eq!(
            ev.body["data"]["aor"],
            format!("sip:{user}@{DOMAIN}"),
            "{}",
            ev.body
        );
        assert_eq!(ev.body["source"], "huddle");
        let id = ev.body["id"].as_u64().expect("an id");
        assert!(id > last_id, "ids rise in order: {id} after {last_id}");
        last_id = id;
        assert!(
            ev.signed_with(SECRET),
            "the signature verifies: {} over {}",
            ev.signature,
            ev.body
        );
        assert!(
            !ev.signed_with("another secret"),
            "and only with the secret"
        );
    }
    server.stop().await;
    receiver.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_the_events_when_it_comes_back() {
    // A port with nobody listening (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let server = start(
        &format!("http://{port}/hook"),
        "retry_initial_ms = 100\nretry_max_ms = 400\nretry_budget_secs = 60\n",
    )
    .await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut b = Conn::ws(&url, "bob").await;
    register_ok(&mut a, &alice, 300).await;
    register_ok(&mut b, &bob, 300).await;

    // Attempts fail while the receiver is down (connection refused), and are retried.
    wait_metric(admin, "huddle_webhook_failed_attempts_total", 2).await;
    let before = metrics(admin).await;
    assert_eq!(
        sample(
            &before,
            "huddle_webhook_events_total{outcome=\"delivered\"}"
        ),
        0
    );

    let mut receiver = Receiver::start(port).await;
    for user in ["alice", "bob"] {
        let ev = receiver.next(user, WAIT).await;
        assert_eq!(ev.kind(), "user.registered");
        assert_eq!(ev.body["data"]["aor"], format!("sip:{user}@{DOMAIN}"));
        assert!(ev.signed_with(SECRET));
    }
    let after = wait_metric(
        admin,
        "huddle_webhook_events_total{outcome=\"delivered\"}",
        2,
    )
    .await;
    assert_eq!(
        sample(&after, "huddle_webhook_events_total{outcome=\"expired\"}"),
        0,
        "nothing given up within the budget"
    );
    server.stop().await;
    receiver.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_events_counted_while_sip_keeps_answering() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let server = start(
        &format!("http://{port}/hook"),
        "queue_len = 1\nretry_initial_ms = 1000\nretry_max_ms = 1000\nretry_budget_secs = 600\n",
    )
    .await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let url = server.ws_url();
    // Three registrations, three events, a queue of one and a receiver that never answers:
    // at least one is dropped, and every REGISTER is still answered.
    let mut conns = Vec::new();
    for (user, password) in huddle_e2e::USERS {
        let ua = Ua::sipml5(user, password);
        let mut conn = Conn::ws(&url, user).await;
        let mut s = Session::new();
        let ok = register(
            &mut conn,
            &ua,
            &mut s,
            Some(&ua.register_contact(300)),
            None,
        )
        .await;
        assert_eq!(ok.status(), Some(200), "{}", text(&ok));
        conns.push(conn);
    }
    wait_metric(admin, "huddle_webhook_events_total{outcome=\"dropped\"}", 1).await;
    server.stop().await;
}
