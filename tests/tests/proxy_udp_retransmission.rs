//! Retransmissions over UDP through the stateful proxy (RFC 3261 §17.1.2.2, §17.2.2, §16.6
//! step 11): alice and bob are plain UDP phones. Alice's authorized MESSAGE is forwarded to
//! bob, who does not answer at first: the proxy's non-INVITE client transaction retransmits
//! the copy (Timer E), every copy on the same branch. Alice's own retransmission of her
//! MESSAGE (same branch) is absorbed by the proxy's server transaction: it starts no second
//! branch. Bob's 200 (and bob's retransmission of it) gives alice exactly one 200; a later
//! retransmission from alice gets the 200 again from the server transaction, and bob sees
//! nothing new.

use std::time::Instant;

use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    method_of, new_tag, register_ok, response, send_through_407, text, top_branch, Conn, Session,
    Ua,
};
use huddle_e2e::TestServer;
use huddle_sip::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_e_retransmits_and_retransmissions_from_the_caller_are_absorbed() {
    let server = TestServer::start().await;
    let udp = server.addr(Transport::Udp);
    let mut a = Conn::udp(udp, "alice-udp").await;
    let mut b = Conn::udp(udp, "bob-udp").await;
    let alice = Ua::udp("alice", "alice-pw", a.local_addr());
    let bob = Ua::udp("bob", "bob-pw", b.local_addr());
    register_ok(&mut b, &bob, 300).await;

    let mut s = Session::new();
    let body = "are you there?";
    let message = send_through_407(
        &mut a,
        &alice,
        &mut s,
        "MESSAGE",
        "sip:bob@example.test",
        |s, auth| alice.message_request("bob", s, body, auth),
    )
    .await;
    let is_copy = |m: &Message| {
        method_of(m).as_deref() == Some("MESSAGE") && m.call_id() == Some(s.call_id.as_str())
    };

    let first = b.wait_for("the forwarded MESSAGE", is_copy).await;
    let first_at = Instant::now();
    let branch = top_branch(&first);
    assert_eq!(first.body(), body.as_bytes());

    // Alice's UA retransmits before any answer: the server transaction is Trying and
    // discards it (§17.2.2); it must not become a second branch.
    a.send(&message).await;

    // Bob stays silent: Timer E fires after T1 (500 ms by default) and sends the copy again.
    let second = b.wait_for("a retransmission of the copy", is_copy).await;
    let gap = first_at.elapsed();
    assert_eq!(
        top_branch(&second),
        branch,
        "a retransmission is the same client transaction (same branch), not a new branch \
         (alice's retransmission must not have been forwarded):\n{}",
        text(&second)
    );
    assert_eq!(
        second.raw(),
        first.raw(),
        "Timer E resends the very same bytes"
    );
    println!("Timer E retransmission after {gap:?}");

    // Everything the server sent bob before now is queued: all copies share the branch.
    a.barrier().await;
    b.barrier().await;
    let copies = b.take_queued(is_copy);
    assert!(
        copies.iter().all(|m| top_branch(m) == branch),
        "alice's retransmission was forwarded as a new branch:\n{}",
        copies.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    let is_final = |m: &Message| {
        !m.is_request()
            && m.call_id() == Some(s.call_id.as_str())
            && m.status().is_some_and(|c| c >= 200)
    };
    let early = a.take_queued(is_final);
    assert!(
        early.is_empty(),
        "no final reaches alice before bob answers:\n{}",
        early.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );

    // Bob answers, then retransmits his 200 (as his server transaction would on the copies
    // that crossed it): the proxy's client transaction absorbs the duplicate.
    let ok = response(&first, 200, "OK", Some(&new_tag()), &[], None);
    b.send(&ok).await;
    let got = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(got.status(), Some(200), "{}", text(&got));
    b.send(&ok).await;
    b.barrier().await;
    a.barrier().await;
    let dup = a.take_queued(is_final);
    assert!(
        dup.is_empty(),
        "alice must get exactly one 200; more came:\n{}",
        dup.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );

    // Alice retransmits again (her 200 was "lost"): the server transaction, now Completed,
    // answers with the same 200 (§17.2.2) and forwards nothing.
    a.send(&message).await;
    let again = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(
        again.raw(),
        got.raw(),
        "the retransmitted request gets the very same 200"
    );
    b.barrier().await;
    let late = b.take_queued(|m| is_copy(m) && top_branch(m) != branch);
    assert!(
        late.is_empty(),
        "a retransmission from alice was forwarded to bob as a new request:\n{}",
        late.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    a.barrier().await;
    let dup = a.take_queued(is_final);
    assert!(
        dup.is_empty(),
        "one retransmission, one 200:\n{}",
        dup.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    server.stop().await;
}
