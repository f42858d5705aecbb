//! The demo page (`web/`, `[web] listen`) in headless Chromium: two tabs sign in through the
//! page's form, see each other's presence, chat with history, call each other, meet in a room
//! with audio and video, and share the screen through the screenshare relay: the other tab sees the
//! presentation and decodes the shared screen at the size it is sent, a second presenter is
//! refused (the page shows the 403), stopping ends the other tab's view
//! (`tests/clients/browser/demo.test.mjs`). The shipped defaults are used for the relay
//! (`screen-{room}`) next to on-demand rooms (`room-`): no clash. Before that, over
//! plain HTTP: the page is served without a token while the admin API on its own listener still
//! refuses calls without one, the admin routes are not on the page's listener, and the
//! user-scoped API challenges with Digest and refuses a wrong password, and `/config.json` names
//! the relay's screen URI template.
//!
//! The JsSIP the page loads is built from the test side's npm install by the same script the run
//! command uses (`web/build-jssip.mjs`). Screenshots go to `target/demo-page/`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{repo_root, require_browser_tools, run_bounded, DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "demo-admin-token";

/// One HTTP/1.1 GET (Connection: close): status, head and body.
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8_lossy(&raw).into_owned()
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_pages_chat_and_meet() {
    require_browser_tools(true);
    let root = repo_root();
    let (presence, messaging, conference, screenshare) = tokio::task::block_in_place(|| {
        (
            cargo_cdylib("huddle-plugin-presence"),
            cargo_cdylib("huddle-plugin-messaging"),
            cargo_cdylib("huddle-plugin-conference"),
            cargo_cdylib("huddle-plugin-screenshare"),
        )
    });
    let scratch = tempfile::tempdir().expect("temporary folder");
    let jssip = scratch.path().join("jssip.js");
    tokio::task::block_in_place(|| {
        let mut cmd = Command::new("node");
        cmd.arg(root.join("web/build-jssip.mjs"))
            .arg("--jssip")
            .arg(root.join("tests/clients/node_modules/jssip"))
            .arg("--out")
            .arg(&jssip);
        let (ok, output) = run_bounded(cmd, Duration::from_secs(60));
        assert!(ok, "web/build-jssip.mjs failed:\n{output}");
    });

    let extra = format!(
        "{}{}{}{}[web]\nlisten = \"127.0.0.1:0\"\nroot = {:?}\njssip = {:?}\nroom = \"room-e2e\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        plugin_entry(
            &presence,
            &format!("name = \"presence\"\n[plugins.config]\ndomain = \"{DOMAIN}\"\n")
        ),
        plugin_entry(&messaging, "name = \"messaging\"\n"),
        plugin_entry(
            &conference,
            // Two seats: a screen share is no seat in the room, so it must not be refused.
            "name = \"conference\"\n[plugins.config]\non_demand_prefix = \"room-\"\n\
             [plugins.config.on_demand]\nmax_participants = 2\n"
        ),
        // The relay's defaults, as shipped.
        plugin_entry(&screenshare, "name = \"screenshare\"\n"),
        root.join("web").display().to_string(),
        jssip.display().to_string(),
    );
    let server = PluginServer::start(&extra).await;
    let web = server.running.web_addr().expect("the page is served");
    let admin = server.running.admin_addr().expect("the admin API runs");

    // The page and its assets need no token; the admin API still does, on its own listener.
    let (status, head, body) = get(web, "/", "").await;
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("<title>Huddle demo</title>"), "{body}");
    for asset in ["/app.js", "/style.css", "/jssip.js"] {
        let (status, head, _) = get(web, asset, "").await;
        assert_eq!(status, 200, "GET {asset}: {head}");
    }
    let (status, _, body) = get(web, "/config.json", "").await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(config["domain"], DOMAIN);
    assert_eq!(config["room"], "room-e2e");
    assert_eq!(
        config["screen_user"], "screen-{room}",
        "the page learns where to present from the relay"
    );
    assert_eq!(
        config["ws_port"],
        server.addr(huddle::transport::Transport::Ws).port()
    );
    let (status, _, _) = get(admin, "/health", "").await;
    assert_eq!(status, 401, "the admin API keeps its token rule");
    let (status, _, _) = get(web, "/health", "").await;
    assert_eq!(status, 404, "admin routes are not on the page's listener");
    let (status, _, _) = get(
        web,
        "/registrations",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(status, 404, "not even with the admin token");

    // The user-scoped API: a Digest challenge, and a wrong password is refused.
    let (status, head, _) = get(web, "/api/presentation/room-e2e", "").await;
    assert_eq!(status, 401, "who presents is for signed-in users: {head}");
    let (status, head, _) = get(web, "/api/contacts", "").await;
    assert_eq!(status, 401, "{head}");
    let challenge = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("a WWW-Authenticate header: {head}"));
    assert!(
        challenge.starts_with("Digest realm=\"example.test\""),
        "{challenge}"
    );
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a nonce");
    let wrong = format!(
        "Authorization: Digest username=\"alice\", realm=\"example.test\", nonce=\"{nonce}\", \
         uri=\"/api/contacts\", response=\"{}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"x\"\r\n",
        "0".repeat(32)
    );
    let (status, _, _) = get(web, "/api/contacts", &wrong).await;
    assert_eq!(status, 401, "a wrong response is refused");

    let shots = root.join("target/demo-page");
    std::fs::create_dir_all(&shots).expect("target/demo-page");
    let url = format!("http://{web}");
    tokio::task::block_in_place(|| {
        let mut cmd = Command::new("node");
        cmd.current_dir(root.join("tests/clients"))
            .arg("--test")
            .arg("--test-concurrency=1")
            .arg("browser/demo.test.mjs")
            .env("HUDDLE_WEB_URL", &url)
            .env("HUDDLE_SCREENSHOT_DIR", &shots);
        let (ok, output) = run_bounded(cmd, Duration::from_secs(600));
        println!("{output}");
        assert!(ok, "the demo page test failed:\n{output}");
    });
    assert!(
        shots.join("demo-room.png").exists(),
        "the room screenshot was written"
    );
    server.stop().await;
}
