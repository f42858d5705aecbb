// What one durable redb commit of one stored message costs, into the table that also holds
// the accounts (as the store does: one table for every namespace) or into a table of its own
// (bench/NOTES.md, branch msgcut). Not part of the workspace: built by its own manifest,
// bench/messaging/redb-commit/Cargo.toml (redb 4.6.0, symbols in release):
//
//   CARGO_TARGET_DIR=/tmp/redbexp cargo build --release --offline \
//     --manifest-path bench/messaging/redb-commit/Cargo.toml
//   for mode in same separate; do for n in 0 100; do
//     valgrind --tool=callgrind /tmp/redbexp/release/redb-commit /tmp/redb.$mode $mode $n
//   done; done
//
// and take (collected at n = 100 − collected at n = 0) / 100 as the instructions per commit.
// A fourth argument seeds the table of its own with that many 180-byte entries first (as many
// as the shared table holds: 10003), for a plugin table as deep as the shared one.
use redb::{Database, Durability, TableDefinition};
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("huddle_kv");
const Q: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messaging");
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let separate = args[2] == "separate";
    let n: u64 = args[3].parse().unwrap();
    let seeded: u32 = args.get(4).map_or(0, |s| s.parse().unwrap());
    let _ = std::fs::remove_file(path);
    let db = Database::create(path).unwrap();
    // The bench's store: 10,003 accounts and a binding.
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(KV).unwrap();
        for i in 0..10_003u32 {
            let k = format!("credentials/u{i:04}");
            t.insert(k.as_bytes(), [7u8; 180].as_slice()).unwrap();
        }
        t.insert(
            b"location/bob@example.test/k1".as_slice(),
            [1u8; 300].as_slice(),
        )
        .unwrap();
    }
    if separate {
        let mut t = w.open_table(Q).unwrap();
        // Before the messages' keys (`q/…`).
        for i in 0..seeded {
            let k = format!("a/{i:05}");
            t.insert(k.as_bytes(), [7u8; 180].as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
    // One message of about a stored record's size per commit.
    let value = [b'x'; 520];
    for seq in 0..n {
        let mut w = db.begin_write().unwrap();
        w.set_durability(Durability::Immediate).unwrap();
        {
            let key = format!("plugin/messaging/q/{seq:016x}");
            if separate {
                let mut t = w.open_table(Q).unwrap();
                t.insert(&key.as_bytes()[17..], value.as_slice()).unwrap();
            } else {
                let mut t = w.open_table(KV).unwrap();
                t.insert(key.as_bytes(), value.as_slice()).unwrap();
            }
        }
        w.commit().unwrap();
    }
}
