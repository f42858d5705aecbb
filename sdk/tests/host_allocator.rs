//! ABI 1.11: the host's allocator lent through the host table (`mem_*`,
//! `HUDDLE_CAP_HOST_ALLOCATOR`), across versions. This host's table lends it and its entries
//! keep `GlobalAlloc`'s contract, refusing (null, never a panic) what a `Layout` cannot hold; a
//! plugin built before 1.11 runs on it as before (the entries past its knowledge unused); a
//! plugin built with this SDK on a 1.10 host runs on the system allocator (the entries past the
//! table's size never read). The choice itself (host only if nothing was allocated first, once
//! for the library's life, every block freed where it was made) is tested in
//! `huddle_sdk::allocator`'s unit tests, on switches of their own: in this test program
//! something is always allocated before any `init`, so its switch stays on the system's.
#![allow(unsafe_code)]

mod common;

use std::ffi::c_void;
use std::sync::Mutex;

use huddle_sdk::abi::{self, HuddleHostApi};
use huddle_sdk::fake::FakeHost;
use huddle_sdk::hosting::PluginEntry;
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Host, HostAllocator, Plugin, Request, Result,
};

/// What the plugin's `init` saw: its host's minor version, and whether the allocator is lent.
static SEEN: Mutex<Option<(u32, bool)>> = Mutex::new(None);
/// The table this host handed `init`, valid until `destroy`.
static TABLE: Mutex<usize> = Mutex::new(0);
static REAL_INIT: Mutex<Option<usize>> = Mutex::new(None);
/// The tests share the statics: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Allocating;

impl Plugin for Allocating {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("allocating"));
        // Allocates as any plugin does; `HostAllocator` is not this program's allocator, so
        // this is the system's whatever the switch says.
        let text = format!("minor {}", host.abi_version().1);
        assert!(text.starts_with("minor"));
        *SEEN.lock().unwrap() = Some((host.abi_version().1, HostAllocator::is_lent()));
        Ok(Allocating)
    }

    fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
        Ok(())
    }
}

fn entry() -> PluginEntry {
    huddle_sdk::plugin_entry!(Allocating, "allocating", "1", Capabilities::NONE)
}

unsafe extern "C" fn capturing_init(
    host: *const HuddleHostApi,
    config: *const u8,
    config_len: usize,
    out: *mut *mut c_void,
) -> i32 {
    *TABLE.lock().unwrap() = host as usize;
    let real = REAL_INIT.lock().unwrap().unwrap();
    // SAFETY: the address of the SDK's own `init` trampoline, saved below.
    let real: unsafe extern "C" fn(
        *const HuddleHostApi,
        *const u8,
        usize,
        *mut *mut c_void,
    ) -> i32 = unsafe { std::mem::transmute(real) };
    // SAFETY: forwarded as the host called us.
    unsafe { real(host, config, config_len, out) }
}

/// `entry()` with its `init` wrapped to keep the table it is handed, and its descriptor's minor
/// set to `minor` (a plugin built for that minor).
fn capturing(minor: u32) -> PluginEntry {
    let descriptor = Box::leak(Box::new(*entry().raw()));
    *REAL_INIT.lock().unwrap() = descriptor.init.map(|f| f as usize);
    descriptor.init = Some(capturing_init);
    descriptor.abi_minor = minor;
    // SAFETY: leaked, so valid for the rest of the process; only `init` is wrapped.
    unsafe { PluginEntry::from_raw(descriptor) }.unwrap()
}

#[test]
fn this_host_lends_its_allocator_and_its_entries_refuse_what_no_layout_holds() {
    let _serial = SERIAL.lock().unwrap();
    let host = FakeHost::with_capabilities(Capabilities::ALL.with(Capabilities::HOST_ALLOCATOR));
    let plugin = host
        .start(&capturing(abi::HUDDLE_PLUGIN_ABI_MINOR), "")
        .unwrap();
    // SAFETY: the table of a live instance (the plugin is dropped at the end).
    let table = unsafe { &*(*TABLE.lock().unwrap() as *const HuddleHostApi) };
    assert_eq!(table.abi_minor, abi::HUDDLE_PLUGIN_ABI_MINOR);
    assert_ne!(table.host_capabilities & abi::HUDDLE_CAP_HOST_ALLOCATOR, 0);
    let (alloc, zeroed, dealloc, realloc) = (
        table.mem_alloc.unwrap(),
        table.mem_alloc_zeroed.unwrap(),
        table.mem_dealloc.unwrap(),
        table.mem_realloc.unwrap(),
    );
    // SAFETY: each block is used within its size and released once with its size and
    // alignment; the refused calls pass what the ABI says is refused.
    unsafe {
        let p = alloc(40, 16);
        assert!(!p.is_null());
        assert_eq!(p as usize % 16, 0);
        p.write_bytes(0xab, 40);
        let q = realloc(p, 40, 16, 100_000);
        assert!(!q.is_null());
        assert_eq!(q as usize % 16, 0);
        assert_eq!(*q.add(39), 0xab, "contents kept");
        dealloc(q, 100_000, 16);
        let z = zeroed(4096, 4096);
        assert_eq!(z as usize % 4096, 0);
        assert!(std::slice::from_raw_parts(z, 4096).iter().all(|&b| b == 0));
        dealloc(z, 4096, 4096);

        // What no `Layout` holds: null, and nothing else happens.
        assert!(alloc(0, 8).is_null());
        assert!(alloc(8, 3).is_null(), "alignment not a power of two");
        assert!(alloc(8, 0).is_null());
        assert!(alloc(usize::MAX - 6, 8).is_null(), "past isize::MAX");
        assert!(zeroed(0, 1).is_null());
        dealloc(std::ptr::null_mut(), 8, 8);
        let p = alloc(8, 8);
        assert!(realloc(std::ptr::null_mut(), 8, 8, 16).is_null());
        assert!(realloc(p, 8, 8, 0).is_null(), "the block is untouched");
        assert!(realloc(p, 8, 3, 16).is_null());
        assert!(realloc(p, 8, 8, usize::MAX - 6).is_null());
        dealloc(p, 8, 8);
    }
    assert_eq!(
        *SEEN.lock().unwrap(),
        Some((abi::HUDDLE_PLUGIN_ABI_MINOR, false)),
        "this program allocated before the plugin's init: the system's, for good"
    );
    drop(plugin);

    // A host that does not offer it has no entries.
    let without = FakeHost::with_capabilities(Capabilities::ALL);
    let plugin = without
        .start(&capturing(abi::HUDDLE_PLUGIN_ABI_MINOR), "")
        .unwrap();
    // SAFETY: as above.
    let table = unsafe { &*(*TABLE.lock().unwrap() as *const HuddleHostApi) };
    assert_eq!(table.host_capabilities & abi::HUDDLE_CAP_HOST_ALLOCATOR, 0);
    assert!(table.mem_alloc.is_none() && table.mem_realloc.is_none());
    drop(plugin);
}

#[test]
fn a_plugin_built_before_1_11_runs_on_this_host_as_before() {
    let _serial = SERIAL.lock().unwrap();
    let host = FakeHost::with_capabilities(Capabilities::ALL.with(Capabilities::HOST_ALLOCATOR));
    let plugin = host.start(&capturing(10), "").unwrap();
    assert_eq!(
        SEEN.lock().unwrap().take().map(|s| s.0),
        Some(abi::HUDDLE_PLUGIN_ABI_MINOR)
    );
    drop(plugin);
}

/// Must never be called: it lies past a 1.10 table's `struct_size`.
unsafe extern "C" fn past_the_table(_: usize, _: usize) -> *mut u8 {
    panic!("an entry past the table's size was called");
}

#[test]
fn a_plugin_on_a_1_10_host_uses_the_system_allocator_and_never_reads_past_the_table() {
    let _serial = SERIAL.lock().unwrap();
    let mut table = common::bare_table(10, std::mem::offset_of!(HuddleHostApi, mem_alloc));
    // Set past the size, flagged: a plugin that read them anyway would call them.
    table.host_capabilities = abi::HUDDLE_CAP_HOST_ALLOCATOR;
    table.mem_alloc = Some(past_the_table);
    table.mem_alloc_zeroed = Some(past_the_table);
    let entry = entry();
    let instance = common::init(&entry, &table);
    assert_eq!(*SEEN.lock().unwrap(), Some((10, false)));
    // Allocations after `init` go on working, all to the system allocator.
    let v: Vec<u64> = (0..10_000).collect();
    assert_eq!(v.iter().sum::<u64>(), 49_995_000);
    common::destroy(&entry, instance);
}
