//! A request larger than `max_message_size` is answered `513 Message Too Large` over UDP and
//! over TCP (where the connection is then closed), and the server keeps serving.

use std::time::Duration;

use huddle::transport::Transport;
use huddle_e2e::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn big_message(local: std::net::SocketAddr, transport: &str, body_len: usize) -> Vec<u8> {
    let body = "x".repeat(body_len);
    format!(
        "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bKbig{body_len};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\n\
         Call-ID: big-{body_len}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n\r\n{body}"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_513() {
    let server =
        TestServer::start_with("example.test", "[limits]\nmax_message_size = 4096\n").await;

    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let msg = big_message(udp.local_addr().unwrap(), "UDP", 8000);
    udp.send_to(&msg, server.addr(Transport::Udp))
        .await
        .expect("send");
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .expect("a 513 within 5 s")
        .expect("recv");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 513 "), "{text}");
    assert!(text.contains("Call-ID: big-8000"), "{text}");

    let mut tcp = TcpStream::connect(server.addr(Transport::Tcp))
        .await
        .expect("connect");
    let msg = big_message(tcp.local_addr().unwrap(), "TCP", 9000);
    tcp.write_all(&msg[..2048]).await.expect("write head");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply))
        .await
        .expect("513 and close within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("SIP/2.0 513 "), "{text}");

    // Still serving: a small request is answered.
    let probe = b"OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKok;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:p@probe.invalid>;tag=p\r\nTo: <sip:example.test>\r\nCall-ID: ok\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    udp.send_to(probe, server.addr(Transport::Udp))
        .await
        .expect("send probe");
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .expect("probe answered")
        .expect("recv");
    assert!(buf[..n].starts_with(b"SIP/2.0 200 "));
    server.stop().await;
}
