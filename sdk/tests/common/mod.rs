//! Shared by the SDK's integration tests that start a plugin by hand on a host table they fill
//! themselves (not through `FakeHost`: the table, as an older host fills it, is what they test).
#![allow(unsafe_code, dead_code)]

use std::ffi::c_void;

use huddle_sdk::abi::{self, HuddleHostApi};
use huddle_sdk::hosting::PluginEntry;

/// Host functions that accept and do nothing.
pub mod noop {
    use std::ffi::c_void;

    use huddle_sdk::abi::{self, HuddleClaim, HuddleHostBuf};

    pub unsafe extern "C" fn free_buf(_: *mut c_void, _: HuddleHostBuf) {}
    pub unsafe extern "C" fn log(_: *mut c_void, _: u32, _: *const u8, _: usize) {}
    pub unsafe extern "C" fn claim(_: *mut c_void, _: *const HuddleClaim) -> i32 {
        abi::HUDDLE_OK
    }
    pub unsafe extern "C" fn respond(_: *mut c_void, _: u64, _: *const u8, _: usize) -> i32 {
        abi::HUDDLE_OK
    }
    pub unsafe extern "C" fn emit_event(
        _: *mut c_void,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> i32 {
        abi::HUDDLE_OK
    }
}

/// A host table of ABI 1.`minor` whose `struct_size` ends at `struct_size`, with the functions
/// every host has (no-ops) and every other entry null.
pub fn bare_table(minor: u32, struct_size: usize) -> HuddleHostApi {
    // SAFETY: every field is an integer, a raw pointer or an `Option<fn>`: all-zero is valid.
    let mut table: HuddleHostApi = unsafe { std::mem::zeroed() };
    table.abi_major = abi::HUDDLE_PLUGIN_ABI_MAJOR;
    table.abi_minor = minor;
    table.struct_size = struct_size;
    table.free_buf = Some(noop::free_buf);
    table.log = Some(noop::log);
    table.claim = Some(noop::claim);
    table.respond = Some(noop::respond);
    table
}

/// Starts `entry`'s plugin on `table` with an empty config; `table` must outlive the instance.
pub fn init(entry: &PluginEntry, table: &HuddleHostApi) -> *mut c_void {
    let mut instance: *mut c_void = std::ptr::null_mut();
    // SAFETY: the caller keeps the table and its functions alive until `destroy`; the config is
    // empty; `instance` is written by `init` on success.
    let status = unsafe { (entry.raw().init.unwrap())(table, std::ptr::null(), 0, &mut instance) };
    assert_eq!(status, abi::HUDDLE_OK, "init");
    instance
}

/// Ends an instance [`init`] returned (once).
pub fn destroy(entry: &PluginEntry, instance: *mut c_void) {
    // SAFETY: the instance `init` returned for this entry, destroyed once (the caller's word).
    unsafe { (entry.raw().destroy.unwrap())(instance) };
}

/// Starts and ends `entry`'s plugin on `table`: what its `init` saw is left in its statics.
pub fn init_and_destroy(entry: &PluginEntry, table: &HuddleHostApi) {
    destroy(entry, init(entry, table));
}
