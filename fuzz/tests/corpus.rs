//! Runs every checked-in seed (corpus/<target>/*) through every fuzz check on stable Rust, so
//! the harness logic and the invariants it asserts run in the normal test suite. Each file is
//! also fed to the other targets' checks: they take arbitrary bytes, so any seed is fair input.
//! All failures are collected and reported together, naming the file and the check.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn seeds() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files = Vec::new();
    for (target, _) in huddle_fuzz::CHECKS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let before = files.len();
        for entry in entries {
            let path = entry.expect("readable corpus dir").path();
            if path.is_file() {
                files.push(path);
            }
        }
        assert!(files.len() > before, "no seeds in {}", dir.display());
    }
    files.sort();
    files
}

#[test]
fn every_seed_passes_every_check() {
    let files = seeds();
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("readable seed");
        for (name, check) in huddle_fuzz::CHECKS {
            if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{name} on {}:\n  {msg}", path.display()));
            }
        }
    }
    panic::set_hook(quiet);
    assert!(
        failures.is_empty(),
        "{} of {} seed runs failed:\n{}",
        failures.len(),
        files.len() * huddle_fuzz::CHECKS.len(),
        failures.join("\n")
    );
    println!(
        "{} seeds x {} checks passed",
        files.len(),
        huddle_fuzz::CHECKS.len()
    );
}

/// The genuine-nonce seed must carry the nonce the harness's issuer mints, or the Valid/Stale
/// branches of the nonce check never run from the corpus.
#[test]
fn genuine_nonce_seed_is_current() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/digest_credentials/genuine-nonce");
    let seed = std::fs::read_to_string(&path).expect("genuine-nonce seed");
    assert!(
        seed.contains(&huddle_fuzz::genuine_nonce()),
        "{} lacks {}",
        path.display(),
        huddle_fuzz::genuine_nonce()
    );
}
