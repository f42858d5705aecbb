//! SIP over UDP through `huddle::transport`, on real loopback sockets.

use std::time::Duration;

use bytes::Bytes;
use huddle::transport::{
    Destination, FlowId, SendError, TlsContext, Transport, TransportConfig, TransportEvent,
    Transports,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

const OPTIONS: &str = "OPTIONS sip:bob@example.test SIP/2.0\r\n\
    Via: SIP/2.0/UDP client.test;branch=z9hG4bK1;rport\r\nCall-ID: u1\r\nCSeq: 1 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

async fn next_event(rx: &mut Receiver<TransportEvent>) -> TransportEvent {
    timeout(LIMIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

/// Tests live in a module named after the file, so `cargo test transport` selects them.
mod transport_udp {
    use super::*;

    #[tokio::test]
    async fn udp_echo_through_the_channel() {
        let specs = ["udp:127.0.0.1:0".parse().unwrap()];
        let (transports, handle, mut rx) =
            Transports::bind(&specs, TransportConfig::default(), TlsContext::default())
                .await
                .unwrap();
        let server = transports.local_addr_for(Transport::Udp).unwrap();
        assert_ne!(server.port(), 0);
        assert_eq!(transports.local_addrs()[0].addr, server);
        assert_eq!(handle.local_addr_for(Transport::Udp), Some(server));
        assert_eq!(handle.local_addr_for(Transport::Tcp), None);

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(OPTIONS.as_bytes(), server).await.unwrap();
        let TransportEvent::Message(m) = next_event(&mut rx).await else {
            panic!("expected a message")
        };
        assert_eq!(m.transport, Transport::Udp);
        assert_eq!(m.flow, None);
        assert_eq!(m.local, server);
        assert_eq!(m.remote, client.local_addr().unwrap());
        assert_eq!(&m.data[..], OPTIONS.as_bytes());

        let reply = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        let sent = handle
            .send(
                Destination::Address {
                    transport: Transport::Udp,
                    addr: m.remote,
                },
                Bytes::from_static(reply.as_bytes()),
            )
            .unwrap();
        assert_eq!(sent, None, "UDP has no flows");
        let mut buf = [0u8; 2048];
        let (n, from) = timeout(LIMIT, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, server, "sent from the listening socket");
        assert_eq!(&buf[..n], reply.as_bytes());
        transports.shutdown().await;
        assert!(timeout(LIMIT, rx.recv()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_blank_datagrams_are_dropped() {
        let config = TransportConfig {
            max_message_size: 1024,
            ..Default::default()
        };
        let specs = ["udp:127.0.0.1:0".parse().unwrap()];
        let (transports, _handle, mut rx) = Transports::bind(&specs, config, TlsContext::default())
            .await
            .unwrap();
        let server = transports.local_addr_for(Transport::Udp).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let big = format!("{OPTIONS}{}", "x".repeat(1100));
        client.send_to(big.as_bytes(), server).await.unwrap();
        client.send_to(b"\r\n\r\n", server).await.unwrap();
        client.send_to(OPTIONS.as_bytes(), server).await.unwrap();
        let TransportEvent::Message(m) = next_event(&mut rx).await else {
            panic!("expected a message")
        };
        assert_eq!(
            &m.data[..],
            OPTIONS.as_bytes(),
            "only the valid datagram arrives"
        );
    }

    #[tokio::test]
    async fn udp_send_errors() {
        let specs = ["tcp:127.0.0.1:0".parse().unwrap()];
        let (_transports, handle, _rx) =
            Transports::bind(&specs, TransportConfig::default(), TlsContext::default())
                .await
                .unwrap();
        let err = handle
            .send(
                Destination::Address {
                    transport: Transport::Udp,
                    addr: "127.0.0.1:5060".parse().unwrap(),
                },
                Bytes::from_static(b"x"),
            )
            .unwrap_err();
        assert!(matches!(err, SendError::NoSocket(Transport::Udp)), "{err}");
        let err = handle
            .send(
                Destination::Flow(FlowId::from_raw(u64::MAX)),
                Bytes::from_static(b"x"),
            )
            .unwrap_err();
        assert!(matches!(err, SendError::UnknownFlow(_)), "{err}");
    }
}
