//! What only the durable engine promises: data survives reopening, and a file that is not a
//! healthy Huddle store is refused with an error naming it.

use std::path::Path;
use std::sync::Arc;

use huddle::store::{Namespace, Record, RedbOptions, RedbStore, Store, StoreError};

fn assert_names_path(err: &StoreError, path: &Path) {
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name {}: {msg}",
        path.display()
    );
}

#[test]
fn store_redb_reopen_after_drop_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let location = Namespace::location();
    {
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.path(), path);
        s.put(
            &location.key(b"alice"),
            &Record::encode(&("sip:a@h", 3600u32)).unwrap(),
        )
        .unwrap();
        s.put(b"k", b"v").unwrap();
        s.put(b"gone", b"x").unwrap();
        assert!(s.delete(b"gone").unwrap());
        let _watch = s.watch_prefix(b"").unwrap();
    }
    for _ in 0..2 {
        let s = RedbStore::open(&path).unwrap();
        let got: (String, u32) =
            Record::decode(&s.get(&location.key(b"alice")).unwrap().unwrap()).unwrap();
        assert_eq!(got, ("sip:a@h".to_string(), 3600));
        assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.get(b"gone").unwrap(), None);
        assert_eq!(s.watch_count(), 0);
        assert_eq!(s.scan_prefix(b"", None, 10).unwrap().entries.len(), 2);
    }
}

#[test]
fn store_redb_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let first = Arc::new(RedbStore::open(&path).unwrap());
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err:?}");
    assert_names_path(&err, &path);
    drop(first);
    RedbStore::open(&path).unwrap();
}

#[test]
fn store_redb_foreign_file_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text = b"[server]\nlisten = \"0.0.0.0:5060\"\n".repeat(200);
    std::fs::write(&path, &text).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_names_path(&err, &path);
    assert_eq!(std::fs::read(&path).unwrap(), text, "the file was modified");
}

#[test]
fn store_redb_corrupt_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        s.apply_batch(
            (0..2000u32)
                .map(|i| huddle::store::Op::put(format!("location/{i:05}"), vec![b'x'; 200]))
                .collect(),
        )
        .unwrap();
    }
    // Damage every data page past the header, leaving redb's own header intact.
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in bytes[8192..len].iter_mut().step_by(97) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_names_path(&err, &path);
}

#[test]
fn store_redb_truncated_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    drop(RedbStore::open(&path).unwrap());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..100]).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_names_path(&err, &path);
}

#[test]
fn store_redb_other_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<'_, u64, u64> = redb::TableDefinition::new("theirs");
            let mut t = txn.open_table(def).unwrap();
            t.insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    assert_names_path(&err, &path);
}

#[test]
fn store_redb_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    drop(RedbStore::open(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<'_, &str, u64> =
                redb::TableDefinition::new("huddle_meta");
            let mut t = txn.open_table(def).unwrap();
            t.insert("layout_version", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LayoutVersion {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names_path(&err, &path);
}

#[test]
fn store_redb_missing_directory_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/state.redb");
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert_names_path(&err, &path);
    // The engine's error is kept as the source, for whoever wants the details.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.downcast_ref::<redb::Error>().is_some());
}

#[test]
fn store_redb_options_without_integrity_check_open_healthy_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut options = RedbOptions::default();
    options.check_integrity_on_open = false;
    options.cache_size = 1 << 20;
    {
        let s = RedbStore::open_with(&path, &options).unwrap();
        s.put(b"k", b"v").unwrap();
    }
    let s = RedbStore::open_with(&path, &options).unwrap();
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Group commit: puts and deletes from many threads at once each return once durable, every
/// one is there after reopening, and a watcher sees each key's writes in the order they were
/// made (a thread's put before its delete).
#[test]
fn store_redb_concurrent_writers_are_group_committed() {
    const THREADS: usize = 8;
    const EACH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("group.redb");
    {
        let s = Arc::new(RedbStore::open(&path).unwrap());
        let mut watch = s.watch_prefix(b"g/").unwrap();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let key = format!("g/{t}/{i:03}");
                        s.put(key.as_bytes(), b"v").unwrap();
                        if i % 4 == 0 {
                            assert!(s.delete(key.as_bytes()).unwrap(), "{key} was just written");
                            assert!(!s.delete(key.as_bytes()).unwrap(), "{key} is gone");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut seen: std::collections::HashMap<Vec<u8>, Vec<bool>> = Default::default();
        while let Some(huddle::store::WatchEvent::Change(c)) = watch.try_recv() {
            seen.entry(c.key).or_default().push(c.value.is_some());
        }
        for (key, writes) in &seen {
            let deleted = writes.len() == 2;
            assert_eq!(
                writes,
                &if deleted {
                    vec![true, false]
                } else {
                    vec![true]
                },
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(seen.len(), THREADS * EACH);
    }
    let s = RedbStore::open(&path).unwrap();
    let kept = s.scan_prefix(b"g/", None, 1024).unwrap().entries.len();
    assert_eq!(kept, THREADS * (EACH - EACH / 4));
}

/// The registrar's write-behind path: a deferred batch is seen at once by readers and watchers
/// like any commit, and `sync` (or any later durable commit) puts it on disk.
#[test]
fn store_redb_deferred_batches_are_visible_at_once_and_kept_after_sync() {
    use huddle::store::{Op, WatchEvent};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        let mut watch = s.watch_prefix(b"location/").unwrap();
        s.apply_batch_deferred(vec![Op::put(&b"location/a"[..], &b"1"[..])])
            .unwrap();
        assert_eq!(s.get(b"location/a").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(matches!(watch.try_recv(), Some(WatchEvent::Change(c)) if c.key == b"location/a"));
        s.apply_batch_deferred(vec![
            Op::put(&b"location/b"[..], &b"2"[..]),
            Op::delete(&b"location/a"[..]),
        ])
        .unwrap();
        s.sync().unwrap();
        // A durable commit of someone else after deferred ones keeps them too.
        s.apply_batch_deferred(vec![Op::put(&b"location/c"[..], &b"3"[..])])
            .unwrap();
        s.put(b"other", b"x").unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.get(b"location/a").unwrap(), None);
    assert_eq!(s.get(b"location/b").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(s.get(b"location/c").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(s.get(b"other").unwrap().as_deref(), Some(&b"x"[..]));
}
