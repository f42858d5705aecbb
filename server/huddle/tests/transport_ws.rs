//! SIP over WebSocket (RFC 7118) through `huddle::transport`: the `sip` subprotocol, text and
//! binary frames in, binary frames out, server pings closing dead peers, size limits, WSS.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use huddle::transport::{
    client_config_with_roots, generate_self_signed, Destination, FlowId, ListenSpec, SendError,
    TlsContext, Transport, TransportConfig, TransportEvent, TransportHandle, Transports,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

const LIMIT: Duration = Duration::from_secs(5);

/// A SIPml5-style REGISTER.
const REGISTER: &str = "REGISTER sip:example.test SIP/2.0\r\n\
    Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKq59T;rport\r\n\
    From: \"alice\"<sip:alice@example.test>;tag=G23e\r\nTo: \"alice\"<sip:alice@example.test>\r\n\
    Contact: \"alice\"<sip:alice@df7jal23ls0d.invalid;transport=ws>;expires=300\r\n\
    Call-ID: 232d29cc\r\nCSeq: 52103 REGISTER\r\nContent-Length: 0\r\nMax-Forwards: 70\r\n\r\n";

async fn bind_ws(
    config: TransportConfig,
) -> (Transports, TransportHandle, Receiver<TransportEvent>) {
    let specs: [ListenSpec; 1] = ["ws:127.0.0.1:0".parse().unwrap()];
    Transports::bind(&specs, config, TlsContext::default())
        .await
        .unwrap()
}

async fn next_event(rx: &mut Receiver<TransportEvent>) -> TransportEvent {
    timeout(LIMIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

async fn expect_message(rx: &mut Receiver<TransportEvent>, data: &[u8]) -> FlowId {
    match next_event(rx).await {
        TransportEvent::Message(m) => {
            assert_eq!(&m.data[..], data);
            m.flow.expect("WebSocket messages carry a flow")
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn expect_closed(rx: &mut Receiver<TransportEvent>, flow: FlowId) {
    match next_event(rx).await {
        TransportEvent::FlowClosed { flow: closed } => assert_eq!(closed, flow),
        other => panic!("expected FlowClosed for {flow}, got {other:?}"),
    }
}

async fn connect<S>(
    io: S,
    url: &str,
    subprotocol: Option<&'static str>,
) -> Result<WebSocketStream<S>, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request().unwrap();
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    let (ws, response) = timeout(LIMIT, tokio_tungstenite::client_async(request, io))
        .await
        .expect("handshake in time")?;
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "sip"
    );
    Ok(ws)
}

async fn connect_ws(addr: std::net::SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connect(tcp, &format!("ws://{addr}/"), Some("sip"))
        .await
        .unwrap()
}

/// The next data frame, skipping pings.
async fn next_data<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timeout(LIMIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return m,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("frame in time")
}

/// Tests live in a module named after the file, so `cargo test transport` selects them.
mod transport_ws {
    use super::*;

    #[tokio::test]
    async fn sip_subprotocol_text_and_binary_in_binary_out() {
        let (transports, handle, mut rx) = bind_ws(TransportConfig::default()).await;
        let server = transports.local_addr_for(Transport::Ws).unwrap();
        let mut ws = connect_ws(server).await;

        // SIPml5 sends text frames; other clients binary. Both are accepted.
        ws.send(Message::text(REGISTER)).await.unwrap();
        let flow = expect_message(&mut rx, REGISTER.as_bytes()).await;
        ws.send(Message::binary(REGISTER.as_bytes().to_vec()))
            .await
            .unwrap();
        assert_eq!(expect_message(&mut rx, REGISTER.as_bytes()).await, flow);
        let info = handle.flow_info(flow).unwrap();
        assert_eq!(info.transport, Transport::Ws);

        // Everything we send is a binary frame, so non-ASCII bodies survive SIPml5.
        let body = "héllo bob ☺";
        let message = format!(
            "MESSAGE sip:bob@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\n\
             Content-Type: text/plain;charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        handle
            .send(Destination::Flow(flow), Bytes::from(message.clone()))
            .unwrap();
        match next_data(&mut ws).await {
            Message::Binary(data) => assert_eq!(&data[..], message.as_bytes()),
            other => panic!("expected a binary frame, got {other:?}"),
        }

        // SIP.js-style CRLFCRLF keep-alive gets a CRLF.
        ws.send(Message::text("\r\n\r\n")).await.unwrap();
        match next_data(&mut ws).await {
            Message::Text(t) => assert_eq!(t.as_str(), "\r\n"),
            other => panic!("expected a CRLF pong, got {other:?}"),
        }

        ws.close(None).await.unwrap();
        expect_closed(&mut rx, flow).await;
        let err = handle
            .send(Destination::Flow(flow), Bytes::from_static(b"late"))
            .unwrap_err();
        assert!(matches!(err, SendError::UnknownFlow(_)), "{err}");
    }

    #[tokio::test]
    async fn handshake_without_sip_subprotocol_is_refused() {
        let (transports, _handle, mut rx) = bind_ws(TransportConfig::default()).await;
        let server = transports.local_addr_for(Transport::Ws).unwrap();
        for offered in [None, Some("chat"), Some("SIP, xmpp")] {
            let tcp = TcpStream::connect(server).await.unwrap();
            match connect(tcp, &format!("ws://{server}/"), offered).await {
                Err(tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), 400, "{offered:?}");
                }
                Err(other) => panic!("expected an HTTP refusal for {offered:?}, got {other}"),
                Ok(_) => panic!("handshake with {offered:?} accepted"),
            }
        }
        // A list including `sip` is fine.
        let tcp = TcpStream::connect(server).await.unwrap();
        let mut ws = connect(tcp, &format!("ws://{server}/"), Some("xmpp, sip"))
            .await
            .unwrap();
        ws.send(Message::text(REGISTER)).await.unwrap();
        expect_message(&mut rx, REGISTER.as_bytes()).await;
    }

    #[tokio::test]
    async fn dead_peer_is_closed_after_missed_pong() {
        let config = TransportConfig {
            ws_ping_interval: Duration::from_millis(150),
            ws_pong_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let (transports, handle, mut rx) = bind_ws(config).await;
        let server = transports.local_addr_for(Transport::Ws).unwrap();

        // A live client keeps reading, so tungstenite answers the server's pings.
        let mut live = connect_ws(server).await;
        live.send(Message::text(REGISTER)).await.unwrap();
        let live_flow = expect_message(&mut rx, REGISTER.as_bytes()).await;
        let (frames_tx, mut frames) = tokio::sync::mpsc::channel(8);
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = live.next().await {
                if let Message::Binary(data) = frame {
                    let _ = frames_tx.send(data).await;
                }
            }
        });

        // A dead client says one thing and then never reads again: no pongs.
        let mut dead = connect_ws(server).await;
        dead.send(Message::text(REGISTER)).await.unwrap();
        let dead_flow = expect_message(&mut rx, REGISTER.as_bytes()).await;
        expect_closed(&mut rx, dead_flow).await;

        // Several ping rounds later the live one is still there.
        handle
            .send(
                Destination::Flow(live_flow),
                Bytes::from_static(b"still here"),
            )
            .unwrap();
        let data = timeout(LIMIT, frames.recv()).await.unwrap().unwrap();
        assert_eq!(&data[..], b"still here");
        assert!(rx.try_recv().is_err(), "the live flow must not close");
        reader.abort();
        drop(dead);
    }

    #[tokio::test]
    async fn oversized_frame_closes_the_connection() {
        let config = TransportConfig {
            max_message_size: 4096,
            ..Default::default()
        };
        let (transports, handle, mut rx) = bind_ws(config).await;
        let server = transports.local_addr_for(Transport::Ws).unwrap();
        let mut ws = connect_ws(server).await;
        ws.send(Message::text(REGISTER)).await.unwrap();
        let flow = expect_message(&mut rx, REGISTER.as_bytes()).await;

        ws.send(Message::binary(vec![b'x'; 5000])).await.unwrap();
        expect_closed(&mut rx, flow).await;
        let ended = timeout(LIMIT, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "client sees the close");
        assert!(handle
            .send(Destination::Flow(flow), Bytes::from_static(b"x"))
            .is_err());
    }

    #[tokio::test]
    async fn wss_with_self_signed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        generate_self_signed(&["localhost".into()], &cert, &key).unwrap();
        let config = TransportConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key),
            ..Default::default()
        };
        let specs: [ListenSpec; 1] = ["wss:127.0.0.1:0".parse().unwrap()];
        let (transports, handle, mut rx) = Transports::bind(&specs, config, TlsContext::default())
            .await
            .unwrap();
        let server = transports.local_addr_for(Transport::Wss).unwrap();

        let connector = tokio_rustls::TlsConnector::from(client_config_with_roots(&cert).unwrap());
        let tcp = TcpStream::connect(server).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut ws = connect(
            tls,
            &format!("wss://localhost:{}/", server.port()),
            Some("sip"),
        )
        .await
        .unwrap();
        ws.send(Message::text(REGISTER)).await.unwrap();
        let TransportEvent::Message(m) = next_event(&mut rx).await else {
            panic!("expected a message")
        };
        assert_eq!(m.transport, Transport::Wss);
        let flow = m.flow.unwrap();
        handle
            .send(
                Destination::Flow(flow),
                Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"),
            )
            .unwrap();
        match next_data(&mut ws).await {
            Message::Binary(data) => assert_eq!(&data[..], b"SIP/2.0 200 OK\r\n\r\n"),
            other => panic!("expected a binary frame, got {other:?}"),
        }
        transports.shutdown().await;
        expect_closed(&mut rx, flow).await;
    }
}
