//! Keyspaces and the scoped view that confines a user of the store to one of them.

use std::fmt;
use std::sync::Arc;

use super::error::{NameFault, Result, StoreError};
use super::{CasConflict, Op, ScanPage, Store, Watch};

/// The longest plugin name [`Namespace::plugin`] accepts, in bytes.
pub const MAX_PLUGIN_NAME_LEN: usize = 64;

/// A keyspace: a key prefix that always ends in `/`, built only from validated parts, so that no
/// namespace is a prefix of another one (`plugin/echo/` does not contain `plugin/echo2/…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    prefix: Box<str>,
}

impl Namespace {
    /// `location/`: the registrar's bindings. Others may read it.
    pub fn location() -> Self {
        Self {
            prefix: "location/".into(),
        }
    }

    /// `credentials/`: digest credentials. Only the host reads it.
    pub fn credentials() -> Self {
        Self {
            prefix: "credentials/".into(),
        }
    }

    /// `plugin/<name>/`: one plugin's private keyspace. `name` is the plugin's crate folder name:
    /// ASCII letters, digits, `-` and `_`, at most [`MAX_PLUGIN_NAME_LEN`] bytes.
    pub fn plugin(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Err(StoreError::InvalidPluginName(NameFault::Empty));
        }
        if name.len() > MAX_PLUGIN_NAME_LEN {
            return Err(StoreError::InvalidPluginName(NameFault::TooLong {
                len: name.len(),
                max: MAX_PLUGIN_NAME_LEN,
            }));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(StoreError::InvalidPluginName(NameFault::BadChar(c)));
        }
        Ok(Self {
            prefix: format!("plugin/{name}/").into(),
        })
    }

    /// The prefix, including its trailing `/`.
    pub fn prefix(&self) -> &[u8] {
        self.prefix.as_bytes()
    }

    /// The full store key for `key` within this namespace.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key);
        full
    }

    /// The part of a full store key after this namespace's prefix, or `None` if the key lies
    /// outside the namespace.
    pub fn strip<'k>(&self, full: &'k [u8]) -> Option<&'k [u8]> {
        full.strip_prefix(self.prefix.as_bytes())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

/// What a [`Scoped`] view may do in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read, write and watch.
    ReadWrite,
    /// Read and watch; every write fails with [`StoreError::ReadOnly`].
    ReadOnly,
}

/// A view of a store confined to one [`Namespace`]: what a plugin or a host component is given.
///
/// Its keys are relative: `get(b"alice")` on a `location/` view reads `location/alice`, scans and
/// watches report keys without the prefix, and nothing outside the namespace can be named, so
/// nothing outside it can be read, written or watched. A plugin gets a read-write view of
/// `plugin/<name>/` and read-only views of the shared keyspaces it may read.
///
/// `Scoped` is itself a [`Store`], so code written against `&dyn Store` runs unchanged on a view.
#[derive(Clone)]
pub struct Scoped {
    inner: Arc<dyn Store>,
    namespace: Namespace,
    access: Access,
}

impl Scoped {
    /// A view of `namespace` in `inner`.
    pub fn new(inner: Arc<dyn Store>, namespace: Namespace, access: Access) -> Self {
        Self {
            inner,
            namespace,
            access,
        }
    }

    /// The namespace this view covers.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// What this view may do.
    pub fn access(&self) -> Access {
        self.access
    }

    fn writable(&self) -> Result<()> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(StoreError::ReadOnly {
                namespace: self.namespace.clone(),
            }),
        }
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        self.namespace.key(key)
    }
}

impl fmt::Debug for Scoped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("namespace", &self.namespace)
            .field("access", &self.access)
            .field("inner", &self.inner)
            .finish()
    }
}

impl Store for Scoped {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(&self.key(key))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.writable()?;
        self.inner.put(&self.key(key), value)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.writable()?;
        self.inner.delete(&self.key(key))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>> {
        self.writable()?;
        self.inner.compare_and_swap(&self.key(key), expected, new)
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        let start_after = start_after.map(|k| self.key(k));
        let mut page = self
            .inner
            .scan_prefix(&self.key(prefix), start_after.as_deref(), limit)?;
        let n = self.namespace.prefix().len();
        for (key, _) in &mut page.entries {
            // The inner store only returns keys under the full prefix, which starts with ours.
            key.drain(..n.min(key.len()));
        }
        Ok(page)
    }

    fn apply_batch(&self, ops: Vec<Op>) -> Result<()> {
        self.writable()?;
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => Op::Put {
                    key: self.key(&key),
                    value,
                },
                Op::Delete { key } => Op::Delete {
                    key: self.key(&key),
                },
            })
            .collect();
        self.inner.apply_batch(ops)
    }

    fn watch_prefix(&self, prefix: &[u8]) -> Result<Watch> {
        let mut watch = self.inner.watch_prefix(&self.key(prefix))?;
        watch.strip_more(self.namespace.prefix().len());
        Ok(watch)
    }

    fn watch_count(&self) -> usize {
        self.inner.watch_count()
    }

    fn watches_see_every_write(&self) -> bool {
        self.inner.watches_see_every_write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_cannot_escape_or_overlap() {
        assert_eq!(
            Namespace::plugin("presence").unwrap().prefix(),
            b"plugin/presence/"
        );
        assert_eq!(
            Namespace::plugin("my-plugin_2").unwrap().to_string(),
            "plugin/my-plugin_2/"
        );
        for (bad, fault) in [
            ("", NameFault::Empty),
            ("a/b", NameFault::BadChar('/')),
            ("..", NameFault::BadChar('.')),
            ("é", NameFault::BadChar('é')),
            ("a\0", NameFault::BadChar('\0')),
        ] {
            match Namespace::plugin(bad) {
                Err(StoreError::InvalidPluginName(f)) => assert_eq!(f, fault, "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            Namespace::plugin(&"x".repeat(65)),
            Err(StoreError::InvalidPluginName(NameFault::TooLong {
                len: 65,
                max: 64
            }))
        ));
        let echo = Namespace::plugin("echo").unwrap();
        assert_eq!(echo.strip(b"plugin/echo2/k"), None);
        assert_eq!(echo.strip(b"plugin/echo/k"), Some(&b"k"[..]));
    }
}
