//! Every RFC 4475 torture message sent over real UDP to a running Huddle, answered (or dropped)
//! as `shared/corpus/rfc4475/INDEX.tsv` says, and the server still serving afterwards.

use std::time::Duration;

use huddle::transport::Transport;
use huddle_e2e::{repo_root, TestServer};
use tokio::net::UdpSocket;

fn corpus() -> std::path::PathBuf {
    repo_root().join("../shared/corpus/rfc4475")
}

/// The first header line (in message order) with any of `names`; only the first message's
/// header section is searched (dblreq.dat carries a second request after it).
fn field<'a>(msg: &'a str, names: &[&str]) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or(msg);
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        names
            .iter()
            .any(|name| n.trim().eq_ignore_ascii_case(name))
            .then(|| v.trim())
    })
}

/// Sends `raw`, then a probe OPTIONS; returns the status codes answered to `raw` (matched by
/// Call-ID) before the probe's answer arrived. The server handles one socket's datagrams in
/// order, so the probe's answer proves everything before it was processed.
async fn exchange(
    sock: &UdpSocket,
    server: std::net::SocketAddr,
    raw: &[u8],
    n: usize,
) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw).to_string();
    let call_id = field(&text, &["Call-ID", "i"]).map(str::to_owned);
    // insuf.dat has no Call-ID: its answer is recognised by CSeq.
    let cseq = field(&text, &["CSeq"]).map(str::to_owned);
    sock.send_to(raw, server).await.expect("send");
    let probe_id = format!("probe-{n}");
    let local = sock.local_addr().expect("local addr");
    let probe = format!(
        "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@probe.invalid>;tag=p{n}\r\nTo: <sip:example.com>\r\n\
         Call-ID: {probe_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(probe.as_bytes(), server)
        .await
        .expect("send probe");
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("the server answered the probe within 5 s (it is still serving)")
            .expect("recv");
        let resp = String::from_utf8_lossy(&buf[..len]).to_string();
        if std::env::var_os("RFC4475_TRACE").is_some() {
            println!("<<< {resp}");
        }
        let code: u16 = resp.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
        let id = field(&resp, &["Call-ID", "i"]);
        if id == Some(probe_id.as_str()) {
            assert_eq!(code, 200, "probe answered {resp}");
            return codes;
        }
        let matches = match call_id.as_deref() {
            Some(c) => id == Some(c),
            None => field(&resp, &["CSeq"]) == cseq.as_deref(),
        };
        if matches {
            codes.push(code);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_messages_over_udp() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let index = std::fs::read_to_string(corpus().join("INDEX.tsv")).expect("corpus index");
    let mut failures = Vec::new();
    for (n, line) in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .enumerate()
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, verdict, expected) = (cols[0], cols[3], cols[4]);
        let raw = std::fs::read(corpus().join(file)).expect("corpus file");
        let is_response = raw.starts_with(b"SIP/");
        // Many torture messages share a Via branch and sent-by, which makes them one
        // transaction under RFC 3261 §17.2.3; a fresh server per message keeps them apart.
        let server = TestServer::start_with("example.com", "").await;
        let codes = exchange(&sock, server.addr(Transport::Udp), &raw, n).await;
        server.stop().await;
        let first = codes.first().copied();
        let ok = match (verdict, expected) {
            (_, "401") => first == Some(401),
            (_, e) if e.starts_with("416") => first == Some(416),
            (_, "420") => first == Some(420),
            (_, "483 at proxy") => first == Some(483),
            (_, "505") => first == Some(505),
            (_, "discard") | (_, "drop") => codes.is_empty(),
            ("valid", _) if is_response => codes.is_empty(),
            // 415/406 come from the UAS that terminates the request; a proxy forwards it. What
            // Huddle must do here is accept the message and answer it in its proxy role.
            ("valid", _) => first.is_some_and(|c| c != 400),
            ("semantic", e) if e.starts_with("501") => matches!(first, Some(400) | Some(501)),
            ("semantic", _) => first == Some(400),
            ("reject" | "reject-liberal", _) => matches!(first, None | Some(400)),
            _ => false,
        };
        println!("{file:14} {verdict:15} {expected:28} -> {codes:?}");
        if !ok {
            failures.push(format!("{file}: {verdict} {expected}: got {codes:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
