//! The checked-in C header must be exactly what `sdk/generate-header.sh` (cbindgen over
//! `src/abi.rs`) produces now: the header is the contract C plugins compile against, so a
//! change to the ABI module without regenerating it fails here.

use std::path::Path;
use std::process::Command;

const INSTALL: &str = "apt-get install -y cbindgen";

#[test]
fn header_matches_abi_module() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"));
    let version = match Command::new("cbindgen").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "cbindgen is not installed, so include/huddle_plugin.h cannot be checked against \
             src/abi.rs. Install it with `{INSTALL}` (Debian 12 ships 0.24.3, the version the \
             header was generated with), then run this test again."
        ),
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fresh = dir.path().join("huddle_plugin.h");
    let status = Command::new("bash")
        .arg(sdk.join("generate-header.sh"))
        .arg(&fresh)
        .status()
        .expect("bash runs generate-header.sh");
    assert!(status.success(), "generate-header.sh failed ({status})");
    let fresh = std::fs::read_to_string(&fresh).expect("generated header");
    let checked_in = std::fs::read_to_string(sdk.join("include/huddle_plugin.h"))
        .expect("sdk/include/huddle_plugin.h is checked in");
    if fresh != checked_in {
        let line = fresh
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || fresh.lines().count().min(checked_in.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "sdk/include/huddle_plugin.h is stale: it differs from what {version} generates from \
             src/abi.rs, first at line {line}.\n  generated:  {:?}\n  checked in: {:?}\n\
             Run sdk/generate-header.sh and commit the header.",
            fresh.lines().nth(line - 1).unwrap_or("<end of file>"),
            checked_in.lines().nth(line - 1).unwrap_or("<end of file>"),
        );
    }
}
