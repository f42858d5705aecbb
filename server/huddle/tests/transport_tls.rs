//! SIP over TLS through `huddle::transport` with a generated self-signed certificate: inbound
//! (a tokio-rustls client trusting that certificate), outbound between two instances, handshake
//! timeout, and configuration errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use huddle::transport::{
    client_config_with_roots, generate_self_signed, load_tls_config, Destination, ListenSpec,
    TlsContext, Transport, TransportConfig, TransportError, TransportEvent, Transports,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

const LIMIT: Duration = Duration::from_secs(5);

const OPTIONS: &str = "OPTIONS sip:bob@example.test SIP/2.0\r\n\
    Via: SIP/2.0/TLS client.test;branch=z9hG4bK1\r\nCall-ID: t1\r\nCSeq: 1 OPTIONS\r\n\
    Content-Length: 5\r\n\r\nhello";

fn cert_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    generate_self_signed(&["localhost".into(), "127.0.0.1".into()], &cert, &key).unwrap();
    (cert, key)
}

async fn next_event(rx: &mut Receiver<TransportEvent>) -> TransportEvent {
    timeout(LIMIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

/// Tests live in a module named after the file, so `cargo test transport` selects them.
mod transport_tls {
    use super::*;

    #[tokio::test]
    async fn tls_inbound_with_self_signed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_pair(dir.path());
        // Loaded through the config paths, as `huddle` does.
        let config = TransportConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key),
            ..Default::default()
        };
        let specs: [ListenSpec; 1] = ["tls:127.0.0.1:0".parse().unwrap()];
        let (transports, handle, mut rx) = Transports::bind(&specs, config, TlsContext::default())
            .await
            .unwrap();
        let server = transports.local_addr_for(Transport::Tls).unwrap();

        let connector = TlsConnector::from(client_config_with_roots(&cert).unwrap());
        let tcp = TcpStream::connect(server).await.unwrap();
        let client_addr = tcp.local_addr().unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = timeout(LIMIT, connector.connect(name, tcp))
            .await
            .unwrap()
            .unwrap();
        // Two messages, the second split in two writes.
        let (a, b) = OPTIONS.split_at(40);
        tls.write_all(OPTIONS.as_bytes()).await.unwrap();
        tls.write_all(a.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        tls.write_all(b.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();

        let mut flow = None;
        for _ in 0..2 {
            let TransportEvent::Message(m) = next_event(&mut rx).await else {
                panic!("expected a message")
            };
            assert_eq!(m.transport, Transport::Tls);
            assert_eq!(m.remote, client_addr);
            assert_eq!(&m.data[..], OPTIONS.as_bytes());
            flow = m.flow;
        }
        let flow = flow.unwrap();

        let reply = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        handle
            .send(
                Destination::Flow(flow),
                Bytes::from_static(reply.as_bytes()),
            )
            .unwrap();
        let mut buf = vec![0u8; reply.len()];
        timeout(LIMIT, tls.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, reply.as_bytes());

        drop(tls);
        match next_event(&mut rx).await {
            TransportEvent::FlowClosed { flow: closed } => assert_eq!(closed, flow),
            other => panic!("expected FlowClosed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn tls_outbound_between_two_servers() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_pair(dir.path());
        let server_tls = TlsContext {
            server: Some(load_tls_config(&cert, &key).unwrap()),
            client: None,
        };
        let specs: [ListenSpec; 1] = ["tls:127.0.0.1:0".parse().unwrap()];
        let (a, a_handle, mut a_rx) =
            Transports::bind(&specs, TransportConfig::default(), server_tls)
                .await
                .unwrap();
        let a_addr = a.local_addr_for(Transport::Tls).unwrap();

        // B has no listeners at all, only outbound TLS trusting A's certificate (by IP address).
        let client_tls = TlsContext {
            server: None,
            client: Some(client_config_with_roots(&cert).unwrap()),
        };
        let (_b, b_handle, mut b_rx) =
            Transports::bind(&[], TransportConfig::default(), client_tls)
                .await
                .unwrap();
        let b_flow = b_handle
            .send(
                Destination::Address {
                    transport: Transport::Tls,
                    addr: a_addr,
                },
                Bytes::from_static(OPTIONS.as_bytes()),
            )
            .unwrap()
            .unwrap();

        let TransportEvent::Message(m) = next_event(&mut a_rx).await else {
            panic!("expected a message at A")
        };
        assert_eq!(m.transport, Transport::Tls);
        assert_eq!(&m.data[..], OPTIONS.as_bytes());
        let a_flow = m.flow.unwrap();

        let reply = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        a_handle
            .send(
                Destination::Flow(a_flow),
                Bytes::from_static(reply.as_bytes()),
            )
            .unwrap();
        let TransportEvent::Message(m) = next_event(&mut b_rx).await else {
            panic!("expected a message at B")
        };
        assert_eq!(m.flow, Some(b_flow));
        assert_eq!(m.transport, Transport::Tls);
        assert_eq!(&m.data[..], reply.as_bytes());

        // A closes; B learns.
        a_handle.close(a_flow).unwrap();
        match next_event(&mut b_rx).await {
            TransportEvent::FlowClosed { flow } => assert_eq!(flow, b_flow),
            other => panic!("expected FlowClosed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn outbound_tls_refuses_an_untrusted_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_pair(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (other_cert, _) = cert_pair(other.path());
        let specs: [ListenSpec; 1] = ["tls:127.0.0.1:0".parse().unwrap()];
        let server_tls = TlsContext {
            server: Some(load_tls_config(&cert, &key).unwrap()),
            client: None,
        };
        let (a, _a_handle, mut a_rx) =
            Transports::bind(&specs, TransportConfig::default(), server_tls)
                .await
                .unwrap();
        let client_tls = TlsContext {
            server: None,
            client: Some(client_config_with_roots(&other_cert).unwrap()),
        };
        let (_b, b_handle, mut b_rx) =
            Transports::bind(&[], TransportConfig::default(), client_tls)
                .await
                .unwrap();
        let flow = b_handle
            .send(
                Destination::Address {
                    transport: Transport::Tls,
                    addr: a.local_addr_for(Transport::Tls).unwrap(),
                },
                Bytes::from_static(OPTIONS.as_bytes()),
            )
            .unwrap()
            .unwrap();
        match next_event(&mut b_rx).await {
            TransportEvent::FlowClosed { flow: closed } => assert_eq!(closed, flow),
            other => panic!("expected FlowClosed, got {other:?}"),
        }
        // A never saw a flow: failed handshakes are not flows.
        assert!(a_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn slow_handshake_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_pair(dir.path());
        let config = TransportConfig {
            handshake_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let tls = TlsContext {
            server: Some(load_tls_config(&cert, &key).unwrap()),
            client: None,
        };
        let specs: [ListenSpec; 2] = [
            "tls:127.0.0.1:0".parse().unwrap(),
            "ws:127.0.0.1:0".parse().unwrap(),
        ];
        let (transports, _handle, _rx) = Transports::bind(&specs, config, tls).await.unwrap();
        for transport in [Transport::Tls, Transport::Ws] {
            let addr = transports.local_addr_for(transport).unwrap();
            let mut silent = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 64];
            let read = timeout(LIMIT, silent.read(&mut buf))
                .await
                .expect("server gave up on the handshake");
            assert!(matches!(read, Ok(0) | Err(_)), "{transport}: {read:?}");
        }
    }

    #[tokio::test]
    async fn tls_listener_without_certificate_is_refused() {
        let specs: [ListenSpec; 1] = ["wss:127.0.0.1:0".parse().unwrap()];
        let err = Transports::bind(&specs, TransportConfig::default(), TlsContext::default())
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::TlsNotConfigured(_)), "{err}");

        let config = TransportConfig {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let err = Transports::bind(&specs, config, TlsContext::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn handles_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<TlsContext>();
        assert_send_sync::<huddle::transport::TransportHandle>();
        assert_send_sync::<Arc<rustls::ServerConfig>>();
    }
}
