//! Put throughput, printed, not asserted. Run with
//! `cargo test --release -p huddle --test store_bench -- --ignored --nocapture`.

use std::time::Instant;

use huddle::store::{MemoryStore, Op, Record, RedbStore, Store};

fn binding(i: usize) -> Vec<u8> {
    Record::encode(&(
        format!("sip:user{i}@192.0.2.1:5060;transport=ws"),
        3600u32,
        "instance-0123456789abcdef",
    ))
    .unwrap()
}

fn report(what: &str, n: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what:<40} {n:>7} puts in {secs:>7.3} s = {:>10.0} puts/s",
        n as f64 / secs
    );
}

fn singles(name: &str, store: &dyn Store, n: usize) {
    let started = Instant::now();
    for i in 0..n {
        store
            .put(format!("location/user{i}/0").as_bytes(), &binding(i))
            .unwrap();
    }
    report(&format!("{name}: single puts"), n, started);
}

fn batches(name: &str, store: &dyn Store, n: usize, size: usize) {
    let started = Instant::now();
    for chunk in 0..n / size {
        let ops = (chunk * size..(chunk + 1) * size)
            .map(|i| Op::put(format!("location/user{i}/1"), binding(i)))
            .collect();
        store.apply_batch(ops).unwrap();
    }
    report(&format!("{name}: batches of {size}"), n, started);
}

#[test]
#[ignore = "a measurement; run explicitly with --release --ignored --nocapture"]
fn store_bench_put_throughput() {
    let memory = MemoryStore::new();
    singles("memory", &memory, 200_000);
    batches("memory", &memory, 200_000, 100);

    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(dir.path().join("bench.redb")).unwrap();
    // Every single put is a durable commit (an fsync): this measures the disk as much as redb.
    singles("redb", &redb, 2_000);
    batches("redb", &redb, 50_000, 100);
    let _watch = redb.watch_prefix(b"location/").unwrap();
    batches("redb, one lagging watcher", &redb, 50_000, 100);
}

#[test]
#[ignore = "a measurement; run explicitly with --release --ignored --nocapture"]
fn store_bench_group_commit_throughput() {
    // Single puts from several threads at once: group commit shares each fsync among the
    // writers waiting for it (the messaging plugin's store writers work like this).
    for threads in [1usize, 4, 16] {
        let dir = tempfile::tempdir().unwrap();
        let redb = std::sync::Arc::new(RedbStore::open(dir.path().join("bench.redb")).unwrap());
        let each = 500;
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let redb = redb.clone();
                std::thread::spawn(move || {
                    for i in 0..each {
                        redb.put(
                            format!("plugin/messaging/q/{t}-{i}").as_bytes(),
                            &binding(i),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        report(
            &format!("redb: single puts from {threads} threads"),
            threads * each,
            started,
        );
    }
}
