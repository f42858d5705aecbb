//! The redb store's commit journal: a fixed-size file next to the store (`<store>.journal`)
//! that makes a write durable with one sequential write and one `fdatasync`.
//!
//! Why: a durable redb commit writes every page the commit touched (leaf, branches, the table
//! and freed-page trees, the header: 8-9 `pwrite`s at scattered offsets) and syncs them; on a
//! virtual disk each scattered page is its own request, and that was over half of the CPU of a
//! durable write (bench/messaging/NOTES.md). With the journal, a write is applied to redb with
//! a non-durable commit (in memory: redb's write buffer, no file I/O), its operations are
//! appended here as one record, and the record is synced. Every so often (when the journal is
//! full) one durable redb commit persists everything and the journal starts again from its
//! first byte: a checkpoint.
//!
//! Records: `len u32 | crc32c u32 | seq u64 | payload (len bytes)`, little-endian; the CRC
//! covers `seq` and the payload; the payload is `count u32` then per operation `1 | key_len u32
//! | key | value_len u32 | value` (put) or `2 | key_len u32 | key` (delete). `seq` grows by one
//! per record for the life of the store and is also written, in the same redb transaction, to
//! the store's metadata: after a crash redb holds the state of its last durable commit, whose
//! `seq` says which records it already contains; the records after it are read from the start
//! of the journal while they follow one another (`seq` + 1 each, CRC intact) and applied again.
//! A record from before the last checkpoint, or a torn one, ends the reading: the journal is
//! overwritten in place, so what lies after the newest record is older.
//!
//! The file is written full of zeros once when it is created (and synced, with its folder), so
//! later writes change no file size or block map: `fdatasync` then writes the record's pages
//! and a cache flush, no file-system journal commit.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Op;

/// The journal's default size: records of about 4 MiB of writes between checkpoints.
pub const DEFAULT_JOURNAL_BYTES: u64 = 4 * 1024 * 1024;

const HEADER: usize = 16;
const PUT: u8 = 1;
const DELETE: u8 = 2;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// One record read back: its sequence number and operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub ops: Vec<Op>,
}

/// The open journal file and where the next record goes.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    capacity: u64,
    /// Where the next record is written.
    offset: u64,
    /// Records written since the last `fdatasync` or checkpoint.
    unsynced: bool,
}

/// Where the journal of the store at `store` lives.
pub fn path_for(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

impl Journal {
    /// Opens (or creates, zero-filled to `capacity` bytes) the journal at `path`, returning it
    /// and the records it holds, oldest first (the caller skips those its store already has,
    /// then [`Journal::rewind`]s).
    pub fn open(path: &Path, capacity: u64) -> io::Result<(Journal, Vec<Record>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut records = Vec::new();
        if len > 0 {
            let mut bytes = vec![0; usize::try_from(len).map_err(io::Error::other)?];
            file.read_exact_at(&mut bytes, 0)?;
            records = read_records(&bytes);
        }
        if len < capacity {
            fill_zeros(&file, len, capacity)?;
            file.sync_all()?;
            if len == 0 {
                // A new file's name is durable once its folder is synced.
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    File::open(dir)?.sync_all()?;
                }
            }
        }
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            capacity: capacity.max(len),
            offset: 0,
            unsynced: false,
        };
        Ok((journal, records))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a record of `len` bytes (from [`encode`]) still fits before a checkpoint.
    pub fn fits(&self, len: usize) -> bool {
        self.offset.saturating_add(len as u64) <= self.capacity
    }

    /// Whether a record of `len` bytes can ever fit (larger ones are committed to redb
    /// durably instead).
    pub fn can_hold(&self, len: usize) -> bool {
        len as u64 <= self.capacity / 2
    }

    /// Writes `record` (from [`encode`]) after the previous one; not synced.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.file.write_all_at(record, self.offset)?;
        self.offset += record.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every record appended so far durable (nothing to do when none is waiting).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// The store has durably committed everything recorded: the next record goes to the start.
    pub fn rewind(&mut self) {
        self.offset = 0;
        self.unsynced = false;
    }
}

fn fill_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(CHUNK as u64)).unwrap_or(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The record of `ops` with sequence number `seq`.
pub fn encode(seq: u64, ops: &[&Op]) -> Vec<u8> {
    let body: usize = ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => 9 + key.len() + value.len(),
            Op::Delete { key } => 5 + key.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(HEADER + 4 + body);
    out.extend_from_slice(&[0; HEADER]);
    push_len(&mut out, ops.len());
    for op in ops {
        match op {
            Op::Put { key, value } => {
                out.push(PUT);
                push_len(&mut out, key.len());
                out.extend_from_slice(key);
                push_len(&mut out, value.len());
                out.extend_from_slice(value);
            }
            Op::Delete { key } => {
                out.push(DELETE);
                push_len(&mut out, key.len());
                out.extend_from_slice(key);
            }
        }
    }
    let payload_len = out.len() - HEADER;
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = checksum(seq, &out[HEADER..]);
    out[0..4].copy_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

// Keys and values are at most a few MiB (the store's limits), records far below 4 GiB.
fn push_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut digest = CRC.digest();
    digest.update(&seq.to_le_bytes());
    digest.update(payload);
    digest.finalize()
}

/// The records at the start of `bytes` that follow one another; stops at the first that is
/// torn, damaged, zero, or not the successor of the one before.
pub fn read_records(bytes: &[u8]) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(at + HEADER..(at + HEADER).saturating_add(len)) else {
            break;
        };
        if len == 0 || checksum(seq, payload) != crc {
            break;
        }
        if records.last().is_some_and(|last| seq != last.seq + 1) {
            break;
        }
        let Some(ops) = decode_ops(payload) else {
            break;
        };
        records.push(Record { seq, ops });
        at += HEADER + len;
    }
    records
}

fn decode_ops(payload: &[u8]) -> Option<Vec<Op>> {
    let mut rest = payload;
    let count = take_len(&mut rest)?;
    let mut ops = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let (&tag, tail) = rest.split_first()?;
        rest = tail;
        let key = take_bytes(&mut rest)?;
        ops.push(match tag {
            PUT => Op::Put {
                key,
                value: take_bytes(&mut rest)?,
            },
            DELETE => Op::Delete { key },
            _ => return None,
        });
    }
    rest.is_empty().then_some(ops)
}

fn take_len(rest: &mut &[u8]) -> Option<usize> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_le_bytes(*len) as usize)
}

fn take_bytes(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let len = take_len(rest)?;
    let (bytes, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    Some(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::put(k.as_bytes(), v.as_bytes())
    }

    #[test]
    fn records_read_back_in_order_until_the_sequence_breaks() {
        let a = put("a", "1");
        let b = Op::delete(&b"b"[..]);
        let c = put("c", "");
        let mut bytes = encode(7, &[&a, &b]);
        bytes.extend(encode(8, &[&c]));
        // An older record after them (from before a checkpoint) is not read.
        bytes.extend(encode(3, &[&a]));
        bytes.extend([0; 64]);
        let records = read_records(&bytes);
        assert_eq!(
            records,
            vec![
                Record {
                    seq: 7,
                    ops: vec![a.clone(), b]
                },
                Record {
                    seq: 8,
                    ops: vec![c]
                },
            ]
        );
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_reading() {
        let a = put("key", "value");
        let first = encode(1, &[&a]);
        let second = encode(2, &[&a]);
        let mut torn = first.clone();
        torn.extend(&second[..second.len() - 1]);
        assert_eq!(read_records(&torn).len(), 1);
        let mut damaged = first.clone();
        let mut bad = second.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        damaged.extend(bad);
        assert_eq!(read_records(&damaged).len(), 1);
        assert!(
            read_records(&[0; 100]).is_empty(),
            "a fresh zero-filled file"
        );
        assert!(read_records(&first[..10]).is_empty());
    }

    #[test]
    fn a_new_journal_is_zero_filled_and_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("s.redb"));
        let (mut j, records) = Journal::open(&path, 4096).unwrap();
        assert!(records.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        let a = put("a", "1");
        let rec = encode(1, &[&a]);
        assert!(j.fits(rec.len()) && j.can_hold(rec.len()));
        j.append(&rec).unwrap();
        j.append(&encode(2, &[&a])).unwrap();
        j.sync().unwrap();
        drop(j);
        let (mut j, records) = Journal::open(&path, 4096).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        // After a checkpoint the start is overwritten; the older record 2 behind it is not read.
        j.rewind();
        j.append(&encode(3, &[&a])).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, records) = Journal::open(&path, 4096).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    }
}
