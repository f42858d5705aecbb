//! The shipped `config/huddle.toml` as `scripts/run.sh` uses it: every `[[plugins]]` entry of the
//! demo set-up (presence, messaging, conference with on-demand `room-*` rooms, screenshare with its
//! default `screen-{room}`) loads, and no two claim overlapping requests (the server refuses to
//! start otherwise). Checked twice: `huddle plugins list` on the file, and a real start from it,
//! whose demo page then names the screen URI template. Only what cannot work in a test changes:
//! the plugins are this build's (debug) libraries, ports are fresh, files go to a scratch folder.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_bin, cargo_cdylib};
use huddle_e2e::{repo_root, run_bounded, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every `127.0.0.1:<port>` outside comments becomes `127.0.0.1:0` (a fresh port).
fn fresh_ports(line: &str) -> String {
    if line.trim_start().starts_with('#') {
        return line.to_owned();
    }
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("127.0.0.1:") {
        let (head, tail) = rest.split_at(i + "127.0.0.1:".len());
        out.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push('0');
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// The shipped config with this build's plugins, fresh ports and files under `dir`.
fn shipped_for_test(dir: &Path) -> String {
    let root = repo_root();
    let text =
        std::fs::read_to_string(root.join("config/huddle.toml")).expect("config/huddle.toml");
    let mut out = String::new();
    let mut plugins = Vec::new();
    for line in text.lines() {
        let mut line = fresh_ports(line);
        if let Some(rest) = line.strip_prefix("path = \"../target/release/libhuddle_plugin_") {
            let name = rest.trim_end_matches(".so\"").replace('_', "-");
            let lib = cargo_cdylib(&format!("huddle-plugin-{name}"));
            plugins.push(name);
            line = format!("path = {:?}", lib.display().to_string());
        }
        for (shipped, here) in [
            ("\"../.huddle/cert.pem\"", dir.join("cert.pem")),
            ("\"../.huddle/key.pem\"", dir.join("key.pem")),
            ("\"../.huddle/huddle.redb\"", dir.join("huddle.redb")),
            (
                "\"../web/vendor/jssip.js\"",
                root.join("web/vendor/jssip.js"),
            ),
            ("\"../web\"", root.join("web")),
        ] {
            if !line.trim_start().starts_with('#') {
                line = line.replace(shipped, &format!("{:?}", here.display().to_string()));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(
        plugins,
        ["presence", "messaging", "conference", "screenshare"],
        "the demo set-up's plugins"
    );
    out
}

#[test]
fn the_shipped_plugins_load_without_overlapping_claims() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("huddle.toml");
    std::fs::write(&config, shipped_for_test(dir.path())).unwrap();
    let mut cmd = Command::new(cargo_bin("huddle", "huddle"));
    cmd.args(["plugins", "list", "--config"]).arg(&config);
    let (ok, out) = run_bounded(cmd, Duration::from_secs(120));
    assert!(ok, "huddle plugins list refused the shipped config:\n{out}");
    for needle in [
        "method=INVITE user=room-*",
        "method=INVITE user=screen-*",
        "method=BYE user=screen-*",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_starts_and_the_page_learns_the_screen_uris() {
    let dir = tempfile::tempdir().unwrap();
    let text = tokio::task::block_in_place(|| shipped_for_test(dir.path()));
    let server = TestServer::start_in(dir, &text).await;
    let web = server
        .running
        .web_addr()
        .expect("the shipped config serves the page");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(web).await.expect("connect");
        let request =
            format!("GET /config.json HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8(raw).expect("UTF-8")
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let config: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(config["room"], "room-demo", "{body}");
    assert_eq!(config["screen_user"], "screen-{room}", "{body}");
    server.stop().await;
}
