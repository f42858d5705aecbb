//! SIPp (a client we did not write) against the presence plugin over UDP:
//! `tests/sipp/presence_udp.xml` subscribes, publishes (489 without Event, then 200 with an
//! entity tag), refreshes, removes twice (200, 412) and unsubscribes, checking every NOTIFY.

use std::process::Command;
use std::time::Duration;

use huddle::transport::Transport;
use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{repo_root, require_tool, run_bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_presence_over_udp() {
    require_tool("sipp", "run ./scripts/test.sh, which installs sip-tester");
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-presence"));
    let server = PluginServer::start(&plugin_entry(
        &lib,
        "[plugins.config]\ndomain = \"example.test\"\n",
    ))
    .await;
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("tests/sipp/presence.sh"))
        .arg(server.addr(Transport::Udp).to_string());
    let (ok, output) = tokio::task::block_in_place(|| run_bounded(cmd, Duration::from_secs(60)));
    println!("{output}");
    server.stop().await;
    assert!(ok, "the presence SIPp scenario failed:\n{output}");
}
