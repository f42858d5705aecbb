//! The `Store` contract, run unchanged against every engine and against a scoped view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle::store::{
    scan_pages, Access, CasConflict, Change, MemoryStore, Namespace, Op, RedbOptions, RedbStore,
    Scoped, Store, StoreError, WatchEvent, MAX_KEY_LEN, MAX_SCAN_PAGE, MAX_VALUE_LEN,
};

/// Small, so that the lag tests need few writes.
const WATCH_CAPACITY: usize = 4;

struct Fixture {
    store: Arc<dyn Store>,
    // Keeps a redb file alive as long as the store.
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::with_watch_capacity(WATCH_CAPACITY)),
        _dir: None,
    }
}

fn redb() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut options = RedbOptions::default();
    options.watch_capacity = WATCH_CAPACITY;
    let store = RedbStore::open_with(dir.path().join("state.redb"), &options).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

// A view over a store that also holds data outside the view, which the view must never show.
fn scoped(base: Fixture) -> Fixture {
    base.store.put(b"plugin/other/k1", b"outside").unwrap();
    base.store.put(b"location/k1", b"outside").unwrap();
    base.store.put(b"plugin/contrac", b"outside").unwrap();
    base.store.put(b"plugin/contract", b"outside").unwrap();
    base.store.put(b"plugin/contractx/k1", b"outside").unwrap();
    let ns = Namespace::plugin("contract").unwrap();
    Fixture {
        store: Arc::new(Scoped::new(base.store, ns, Access::ReadWrite)),
        _dir: base._dir,
    }
}

fn drain(watch: &mut huddle::store::Watch) -> Vec<WatchEvent> {
    std::iter::from_fn(|| watch.try_recv()).collect()
}

fn change(key: &[u8], value: Option<&[u8]>) -> WatchEvent {
    WatchEvent::Change(Change {
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    })
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    entries.iter().map(|(k, _)| k.as_slice()).collect()
}

mod contract {
    use super::*;

    pub fn get_put_delete(s: &dyn Store) {
        assert_eq!(s.get(b"a").unwrap(), None);
        s.put(b"a", b"1").unwrap();
        assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        s.put(b"a", b"2").unwrap();
        assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        // Binary keys and empty values are ordinary.
        s.put(b"\x00\xff", b"").unwrap();
        assert_eq!(s.get(b"\x00\xff").unwrap(), Some(Vec::new()));
        assert!(s.delete(b"a").unwrap());
        assert!(!s.delete(b"a").unwrap());
        assert_eq!(s.get(b"a").unwrap(), None);
        assert!(s.delete(b"\x00\xff").unwrap());
    }

    pub fn compare_and_swap(s: &dyn Store) {
        // Absent expected, absent found: create.
        assert_eq!(s.compare_and_swap(b"c", None, Some(b"1")).unwrap(), Ok(()));
        // Absent expected, present found: conflict carrying the current value.
        assert_eq!(
            s.compare_and_swap(b"c", None, Some(b"x")).unwrap(),
            Err(CasConflict {
                current: Some(b"1".to_vec())
            })
        );
        // Wrong expectation.
        assert_eq!(
            s.compare_and_swap(b"c", Some(b"0"), Some(b"x")).unwrap(),
            Err(CasConflict {
                current: Some(b"1".to_vec())
            })
        );
        assert_eq!(s.get(b"c").unwrap().as_deref(), Some(&b"1"[..]));
        // Right expectation: swap.
        assert_eq!(
            s.compare_and_swap(b"c", Some(b"1"), Some(b"2")).unwrap(),
            Ok(())
        );
        assert_eq!(s.get(b"c").unwrap().as_deref(), Some(&b"2"[..]));
        // New None: delete.
        assert_eq!(s.compare_and_swap(b"c", Some(b"2"), None).unwrap(), Ok(()));
        assert_eq!(s.get(b"c").unwrap(), None);
        // Expected a value, found absence.
        assert_eq!(
            s.compare_and_swap(b"c", Some(b"2"), None).unwrap(),
            Err(CasConflict { current: None })
        );
        // Absent and stays absent.
        assert_eq!(s.compare_and_swap(b"c", None, None).unwrap(), Ok(()));
        assert_eq!(s.get(b"c").unwrap(), None);
    }

    pub fn compare_and_swap_is_atomic(s: Arc<dyn Store>) {
        // Eight threads each increment a counter 25 times through CAS retries: no lost update.
        s.put(b"n", b"0").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let mut cur = s.get(b"n").unwrap().unwrap();
                        loop {
                            let n: u64 = std::str::from_utf8(&cur).unwrap().parse().unwrap();
                            let next = (n + 1).to_string();
                            match s
                                .compare_and_swap(b"n", Some(&cur), Some(next.as_bytes()))
                                .unwrap()
                            {
                                Ok(()) => break,
                                Err(conflict) => cur = conflict.current.unwrap(),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.get(b"n").unwrap().as_deref(), Some(&b"200"[..]));
    }

    pub fn scan_prefix_bounds(s: &dyn Store) {
        let mut ops: Vec<Op> = (1..=9).map(|i| Op::put(format!("a/{i}"), "v")).collect();
        // Neighbours that must never appear in a scan of "a/".
        for k in ["a", "a.", "a0", "b/1", "`"] {
            ops.push(Op::put(k, "no"));
        }
        s.apply_batch(ops).unwrap();

        let all = s.scan_prefix(b"a/", None, 100).unwrap();
        assert!(!all.more);
        assert_eq!(all.entries.len(), 9);
        assert!(all.entries.windows(2).all(|w| w[0].0 < w[1].0), "key order");
        assert!(all
            .entries
            .iter()
            .all(|(k, v)| k.starts_with(b"a/") && v == b"v"));

        // Paging: three pages of three, each says whether more follows.
        let p1 = s.scan_prefix(b"a/", None, 3).unwrap();
        assert_eq!(keys(&p1.entries), [&b"a/1"[..], b"a/2", b"a/3"]);
        assert!(p1.more);
        let p2 = s.scan_prefix(b"a/", p1.resume_after(), 3).unwrap();
        assert_eq!(keys(&p2.entries), [&b"a/4"[..], b"a/5", b"a/6"]);
        let p3 = s.scan_prefix(b"a/", p2.resume_after(), 3).unwrap();
        assert_eq!(keys(&p3.entries), [&b"a/7"[..], b"a/8", b"a/9"]);
        assert!(!p3.more);
        assert_eq!(p3.resume_after(), None);

        // A cursor before the prefix starts at the prefix; past it, the page is empty.
        let before = s.scan_prefix(b"a/", Some(b"\x00"), 2).unwrap();
        assert_eq!(keys(&before.entries), [&b"a/1"[..], b"a/2"]);
        let past = s.scan_prefix(b"a/", Some(b"z"), 2).unwrap();
        assert_eq!(past, Default::default());
        // Limit 0 returns nothing but still says whether entries exist.
        let zero = s.scan_prefix(b"a/", None, 0).unwrap();
        assert!(zero.entries.is_empty() && zero.more);
        assert!(s.scan_prefix(b"nothing/", None, 10).unwrap() == Default::default());

        // Prefixes ending in 0xff have no simple successor; they must still be exact.
        s.apply_batch(vec![
            Op::put(*b"\xff\xff1", "in"),
            Op::put(*b"\xff\xff\xff", "in"),
            Op::put(*b"\xff\xfe", "out"),
            Op::put(*b"\xff", "out"),
        ])
        .unwrap();
        let ff = s.scan_prefix(b"\xff\xff", None, 10).unwrap();
        assert_eq!(keys(&ff.entries), [&b"\xff\xff1"[..], b"\xff\xff\xff"]);

        // The empty prefix is everything.
        let everything: usize = scan_pages(s, b"", 4).map(|p| p.unwrap().len()).sum();
        assert_eq!(everything, 9 + 5 + 4);
    }

    pub fn scan_limit_is_capped(s: &dyn Store) {
        let n = MAX_SCAN_PAGE + 50;
        s.apply_batch(
            (0..n)
                .map(|i| Op::put(format!("big/{i:06}"), "v"))
                .collect(),
        )
        .unwrap();
        let page = s.scan_prefix(b"big/", None, usize::MAX).unwrap();
        assert_eq!(page.entries.len(), MAX_SCAN_PAGE);
        assert!(page.more);
        let pages: Vec<_> = scan_pages(s, b"big/", 500).map(Result::unwrap).collect();
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            [500, 500, 74]
        );
        let flat: Vec<_> = pages.into_iter().flatten().collect();
        assert_eq!(flat.len(), n);
        assert_eq!(flat[0].0, b"big/000000");
        assert_eq!(flat[n - 1].0, format!("big/{:06}", n - 1).as_bytes());
    }

    pub fn batch_is_atomic(s: &dyn Store) {
        s.put(b"b/gone", b"old").unwrap();
        let mut w = s.watch_prefix(b"b/").unwrap();
        s.apply_batch(vec![
            Op::put(*b"b/1", *b"one"),
            Op::put(*b"b/2", *b"two"),
            Op::delete(*b"b/gone"),
            Op::delete(*b"b/never"),
            Op::put(*b"b/1", *b"uno"),
        ])
        .unwrap();
        assert_eq!(s.get(b"b/1").unwrap().as_deref(), Some(&b"uno"[..]));
        assert_eq!(s.get(b"b/2").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(s.get(b"b/gone").unwrap(), None);
        // One change per effective op, in batch order; the absent delete yields none.
        assert_eq!(
            drain(&mut w),
            [
                change(b"b/1", Some(b"one")),
                change(b"b/2", Some(b"two")),
                change(b"b/gone", None),
                change(b"b/1", Some(b"uno")),
            ]
        );

        // A batch with one bad op changes nothing, and nobody is told anything.
        let err = s
            .apply_batch(vec![
                Op::put(*b"b/3", *b"three"),
                Op::delete(*b"b/1"),
                Op::put(*b"b/4", vec![0u8; MAX_VALUE_LEN + 1]),
            ])
            .unwrap_err();
        assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err}");
        assert_eq!(s.get(b"b/3").unwrap(), None);
        assert_eq!(s.get(b"b/1").unwrap().as_deref(), Some(&b"uno"[..]));
        assert!(drain(&mut w).is_empty());

        s.apply_batch(Vec::new()).unwrap();
        assert!(drain(&mut w).is_empty());
    }

    pub fn limits(s: &dyn Store) {
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        assert!(matches!(
            s.put(&long, b"v"),
            Err(StoreError::KeyTooLarge { .. })
        ));
        assert!(matches!(
            s.compare_and_swap(&long, None, Some(b"v")),
            Err(StoreError::KeyTooLarge { .. })
        ));
        let big = vec![0u8; MAX_VALUE_LEN + 1];
        let err = s.put(b"k", &big).unwrap_err();
        assert!(matches!(err, StoreError::ValueTooLarge { .. }));
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        assert_eq!(s.get(b"k").unwrap(), None);
        // Exactly at the limit is fine.
        s.put(b"k", &vec![1u8; MAX_VALUE_LEN]).unwrap();
        assert_eq!(s.get(b"k").unwrap().map(|v| v.len()), Some(MAX_VALUE_LEN));
    }

    pub fn namespace_isolation(base: Arc<dyn Store>) {
        let echo = Scoped::new(
            Arc::clone(&base),
            Namespace::plugin("echo").unwrap(),
            Access::ReadWrite,
        );
        let echo2 = Scoped::new(
            Arc::clone(&base),
            Namespace::plugin("echo2").unwrap(),
            Access::ReadWrite,
        );
        let location_ro = Scoped::new(Arc::clone(&base), Namespace::location(), Access::ReadOnly);
        let mut echo_watch = echo.watch_prefix(b"").unwrap();
        let mut base_watch = base.watch_prefix(b"plugin/").unwrap();

        echo.put(b"k", b"mine").unwrap();
        echo2.put(b"k", b"theirs").unwrap();
        base.put(b"location/alice", b"binding").unwrap();

        // Relative keys, separate keyspaces, full keys in the underlying store.
        assert_eq!(echo.get(b"k").unwrap().as_deref(), Some(&b"mine"[..]));
        assert_eq!(echo2.get(b"k").unwrap().as_deref(), Some(&b"theirs"[..]));
        assert_eq!(
            base.get(b"plugin/echo/k").unwrap().as_deref(),
            Some(&b"mine"[..])
        );
        // "echo" is a string prefix of "echo2" but not a namespace prefix of it.
        let page = echo.scan_prefix(b"", None, 100).unwrap();
        assert_eq!(page.entries, [(b"k".to_vec(), b"mine".to_vec())]);
        assert!(!page.more);
        assert!(echo.get(b"../echo2/k").unwrap().is_none());

        // A read-only view reads and watches, and refuses every write.
        assert_eq!(
            location_ro.get(b"alice").unwrap().as_deref(),
            Some(&b"binding"[..])
        );
        let mut ro_watch = location_ro.watch_prefix(b"").unwrap();
        for result in [
            location_ro.put(b"alice", b"x").map(|_| ()),
            location_ro.delete(b"alice").map(|_| ()),
            location_ro
                .compare_and_swap(b"alice", Some(b"binding"), None)
                .map(|_| ()),
            location_ro.apply_batch(vec![Op::delete(*b"alice")]),
        ] {
            match result {
                Err(StoreError::ReadOnly { namespace }) => {
                    assert_eq!(namespace, Namespace::location())
                }
                other => panic!("read-only view allowed a write: {other:?}"),
            }
        }
        assert_eq!(
            base.get(b"location/alice").unwrap().as_deref(),
            Some(&b"binding"[..])
        );
        base.put(b"location/bob", b"b").unwrap();
        assert_eq!(drain(&mut ro_watch), [change(b"bob", Some(b"b"))]);

        // A namespace's watch sees its own writes only, with relative keys.
        echo.apply_batch(vec![Op::delete(*b"k")]).unwrap();
        assert_eq!(
            drain(&mut echo_watch),
            [change(b"k", Some(b"mine")), change(b"k", None)]
        );
        assert_eq!(
            drain(&mut base_watch),
            [
                change(b"plugin/echo/k", Some(b"mine")),
                change(b"plugin/echo2/k", Some(b"theirs")),
                change(b"plugin/echo/k", None),
            ]
        );
    }

    pub fn watch_delivers_in_order(s: &dyn Store) {
        s.put(b"w/before", b"not seen").unwrap();
        let mut w = s.watch_prefix(b"w/").unwrap();
        let mut all = s.watch_prefix(b"").unwrap();
        s.put(b"w/1", b"a").unwrap();
        s.put(b"x/1", b"outside").unwrap();
        s.put(b"w", b"outside too").unwrap();
        assert_eq!(
            drain(&mut all),
            [
                change(b"w/1", Some(b"a")),
                change(b"x/1", Some(b"outside")),
                change(b"w", Some(b"outside too")),
            ]
        );
        assert!(s.delete(b"w/before").unwrap());
        assert!(!s.delete(b"w/never").unwrap());
        s.compare_and_swap(b"w/1", Some(b"a"), Some(b"b"))
            .unwrap()
            .unwrap();
        s.compare_and_swap(b"w/1", Some(b"zzz"), Some(b"c"))
            .unwrap()
            .unwrap_err();
        s.compare_and_swap(b"w/1", Some(b"b"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            drain(&mut w),
            [
                change(b"w/1", Some(b"a")),
                change(b"w/before", None),
                change(b"w/1", Some(b"b")),
                change(b"w/1", None),
            ]
        );
        assert_eq!(drain(&mut all).len(), 3);
        assert!(!w.is_closed());
    }

    pub fn watch_order_matches_commit_order(s: Arc<dyn Store>) {
        // Racing writers on one key: the last change the watcher sees must be the value the store
        // ends up holding, which fails if one commit's notification could overtake another's.
        let mut w = s.watch_prefix(b"race/").unwrap();
        for round in 0..50 {
            let threads: Vec<_> = (0..WATCH_CAPACITY)
                .map(|t| {
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || {
                        s.put(b"race/k", format!("{round}-{t}").as_bytes()).unwrap();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let events = drain(&mut w);
            assert_eq!(events.len(), WATCH_CAPACITY, "{events:?}");
            assert_eq!(
                events.last(),
                Some(&change(b"race/k", s.get(b"race/k").unwrap().as_deref())),
                "round {round}"
            );
        }
    }

    pub fn dropped_watch_unregisters(s: &dyn Store) {
        let base = s.watch_count();
        let w1 = s.watch_prefix(b"d/").unwrap();
        let w2 = s.watch_prefix(b"d/").unwrap();
        assert_eq!(s.watch_count(), base + 2);
        drop(w1);
        assert_eq!(s.watch_count(), base + 1);
        s.put(b"d/1", b"x").unwrap();
        drop(w2);
        assert_eq!(s.watch_count(), base);
        // Writing with no watchers left is fine.
        s.put(b"d/2", b"y").unwrap();
    }

    pub fn slow_watcher_lags_without_blocking_writers(s: &dyn Store) {
        let mut w = s.watch_prefix(b"s/").unwrap();
        let n = 10 * WATCH_CAPACITY;
        let started = Instant::now();
        // Nobody reads while these are written: a writer that waited would hang here.
        for i in 0..n {
            s.put(format!("s/{i:03}").as_bytes(), b"v").unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        let events = drain(&mut w);
        // The first WATCH_CAPACITY changes, in order, then exactly one marker at the gap.
        assert_eq!(events.len(), WATCH_CAPACITY + 1, "{events:?}");
        for (i, e) in events[..WATCH_CAPACITY].iter().enumerate() {
            assert_eq!(e, &change(format!("s/{i:03}").as_bytes(), Some(b"v")));
        }
        assert_eq!(events[WATCH_CAPACITY], WatchEvent::Lagged);
        // The watcher is live again: later writes arrive, and a rescan recovers the gap.
        s.put(b"s/after", b"w").unwrap();
        assert_eq!(drain(&mut w), [change(b"s/after", Some(b"w"))]);
        let rescan: usize = scan_pages(s, b"s/", 100).map(|p| p.unwrap().len()).sum();
        assert_eq!(rescan, n + 1);
    }

    pub fn watch_never_drops_silently(s: Arc<dyn Store>) {
        // One writer counts up over a few keys while a reader that is sometimes slow follows.
        // Between two Lagged markers the counter must step by exactly one (no silent gap), and a
        // reader that rescans on Lagged must end with exactly the store's contents.
        use std::collections::BTreeMap;
        let n = 400u64;
        let mut w = s.watch_prefix(b"g/").unwrap();
        let writer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 1..=n {
                    let key = format!("g/{}", i % 5);
                    s.put(key.as_bytes(), i.to_string().as_bytes()).unwrap();
                }
            })
        };
        let rescan = |s: &dyn Store| -> BTreeMap<Vec<u8>, Vec<u8>> {
            scan_pages(s, b"g/", 64).flat_map(Result::unwrap).collect()
        };
        let mut view = BTreeMap::new();
        let mut last: Option<u64> = Some(0);
        let mut lags = 0;
        let mut seen = 0u64;
        loop {
            let finished = writer.is_finished();
            match w.try_recv() {
                Some(WatchEvent::Change(c)) => {
                    let i: u64 = std::str::from_utf8(c.value.as_deref().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    if let Some(prev) = last {
                        assert_eq!(i, prev + 1, "a change was lost without a Lagged marker");
                    }
                    last = Some(i);
                    seen += 1;
                    view.insert(c.key, c.value.unwrap());
                    if seen % 8 == 7 {
                        // Be slow now and then.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Some(WatchEvent::Lagged) => {
                    lags += 1;
                    last = None;
                    view = rescan(&*s);
                }
                None if finished => break,
                None => std::thread::yield_now(),
            }
        }
        writer.join().unwrap();
        assert_eq!(view, rescan(&*s), "after {lags} lags and {seen} changes");
    }

    pub fn async_recv_and_close(fixture: Fixture) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = Arc::clone(&fixture.store);
        let mut w = s.watch_prefix(b"async/").unwrap();
        rt.block_on(async move {
            let writer = {
                let s = Arc::clone(&s);
                tokio::task::spawn_blocking(move || {
                    for i in 0..3 {
                        s.put(format!("async/{i}").as_bytes(), b"v").unwrap();
                    }
                })
            };
            for i in 0..3 {
                let e = tokio::time::timeout(Duration::from_secs(10), w.recv())
                    .await
                    .expect("a change within 10 s");
                assert_eq!(e, Some(change(format!("async/{i}").as_bytes(), Some(b"v"))));
            }
            writer.await.unwrap();
            // With the store gone, recv ends instead of waiting forever.
            drop(s);
            drop(fixture);
            let end = tokio::time::timeout(Duration::from_secs(10), w.recv())
                .await
                .expect("recv ends once the store is dropped");
            assert_eq!(end, None);
            assert!(w.is_closed());
        });
    }
}

macro_rules! contract_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            fn make() -> Fixture {
                $make
            }

            #[test]
            fn get_put_delete() {
                contract::get_put_delete(&*make().store)
            }
            #[test]
            fn compare_and_swap() {
                contract::compare_and_swap(&*make().store)
            }
            #[test]
            fn compare_and_swap_is_atomic() {
                let f = make();
                contract::compare_and_swap_is_atomic(Arc::clone(&f.store))
            }
            #[test]
            fn scan_prefix_bounds() {
                contract::scan_prefix_bounds(&*make().store)
            }
            #[test]
            fn scan_limit_is_capped() {
                contract::scan_limit_is_capped(&*make().store)
            }
            #[test]
            fn batch_is_atomic() {
                contract::batch_is_atomic(&*make().store)
            }
            #[test]
            fn limits() {
                contract::limits(&*make().store)
            }
            #[test]
            fn namespace_isolation() {
                let f = make();
                contract::namespace_isolation(Arc::clone(&f.store))
            }
            #[test]
            fn watch_delivers_in_order() {
                contract::watch_delivers_in_order(&*make().store)
            }
            #[test]
            fn watch_order_matches_commit_order() {
                let f = make();
                contract::watch_order_matches_commit_order(Arc::clone(&f.store))
            }
            #[test]
            fn dropped_watch_unregisters() {
                contract::dropped_watch_unregisters(&*make().store)
            }
            #[test]
            fn slow_watcher_lags_without_blocking_writers() {
                contract::slow_watcher_lags_without_blocking_writers(&*make().store)
            }
            #[test]
            fn watch_never_drops_silently() {
                let f = make();
                contract::watch_never_drops_silently(Arc::clone(&f.store))
            }
            #[test]
            fn async_recv_and_close() {
                contract::async_recv_and_close(make())
            }
        }
    };
}

// Module names carry "store" so that `cargo test -p huddle store` selects them.
contract_suite!(store_memory, memory());
contract_suite!(store_redb, redb());
contract_suite!(store_scoped_memory, scoped(memory()));
contract_suite!(store_scoped_redb, scoped(redb()));

#[test]
fn store_is_object_safe_send_sync() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Store>();
    assert_send_sync::<huddle::store::Watch>();
    let stores: Vec<Arc<dyn Store>> = vec![memory().store, Arc::new(MemoryStore::new())];
    assert_eq!(stores.len(), 2);
}
