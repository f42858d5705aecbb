//! SIP over UDP through `huddle::transport`, on real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use huddle::transport::{
    Destination, FlowId, SendError, TlsContext, Transport, TransportConfig, TransportEvent,
    TransportHandle, Transports, UdpBatch, UdpReceiver,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

const OPTIONS: &str = "OPTIONS sip:bob@example.test SIP/2.0\r\n\
    Via: SIP/2.0/UDP client.test;branch=z9hG4bK1;rport\r\nCall-ID: u1\r\nCSeq: 1 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

/// Binds the one listener `spec` (`udp:127.0.0.1:0`) with `config`.
async fn bind(
    spec: &str,
    config: TransportConfig,
) -> (Transports, TransportHandle, Receiver<TransportEvent>) {
    Transports::bind(&[spec.parse().unwrap()], config, TlsContext::default())
        .await
        .unwrap()
}

/// A UDP listener on an ephemeral loopback port, default limits; also its address.
async fn bind_udp() -> (
    Transports,
    TransportHandle,
    Receiver<TransportEvent>,
    SocketAddr,
) {
    let (transports, handle, rx) = bind("udp:127.0.0.1:0", TransportConfig::default()).await;
    let server = transports.local_addr_for(Transport::Udp).unwrap();
    (transports, handle, rx, server)
}

/// Where a datagram to `addr` goes.
fn udp_to(addr: SocketAddr) -> Destination {
    Destination::Address {
        transport: Transport::Udp,
        addr,
    }
}

/// The next datagram `socket` receives (bounded by `LIMIT`): its length in `buf` and its sender.
async fn recv_datagram(socket: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    timeout(LIMIT, socket.recv_from(buf))
        .await
        .expect("no datagram in time")
        .unwrap()
}

async fn next_event(rx: &mut Receiver<TransportEvent>) -> TransportEvent {
    timeout(LIMIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

/// Waits (bounded) until one of `receivers`, polled from `first` on, has something to read,
/// then reads it: its index and the messages read, each with its sender.
async fn read_any(
    receivers: &mut [UdpReceiver],
    first: usize,
) -> (usize, Vec<(SocketAddr, Vec<u8>)>) {
    let (index, ready) = timeout(
        LIMIT,
        std::future::poll_fn(|cx| {
            let n = receivers.len();
            (0..n)
                .map(|k| (first + k) % n)
                .find_map(|i| match receivers[i].poll_ready(cx) {
                    std::task::Poll::Ready(ready) => Some((i, ready)),
                    std::task::Poll::Pending => None,
                })
                .map_or(std::task::Poll::Pending, std::task::Poll::Ready)
        }),
    )
    .await
    .expect("nothing to read in time");
    ready.unwrap();
    let local = receivers[index].local_addr();
    let mut read = Vec::new();
    receivers[index].read(|d| {
        assert_eq!(d.local, local);
        read.push((d.remote, d.data.to_vec()));
    });
    (index, read)
}

/// Tests live in a module named after the file, so `cargo test transport` selects them.
mod transport_udp {
    use super::*;

    #[tokio::test]
    async fn udp_echo_through_the_channel() {
        let (transports, handle, mut rx, server) = bind_udp().await;
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
            .send(udp_to(m.remote), Bytes::from_static(reply.as_bytes()))
            .unwrap();
        assert_eq!(sent, None, "UDP has no flows");
        let mut buf = [0u8; 2048];
        let (n, from) = recv_datagram(&client, &mut buf).await;
        assert_eq!(from, server, "sent from the listening socket");
        assert_eq!(&buf[..n], reply.as_bytes());
        transports.shutdown().await;
        assert!(timeout(LIMIT, rx.recv()).await.unwrap().is_none());
    }

    /// Datagrams held in a batch go out at `flush`, each to its peer, in the order held, also
    /// when there are more than one system call takes.
    #[tokio::test]
    async fn batched_datagrams_go_out_at_flush_in_order() {
        let (_transports, handle, _rx, server) = bind_udp().await;
        let alice = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bob = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peers = [alice.local_addr().unwrap(), bob.local_addr().unwrap()];
        let mut batch = UdpBatch::default();
        for i in 0..150u32 {
            let to = udp_to(peers[(i % 2) as usize]);
            let sent = handle
                .send_batched(&mut batch, to, Bytes::from(format!("datagram {i}")), i)
                .unwrap();
            assert_eq!(sent, None);
        }
        assert!(!batch.is_empty());
        let mut failed = Vec::new();
        handle.flush(&mut batch, |tag, e| failed.push((tag, e.to_string())));
        assert!(failed.is_empty(), "{failed:?}");
        assert!(batch.is_empty());
        let mut buf = [0u8; 256];
        for (peer, socket) in [(0, &alice), (1, &bob)] {
            for i in (peer..150).step_by(2) {
                let (n, from) = recv_datagram(socket, &mut buf).await;
                assert_eq!(from, server);
                assert_eq!(&buf[..n], format!("datagram {i}").as_bytes());
            }
        }
    }

    /// A datagram the kernel refuses (broadcast without SO_BROADCAST) comes back with its tag;
    /// the ones around it still go out.
    #[tokio::test]
    async fn a_refused_datagram_comes_back_with_its_tag() {
        let (_transports, handle, _rx, _server) = bind_udp().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut batch = UdpBatch::default();
        let good = udp_to(client.local_addr().unwrap());
        let refused = udp_to("255.255.255.255:5060".parse().unwrap());
        handle
            .send_batched(&mut batch, good, Bytes::from_static(b"first"), "first")
            .unwrap();
        handle
            .send_batched(&mut batch, refused, Bytes::from_static(b"x"), "refused")
            .unwrap();
        handle
            .send_batched(&mut batch, good, Bytes::from_static(b"last"), "last")
            .unwrap();
        let mut failed = Vec::new();
        handle.flush(&mut batch, |tag, e| failed.push((tag, e)));
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, "refused");
        assert!(matches!(failed[0].1, SendError::Io(_)), "{:?}", failed[0].1);
        let mut buf = [0u8; 64];
        for expected in [&b"first"[..], b"last"] {
            let (n, _) = recv_datagram(&client, &mut buf).await;
            assert_eq!(&buf[..n], expected);
        }
    }

    #[tokio::test]
    async fn udp_send_errors() {
        let (_transports, handle, _rx) = bind("tcp:127.0.0.1:0", TransportConfig::default()).await;
        let nowhere = udp_to("127.0.0.1:5060".parse().unwrap());
        let err = handle.send(nowhere, Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(err, SendError::NoSocket(Transport::Udp)), "{err}");
        let mut batch = UdpBatch::default();
        let err = handle
            .send_batched(&mut batch, nowhere, Bytes::from_static(b"x"), ())
            .unwrap_err();
        assert!(matches!(err, SendError::NoSocket(Transport::Udp)), "{err}");
        assert!(batch.is_empty());
        let err = handle
            .send(
                Destination::Flow(FlowId::from_raw(u64::MAX)),
                Bytes::from_static(b"x"),
            )
            .unwrap_err();
        assert!(matches!(err, SendError::UnknownFlow(_)), "{err}");
    }

    /// With `bind_with_udp` no task reads the UDP sockets: the caller reads each receiver, which
    /// keeps the rules (an oversized request answered 513, a keep-alive dropped) and the order
    /// of a burst larger than one read, and nothing comes on the event channel.
    #[tokio::test]
    async fn the_caller_reads_the_udp_receivers_itself() {
        let config = TransportConfig {
            max_message_size: 1024,
            ..Default::default()
        };
        let specs = [
            "udp:127.0.0.1:0".parse().unwrap(),
            "udp:127.0.0.1:0".parse().unwrap(),
        ];
        let (transports, _handle, mut rx, mut receivers) =
            Transports::bind_with_udp(&specs, config, TlsContext::default())
                .await
                .unwrap();
        assert_eq!(receivers.len(), 2);
        let addrs: Vec<SocketAddr> = transports.local_addrs().iter().map(|s| s.addr).collect();
        assert_eq!(receivers[0].local_addr(), addrs[0]);
        assert_eq!(receivers[1].local_addr(), addrs[1]);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = client.local_addr().unwrap();

        // Oversized (a whole request, so it can be answered), blank, then a message: to the
        // second socket, which is found although the first is polled first.
        let big = format!(
            "OPTIONS sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP client.test;branch=z9hG4bK2\r\n\
             From: <sip:a@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: big\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 1100\r\n\r\n{}",
            "x".repeat(1100)
        );
        client.send_to(big.as_bytes(), addrs[1]).await.unwrap();
        client.send_to(b"\r\n\r\n", addrs[1]).await.unwrap();
        client.send_to(OPTIONS.as_bytes(), addrs[1]).await.unwrap();
        let mut got = Vec::new();
        while got.is_empty() {
            let (index, read) = read_any(&mut receivers, 0).await;
            assert_eq!(index, 1);
            got.extend(read);
        }
        assert_eq!(got, vec![(me, OPTIONS.as_bytes().to_vec())]);
        let mut buf = [0u8; 2048];
        let (n, from) = recv_datagram(&client, &mut buf).await;
        assert_eq!(from, addrs[1], "answered from the socket it came to");
        assert!(
            buf[..n].starts_with(b"SIP/2.0 513 "),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );

        // A burst larger than one read, to the first socket: whole and in order.
        let messages: Vec<String> = (0..40)
            .map(|i| OPTIONS.replace("Call-ID: u1", &format!("Call-ID: burst-{i}")))
            .collect();
        for m in &messages {
            client.send_to(m.as_bytes(), addrs[0]).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < messages.len() {
            let (index, read) = read_any(&mut receivers, 1).await;
            assert_eq!(index, 0);
            got.extend(read);
        }
        let expected: Vec<(SocketAddr, Vec<u8>)> = messages
            .iter()
            .map(|m| (me, m.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, expected);

        assert!(rx.try_recv().is_err(), "no UDP message on the channel");
        drop(receivers);
        transports.shutdown().await;
        assert!(timeout(LIMIT, rx.recv()).await.unwrap().is_none());
    }
}
