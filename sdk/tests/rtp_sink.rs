//! ABI 1.7 through the C ABI: an RTP sink registered with `Host::set_rtp_sink` takes incoming
//! RTP instead of `incoming_rtp`, runs while a callback of the same instance is running, has a
//! panic caught at the boundary, cannot replace itself from inside a delivery, is freed once
//! replaced and taken back when the instance is destroyed; a host that has no sinks keeps
//! `incoming_rtp`. `send_rtp_batch` is one host call, and on a host table from before 1.7 it
//! becomes one `send_rtp` per packet.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huddle_sdk::fake::{sample_request, FakeHost, MediaCall};
use huddle_sdk::hosting::{HostServices, PluginInstance, RegisteredRtpSink};
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Error, Host, Level, MediaSessionId, OutgoingRtp, Plugin,
    Request, Result, RtpSink,
};

fn logs(host: &FakeHost) -> String {
    host.logs()
        .iter()
        .map(|l| format!("{:?} {}\n", l.level, l.message))
        .collect()
}

/// The test plugin's sink: logs what it gets through the host, panics on `boom`, tries to
/// replace itself on `reenter`, and says when it is dropped.
struct Sink {
    host: Host,
    /// Told of every delivery (the concurrency test waits on it).
    seen: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
}

impl RtpSink for Sink {
    fn incoming_rtp(&self, session: MediaSessionId, mid: &str, packet: &[u8]) {
        match packet {
            b"boom" => panic!("sink boom"),
            b"reenter" => {
                let again = self.host.set_rtp_sink(None);
                huddle_sdk::info!(self.host, "reenter {again:?}");
            }
            _ => huddle_sdk::info!(self.host, "sink {session} {mid} {}", packet.len()),
        }
        if let Some(tx) = self.seen.lock().unwrap().as_ref() {
            let _ = tx.send(packet.to_vec());
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        huddle_sdk::info!(self.host, "sink dropped");
    }
}

/// Registers a [`Sink`] at `init` and takes commands in MESSAGE bodies: `unsink`, `sink`,
/// `batch` (three packets in one `send_rtp_batch`), `wait` (blocks until the sink saw a packet:
/// the concurrency test).
struct Sinky {
    seen: Option<mpsc::Receiver<Vec<u8>>>,
}

fn sink_for(host: &Host) -> (Arc<Sink>, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let sink = Arc::new(Sink {
        host: host.clone(),
        seen: Mutex::new(Some(tx)),
    });
    (sink, rx)
}

impl Plugin for Sinky {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::method("MESSAGE").with_user("sinky"));
        let (sink, rx) = sink_for(host);
        let registered = host.set_rtp_sink(Some(sink));
        huddle_sdk::info!(host, "registered {registered:?}");
        Ok(Sinky { seen: Some(rx) })
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        let answer = match req.body() {
            b"unsink" => format!("{:?}", host.set_rtp_sink(None)),
            b"sink" => {
                let (sink, rx) = sink_for(host);
                self.seen = Some(rx);
                format!("{:?}", host.set_rtp_sink(Some(sink)))
            }
            b"batch" => {
                let packets = [b"\x80one".as_slice(), b"\x80two", b"\x80three"];
                let batch: Vec<OutgoingRtp<'_>> = packets
                    .iter()
                    .enumerate()
                    .map(|(i, p)| OutgoingRtp {
                        session: MediaSessionId(10 + i as u64),
                        mid: "1",
                        packet: p,
                    })
                    .collect();
                format!("{:?}", host.send_rtp_batch(&batch))
            }
            b"wait" => {
                let seen = self.seen.as_ref().ok_or(Error::BadState)?;
                format!("{:?}", seen.recv_timeout(Duration::from_secs(10)))
            }
            _ => "?".to_owned(),
        };
        huddle_sdk::info!(host, "{} -> {answer}", String::from_utf8_lossy(req.body()));
        host.reply(&req, 200, "OK")
    }

    fn incoming_rtp(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        huddle_sdk::info!(host, "callback {session} {mid} {}", packet.len());
        Ok(())
    }
}

fn entry() -> huddle_sdk::hosting::PluginEntry {
    huddle_sdk::plugin_entry!(Sinky, "sinky", "1", Capabilities::MEDIA)
}

fn command(plugin: &mut huddle_sdk::fake::FakePlugin, body: &str) {
    let txn = plugin
        .request(sample_request("MESSAGE", "sip:sinky@example.test", body))
        .unwrap();
    assert_eq!(plugin.host().final_response(txn).unwrap().status(), 200);
}

#[test]
fn a_sink_takes_incoming_rtp_until_cleared_then_the_callback_does() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let mut plugin = host.start(&entry(), "").unwrap();
    assert!(
        host.logged(Level::Info, "registered Ok(())"),
        "{}",
        logs(&host)
    );
    assert!(host.has_rtp_sink());
    plugin
        .incoming_rtp(MediaSessionId(7), "0", b"\x80abc")
        .unwrap();
    assert!(host.logged(Level::Info, "sink 7 0 4"), "{}", logs(&host));
    assert!(!logs(&host).contains("callback"), "{}", logs(&host));

    command(&mut plugin, "unsink");
    assert!(
        host.logged(Level::Info, "unsink -> Ok(())"),
        "{}",
        logs(&host)
    );
    assert!(
        host.logged(Level::Info, "sink dropped"),
        "freed once the host let go"
    );
    assert!(!host.has_rtp_sink());
    plugin
        .incoming_rtp(MediaSessionId(7), "0", b"\x80abc")
        .unwrap();
    assert!(
        host.logged(Level::Info, "callback 7 0 4"),
        "{}",
        logs(&host)
    );
}

#[test]
fn a_panic_in_the_sink_is_caught_and_the_next_packet_is_delivered() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let mut plugin = host.start(&entry(), "").unwrap();
    assert_eq!(
        plugin.incoming_rtp(MediaSessionId(3), "1", b"boom"),
        Err(Error::Panic)
    );
    assert!(
        host.logged(Level::Error, "panic in the RTP sink: sink boom"),
        "{}",
        logs(&host)
    );
    plugin
        .incoming_rtp(MediaSessionId(3), "1", b"\x80after")
        .unwrap();
    assert!(host.logged(Level::Info, "sink 3 1 6"), "{}", logs(&host));
}

#[test]
fn the_sink_cannot_replace_itself_from_inside_a_delivery() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let mut plugin = host.start(&entry(), "").unwrap();
    plugin
        .incoming_rtp(MediaSessionId(3), "1", b"reenter")
        .unwrap();
    assert!(
        host.logged(Level::Info, "reenter Err(BadState)"),
        "{}",
        logs(&host)
    );
    assert!(host.has_rtp_sink(), "still registered");
}

#[test]
fn destroying_the_instance_takes_the_sink_back() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let plugin = host.start(&entry(), "").unwrap();
    let _ = plugin.stop();
    assert!(!host.has_rtp_sink());
    assert!(host.logged(Level::Info, "sink dropped"), "{}", logs(&host));
    assert!(host.logs().iter().all(|l| l.level != Level::Error));
}

#[test]
fn a_host_without_sinks_keeps_incoming_rtp() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    host.set_rtp_sinks(false);
    let mut plugin = host.start(&entry(), "").unwrap();
    assert!(
        host.logged(Level::Info, "registered Err(NotSupported)"),
        "{}",
        logs(&host)
    );
    plugin
        .incoming_rtp(MediaSessionId(7), "0", b"\x80abc")
        .unwrap();
    assert!(
        host.logged(Level::Info, "callback 7 0 4"),
        "{}",
        logs(&host)
    );
    // And a host without media has no sink either (the function is absent from its table).
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Sinky, "sinky", "1", Capabilities::NONE);
    let _plugin = host.start(&entry, "").unwrap();
    assert!(host.logged(Level::Info, "registered Err(NotSupported)"));
}

#[test]
fn a_batch_is_one_host_call() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let mut plugin = host.start(&entry(), "").unwrap();
    command(&mut plugin, "batch");
    assert!(
        host.logged(Level::Info, "batch -> Ok(())"),
        "{}",
        logs(&host)
    );
    assert_eq!(host.rtp_batches(), 1);
    let sent: Vec<(u64, Vec<u8>)> = host
        .media_calls()
        .into_iter()
        .filter_map(|c| match c {
            MediaCall::Rtp {
                session, packet, ..
            } => Some((session.0, packet)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (10, b"\x80one".to_vec()),
            (11, b"\x80two".to_vec()),
            (12, b"\x80three".to_vec())
        ]
    );
}

/// A host that keeps the sink where another thread can deliver to it, as the server's media
/// thread does.
#[derive(Default)]
struct ThreadedHost {
    sink: Arc<Mutex<Option<Arc<RegisteredRtpSink>>>>,
}

impl HostServices for ThreadedHost {
    fn capabilities(&self) -> Capabilities {
        Capabilities::MEDIA
    }

    fn log(&self, _: Level, _: &str) {}

    fn respond(&self, _: huddle_sdk::TransactionId, _: &[u8]) -> Result<()> {
        Ok(())
    }

    fn media_rtp_sink(&self, sink: Option<RegisteredRtpSink>) -> Result<()> {
        *self.sink.lock().unwrap() = sink.map(Arc::new);
        Ok(())
    }
}

#[test]
fn the_sink_runs_while_a_callback_of_the_instance_is_running() {
    let services = ThreadedHost::default();
    let slot = services.sink.clone();
    let mut instance = PluginInstance::start(&entry(), Arc::new(services), "").unwrap();
    let sink = slot.lock().unwrap().clone().expect("registered at init");
    // The callback below waits until the sink has seen a packet; the packet comes from another
    // thread while the callback runs. With one call at a time it would time out.
    let media = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        sink.deliver(MediaSessionId(5), "1", b"\x80concurrent")
    });
    let request = sample_request("MESSAGE", "sip:sinky@example.test", "wait");
    let info = huddle_sdk::RequestInfo::default();
    instance
        .handle_request(Some(huddle_sdk::TransactionId(1)), &request[..], &info)
        .unwrap();
    assert_eq!(media.join().unwrap(), Ok(()));
    drop(instance);
    assert!(slot.lock().unwrap().is_none(), "destroy took the sink back");
}

#[allow(unsafe_code)]
mod table_1_6 {
    //! A host table as a 1.6 host fills it (media, but `struct_size` ends before
    //! `media_rtp_sink`), counting `media_send_rtp` calls.
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use huddle_sdk::abi::{self, HuddleRtpOut};

    pub static SENT: AtomicUsize = AtomicUsize::new(0);

    pub unsafe extern "C" fn send_rtp(
        _: *mut c_void,
        _: u64,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> i32 {
        SENT.fetch_add(1, Ordering::Relaxed);
        abi::HUDDLE_OK
    }
    /// Lies beyond `struct_size`: a plugin that called it would not reach `send_rtp`.
    pub unsafe extern "C" fn send_rtp_batch(
        _: *mut c_void,
        _: *const HuddleRtpOut,
        _: usize,
    ) -> i32 {
        abi::HUDDLE_ERR_INTERNAL
    }
}

/// What [`BatchesAtInit`] got from the host.
static AT_INIT: Mutex<Option<(Result<()>, Result<()>)>> = Mutex::new(None);

/// Registers a sink and sends a batch of two during `init`.
struct BatchesAtInit;

impl Plugin for BatchesAtInit {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::method("MESSAGE"));
        let (sink, _rx) = sink_for(host);
        let registered = host.set_rtp_sink(Some(sink));
        let packet = OutgoingRtp {
            session: MediaSessionId(1),
            mid: "0",
            packet: b"\x80x",
        };
        let sent = host.send_rtp_batch(&[packet, packet]);
        *AT_INIT.lock().unwrap() = Some((registered, sent));
        Ok(BatchesAtInit)
    }

    fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
        Ok(())
    }
}

#[test]
fn on_a_1_6_host_a_batch_is_sent_packet_by_packet_and_there_is_no_sink() {
    use huddle_sdk::abi::HuddleHostApi;
    use std::sync::atomic::Ordering;
    let mut table = common::bare_table(6, std::mem::offset_of!(HuddleHostApi, media_rtp_sink));
    table.host_capabilities = Capabilities::ALL.bits();
    table.media_send_rtp = Some(table_1_6::send_rtp);
    table.media_send_rtp_batch = Some(table_1_6::send_rtp_batch);
    let entry = huddle_sdk::plugin_entry!(BatchesAtInit, "batches", "1", Capabilities::NONE);
    common::init_and_destroy(&entry, &table);
    assert_eq!(
        AT_INIT.lock().unwrap().take(),
        Some((Err(Error::NotSupported), Ok(())))
    );
    assert_eq!(table_1_6::SENT.load(Ordering::Relaxed), 2);
}
