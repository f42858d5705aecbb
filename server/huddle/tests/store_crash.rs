//! Crash consistency: a writer process is killed with SIGKILL in the middle of its writes, and
//! every write it had acknowledged must be in the file when it is reopened.
//!
//! The child is this test binary, re-run with [`CHILD_ENV`] set and filtered to
//! `store_crash_child_writer`. It writes forever (single puts, compare-and-swaps and 3-key
//! batches, in turn) and prints `ack <i>` after each call returns. The parent waits for a number of
//! acks (no sleeps), kills the child, reopens the store and checks: every acknowledged step is
//! present with its value, the steps present form a gap-free sequence (commits are ordered), and
//! no batch is half-applied.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use huddle::store::{Op, Record, RedbStore, Store};

const CHILD_ENV: &str = "HUDDLE_STORE_CRASH_CHILD";
const ROUND_ENV: &str = "HUDDLE_STORE_CRASH_ROUND";
const CHILD_TEST: &str = "store_crash_child_writer";
/// A child that never gets this far is broken, not slow: it stops by itself.
const CHILD_MAX_STEPS: u64 = 100_000;
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

fn key(round: u32, step: u64, part: u8) -> Vec<u8> {
    format!("crash/{round}/{step:08}/{part}").into_bytes()
}

fn value(round: u32, step: u64, part: u8) -> Vec<u8> {
    // Some bulk, so that commits span more than one page.
    Record::encode(&(round, step, part, "x".repeat(300))).unwrap()
}

/// What step `step` writes: (key, value) pairs, all committed together.
fn step_writes(round: u32, step: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let parts = if step % 3 == 2 { 3 } else { 1 };
    (0..parts)
        .map(|p| (key(round, step, p), value(round, step, p)))
        .collect()
}

/// The writer. Does nothing unless started by the parent below.
#[test]
fn store_crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let store = RedbStore::open(&path).unwrap();
    let mut out = std::io::stdout().lock();
    // The test harness may have printed a partial line; start ours on a fresh one.
    out.write_all(b"\n").unwrap();
    for step in 0..CHILD_MAX_STEPS {
        let writes = step_writes(round, step);
        match step % 3 {
            0 => store.put(&writes[0].0, &writes[0].1).unwrap(),
            1 => store
                .compare_and_swap(&writes[0].0, None, Some(&writes[0].1))
                .unwrap()
                .unwrap(),
            _ => store
                .apply_batch(writes.into_iter().map(|(k, v)| Op::put(k, v)).collect())
                .unwrap(),
        }
        // Acknowledged only after the store returned. A failed write means the parent is gone.
        if writeln!(out, "ack {step}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one child until it has acknowledged `acks` steps, then SIGKILLs it. Returns the highest
/// step acknowledged before the kill.
fn run_child_and_kill(path: &Path, round: u32, acks: u64) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(step) = line.trim().strip_prefix("ack ") {
                if tx.send(step.parse::<u64>().unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    let mut last = None;
    for expected in 0..acks {
        let step = rx
            .recv_timeout(ACK_TIMEOUT)
            .unwrap_or_else(|e| panic!("child stopped acknowledging at step {expected}: {e}"));
        assert_eq!(step, expected);
        last = Some(step);
    }
    // SIGKILL: no destructors, no flush, no clean close of the database.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Acks that were already in the pipe were acknowledged before the kill too.
    let mut last = last.expect("acks > 0");
    while let Ok(step) = rx.recv_timeout(Duration::from_secs(5)) {
        assert_eq!(step, last + 1);
        last = step;
    }
    reader.join().unwrap();
    last
}

fn verify(store: &RedbStore, round: u32, last_ack: u64) -> u64 {
    let mut step = 0;
    loop {
        let writes = step_writes(round, step);
        let present: Vec<bool> = writes
            .iter()
            .map(|(k, v)| match store.get(k).unwrap() {
                Some(got) => {
                    assert_eq!(&got, v, "wrong value at step {step}");
                    true
                }
                None => false,
            })
            .collect();
        if present.iter().all(|p| !p) {
            assert!(
                step > last_ack,
                "round {round}: acknowledged step {step} (of {last_ack}) is missing"
            );
            break;
        }
        assert!(
            present.iter().all(|p| *p),
            "round {round}: step {step} is half-applied: {present:?}"
        );
        step += 1;
    }
    // Gap-free: nothing of this round exists beyond the first missing step.
    let prefix = format!("crash/{round}/");
    let total: usize = huddle::store::scan_pages(store, prefix.as_bytes(), 512)
        .map(|p| p.unwrap().len())
        .sum();
    let expected: usize = (0..step).map(|s| step_writes(round, s).len()).sum();
    assert_eq!(total, expected, "round {round}: writes beyond a gap");
    step
}

#[test]
fn store_crash_kill9_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    for (round, acks) in [(0u32, 25u64), (1, 90), (2, 7), (3, 160)] {
        let last_ack = run_child_and_kill(&path, round, acks);
        let store = RedbStore::open(&path).unwrap();
        let present = verify(&store, round, last_ack);
        for earlier in 0..round {
            // Earlier rounds' data survives later crashes too.
            assert!(store.get(&key(earlier, 0, 0)).unwrap().is_some());
        }
        eprintln!(
            "round {round}: killed after {} acks; {present} steps present",
            last_ack + 1
        );
    }
}
