//! The engine's thread (`huddle-media`): how it ends when stopped, when its owner drops it, and
//! when the driver panics.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle_sdk::HangupReason;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

use super::forward_tests::engine_with;
use super::{panic_message, EngineTask, MediaEngine, MediaError, MediaEvents};

/// The hangups a "plugin" heard; `panic_on_hangup` makes its `hangup` panic instead.
#[derive(Default)]
struct Hangups {
    heard: Mutex<Vec<(u64, HangupReason)>>,
    panic_on_hangup: bool,
}

impl MediaEvents for Hangups {
    fn ready(&self, _: u64) {}
    fn rtp(&self, _: u64, _: &str, _: Vec<u8>) {}
    fn rtcp(&self, _: u64, _: Vec<u8>) {}
    fn hangup(&self, session: u64, reason: HangupReason) {
        assert!(!self.panic_on_hangup, "this plugin's hangup panics");
        self.heard.lock().unwrap().push((session, reason));
    }
    fn bitrate(&self, _: u64, _: u64) {}
}

/// A video offer, as a browser would make it.
fn offer() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_vp8(true)
        .build(Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    change.apply().unwrap().0.to_sdp_string()
}

/// A leg for plugin 1: an offer answered (no peer connects; the leg lives in the driver).
fn leg(engine: &MediaEngine, events: Arc<Hangups>) -> u64 {
    let (session, _) = engine.answer(1, events, None, offer().as_bytes()).unwrap();
    session
}

/// Waits for the thread to end; bounded, so that a driver that never stops fails the test.
/// The join runs on a plain thread: a blocking task still joining would keep the test's
/// runtime from shutting down, and the test would hang instead of failing.
async fn joined(thread: std::thread::JoinHandle<()>) -> std::thread::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || tx.send(thread.join()));
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the media thread ended")
        .unwrap()
}

#[tokio::test]
async fn stopping_the_engine_hangs_up_its_legs_ends_its_thread_and_frees_its_port() {
    let (engine, task) = engine_with(false, true, true).await;
    let plugin = Arc::new(Hangups::default());
    let session = leg(&engine, plugin.clone());
    let port = engine.local_addr();
    engine.shutdown(task).await.unwrap();
    assert_eq!(
        *plugin.heard.lock().unwrap(),
        [(session, HangupReason::Shutdown)]
    );
    // The leg is gone with the thread: only this test holds the plugin now.
    assert_eq!(Arc::strong_count(&plugin), 1);
    std::net::UdpSocket::bind(port).expect("the media port is free again");
    assert_eq!(engine.close(1, session), Err(MediaError::NotFound));
}

#[tokio::test]
async fn dropping_the_engines_task_without_shutdown_stops_the_driver_and_frees_its_port() {
    let (engine, task) = engine_with(false, true, true).await;
    let plugin = Arc::new(Hangups::default());
    let session = leg(&engine, plugin.clone());
    let port = engine.local_addr();
    // What dropping the task does, with its thread kept to wait on: the driver holds an engine
    // handle, so its command channel never closes; the task's going is what stops it.
    let EngineTask { thread, _stop } = task;
    drop(_stop);
    joined(thread).await.unwrap();
    assert_eq!(
        *plugin.heard.lock().unwrap(),
        [(session, HangupReason::Shutdown)]
    );
    assert_eq!(Arc::strong_count(&plugin), 1);
    std::net::UdpSocket::bind(port).expect("the media port is free again");
    assert_eq!(engine.close(1, session), Err(MediaError::NotFound));
}

#[tokio::test]
async fn a_driver_panic_ends_the_thread_shutdown_reports_it_and_later_calls_get_stopped() {
    let (engine, task) = engine_with(false, true, true).await;
    let panics = Arc::new(Hangups {
        panic_on_hangup: true,
        ..Hangups::default()
    });
    let doomed = leg(&engine, panics.clone());
    // The driver tells the plugin of the leg's end (the close, or at the latest the shutdown)
    // on its own thread, and that call panics.
    engine.close(1, doomed).unwrap();
    let ended = engine.shutdown(task).await;
    assert_eq!(ended, Err("this plugin's hangup panics".to_owned()));
    // The leg unwound with the driver; the engine refuses what needs the driver.
    assert_eq!(Arc::strong_count(&panics), 1);
    let plugin = Arc::new(Hangups::default());
    let offer = offer();
    assert_eq!(
        engine.answer(1, plugin, None, offer.as_bytes()).err(),
        Some(MediaError::Stopped)
    );
    assert_eq!(engine.sessions(), 0, "the refused leg is not kept");
}

#[test]
fn a_panics_message_is_its_string_payload() {
    let caught = |f: fn()| std::panic::catch_unwind(f).unwrap_err();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let literal = caught(|| panic!("a literal"));
    let formatted = caught(|| panic!("formatted {}", 7));
    let other = caught(|| std::panic::panic_any(7_u32));
    std::panic::set_hook(hook);
    assert_eq!(panic_message(&*literal), "a literal");
    assert_eq!(panic_message(&*formatted), "formatted 7");
    assert_eq!(panic_message(&*other), "(a payload that is not a string)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_plugins_fail_to_start_stops_its_media_engine_and_frees_its_port() {
    // A free port for `[media] listen` (taken and given back at once).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "[sip]\ndomain = \"example.test\"\nlisten = [\"udp:127.0.0.1:0\"]\n\
         [media]\nlisten = \"{port}\"\n\
         [[plugins]]\npath = \"/nonexistent/libmissing.so\"\n"
    );
    let config = crate::config::Config::from_toml(&text, std::path::Path::new("t.toml")).unwrap();
    let store: Arc<dyn crate::store::Store> = Arc::new(crate::store::MemoryStore::default());
    let err = crate::server::start(config, store)
        .await
        .expect_err("a missing plugin stops start-up");
    assert!(format!("{err:#}").contains("libmissing"), "{err:#}");
    // The engine was shut down on that path, its thread joined: the port is free now, not
    // once the thread gets to it.
    std::net::UdpSocket::bind(port).expect("the media port is free again");
}
