//! The store's one error type. Engine errors (redb today, Redis later) are boxed as the `source`
//! so that no engine type appears in the store's API; callers that care can still downcast.

use std::path::PathBuf;

/// An engine's own error, kept as the source of a [`StoreError`]. For the redb store this is a
/// `redb::Error`, reachable with `downcast_ref`.
pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened or created (missing directory, permissions, I/O).
    #[error("cannot open the store at {}: {source}", .path.display())]
    Open {
        /// The file that was being opened.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The file is not a redb database, or its checksums do not match: it was damaged outside
    /// redb or is some other kind of file. Nothing was written to it.
    #[error("the store at {} is corrupt or is not a database: {source}", .path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The file is a valid redb database but was not created by Huddle (it has tables and no
    /// Huddle metadata). Refused so that we never write into another program's data.
    #[error("{} is a redb database that Huddle did not create; refusing to use it", .path.display())]
    Foreign {
        /// The offending file.
        path: PathBuf,
    },
    /// The file was written by a newer Huddle whose store layout this build does not know.
    #[error(
        "the store at {} has layout version {found}; this build supports up to {supported}",
        .path.display()
    )]
    LayoutVersion {
        /// The offending file.
        path: PathBuf,
        /// The layout version found in the file.
        found: u64,
        /// The newest layout version this build understands.
        supported: u64,
    },
    /// Another process, or another handle in this process, has the file open.
    #[error("the store at {} is already open in this or another process", .path.display())]
    AlreadyOpen {
        /// The file that is locked.
        path: PathBuf,
    },
    /// The file uses an older redb on-disk format that must be upgraded with redb's tools first.
    #[error("the store at {} uses redb file format {format}, which must be upgraded", .path.display())]
    UpgradeRequired {
        /// The file that needs upgrading.
        path: PathBuf,
        /// The file format version found.
        format: u8,
    },
    /// The engine failed while the store was in use (I/O error, full disk, lost connection).
    #[error("the store failed to {operation}: {source}")]
    Backend {
        /// What the store was doing, e.g. "commit a write".
        operation: &'static str,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// A key longer than [`MAX_KEY_LEN`](super::MAX_KEY_LEN) (after namespace prefixing).
    #[error("a key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value longer than [`MAX_VALUE_LEN`](super::MAX_VALUE_LEN).
    #[error("a value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write through a read-only [`Scoped`](super::Scoped) view.
    #[error("the namespace {namespace} is read-only through this view")]
    ReadOnly {
        /// The namespace the view covers.
        namespace: super::Namespace,
    },
    /// A plugin name that cannot name a namespace.
    #[error("invalid plugin name for a store namespace: {0}")]
    InvalidPluginName(NameFault),
    /// A record with no bytes at all (not even the format byte).
    #[error("the record is empty; expected a format byte and a body")]
    RecordEmpty,
    /// A record written in a format this build does not know: most likely by a newer Huddle.
    #[error(
        "the record has format version {found}, this build reads only version {supported}; \
         was it written by a newer Huddle?"
    )]
    RecordVersion {
        /// The format byte found.
        found: u8,
        /// The format this build writes and reads.
        supported: u8,
    },
    /// The value could not be serialized.
    #[error("the record could not be encoded: {0}")]
    RecordEncode(#[source] serde_json::Error),
    /// The record's body is not valid for the requested type.
    #[error("the record's body could not be decoded: {0}")]
    RecordDecode(#[source] serde_json::Error),
}

/// Why a plugin name was refused by [`Namespace::plugin`](super::Namespace::plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameFault {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than [`MAX_PLUGIN_NAME_LEN`](super::MAX_PLUGIN_NAME_LEN).
    #[error("the name is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character other than ASCII letters, digits, `-` and `_`. A `/` in
    /// particular would let one plugin's namespace reach into another's.
    #[error("the name contains {0:?}; only ASCII letters, digits, '-' and '_' are allowed")]
    BadChar(char),
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
