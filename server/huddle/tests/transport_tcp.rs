//! SIP over TCP through `huddle::transport`, on real loopback sockets: framing of pipelined and
//! split messages, keep-alive pongs, replies over the flow, limits, outbound connections,
//! closing and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use huddle::transport::{
    Destination, FlowId, Inbound, ListenSpec, SendError, TlsContext, Transport, TransportConfig,
    TransportEvent, TransportHandle, Transports,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

fn sip(method: &str, body: &str) -> String {
    format!(
        "{method} sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/TCP client.test;branch=z9hG4bK{}\r\n\
         Call-ID: abc\r\nCSeq: 1 {method}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        body.len()
    )
}

async fn bind(config: TransportConfig) -> (Transports, TransportHandle, Receiver<TransportEvent>) {
    let spec: ListenSpec = "tcp:127.0.0.1:0".parse().unwrap();
    Transports::bind(&[spec], config, TlsContext::default())
        .await
        .unwrap()
}

async fn next_event(rx: &mut Receiver<TransportEvent>) -> TransportEvent {
    timeout(LIMIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

async fn next_message(rx: &mut Receiver<TransportEvent>) -> Inbound {
    match next_event(rx).await {
        TransportEvent::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn expect_closed(rx: &mut Receiver<TransportEvent>, flow: FlowId) {
    match next_event(rx).await {
        TransportEvent::FlowClosed { flow: closed } => assert_eq!(closed, flow),
        other => panic!("expected FlowClosed for {flow}, got {other:?}"),
    }
}

/// Reads until the peer closes; true if it closed (EOF or reset) within the limit.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    timeout(LIMIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false)
}

async fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    timeout(LIMIT, stream.read_exact(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    buf
}

fn server_addr(transports: &Transports) -> SocketAddr {
    let addr = transports.local_addr_for(Transport::Tcp).unwrap();
    assert_ne!(addr.port(), 0);
    addr
}

/// Tests live in a module named after the file, so `cargo test transport` selects them.
mod transport_tcp {
    use super::*;

    #[tokio::test]
    async fn pipelined_messages_split_across_writes() {
        let (transports, handle, mut rx) = bind(TransportConfig::default()).await;
        let server = server_addr(&transports);
        let mut client = TcpStream::connect(server).await.unwrap();
        client.set_nodelay(true).unwrap();

        let sdp = "a=candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host\r\n".repeat(110);
        let messages = [
            sip("OPTIONS", ""),
            sip("INVITE", &sdp),
            sip("MESSAGE", "héllo ☺"),
        ];
        let stream = format!("\r\n\r\n{}{}{}", messages[0], messages[1], messages[2]);
        let bytes = stream.as_bytes();
        // Uneven chunks, cutting through start lines, headers, the blank line and bodies.
        let mut start = 0;
        for (i, len) in [3usize, 50, 1, 700, 4096, 13].iter().cycle().enumerate() {
            if start >= bytes.len() {
                break;
            }
            let end = (start + len).min(bytes.len());
            client.write_all(&bytes[start..end]).await.unwrap();
            start = end;
            if i % 2 == 0 {
                // Give the server a chance to read what is there, so the pieces arrive apart.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // The leading CRLFCRLF is a ping and gets a CRLF pong.
        assert_eq!(read_exactly(&mut client, 2).await, b"\r\n");

        let mut flow = None;
        for expected in &messages {
            let m = next_message(&mut rx).await;
            assert_eq!(m.transport, Transport::Tcp);
            assert_eq!(m.remote, client.local_addr().unwrap());
            assert_eq!(m.local, server);
            assert_eq!(&m.data[..], expected.as_bytes());
            let id = m.flow.expect("stream messages carry a flow");
            assert_eq!(*flow.get_or_insert(id), id, "one connection, one flow");
        }
        let flow = flow.unwrap();
        let info = handle.flow_info(flow).unwrap();
        assert_eq!(info.transport, Transport::Tcp);
        assert!(!info.outbound);

        // A reply goes back over the same connection.
        let reply = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            handle
                .send(
                    Destination::Flow(flow),
                    Bytes::from_static(reply.as_bytes())
                )
                .unwrap(),
            Some(flow)
        );
        assert_eq!(
            read_exactly(&mut client, reply.len()).await,
            reply.as_bytes()
        );

        drop(client);
        expect_closed(&mut rx, flow).await;
        transports.shutdown().await;
    }

    #[tokio::test]
    async fn oversized_message_closes_the_connection() {
        let config = TransportConfig {
            max_message_size: 4096,
            ..Default::default()
        };
        let (_transports, handle, mut rx) = bind(config).await;
        let server = _transports.local_addr_for(Transport::Tcp).unwrap();
        let mut client = TcpStream::connect(server).await.unwrap();
        client
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        let flow = next_message(&mut rx).await.flow.unwrap();

        // Refused from its headers alone: the declared body would pass the limit.
        let big = "INVITE sip:bob@example.test SIP/2.0\r\nContent-Length: 100000\r\n\r\n";
        client.write_all(big.as_bytes()).await.unwrap();
        assert!(closed_by_peer(&mut client).await);
        expect_closed(&mut rx, flow).await;

        // The flow is gone: sending to it is an error, not a silent drop.
        let err = handle
            .send(Destination::Flow(flow), Bytes::from_static(b"x"))
            .unwrap_err();
        assert!(
            matches!(err, SendError::UnknownFlow(f) if f == flow),
            "{err}"
        );
        assert!(matches!(handle.close(flow), Err(SendError::UnknownFlow(_))));
    }

    #[tokio::test]
    async fn missing_content_length_closes_the_connection() {
        let (_transports, _handle, mut rx) = bind(TransportConfig::default()).await;
        let server = _transports.local_addr_for(Transport::Tcp).unwrap();
        let mut client = TcpStream::connect(server).await.unwrap();
        client
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        let flow = next_message(&mut rx).await.flow.unwrap();
        client
            .write_all(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")
            .await
            .unwrap();
        assert!(closed_by_peer(&mut client).await);
        expect_closed(&mut rx, flow).await;
    }

    #[tokio::test]
    async fn header_block_without_end_is_bounded() {
        let config = TransportConfig {
            max_message_size: 2048,
            ..Default::default()
        };
        let (_transports, _handle, mut rx) = bind(config).await;
        let server = _transports.local_addr_for(Transport::Tcp).unwrap();
        let mut client = TcpStream::connect(server).await.unwrap();
        client
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        let flow = next_message(&mut rx).await.flow.unwrap();
        client
            .write_all(b"OPTIONS sip:a@b SIP/2.0\r\n")
            .await
            .unwrap();
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for _ in 0..100 {
            if client.write_all(line).await.is_err() {
                break;
            }
        }
        assert!(closed_by_peer(&mut client).await);
        expect_closed(&mut rx, flow).await;
    }

    #[tokio::test]
    async fn per_ip_limit_refuses_extra_connections() {
        let config = TransportConfig {
            max_connections_per_ip: 2,
            ..Default::default()
        };
        let (transports, _handle, mut rx) = bind(config).await;
        let server = server_addr(&transports);

        let mut first = TcpStream::connect(server).await.unwrap();
        first
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        let first_flow = next_message(&mut rx).await.flow.unwrap();
        let mut second = TcpStream::connect(server).await.unwrap();
        second
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        next_message(&mut rx).await;

        let mut third = TcpStream::connect(server).await.unwrap();
        assert!(closed_by_peer(&mut third).await, "third connection refused");

        // A slot frees up once a connection ends (released before FlowClosed is reported).
        drop(first);
        expect_closed(&mut rx, first_flow).await;
        let mut fourth = TcpStream::connect(server).await.unwrap();
        fourth
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        let m = next_message(&mut rx).await;
        assert_eq!(m.remote, fourth.local_addr().unwrap());
        drop(second);
    }

    #[tokio::test]
    async fn total_connection_limit() {
        let config = TransportConfig {
            max_connections: 1,
            ..Default::default()
        };
        let (transports, handle, mut rx) = bind(config).await;
        let server = server_addr(&transports);
        let mut first = TcpStream::connect(server).await.unwrap();
        first
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        next_message(&mut rx).await;
        let mut second = TcpStream::connect(server).await.unwrap();
        assert!(closed_by_peer(&mut second).await);
        // Outbound connections count too.
        let err = handle
            .send(
                Destination::Address {
                    transport: Transport::Tcp,
                    addr: "127.0.0.1:9".parse().unwrap(),
                },
                Bytes::from_static(b"x"),
            )
            .unwrap_err();
        assert!(matches!(err, SendError::TooManyConnections), "{err}");
        drop(first);
    }

    #[tokio::test]
    async fn close_and_idle_timeout_end_flows() {
        let config = TransportConfig {
            tcp_idle_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let (transports, handle, mut rx) = bind(config).await;
        let server = server_addr(&transports);

        let mut closed = TcpStream::connect(server).await.unwrap();
        closed
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        let flow = next_message(&mut rx).await.flow.unwrap();
        handle.close(flow).unwrap();
        assert!(closed_by_peer(&mut closed).await);
        expect_closed(&mut rx, flow).await;

        let mut idle = TcpStream::connect(server).await.unwrap();
        idle.write_all(sip("OPTIONS", "").as_bytes()).await.unwrap();
        let flow = next_message(&mut rx).await.flow.unwrap();
        assert!(closed_by_peer(&mut idle).await);
        expect_closed(&mut rx, flow).await;
    }

    #[tokio::test]
    async fn outbound_connection_is_opened_and_reused() {
        let (_transports, handle, mut rx) = bind(TransportConfig::default()).await;
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = Destination::Address {
            transport: Transport::Tcp,
            addr: peer.local_addr().unwrap(),
        };
        let request = sip("OPTIONS", "");
        let flow = handle
            .send(dest, Bytes::from(request.clone()))
            .unwrap()
            .expect("a TCP flow");
        let info = handle.flow_info(flow).unwrap();
        assert!(info.outbound);
        assert_eq!(info.remote, peer.local_addr().unwrap());
        let (mut conn, _) = timeout(LIMIT, peer.accept()).await.unwrap().unwrap();
        assert_eq!(
            read_exactly(&mut conn, request.len()).await,
            request.as_bytes()
        );

        // Same address, same connection.
        assert_eq!(
            handle.send(dest, Bytes::from(request.clone())).unwrap(),
            Some(flow)
        );
        assert_eq!(
            read_exactly(&mut conn, request.len()).await,
            request.as_bytes()
        );

        // The peer's answer arrives on that flow.
        let reply = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        conn.write_all(reply.as_bytes()).await.unwrap();
        let m = next_message(&mut rx).await;
        assert_eq!(m.flow, Some(flow));
        assert_eq!(&m.data[..], reply.as_bytes());

        drop(conn);
        expect_closed(&mut rx, flow).await;
    }

    #[tokio::test]
    async fn failed_outbound_connect_reports_flow_closed() {
        let (_transports, handle, mut rx) = bind(TransportConfig::default()).await;
        let vacant = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = vacant.local_addr().unwrap();
        drop(vacant);
        let flow = handle
            .send(
                Destination::Address {
                    transport: Transport::Tcp,
                    addr,
                },
                Bytes::from_static(b"x"),
            )
            .unwrap()
            .unwrap();
        expect_closed(&mut rx, flow).await;
        assert!(handle.flow_info(flow).is_none());

        // No dialling for WebSocket, no TLS without a client config.
        for transport in [Transport::Ws, Transport::Wss] {
            let err = handle
                .send(Destination::Address { transport, addr }, Bytes::new())
                .unwrap_err();
            assert!(matches!(err, SendError::NoConnection { .. }), "{err}");
        }
        let err = handle
            .send(
                Destination::Address {
                    transport: Transport::Tls,
                    addr,
                },
                Bytes::new(),
            )
            .unwrap_err();
        assert!(matches!(err, SendError::TlsClientNotConfigured), "{err}");
    }

    #[tokio::test]
    async fn shutdown_closes_connections_and_reports_flows() {
        let (transports, handle, mut rx) = bind(TransportConfig::default()).await;
        let server = server_addr(&transports);
        let mut client = TcpStream::connect(server).await.unwrap();
        client
            .write_all(sip("OPTIONS", "").as_bytes())
            .await
            .unwrap();
        let flow = next_message(&mut rx).await.flow.unwrap();

        timeout(LIMIT, transports.shutdown())
            .await
            .expect("shutdown in time");
        assert!(closed_by_peer(&mut client).await);
        expect_closed(&mut rx, flow).await;
        // Every task is gone, so the channel ends.
        assert!(timeout(LIMIT, rx.recv()).await.unwrap().is_none());
        assert!(TcpStream::connect(server).await.is_err());
        let err = handle
            .send(
                Destination::Address {
                    transport: Transport::Tcp,
                    addr: server,
                },
                Bytes::new(),
            )
            .unwrap_err();
        assert!(matches!(err, SendError::ShutDown), "{err}");
    }
}
