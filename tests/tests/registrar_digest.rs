//! Registrar digest authentication over a real WebSocket: a configured SHA-256 challenge and
//! response (RFC 7616/8760), nonce expiry answered with `stale=true` and recovered with the
//! fresh nonce, a wrong password refused with 401, credentials of another user refused with
//! 403, a digest-uri other than the Request-URI refused with 400, and a REGISTER for a
//! foreign domain never accepted.

use std::time::Duration;

use huddle_e2e::sip_client::{
    fetch_bindings, register, text, Challenge, Conn, DigestSession, Session, Ua,
};
use huddle_e2e::{TestServer, DOMAIN};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// Sends REGISTER for `ua` in session `s` (CSeq + 1) with these credentials.
async fn send_register(conn: &mut Conn, ua: &Ua, s: &mut Session, auth: Option<&str>) -> Message {
    s.cseq += 1;
    let contact = ua.register_contact(300);
    conn.request(&ua.register_request(s, Some(&contact), None, auth))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_challenge_and_response_register() {
    let server = TestServer::start_with(DOMAIN, "[auth]\nalgorithm = \"SHA-256\"\n").await;
    let mut conn = Conn::ws(&server.ws_url(), "alice").await;
    let ua = Ua::sipml5("alice", "alice-pw");
    let mut s = Session::new();

    let resp = send_register(&mut conn, &ua, &mut s, None).await;
    assert_eq!(resp.status(), Some(401), "{}", text(&resp));
    let challenge = Challenge::of(&resp);
    assert_eq!(
        challenge.algorithm.as_deref(),
        Some("SHA-256"),
        "the configured algorithm is offered:\n{}",
        text(&resp)
    );
    assert_eq!(challenge.qop.as_deref(), Some("auth"));

    let mut auth = DigestSession::new(challenge, "alice", "alice-pw");
    let value = auth.authorize("REGISTER", &ua.registrar_uri());
    assert!(value.contains("algorithm=SHA-256"), "{value}");
    let resp = send_register(&mut conn, &ua, &mut s, Some(&value)).await;
    assert_eq!(
        resp.status(),
        Some(200),
        "a correct SHA-256 response registers:\n{}",
        text(&resp)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_nonce_gets_stale_true_and_the_fresh_nonce_works() {
    let server = TestServer::start_with(DOMAIN, "[auth]\nnonce_lifetime_secs = 1\n").await;
    let mut conn = Conn::ws(&server.ws_url(), "alice").await;
    let ua = Ua::sipml5("alice", "alice-pw");
    let mut s = Session::new();
    let resp = register(
        &mut conn,
        &ua,
        &mut s,
        Some(&ua.register_contact(300)),
        None,
    )
    .await;
    assert_eq!(resp.status(), Some(200), "{}", text(&resp));

    // The one sleep of the suite: nonce age is measured on the wall clock in whole seconds
    // (stale once now - issued > 1 s), and no message can make time pass for the server.
    // 2.1 s guarantees two second boundaries have passed since the nonce was minted.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // SIPml5's refresh: pre-computed credentials on the old nonce, nc + 1.
    let uri = ua.registrar_uri();
    let value = s
        .auth
        .as_mut()
        .expect("the session was challenged")
        .authorize("REGISTER", &uri);
    let resp = send_register(&mut conn, &ua, &mut s, Some(&value)).await;
    assert_eq!(
        resp.status(),
        Some(401),
        "an expired nonce must not register:\n{}",
        text(&resp)
    );
    let challenge = Challenge::of(&resp);
    assert!(
        challenge.stale,
        "a correct digest on an expired nonce gets stale=true (RFC 7616 §3.3; SIPml5 drops the \
         registration on a second challenge without it):\n{}",
        text(&resp)
    );
    let mut auth = DigestSession::new(challenge, "alice", "alice-pw");
    let value = auth.authorize("REGISTER", &uri);
    let resp = send_register(&mut conn, &ua, &mut s, Some(&value)).await;
    assert_eq!(
        resp.status(),
        Some(200),
        "the fresh nonce registers:\n{}",
        text(&resp)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_challenged_again_not_accepted() {
    let server = TestServer::start().await;
    let mut conn = Conn::ws(&server.ws_url(), "alice").await;
    let ua = Ua::sipml5("alice", "not-alices-pw");
    let mut s = Session::new();
    let resp = register(
        &mut conn,
        &ua,
        &mut s,
        Some(&ua.register_contact(300)),
        None,
    )
    .await;
    assert_eq!(
        resp.status(),
        Some(401),
        "a wrong password gets a fresh challenge:\n{}",
        text(&resp)
    );
    assert!(
        !Challenge::of(&resp).stale,
        "stale=true is only for right digests on old nonces (RFC 7616 §3.3):\n{}",
        text(&resp)
    );
    // Nothing was bound.
    let mut check = Conn::ws(&server.ws_url(), "check").await;
    let bindings = fetch_bindings(&mut check, &Ua::sipml5("alice", "alice-pw")).await;
    assert!(bindings.is_empty(), "{bindings:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_of_another_user_are_forbidden() {
    let server = TestServer::start().await;
    let mut conn = Conn::ws(&server.ws_url(), "alice-as-bob").await;
    // From/To say bob; the digest says alice with alice's right password.
    let ua = Ua::sipml5("bob", "bob-pw");
    let mut s = Session::new();
    let resp = send_register(&mut conn, &ua, &mut s, None).await;
    assert_eq!(resp.status(), Some(401), "{}", text(&resp));
    let mut auth = DigestSession::new(Challenge::of(&resp), "alice", "alice-pw");
    let value = auth.authorize("REGISTER", &ua.registrar_uri());
    let resp = send_register(&mut conn, &ua, &mut s, Some(&value)).await;
    assert_eq!(
        resp.status(),
        Some(403),
        "digest username alice may not register bob's AOR:\n{}",
        text(&resp)
    );
    let mut check = Conn::ws(&server.ws_url(), "check").await;
    let bindings = fetch_bindings(&mut check, &Ua::sipml5("bob", "bob-pw")).await;
    assert!(bindings.is_empty(), "{bindings:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_for_a_foreign_domain_is_never_accepted() {
    let server = TestServer::start().await;
    let mut conn = Conn::ws(&server.ws_url(), "alice").await;
    let ua = Ua::sipml5("alice", "alice-pw");
    let foreign = "sip:elsewhere.test";
    let mut s = Session::new();
    // Answer up to two challenges (401 or 407) with right credentials; the final answer must
    // still not be a 2xx: this server is not elsewhere.test's registrar.
    let mut auth: Option<(HeaderName, DigestSession)> = None;
    let mut finals = Vec::new();
    for _ in 0..3 {
        s.cseq += 1;
        let mut req = ua.register_request(&s, Some(&ua.register_contact(300)), None, None);
        req = req.replacen(
            &format!("REGISTER {}", ua.registrar_uri()),
            &format!("REGISTER {foreign}"),
            1,
        );
        if let Some((name, a)) = auth.as_mut() {
            let line = format!(
                "{}: {}\r\n",
                name.as_str(),
                a.authorize("REGISTER", foreign)
            );
            req = req.replacen(
                "Max-Forwards: 70\r\n",
                &format!("Max-Forwards: 70\r\n{line}"),
                1,
            );
        }
        let resp = conn.request(&req).await;
        let status = resp.status().unwrap_or(0);
        assert!(
            !(200..300).contains(&status),
            "a REGISTER for {foreign} was accepted:\n{}",
            text(&resp)
        );
        finals.push(status);
        let header = match status {
            401 => HeaderName::Authorization,
            407 => HeaderName::ProxyAuthorization,
            _ => break,
        };
        auth = Some((
            header,
            DigestSession::new(Challenge::of(&resp), "alice", "alice-pw"),
        ));
    }
    println!("answers to the foreign REGISTER: {finals:?}");
    // And nothing was bound to alice here.
    let bindings = fetch_bindings(&mut conn, &ua).await;
    assert!(bindings.is_empty(), "{bindings:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_uri_must_name_the_request_uri() {
    let server = TestServer::start().await;
    let mut conn = Conn::ws(&server.ws_url(), "alice").await;
    let ua = Ua::sipml5("alice", "alice-pw");
    let mut s = Session::new();
    let resp = send_register(&mut conn, &ua, &mut s, None).await;
    assert_eq!(resp.status(), Some(401), "{}", text(&resp));
    // A right digest, but computed for another resource than the Request-URI.
    let mut auth = DigestSession::new(Challenge::of(&resp), "alice", "alice-pw");
    let value = auth.authorize("REGISTER", "sip:elsewhere.test");
    let resp = send_register(&mut conn, &ua, &mut s, Some(&value)).await;
    assert_eq!(
        resp.status(),
        Some(400),
        "credentials whose digest-uri is not the Request-URI must not authenticate: RFC 2617 \
         §3.2.2.5 / RFC 7616 §3.4.6 (400 Bad Request), and step 4 of the huddle_sip::auth \
         module docs:\n{}",
        text(&resp)
    );
    server.stop().await;
}
