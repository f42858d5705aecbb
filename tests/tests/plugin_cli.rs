//! `huddle plugins list --config FILE`: each `[[plugins]]` entry with its instance name,
//! version, ABI, capabilities and claims (from a dry `init`, or from the entry's `claims`),
//! or the reason it cannot be used; a non-zero exit when an entry fails or two overlap. The
//! binary, the echo plugin and the test-only testkit plugin are built by cargo.

use std::process::Command;
use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_bin, cargo_cdylib};
use huddle_e2e::run_bounded;

fn list(config: &std::path::Path) -> (bool, String) {
    let huddle = cargo_bin("huddle", "huddle");
    let mut cmd = Command::new(huddle);
    cmd.args(["plugins", "list", "--config"]).arg(config);
    run_bounded(cmd, Duration::from_secs(60))
}

#[test]
fn plugins_list_shows_each_plugin_or_why_not() {
    let echo = cargo_cdylib("huddle-plugin-echo");
    let kit = cargo_cdylib("huddle-plugin-testkit");
    let dir = tempfile::tempdir().unwrap();
    // Paths relative to the config file work.
    std::fs::copy(&echo, dir.path().join("libecho.so")).unwrap();
    let base = "[sip]\ndomain = \"example.test\"\nlisten = [\"udp:127.0.0.1:0\"]\n\
                [store]\npath = \"never-opened.redb\"\n";
    let good = format!(
        "{base}[[plugins]]\npath = \"libecho.so\"\n\n\
         [[plugins]]\nname = \"kit\"\npath = {kit:?}\n\
         claims = [{{ method = \"OPTIONS\", user = \"kit\" }}]\n[plugins.config]\nuser = \"kit\"\n",
        kit = kit.display().to_string()
    );
    let config = dir.path().join("good.toml");
    std::fs::write(&config, good).unwrap();
    let (ok, out) = list(&config);
    assert!(ok, "{out}");
    let abi = format!(
        "abi:          {}.{}",
        huddle_sdk::abi::HUDDLE_PLUGIN_ABI_MAJOR,
        huddle_sdk::abi::HUDDLE_PLUGIN_ABI_MINOR
    );
    for needle in [
        "echo\n",
        "libecho.so",
        "version:      0.1.0",
        abi.as_str(),
        "capabilities: send_request",
        "claims:       method=MESSAGE user=echo (from init)",
        "kit\n",
        "plugin:       testkit",
        "capabilities: store|store_watch|location|registration_events|send_request|timers",
        "method=OPTIONS user=kit (from config)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(
        !dir.path().join("never-opened.redb").exists(),
        "listing opens no store"
    );

    // A garbage file, a config the plugin refuses, and an overlap: all reported, exit non-zero.
    std::fs::write(dir.path().join("libgarbage.so"), b"not a library").unwrap();
    let bad = format!(
        "{base}[[plugins]]\npath = \"libgarbage.so\"\n\n\
         [[plugins]]\nname = \"picky\"\npath = \"libecho.so\"\n[plugins.config]\nusr = \"typo\"\n\n\
         [[plugins]]\nname = \"one\"\npath = \"libecho.so\"\n\n\
         [[plugins]]\nname = \"two\"\npath = \"libecho.so\"\n"
    );
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, bad).unwrap();
    let (ok, out) = list(&config);
    assert!(!ok, "{out}");
    for needle in [
        "libgarbage.so: not a loadable shared library",
        "plugin `picky`",
        "failed to initialise",
        "usr",
        "`one` and `two` claim overlapping requests",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}
