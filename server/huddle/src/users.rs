//! User accounts: digest credentials kept under `credentials/<user>` as HA1s for each
//! algorithm (never the password), and the `huddle user` commands that manage them.

use std::collections::HashMap;

use huddle_sip::auth::{ha1, Algorithm};
use serde::{Deserialize, Serialize};

use crate::store::{scan_pages, Namespace, Record, Store, StoreError};

/// One user's stored credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl UserRecord {
    /// Derives the HA1s for `name` in `realm`.
    pub fn new(name: &str, realm: &str, password: &str) -> UserRecord {
        UserRecord {
            name: name.to_owned(),
            realm: realm.to_owned(),
            ha1_md5: ha1(name, realm, password, Algorithm::Md5),
            ha1_sha256: ha1(name, realm, password, Algorithm::Sha256),
        }
    }

    /// The HA1 for an algorithm.
    pub fn ha1(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
            #[allow(unreachable_patterns)]
            _ => "",
        }
    }
}

/// A user name must be a plain SIP user part: the registrar compares it with URI users.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'~'))
}

fn key(name: &str) -> Vec<u8> {
    Namespace::credentials().key(name.as_bytes())
}

/// Writes a user (replacing one of the same name).
pub fn put_user(store: &dyn Store, record: &UserRecord) -> Result<(), StoreError> {
    store.put(&key(&record.name), &Record::encode(record)?)
}

/// Removes a user; `false` when there was none.
pub fn remove_user(store: &dyn Store, name: &str) -> Result<bool, StoreError> {
    store.delete(&key(name))
}

/// Every user, by name.
pub fn load_users(store: &dyn Store) -> Result<HashMap<String, UserRecord>, StoreError> {
    let mut users = HashMap::new();
    for page in scan_pages(store, Namespace::credentials().prefix(), 1024) {
        for (_, value) in page? {
            let record: UserRecord = Record::decode(&value)?;
            users.insert(record.name.clone(), record);
        }
    }
    Ok(users)
}
