//! Durability of the messaging store (issue 5): a `huddle` process with the messaging plugin
//! takes a burst of MESSAGEs for an offline user from several UDP senders and is killed with
//! SIGKILL right after it has answered some of them `202 Accepted`, with more in flight.
//! Restarted on the same store, it delivers every acknowledged message to the user's phone
//! when it registers, each exactly once: no body arrives twice, and once a marker message sent
//! after the restart has arrived (per-device delivery is in order, so everything stored before
//! it came first) the store holds nothing more to deliver. Then `huddle messages list` shows
//! the conversation.

use std::collections::{HashMap, HashSet};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use huddle::store::{RedbStore, Store};
use huddle_e2e::plugin_support::{cargo_bin, cargo_cdylib, plugin_entry};
use huddle_e2e::sip_client::{accept_message, register_ok, text, top_branch, Conn, Ua};
use huddle_e2e::{run_bounded, test_config, DOMAIN};
use huddle_sip::Message;
use tokio::net::UdpSocket;

const SENDERS: usize = 4;
const PER_SENDER: usize = 60;
/// SIGKILL once this many 202s are in.
const KILL_AFTER: usize = 80;

/// A port free for both UDP and TCP, below the kernel's ephemeral range: the server is
/// restarted on the same ports, and while it is down an outgoing connection elsewhere in the
/// suite may be given any free ephemeral port as its local one — the WS listener's included —
/// which then refuses the restarted server's bind ("Address already in use"). The kernel never
/// hands out ports below `ip_local_port_range` on its own.
fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor = 10_000u16
        .min(ephemeral_low.saturating_sub(1_000))
        .max(1_024);
    let span = u64::from(ephemeral_low.saturating_sub(floor)).max(1);
    let mut seed = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::process::id(),
    );
    for _ in 0..500 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = floor + ((seed >> 33) % span) as u16;
        let both_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if both_free {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP below {ephemeral_low} in 500 tries");
}

/// A `huddle run` process, killed when dropped still running: a test that fails half-way
/// must not leave a server running (and listening) through the rest of the suite.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `huddle run` and waits (bounded) for its "running" line.
fn start_server(bin: &Path, config: &Path) -> Server {
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("huddle starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("Huddle is running") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the server did not start within 60 s");
    }
    Server(child)
}

fn message(from_port: u16, n: usize, body: &str) -> String {
    format!(
        "MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bK{n}x{from_port};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ext@elsewhere.test>;tag=t{n}\r\nTo: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: load-{n}-{from_port}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain;charset=utf-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One sender: sends its messages back to back, then reports every final response it gets
/// until the server has been quiet for a while (it is killed meanwhile).
async fn sender(
    server: SocketAddr,
    first: usize,
    tx: tokio::sync::mpsc::UnboundedSender<(String, u16)>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let mut bodies = HashMap::new();
    for n in first..first + PER_SENDER {
        let body = format!("durable message {n} ✓");
        socket
            .send_to(message(port, n, &body).as_bytes(), server)
            .await
            .unwrap();
        bodies.insert(format!("load-{n}-{port}"), body);
    }
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok((len, _))) =
        tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf)).await
    {
        let Ok(msg) = Message::parse(bytes::Bytes::copy_from_slice(&buf[..len])) else {
            continue;
        };
        let (Some(status), Some(call_id)) = (msg.status(), msg.call_id()) else {
            continue;
        };
        if status >= 200 {
            if let Some(body) = bodies.get(call_id) {
                let _ = tx.send((body.clone(), status));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill_9_and_is_delivered_once() {
    let bin = tokio::task::block_in_place(|| cargo_bin("huddle", "huddle"));
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-messaging"));
    let dir = tempfile::tempdir().unwrap();
    let (udp, ws) = (free_port(), free_port());
    let config_text = test_config(dir.path(), DOMAIN, &plugin_entry(&lib, "")).replace(
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"ws:127.0.0.1:0\"]",
        &format!("listen = [\"udp:127.0.0.1:{udp}\", \"ws:127.0.0.1:{ws}\"]"),
    );
    let config = dir.path().join("huddle.toml");
    std::fs::write(&config, &config_text).unwrap();
    let server: SocketAddr = format!("127.0.0.1:{udp}").parse().unwrap();

    // Load, then SIGKILL right after the KILL_AFTER-th 202.
    let mut child = tokio::task::block_in_place(|| start_server(&bin, &config));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..SENDERS)
        .map(|i| tokio::spawn(sender(server, i * PER_SENDER, tx.clone())))
        .collect();
    drop(tx);
    let mut acked = HashSet::new();
    let mut killed = false;
    while let Some((body, status)) = rx.recv().await {
        if status == 202 {
            acked.insert(body);
        }
        if !killed && acked.len() >= KILL_AFTER {
            child.0.kill().expect("SIGKILL");
            killed = true;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    if !killed {
        child.0.kill().expect("SIGKILL");
    }
    let _ = child.0.wait();
    assert!(
        acked.len() >= KILL_AFTER,
        "the server acknowledged only {} messages",
        acked.len()
    );

    // Restart on the same store; bob's phone registers and takes everything.
    let mut child = tokio::task::block_in_place(|| start_server(&bin, &config));
    let mut phone = Conn::udp(server, "bob's phone").await;
    let bob = Ua::udp("bob", "bob-pw", phone.local_addr());
    register_ok(&mut phone, &bob, 300).await;
    let is_message = |m: &Message| m.method().is_some_and(|x| x.as_str() == "MESSAGE");
    let marker = "marker after the restart";
    let mut received: Vec<String> = Vec::new();
    let mut marker_sent = false;
    // Over UDP the server resends a MESSAGE every T1 (500 ms) until its 200 arrives, and up
    // to `device_window` are in flight at once: a copy of one answered already can wait in
    // the phone's socket when the test falls behind. A retransmission is the same transaction
    // (its top Via branch), not a second delivery; it is answered again, as a phone's
    // transaction layer would, and not counted.
    let mut answered: HashSet<String> = HashSet::new();
    loop {
        let m = phone.wait_for("the next stored MESSAGE", is_message).await;
        let body = String::from_utf8(m.body().to_vec()).expect("UTF-8 body");
        accept_message(&mut phone, &m).await;
        if !answered.insert(top_branch(&m)) {
            continue;
        }
        if body == marker {
            break;
        }
        assert!(
            body.starts_with("durable message"),
            "unexpected:\n{}",
            text(&m)
        );
        received.push(body);
        if !marker_sent {
            // The plugin knows the phone now: the marker queues behind every stored message.
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = socket.local_addr().unwrap().port();
            socket
                .send_to(message(port, 999_999, marker).as_bytes(), server)
                .await
                .unwrap();
            marker_sent = true;
        }
    }
    // The phone's 200s reach the plugin through the host's queue, after the test has sent
    // them; a stop drops what the plugin has not taken yet (the marker's history entry, the
    // deletes of the last stored ones). One more live MESSAGE, queued behind those answers,
    // reaching the phone is the sign that the plugin has handled them all.
    let closing = "closing marker";
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    socket
        .send_to(message(port, 999_998, closing).as_bytes(), server)
        .await
        .unwrap();
    let m = phone
        .wait_for("the closing MESSAGE", |m| {
            is_message(m) && m.body() == closing.as_bytes()
        })
        .await;
    accept_message(&mut phone, &m).await;
    println!(
        "{} acknowledged before SIGKILL; {} delivered after the restart",
        acked.len(),
        received.len()
    );
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "a message arrived twice");
    let missing: Vec<&String> = acked.iter().filter(|b| !unique.contains(b)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost: {missing:?}",
        missing.len()
    );

    // Graceful stop (SIGINT), then nothing is left to deliver again.
    let (ok, out) = run_bounded(
        {
            let mut c = Command::new("kill");
            c.args(["-INT", &child.0.id().to_string()]);
            c
        },
        Duration::from_secs(10),
    );
    assert!(ok, "{out}");
    let _ = tokio::task::block_in_place(|| child.0.wait());
    let store = RedbStore::open(dir.path().join("huddle.redb")).expect("the store reopens");
    let left = Arc::new(store)
        .scan_prefix(b"plugin/messaging/q/", None, 1024)
        .unwrap()
        .entries
        .len();
    assert_eq!(left, 0, "messages left to deliver twice");

    // The history lists the conversation.
    let mut cmd = Command::new(&bin);
    cmd.args(["messages", "list", "bob", "--with", "ext", "--config"])
        .arg(&config);
    let (ok, out) = run_bounded(cmd, Duration::from_secs(30));
    assert!(ok, "{out}");
    assert!(out.contains(marker), "{out}");
    assert!(
        out.contains("sip:ext@elsewhere.test -> sip:bob@example.test"),
        "{out}"
    );
    let mut cmd = Command::new(&bin);
    cmd.args([
        "messages",
        "list",
        "bob",
        "--since",
        "2999-01-01T00:00:00Z",
        "--config",
    ])
    .arg(&config);
    let (ok, out) = run_bounded(cmd, Duration::from_secs(30));
    assert!(ok && out.trim().is_empty(), "{out}");
}
