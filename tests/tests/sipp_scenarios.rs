//! SIPp (a client we did not write) against a real Huddle over UDP and TCP: REGISTER with
//! digest auth, INVITE through the proxy to a registered UAS with BYE and with CANCEL, MESSAGE.

use std::process::Command;
use std::time::Duration;

use huddle::transport::Transport;
use huddle_e2e::{repo_root, require_tool, run_bounded, TestServer};

fn run_sipp(transport: Transport, flag: &str) {
    require_tool("sipp", "run ./scripts/test.sh, which installs sip-tester");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(TestServer::start());
    let addr = server.addr(transport);
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("tests/sipp/run.sh"))
        .arg(addr.to_string())
        .arg(flag);
    let (ok, output) = run_bounded(cmd, Duration::from_secs(180));
    println!("{output}");
    rt.block_on(server.stop());
    assert!(ok, "SIPp scenarios over {transport} failed:\n{output}");
}

/// One test, so the two runs never compete for SIPp's local ports.
#[test]
fn sipp_over_udp_and_tcp() {
    run_sipp(Transport::Udp, "u1");
    run_sipp(Transport::Tcp, "t1");
}
