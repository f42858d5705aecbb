//! SIPp against a Huddle with the messaging plugin, over UDP and TCP: the existing scenarios
//! (`tests/sipp/run.sh`: REGISTER, INVITE with BYE and CANCEL, and a MESSAGE that the plugin now
//! delivers and answers 200) keep passing, and `tests/sipp/messaging.sh` stores three MESSAGEs
//! for an offline user (202) and checks she receives them in order once she registers.

use std::process::Command;
use std::time::Duration;

use huddle::transport::Transport;
use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{repo_root, require_tool, run_bounded};

fn run(script: &str, transport: Transport, flag: &str) {
    require_tool("sipp", "run ./scripts/test.sh, which installs sip-tester");
    let lib = cargo_cdylib("huddle-plugin-messaging");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(PluginServer::start(&plugin_entry(&lib, "")));
    let addr = server.addr(transport);
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("tests/sipp").join(script))
        .arg(addr.to_string())
        .arg(flag);
    let (ok, output) = run_bounded(cmd, Duration::from_secs(180));
    println!("{output}");
    rt.block_on(server.stop());
    assert!(ok, "{script} over {transport} failed:\n{output}");
}

/// One test, so the runs never compete for SIPp's local ports.
#[test]
fn sipp_messaging_over_udp_and_tcp() {
    for (transport, flag) in [(Transport::Udp, "u1"), (Transport::Tcp, "t1")] {
        run("messaging.sh", transport, flag);
        run("run.sh", transport, flag);
    }
}
