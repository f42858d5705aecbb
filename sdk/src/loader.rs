//! Loading a plugin shared library (`.so`, `.dylib`, `.dll`) and checking it before anything
//! else runs: the file opens as a library, it exports `huddle_plugin_entry_v1`, and the
//! descriptor passes [`PluginEntry::from_raw`] and [`PluginEntry::check_capabilities`]. Every
//! error names the file and the mismatch. The server's plugin host calls [`load`] for each
//! `[[plugins]]` entry and then [`crate::hosting::PluginInstance::start`].
//!
//! A loaded library is never unloaded (dropping a [`LoadedPlugin`] leaves it mapped): unloading
//! code that may still be referenced (a thread the plugin forgot, a function pointer the host
//! kept) is a crash waiting to happen, and Huddle restarts rather than reloads.
#![allow(unsafe_code)]

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

use libloading::Library;

use crate::abi::{self, HuddlePluginEntryFn};
use crate::hosting::{DescriptorError, PluginEntry, PluginInfo};
use crate::types::Capabilities;

/// Why a plugin file was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file cannot be read (absent, a directory, no permission).
    #[error("plugin {}: cannot read the file: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The dynamic loader refused the file: not a shared library, another architecture, a
    /// missing dependency.
    #[error("plugin {}: not a loadable shared library: {source}", path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: libloading::Error,
    },
    /// The library has no entry symbol for this ABI major.
    #[error(
        "plugin {}: no `{}` symbol{}",
        path.display(),
        abi::HUDDLE_PLUGIN_ENTRY_SYMBOL,
        match other_major {
            Some(m) => format!(
                ": it was built for plugin ABI major {m} (exports `huddle_plugin_entry_v{m}`), but this host speaks major {}",
                abi::HUDDLE_PLUGIN_ABI_MAJOR
            ),
            None => ": it is not a Huddle plugin".to_owned(),
        }
    )]
    MissingSymbol {
        /// The file.
        path: PathBuf,
        /// The major version of an entry symbol it does export, if any.
        other_major: Option<u32>,
    },
    /// The descriptor does not fit this host.
    #[error("plugin {}: {source}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        #[source]
        source: DescriptorError,
    },
}

impl LoadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Unreadable { path, .. }
            | LoadError::NotALibrary { path, .. }
            | LoadError::MissingSymbol { path, .. }
            | LoadError::Incompatible { path, .. } => path,
        }
    }
}

/// A plugin library that passed every check, mapped for the rest of the process.
#[derive(Debug)]
pub struct LoadedPlugin {
    path: PathBuf,
    entry: PluginEntry,
    /// Never dropped: see the module docs.
    _library: ManuallyDrop<Library>,
}

impl LoadedPlugin {
    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated entry, for [`crate::hosting::PluginInstance::start`].
    pub fn entry(&self) -> &PluginEntry {
        &self.entry
    }

    /// Name, version, ABI and required capabilities.
    pub fn info(&self) -> &PluginInfo {
        self.entry.info()
    }
}

/// Loads the plugin at `path` for a host that provides `host_capabilities`, and validates it
/// (see the [module docs](self)).
///
/// # Safety
/// Loading a library runs its initialisers, and calling its entry function runs its code; no
/// check can make foreign code safe. The caller asserts that `path` names a library it trusts
/// to honour the Huddle plugin ABI (for the server: a file its operator listed in the
/// configuration). Everything that can be checked is checked before the descriptor is used.
pub unsafe fn load(
    path: impl AsRef<Path>,
    host_capabilities: Capabilities,
) -> Result<LoadedPlugin, LoadError> {
    let path = path.as_ref().to_path_buf();
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(LoadError::Unreadable {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file"),
            })
        }
        Err(source) => return Err(LoadError::Unreadable { path, source }),
    }
    // SAFETY: the caller trusts the file (see above).
    let library = match unsafe { Library::new(&path) } {
        Ok(lib) => lib,
        Err(source) => return Err(LoadError::NotALibrary { path, source }),
    };
    let symbol = format!("{}\0", abi::HUDDLE_PLUGIN_ENTRY_SYMBOL);
    // SAFETY: the symbol, if present, has the type the ABI gives it; the library stays loaded
    // for the rest of the process, so the function pointer stays valid.
    let entry_fn: Option<HuddlePluginEntryFn> = unsafe {
        library
            .get::<HuddlePluginEntryFn>(symbol.as_bytes())
            .ok()
            .map(|s| *s)
    };
    let Some(entry_fn) = entry_fn else {
        let other_major = (0..=9)
            .filter(|&m| m != abi::HUDDLE_PLUGIN_ABI_MAJOR)
            .find(|m| {
                let name = format!("huddle_plugin_entry_v{m}\0");
                // SAFETY: only the symbol's presence is tested; it is never called.
                unsafe { library.get::<*const ()>(name.as_bytes()) }.is_ok()
            });
        return Err(LoadError::MissingSymbol { path, other_major });
    };
    // SAFETY: a trusted plugin's entry function is cheap and side-effect free and returns a
    // static descriptor (ABI); the library is never unloaded, so the descriptor is 'static.
    let entry = unsafe { PluginEntry::from_raw(entry_fn()) }
        .and_then(|e| e.check_capabilities(host_capabilities).map(|()| e));
    match entry {
        Ok(entry) => Ok(LoadedPlugin {
            path,
            entry,
            _library: ManuallyDrop::new(library),
        }),
        Err(source) => {
            // Not unloaded even on failure: the entry function ran, and whatever it started
            // (unlikely, but foreign code) must not lose its code.
            std::mem::forget(library);
            Err(LoadError::Incompatible { path, source })
        }
    }
}
