//! The `huddle` command line: `--version`, and `user add/list/remove` storing HA1s only.

use std::process::Command;

fn huddle(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("huddle runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn version_and_user_management() {
    let (ok, text) = huddle(&["--version"]);
    assert!(ok && text.starts_with("huddle "), "{text}");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("huddle.toml");
    std::fs::write(
        &config,
        "[sip]\ndomain = \"example.test\"\nlisten = [\"udp:127.0.0.1:0\"]\n[store]\npath = \"state.redb\"\n",
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path");

    let (ok, text) = huddle(&[
        "user",
        "add",
        "dave",
        "--password",
        "s3cret-pw",
        "--config",
        config,
    ]);
    assert!(ok, "{text}");
    let (ok, text) = huddle(&["user", "list", "--config", config]);
    assert!(ok && text.lines().any(|l| l == "dave"), "{text}");
    let stored = std::fs::read(dir.path().join("state.redb")).expect("store written");
    assert!(
        !stored
            .windows(b"s3cret-pw".len())
            .any(|w| w == b"s3cret-pw"),
        "the password must never be stored"
    );
    let (ok, text) = huddle(&[
        "user",
        "add",
        "bad name",
        "--password",
        "x",
        "--config",
        config,
    ]);
    assert!(!ok && text.contains("invalid user name"), "{text}");
    let (ok, text) = huddle(&["user", "remove", "dave", "--config", config]);
    assert!(ok, "{text}");
    let (ok, text) = huddle(&["user", "remove", "dave", "--config", config]);
    assert!(!ok && text.contains("no user dave"), "{text}");
    let (ok, text) = huddle(&["run", "--config", "/nonexistent/huddle.toml"]);
    assert!(!ok && text.contains("/nonexistent/huddle.toml"), "{text}");
}
