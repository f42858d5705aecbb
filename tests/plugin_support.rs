//! Plugins for the end-to-end tests: building the workspace's plugin crates (the echo plugin,
//! the test-only `testkit`) with cargo and finding the library it wrote, compiling C plugins
//! against `sdk/include/huddle_plugin.h`, starting a server with `[[plugins]]` entries
//! while keeping a handle on its store, and talking to the test-only testkit plugin (commands
//! in MESSAGE bodies, its event log, a rung then cancelled INVITE).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use huddle::config::Config;
use huddle::server::{start, Running};
use huddle::store::{RedbStore, Store};
use huddle::transport::Transport;

use crate::sip_client::{
    cancel_request, new_branch, new_call_id, new_tag, text, Conn, SIPML5_HOST,
};
use crate::{repo_root, run_bounded, run_node_tests, test_config, DOMAIN};

/// Builds the cdylib of workspace package `package` (`huddle-plugin-echo`) with
/// `cargo build -p` and returns the library cargo reports having written. Once per process.
pub fn cargo_cdylib(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let cache = BUILT.get_or_init(Mutex::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cache.get(package) {
        return path.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args([
        "build",
        "-p",
        package,
        "--message-format=json-render-diagnostics",
    ]);
    let (ok, output) = run_bounded(cmd, Duration::from_secs(900));
    assert!(ok, "cargo build -p {package} failed:\n{output}");
    let path = library_in_cargo_output(&output, package)
        .unwrap_or_else(|| panic!("cargo reported no library for {package}:\n{output}"));
    assert!(path.exists(), "{} does not exist", path.display());
    cache.insert(package.to_owned(), path.clone());
    path
}

/// Builds the binary `bin` of workspace package `package` and returns its path.
///
/// Built with the whole workspace's feature resolution (`--workspace --bin`), as
/// `cargo test --workspace` builds it: that build is then fresh. `-p package` resolves the
/// features of that package alone (without GStreamer's extra `futures-util` features, say) and
/// rebuilt the server and much of its dependency tree inside the first test that asked, which
/// took minutes on a loaded 2-core machine (messaging_durability: 870 s).
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args([
        "build",
        "--workspace",
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ]);
    let (ok, output) = run_bounded(cmd, Duration::from_secs(900));
    assert!(
        ok,
        "cargo build --workspace --bin {bin} ({package}) failed:\n{output}"
    );
    let path = output
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            Some(PathBuf::from(&l[start..start + l[start..].find('"')?]))
        })
        .unwrap_or_else(|| panic!("cargo reported no executable for {bin}:\n{output}"));
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// The `.so`/`.dylib`/`.dll` of `package` among cargo's JSON `compiler-artifact` lines.
fn library_in_cargo_output(output: &str, package: &str) -> Option<PathBuf> {
    let crate_name = package.replace('-', "_");
    output
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter(|l| l.contains(&format!("\"name\":\"{crate_name}\"")))
        .find_map(|line| {
            let start = line.find("\"filenames\":[")? + "\"filenames\":[".len();
            let list = &line[start..start + line[start..].find(']')?];
            list.split(',')
                .map(|f| f.trim().trim_matches('"'))
                .find(|f| f.ends_with(std::env::consts::DLL_SUFFIX))
                .map(PathBuf::from)
        })
}

/// Compiles `source` (a C file) into a shared library `lib<name>` in `dir`, against the
/// SDK's header, with `-D` `defines`.
pub fn c_plugin(source: &Path, dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let out = dir.join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let mut cmd = Command::new(cc);
    cmd.args(["-std=c99", "-shared", "-fPIC"])
        .arg("-I")
        .arg(repo_root().join("sdk/include"))
        .arg("-o")
        .arg(&out)
        .arg(source);
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let (ok, output) = run_bounded(cmd, Duration::from_secs(120));
    assert!(ok, "compiling {} failed:\n{output}", source.display());
    out
}

/// A `[[plugins]]` table: `path`, then `extra` lines (`name = "kit"`, `queue_len = 1`,
/// `[plugins.config]` …) as given.
pub fn plugin_entry(path: &Path, extra: &str) -> String {
    format!(
        "[[plugins]]\npath = {:?}\n{extra}\n",
        path.display().to_string()
    )
}

/// A server started with extra TOML (its `[[plugins]]`), whose store the test can read.
#[derive(Debug)]
pub struct PluginServer {
    pub running: Running,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
}

impl PluginServer {
    /// Starts a server for [`DOMAIN`] with `extra` appended to the test config; the error is
    /// what `huddle::server::start` returned.
    pub async fn try_start(extra: &str) -> Result<PluginServer, anyhow::Error> {
        let dir = tempfile::tempdir().expect("temporary folder");
        let text = test_config(dir.path(), DOMAIN, extra);
        let config = Config::from_toml(&text, Path::new("test.toml"))?;
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&config.store.path)?);
        let running = start(config, store.clone()).await?;
        Ok(PluginServer {
            running,
            store,
            dir,
        })
    }

    /// Like [`PluginServer::try_start`], failing the test on an error.
    pub async fn start(extra: &str) -> PluginServer {
        match PluginServer::try_start(extra).await {
            Ok(server) => server,
            Err(e) => panic!("server did not start: {e:#}"),
        }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        self.running.ws_url().expect("a ws listener")
    }

    /// The bound address of a transport.
    pub fn addr(&self, transport: Transport) -> std::net::SocketAddr {
        self.running.addrs[&transport]
    }

    /// Stops the server (plugins destroyed) and returns the store.
    pub async fn stop(self) -> Arc<dyn Store> {
        self.running.shutdown().await;
        self.store
    }

    /// Starts a server with the workspace's plugin packages, each built as a cdylib and given
    /// its `[[plugins]]` extra lines: `&[("huddle-plugin-conference", CONFERENCE)]`.
    pub async fn start_with(plugins: &[(&str, &str)]) -> PluginServer {
        let extra: String = tokio::task::block_in_place(|| {
            plugins
                .iter()
                .map(|(package, extra)| plugin_entry(&cargo_cdylib(package), extra))
                .collect()
        });
        PluginServer::start(&extra).await
    }

    /// Runs Node/browser test files (under `tests/clients`) against this server's WebSocket
    /// listener, checks every media leg ended with its call, then stops the server and returns
    /// its store for the test's checks of what is left behind.
    pub async fn run_clients_then_stop(self, files: &[&str]) -> Arc<dyn Store> {
        let url = self.ws_url();
        tokio::task::block_in_place(|| run_node_tests(files, &url, &[], Duration::from_secs(600)));
        assert_eq!(
            self.running.media_sessions(),
            0,
            "every media leg ended with its call"
        );
        self.stop().await
    }
}

/// Room `team` without a PIN (on-demand rooms off: their `room-*` claim would overlap the
/// screen-share relay's `*-screen`), a small grid composite: the conference's config in the
/// browser tests of a room.
pub const TEAM_ROOM: &str = "[plugins.config]\n\
    on_demand_prefix = \"\"\n\
    [[plugins.config.rooms]]\n\
    name = \"team\"\n\
    max_participants = 4\n\
    layout = \"grid\"\n\
    video = { width = 320, height = 180, fps = 10, bitrate_kbps = 300 }\n";

/// Runs a browser test file against room `team` (`TEAM_ROOM`) next to the screen-share relay
/// configured by `screenshare`, then checks no presentation record of `team` is left behind.
pub async fn run_team_room_with_relay(screenshare: &str, client: &str) {
    let server = PluginServer::start_with(&[
        ("huddle-plugin-conference", TEAM_ROOM),
        ("huddle-plugin-screenshare", screenshare),
    ])
    .await;
    let store = server.run_clients_then_stop(&[client]).await;
    assert_no_presentation_left(&*store, "team");
}

/// The screen-share relay left no presentation record for `room` behind.
pub fn assert_no_presentation_left(store: &dyn Store, room: &str) {
    let key = format!("plugin/screenshare/presentations/{room}");
    assert_eq!(
        store.get(key.as_bytes()).ok().flatten(),
        None,
        "no presentation record is left behind"
    );
}

/// A `[[plugins]]` table for an instance `name` of the test-only `plugins/testkit` (built once
/// per process), claiming `sip:<name>@…`, with `config` lines added to its `[plugins.config]`.
pub fn testkit_entry(name: &str, config: &str) -> String {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-testkit"));
    plugin_entry(
        &lib,
        &format!("name = \"{name}\"\n[plugins.config]\nuser = \"{name}\"\n{config}"),
    )
}

/// A sender of another domain (never challenged): the usual `from` of [`testkit_request`].
pub const FOREIGN_SENDER: &str = "sip:tester@tests.invalid";

/// A request to testkit instance `sip:<user>@example.test` over WebSocket from `from`, with
/// `extra` header lines and a text/plain `body` (the testkit's command); also its Call-ID.
pub fn testkit_request(
    method: &str,
    user: &str,
    from: &str,
    extra: &str,
    body: &str,
) -> (String, String) {
    let call_id = new_call_id();
    let req = format!(
        "{method} sip:{user}@example.test SIP/2.0\r\nVia: SIP/2.0/WS {SIPML5_HOST};branch={};rport\r\n\
         From: <{from}>;tag={}\r\nTo: <sip:{user}@example.test>\r\n\
         Contact: <sip:tester@{SIPML5_HOST};transport=ws>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        new_branch(),
        new_tag(),
        body.len()
    );
    (req, call_id)
}

/// Sends testkit instance `user` the command `body` in a MESSAGE from [`FOREIGN_SENDER`];
/// requires a 200 and returns its body.
pub async fn testkit_ask(conn: &mut Conn, user: &str, body: &str) -> String {
    let (req, _) = testkit_request("MESSAGE", user, FOREIGN_SENDER, "", body);
    let r = conn.request(&req).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    String::from_utf8_lossy(r.body()).into_owned()
}

/// Polls the event log of testkit instance `user` until a line contains `needle` (bounded:
/// 5 s); returns the log.
pub async fn testkit_wait_event(conn: &mut Conn, user: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = testkit_ask(conn, user, "events").await;
        if log.lines().any(|l| l.contains(needle)) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{user}: no event {needle:?}; events so far:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `invite` (Call-ID `call_id`, to a testkit told to ring), requires 100 Trying then 180
/// Ringing, cancels it, and requires the host's 200 for the CANCEL and a 487 for the INVITE,
/// in either order.
pub async fn ring_then_cancel(conn: &mut Conn, invite: &str, call_id: &str) {
    conn.send(invite).await;
    let trying = conn.next_response(call_id, 1).await;
    assert_eq!(trying.status(), Some(100), "{}", text(&trying));
    let ringing = conn.next_response(call_id, 1).await;
    assert_eq!(ringing.status(), Some(180), "{}", text(&ringing));
    conn.send(&cancel_request(invite)).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let r = conn
            .wait_for("a final response to the INVITE or the CANCEL", |m| {
                m.call_id() == Some(call_id) && m.status().is_some_and(|s| s >= 200)
            })
            .await;
        got.push((r.cseq().unwrap().method.as_str().to_owned(), r.status()));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("CANCEL".to_owned(), Some(200)),
            ("INVITE".to_owned(), Some(487))
        ]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_library_in_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["cdylib","rlib"],"crate_types":["cdylib","rlib"],"name":"huddle_plugin_echo","src_path":"/r/plugins/echo/src/lib.rs"},"filenames":["/r/target/debug/libhuddle_plugin_echo.so","/r/target/debug/libhuddle_plugin_echo.rlib"],"fresh":true}"#;
        if std::env::consts::DLL_SUFFIX == ".so" {
            assert_eq!(
                library_in_cargo_output(line, "huddle-plugin-echo"),
                Some(PathBuf::from("/r/target/debug/libhuddle_plugin_echo.so"))
            );
        }
        assert_eq!(library_in_cargo_output(line, "huddle-plugin-other"), None);
    }
}
