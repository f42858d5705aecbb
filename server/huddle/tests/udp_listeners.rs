//! A server with two UDP listeners: the SIP core reads both sockets itself, and answers each
//! request from the socket it came to (RFC 3261 §18.2.2; `Destination::UdpFrom`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use huddle::config::Config;
use huddle::server::start;
use huddle::store::RedbStore;

const LIMIT: Duration = Duration::from_secs(5);

/// A loopback UDP port free a moment ago.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn options(call_id: &str, port: u16) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag=1\r\nTo: <sip:127.0.0.1:{port}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn each_udp_listener_is_read() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let ports = [free_port(), free_port()];
    let text = format!(
        "[sip]\ndomain = \"example.test\"\nlisten = [\"udp:127.0.0.1:{}\", \"udp:127.0.0.1:{}\"]\n\
         [store]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n",
        ports[0],
        ports[1],
        dir.path().join("huddle.redb").display()
    );
    let config = Config::from_toml(&text, Path::new("test.toml")).expect("config is valid");
    let store = RedbStore::open(&config.store.path).expect("store opens");
    let running = start(config, Arc::new(store)).await.expect("server starts");
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Several rounds to both, so that each socket is read more than once (and in either order).
    for round in 0..3 {
        for (i, port) in ports.iter().enumerate() {
            let call_id = format!("two-{round}-{i}");
            let server: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            client
                .send_to(options(&call_id, *port).as_bytes(), server)
                .await
                .unwrap();
            let mut buf = [0u8; 4096];
            let (n, from) = tokio::time::timeout(LIMIT, client.recv_from(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            assert_eq!(
                from.port(),
                *port,
                "answered from the listener the request came to: {text}"
            );
            assert!(text.starts_with("SIP/2.0 "), "{text}");
            assert!(text.contains(&call_id), "{text}");
        }
    }
    running.shutdown().await;
}
