//! The admin HTTP API against a real server on loopback: the bearer token is required, each
//! endpoint answers JSON, registrations reflect a real REGISTER, drain answers new
//! registrations 503 with Retry-After, `/metrics` parses and its counters move with traffic,
//! and the checked-in OpenAPI document is the one the code generates.

use std::net::SocketAddr;
use std::time::Duration;

use huddle_e2e::sip_client::{
    register, register_ok, response, send_through_407, text, Conn, Session, Ua,
};
use huddle_e2e::{repo_root, TestServer, DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-admin-token";

async fn start() -> TestServer {
    TestServer::start_with(
        DOMAIN,
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    )
    .await
}

/// One HTTP/1.1 exchange (Connection: close); returns the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8(raw).expect("UTF-8 response")
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the admin API answers within 10 s");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    // Bodies are small: axum sends them with Content-Length, not chunked.
    (status, body.to_owned())
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, Some(TOKEN)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Polls `path` until `pred` holds (the registrar writes the store behind, ~100 ms), at most
/// 10 s.
async fn wait_json(
    addr: SocketAddr,
    path: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = get_json(addr, path).await;
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} never matched: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_or_with_a_wrong_token_are_refused() {
    let server = start().await;
    let admin = server.running.admin_addr().expect("admin API runs");
    for path in [
        "/health",
        "/registrations",
        "/metrics",
        "/openapi.json",
        "/drain",
    ] {
        let (status, body) = http(admin, "GET", path, None).await;
        assert_eq!(status, 401, "GET {path} without a token: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(error["code"], "unauthorized", "{body}");
        assert!(error["message"].is_string(), "{body}");
        let (status, body) = http(admin, "GET", path, Some("wrong")).await;
        assert_eq!(status, 401, "GET {path} with a wrong token: {body}");
    }
    // Drain with a wrong token must not drain.
    let (status, _) = http(admin, "POST", "/drain", Some("wrong")).await;
    assert_eq!(status, 401);
    assert_eq!(get_json(admin, "/ready").await["draining"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_on_a_public_address_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let text = huddle_e2e::test_config(dir.path(), DOMAIN, "[admin]\nlisten = \"0.0.0.0:0\"\n");
    let config = huddle::config::Config::from_toml(&text, std::path::Path::new("t.toml"))
        .expect("valid config");
    let store = huddle::store::MemoryStore::default();
    let error = huddle::server::start(config, std::sync::Arc::new(store))
        .await
        .expect_err("an unauthenticated public admin API is refused");
    let message = format!("{error:#}");
    assert!(message.contains("[admin] token"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_json_and_registrations_follow_register() {
    let server = start().await;
    let admin = server.running.admin_addr().expect("admin API runs");

    let health = get_json(admin, "/health").await;
    assert_eq!(health["status"], "ok");
    let ready = get_json(admin, "/ready").await;
    assert_eq!(ready["ready"], true);
    assert_eq!(get_json(admin, "/plugins").await, serde_json::json!([]));
    assert_eq!(
        get_json(admin, "/registrations/alice").await["bindings"],
        serde_json::json!([])
    );

    let mut conn = Conn::ws(&server.ws_url(), "alice").await;
    let ua = Ua::sipml5("alice", "alice-pw");
    let _session = register_ok(&mut conn, &ua, 300).await;

    let alice = wait_json(admin, "/registrations/alice", |v| {
        v["bindings"].as_array().is_some_and(|b| b.len() == 1)
    })
    .await;
    assert_eq!(alice["aor"], format!("alice@{DOMAIN}"));
    let binding = &alice["bindings"][0];
    assert_eq!(binding["transport"], "ws", "{alice}");
    assert!(
        binding["flow"].is_u64(),
        "a WebSocket binding has a flow: {alice}"
    );
    assert!(binding["expires_in_secs"]
        .as_u64()
        .is_some_and(|s| s > 0 && s <= 300));
    let all = get_json(admin, "/registrations").await;
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");

    // Presence and history without their plugins: a JSON "not available".
    for path in ["/presence/alice", "/messages/alice/bob"] {
        let (status, body) = http(admin, "GET", path, Some(TOKEN)).await;
        assert_eq!(status, 404, "{path}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(error["code"], "not_available", "{body}");
    }
    // Rooms come from the conference plugin: without it, a JSON "not available".
    let (status, body) = http(admin, "GET", "/rooms", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_available"), "{body}");
    let (status, body) = http(admin, "GET", "/nope", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_registrations_with_503_and_retry_after() {
    let server = start().await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let mut conn = Conn::ws(&server.ws_url(), "bob").await;
    let ua = Ua::sipml5("bob", "bob-pw");

    let (status, body) = http(admin, "POST", "/drain", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(admin, "GET", "/ready", Some(TOKEN)).await;
    assert_eq!(status, 503, "not ready while draining");

    let mut s = Session::new();
    let resp = register(
        &mut conn,
        &ua,
        &mut s,
        Some(&ua.register_contact(300)),
        None,
    )
    .await;
    assert_eq!(resp.status(), Some(503), "{}", text(&resp));
    assert!(
        text(&resp).contains("Retry-After:"),
        "503 says when to retry:\n{}",
        text(&resp)
    );

    let (status, body) = http(admin, "DELETE", "/drain", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let _session = register_ok(&mut conn, &ua, 300).await;
    server.stop().await;
}

/// `name{labels} value` lines of a Prometheus text exposition, checked for shape.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            assert!(
                series.starts_with("huddle_"),
                "metric names start with huddle_: {l:?}"
            );
            (series.to_owned(), value)
        })
        .collect()
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let server = start().await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let ok = "huddle_sip_transactions_total{method=\"REGISTER\",status=\"200\"}";
    let challenged = "huddle_sip_transactions_total{method=\"REGISTER\",status=\"401\"}";

    let (status, body) = http(admin, "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let before = samples(&body);
    assert_eq!(value(&before, "huddle_registrations"), 0.0, "{body}");

    let mut conn = Conn::ws(&server.ws_url(), "carol").await;
    let _session = register_ok(&mut conn, &Ua::sipml5("carol", "carol-pw"), 300).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http(admin, "GET", "/metrics", Some(TOKEN)).await;
        let after = samples(&body);
        if value(&after, "huddle_registrations") == 1.0 {
            assert!(value(&after, ok) >= value(&before, ok) + 1.0, "{body}");
            assert!(
                value(&after, challenged) >= value(&before, challenged) + 1.0,
                "{body}"
            );
            assert_eq!(value(&after, "huddle_registered_users"), 1.0, "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registration never showed in /metrics:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// A final response the proxy relays (not one the core builds) is counted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_final_responses_are_counted() {
    let server = start().await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let relayed = "huddle_sip_transactions_total{method=\"MESSAGE\",status=\"202\"}";
    let mut bob_conn = Conn::ws(&server.ws_url(), "bob").await;
    let _bob = register_ok(&mut bob_conn, &Ua::sipml5("bob", "bob-pw"), 300).await;
    let (_, body) = http(admin, "GET", "/metrics", Some(TOKEN)).await;
    let before = value(&samples(&body), relayed);

    let mut alice_conn = Conn::ws(&server.ws_url(), "alice").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut s = Session::new();
    let target = format!("sip:bob@{DOMAIN}");
    send_through_407(
        &mut alice_conn,
        &alice,
        &mut s,
        "MESSAGE",
        &target,
        |s, auth| alice.message_request("bob", s, "counted", auth),
    )
    .await;
    let incoming = bob_conn.recv_request("MESSAGE").await;
    bob_conn
        .send(&response(&incoming, 202, "Accepted", Some("b1"), &[], None))
        .await;
    let answer = alice_conn.final_response(&s.call_id, s.cseq).await;
    assert_eq!(answer.status(), Some(202), "{}", text(&answer));

    let (_, body) = http(admin, "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(value(&samples(&body), relayed), before + 1.0, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_served_and_the_checked_in_copy_is_current() {
    let generated = huddle::admin::api::openapi_json();
    let path = repo_root().join("docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p huddle-e2e --test admin_api openapi`"
    );

    let server = start().await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let (status, body) = http(admin, "GET", "/openapi.json", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(body, generated);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    for path in [
        "/health",
        "/registrations/{user}",
        "/drain",
        "/metrics",
        "/rooms",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    server.stop().await;
}
