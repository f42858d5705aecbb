//! Opening a plugin library: the one `unsafe` call in the server.

use std::path::{Path, PathBuf};

use huddle_sdk::loader::{LoadError, LoadedPlugin};
use huddle_sdk::Capabilities;

/// Opens and checks the library at `path` for a host providing `capabilities`: the SDK's
/// loader runs every check (a shared library, the entry symbol, ABI major, descriptor size,
/// name, mandatory callbacks, capabilities) before the descriptor is used, and never unloads.
///
/// A bare file name (`libecho.so`) means the file in the working directory: the dynamic
/// loader would otherwise look for it on the system's library search path.
pub(crate) fn load_library(
    path: &Path,
    capabilities: Capabilities,
) -> Result<LoadedPlugin, LoadError> {
    let path: PathBuf = if path.is_relative() && path.components().count() == 1 {
        Path::new(".").join(path)
    } else {
        path.to_owned()
    };
    open(&path, capabilities)
}

#[allow(unsafe_code)]
fn open(path: &Path, capabilities: Capabilities) -> Result<LoadedPlugin, LoadError> {
    // SAFETY: loading a library runs its code, and nothing can check foreign code. The file is
    // one the operator listed in `[[plugins]]` of the server's configuration, which is the
    // trust the loader's contract asks for; everything that can be checked is checked before
    // the descriptor is used.
    unsafe { huddle_sdk::loader::load(path, capabilities) }
}
