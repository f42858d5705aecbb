//! (ABI 1.11) The host's allocator, lent to a plugin library: [`HostAllocator`], a global
//! allocator a Rust plugin opts into with [`crate::use_host_allocator!`]. It serves the
//! library's allocations with the allocator the host itself runs on (the server's mimalloc),
//! through the host table's `mem_*` entries ([`crate::abi`], "The host's allocator"), and with
//! the system allocator when the host lends none.
//!
//! Why: a `cdylib` gets the C library's `malloc` unless it brings an allocator of its own, and
//! glibc's costs the messaging plugin 8–11.5 k instructions per online message; a second
//! mimalloc linked into the library crashed on the first allocation of a fresh plugin thread
//! (bench/NOTES.md, "Tried and reverted: mimalloc as the plugin library's allocator"). The
//! host's allocator is already initialised for every thread of the process, the plugin's
//! included.
//!
//! # One allocator for the library's life
//!
//! Memory from one allocator must never go back to the other, so the choice is made once and
//! never changes:
//!
//! * the first `init` of an instance whose host table lends an allocator hands it over, **if
//!   nothing was allocated through this allocator before**: from then on every allocation,
//!   reallocation and release goes to the host;
//! * otherwise (something was allocated first, the host is older than 1.11 or lends nothing,
//!   the "host" is this very library, as in a plugin's own unit tests) the system allocator
//!   serves the library for its whole life, and a later table's offer is declined.
//!
//! The choice is made before the first block exists (the first allocation makes it "system"
//! when no table came first) and never changes after, so every block is released by the
//! allocator that made it. The lent functions are the host's for the life of the process, not
//! an instance's: memory may outlive `destroy`, be freed by a thread the plugin started, or by a
//! thread-local destructor. Nothing here panics or unwinds: a failed host allocation is a null
//! pointer, as `GlobalAlloc` expects.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::abi::{self, HuddleHostApi};

/// `HuddleHostApi::mem_alloc` and `mem_alloc_zeroed`.
type AllocFn = unsafe extern "C" fn(size: usize, align: usize) -> *mut u8;
/// `HuddleHostApi::mem_dealloc`.
type DeallocFn = unsafe extern "C" fn(ptr: *mut u8, size: usize, align: usize);
/// `HuddleHostApi::mem_realloc`.
type ReallocFn =
    unsafe extern "C" fn(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8;

/// The host's allocator as its table lends it.
#[derive(Clone, Copy)]
struct Lent {
    alloc: AllocFn,
    alloc_zeroed: AllocFn,
    dealloc: DeallocFn,
    realloc: ReallocFn,
}

/// Nothing allocated yet, no table seen.
const UNDECIDED: u8 = 0;
/// The system allocator, for good.
const SYSTEM: u8 = 1;
/// A table's allocator is being stored (a few stores; nothing can be allocated meanwhile
/// that is not waited for).
const INSTALLING: u8 = 2;
/// The host's allocator, for good.
const HOST: u8 = 3;

/// The once-made choice between the system's allocator and the host's (module docs).
struct Switch {
    state: AtomicU8,
    /// Written once, by the thread that moved `state` from `UNDECIDED` to `INSTALLING`, before
    /// it stores `HOST` (release); read only after `HOST` was loaded (acquire).
    lent: UnsafeCell<Option<Lent>>,
}

// SAFETY: `lent` is written by one thread only (the one whose compare-and-swap won
// `UNDECIDED` → `INSTALLING`), before the release store of `HOST`, and read only after an
// acquire load of `HOST`: no read races the write.
unsafe impl Sync for Switch {}

impl Switch {
    const fn new() -> Switch {
        Switch {
            state: AtomicU8::new(UNDECIDED),
            lent: UnsafeCell::new(None),
        }
    }

    /// The host's allocator when it is the library's; for an allocation, which makes the
    /// choice (the system's) when none was made.
    #[inline]
    fn for_new_block(&self) -> Option<Lent> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                HOST => return self.lent(),
                SYSTEM => return None,
                UNDECIDED => {
                    match self.state.compare_exchange(
                        UNDECIDED,
                        SYSTEM,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return None,
                        Err(now) => state = now,
                    }
                }
                _ => {
                    std::hint::spin_loop();
                    state = self.state.load(Ordering::Acquire);
                }
            }
        }
    }

    /// The host's allocator when it is the library's, for a block that exists (so the choice
    /// was made before it was allocated, and is what this load sees).
    #[inline]
    fn for_old_block(&self) -> Option<Lent> {
        if self.state.load(Ordering::Acquire) == HOST {
            self.lent()
        } else {
            None
        }
    }

    /// The lent functions; call only after an acquire load saw `HOST`.
    #[inline]
    fn lent(&self) -> Option<Lent> {
        // SAFETY: `HOST` is stored (release) only after `lent` was written, and never changes
        // after: no write to `lent` can happen during or after this read.
        unsafe { *self.lent.get() }
    }

    /// Takes `lent` as the library's allocator if nothing was allocated yet. True when the
    /// host's allocator is the library's (now or from an earlier offer).
    fn offer(&self, lent: Lent) -> bool {
        match self.state.compare_exchange(
            UNDECIDED,
            INSTALLING,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // SAFETY: this thread won `UNDECIDED` → `INSTALLING`: it alone writes `lent`,
                // and no reader reads it before the release store below.
                unsafe { *self.lent.get() = Some(lent) };
                self.state.store(HOST, Ordering::Release);
                true
            }
            // A second instance of the library: the first table's functions stay (they are the
            // host's for the life of the process).
            Err(HOST) => true,
            Err(_) => false,
        }
    }

    /// No allocator is lent: the system's, for good, unless the choice was made already.
    fn decline(&self) {
        let _ = self
            .state
            .compare_exchange(UNDECIDED, SYSTEM, Ordering::AcqRel, Ordering::Acquire);
    }

    fn is_host(&self) -> bool {
        self.state.load(Ordering::Acquire) == HOST
    }

    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.for_new_block() {
            // SAFETY: the host's `mem_alloc` takes any size and alignment of a `Layout` (ABI).
            Some(lent) => unsafe { (lent.alloc)(layout.size(), layout.align()) },
            // SAFETY: the caller's promise, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    /// # Safety
    /// As [`GlobalAlloc::alloc_zeroed`].
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.for_new_block() {
            // SAFETY: as `alloc`.
            Some(lent) => unsafe { (lent.alloc_zeroed)(layout.size(), layout.align()) },
            // SAFETY: the caller's promise, passed on.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    /// # Safety
    /// As [`GlobalAlloc::dealloc`]: `ptr` came from this switch with `layout`.
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match self.for_old_block() {
            // SAFETY: the block was allocated after the choice of the host (module docs), by
            // the host's allocator, with `layout`.
            Some(lent) => unsafe { (lent.dealloc)(ptr, layout.size(), layout.align()) },
            // SAFETY: likewise, by the system's.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match self.for_old_block() {
            // SAFETY: as `dealloc`; the new size is valid for `layout`'s alignment (the
            // caller's promise).
            Some(lent) => unsafe { (lent.realloc)(ptr, layout.size(), layout.align(), new_size) },
            // SAFETY: as `dealloc`.
            None => unsafe { System.realloc(ptr, layout, new_size) },
        }
    }
}

/// The library's choice (module docs).
static SWITCH: Switch = Switch::new();

/// A global allocator for a plugin library: the host's allocator when the host lends it (ABI
/// 1.11), the system's otherwise, chosen once for the library's life (module docs). Declare it
/// with [`crate::use_host_allocator!`] in the plugin's crate (the `cdylib`): a crate that is
/// also linked into a program with a global allocator of its own would have two.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostAllocator;

impl HostAllocator {
    /// True when this library's allocations go to the host's allocator (it was lent before
    /// anything was allocated); false on the system allocator, and until an `init` decided.
    pub fn is_lent() -> bool {
        SWITCH.is_host()
    }
}

// SAFETY: each method passes its call on to one allocator, the same for every call after the
// first (module docs), so every block is released or resized by the allocator that made it;
// both allocators keep `GlobalAlloc`'s contract (the host's through the ABI's).
unsafe impl GlobalAlloc for HostAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promise, passed on.
        unsafe { SWITCH.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promise, passed on.
        unsafe { SWITCH.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's promise, passed on.
        unsafe { SWITCH.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's promise, passed on.
        unsafe { SWITCH.realloc(ptr, layout, new_size) }
    }
}

/// Declares [`HostAllocator`] the global allocator of the crate it is written in: the plugin's
/// `cdylib` (module docs of `huddle_sdk::allocator`). Its allocations then go to the host's
/// allocator on a host that lends one (ABI 1.11), to the system's otherwise.
///
/// ```ignore
/// huddle_sdk::use_host_allocator!();
/// ```
#[macro_export]
macro_rules! use_host_allocator {
    () => {
        #[global_allocator]
        static HUDDLE_HOST_ALLOCATOR: $crate::HostAllocator = $crate::HostAllocator;
    };
}

/// The allocator `api` lends, if it lends one this library can take: a major-1 table whose
/// `struct_size` covers the four `mem_*` entries, with [`abi::HUDDLE_CAP_HOST_ALLOCATOR`] set and
/// all four present, and whose `mem_alloc` is not this library's own host side (a "host" built
/// into the same program as the plugin, which would lend the plugin its own allocator).
///
/// # Safety
/// `api` must be null or point to a host table of at least `struct_size` readable bytes.
unsafe fn lent_by(api: *const HuddleHostApi) -> Option<Lent> {
    if api.is_null() {
        return None;
    }
    let base = api.cast::<u8>();
    // SAFETY: every table starts with the three header fields and `host_capabilities` (1.0),
    // which the caller's promise covers; read unaligned, as `Host::from_raw` does.
    let (major, size, caps) = unsafe {
        (
            base.add(std::mem::offset_of!(HuddleHostApi, abi_major))
                .cast::<u32>()
                .read_unaligned(),
            base.add(std::mem::offset_of!(HuddleHostApi, struct_size))
                .cast::<usize>()
                .read_unaligned(),
            base.add(std::mem::offset_of!(HuddleHostApi, host_capabilities))
                .cast::<u64>()
                .read_unaligned(),
        )
    };
    let end = std::mem::offset_of!(HuddleHostApi, mem_realloc) + std::mem::size_of::<usize>();
    if major != abi::HUDDLE_PLUGIN_ABI_MAJOR
        || size < end
        || caps & abi::HUDDLE_CAP_HOST_ALLOCATOR == 0
    {
        return None;
    }
    // SAFETY: `struct_size` covers the four entries (checked), each an `Option` of a function
    // pointer, for which any bit pattern the host wrote (null or a function) is valid.
    let (alloc, alloc_zeroed, dealloc, realloc) = unsafe {
        (
            base.add(std::mem::offset_of!(HuddleHostApi, mem_alloc))
                .cast::<Option<AllocFn>>()
                .read_unaligned()?,
            base.add(std::mem::offset_of!(HuddleHostApi, mem_alloc_zeroed))
                .cast::<Option<AllocFn>>()
                .read_unaligned()?,
            base.add(std::mem::offset_of!(HuddleHostApi, mem_dealloc))
                .cast::<Option<DeallocFn>>()
                .read_unaligned()?,
            base.add(std::mem::offset_of!(HuddleHostApi, mem_realloc))
                .cast::<Option<ReallocFn>>()
                .read_unaligned()?,
        )
    };
    if alloc as usize == crate::hosting::lent_alloc_address() {
        return None;
    }
    Some(Lent {
        alloc,
        alloc_zeroed,
        dealloc,
        realloc,
    })
}

/// Called by `init` before anything else (before anything is allocated): takes the allocator
/// `api` lends if the library can still take it, else settles on the system's. True when the
/// host's allocator is the library's.
///
/// # Safety
/// As [`lent_by`].
pub(crate) unsafe fn offered(api: *const HuddleHostApi) -> bool {
    // SAFETY: the caller's promise.
    match unsafe { lent_by(api) } {
        Some(lent) => SWITCH.offer(lent),
        None => {
            SWITCH.decline();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    /// The blocks the "host" below made and not yet freed, by address.
    static HOST_BLOCKS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);
    static HOST_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn host_blocks<R>(f: impl FnOnce(&mut HashSet<usize>) -> R) -> R {
        let mut blocks = HOST_BLOCKS.lock().unwrap_or_else(|e| e.into_inner());
        f(blocks.get_or_insert_with(HashSet::new))
    }

    unsafe extern "C" fn t_alloc(size: usize, align: usize) -> *mut u8 {
        HOST_CALLS.fetch_add(1, Ordering::Relaxed);
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a valid, non-zero layout (the switch passes a `Layout`'s).
        let p = unsafe { System.alloc(layout) };
        host_blocks(|b| b.insert(p as usize));
        p
    }

    unsafe extern "C" fn t_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
        HOST_CALLS.fetch_add(1, Ordering::Relaxed);
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        host_blocks(|b| b.insert(p as usize));
        p
    }

    unsafe extern "C" fn t_dealloc(ptr: *mut u8, size: usize, align: usize) {
        HOST_CALLS.fetch_add(1, Ordering::Relaxed);
        assert!(
            host_blocks(|b| b.remove(&(ptr as usize))),
            "the host frees only its own blocks"
        );
        // SAFETY: made by `t_alloc` with this layout (checked above: it is ours).
        unsafe { System.dealloc(ptr, Layout::from_size_align(size, align).unwrap()) };
    }

    unsafe extern "C" fn t_realloc(ptr: *mut u8, size: usize, align: usize, new: usize) -> *mut u8 {
        HOST_CALLS.fetch_add(1, Ordering::Relaxed);
        assert!(host_blocks(|b| b.remove(&(ptr as usize))));
        // SAFETY: as `t_dealloc`.
        let p = unsafe { System.realloc(ptr, Layout::from_size_align(size, align).unwrap(), new) };
        host_blocks(|b| b.insert(p as usize));
        p
    }

    fn lent() -> Lent {
        Lent {
            alloc: t_alloc,
            alloc_zeroed: t_alloc_zeroed,
            dealloc: t_dealloc,
            realloc: t_realloc,
        }
    }

    /// A `Vec`'s life through `s`: allocated, grown, zeroed, freed.
    fn churn(s: &Switch) {
        let layout = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: valid layouts; each block is freed once with the layout it has.
        unsafe {
            let p = s.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, 24);
            let q = s.realloc(p, layout, 4096);
            assert_eq!(*q.add(23), 7, "realloc keeps the contents");
            s.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
            let z = s.alloc_zeroed(Layout::from_size_align(64, 64).unwrap());
            assert_eq!(z as usize % 64, 0);
            assert_eq!(*z.add(63), 0);
            s.dealloc(z, Layout::from_size_align(64, 64).unwrap());
        }
    }

    // The tests share the "host" statics: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn offered_before_anything_is_allocated_the_host_serves_everything() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let s = Switch::new();
        assert!(s.offer(lent()));
        assert!(s.is_host());
        let before = HOST_CALLS.load(Ordering::Relaxed);
        churn(&s);
        assert_eq!(HOST_CALLS.load(Ordering::Relaxed) - before, 5);
        assert!(host_blocks(|b| b.is_empty()));
        // A second instance's offer changes nothing.
        assert!(s.offer(lent()));
        assert!(s.is_host());
    }

    #[test]
    fn allocated_before_the_offer_the_system_serves_for_good() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let s = Switch::new();
        let layout = Layout::from_size_align(16, 8).unwrap();
        // SAFETY: a valid layout; freed below with it.
        let early = unsafe { s.alloc(layout) };
        let before = HOST_CALLS.load(Ordering::Relaxed);
        assert!(!s.offer(lent()), "declined: a block of the system's exists");
        churn(&s);
        // SAFETY: allocated above with this layout, by the system (the host never saw it).
        unsafe { s.dealloc(early, layout) };
        assert_eq!(HOST_CALLS.load(Ordering::Relaxed), before);
        assert!(!s.is_host());
    }

    #[test]
    fn declined_by_an_older_host_the_system_serves_for_good() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let s = Switch::new();
        s.decline();
        assert!(!s.offer(lent()));
        let before = HOST_CALLS.load(Ordering::Relaxed);
        churn(&s);
        assert_eq!(HOST_CALLS.load(Ordering::Relaxed), before);
    }

    #[test]
    fn allocations_racing_the_offer_are_each_freed_where_they_were_made() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for round in 0..200 {
            let s: &'static Switch = Box::leak(Box::new(Switch::new()));
            let start = Arc::new(std::sync::Barrier::new(3));
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let start = start.clone();
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..20 {
                            churn(s);
                        }
                    })
                })
                .collect();
            start.wait();
            if round % 2 == 0 {
                std::hint::spin_loop();
            }
            let took = s.offer(lent());
            for w in workers {
                w.join().unwrap();
            }
            assert_eq!(took, s.is_host());
            // `t_dealloc` asserted that the host freed only its blocks; none is left over.
            assert!(host_blocks(|b| b.is_empty()), "round {round}");
        }
    }

    /// A table as a host of ABI 1.`minor` fills it, `struct_size` bytes, lending `lend`.
    fn table(struct_size: usize, caps: u64, lend: bool) -> HuddleHostApi {
        // SAFETY: every field is an integer, a raw pointer or an `Option<fn>`: all-zero is valid.
        let mut t: HuddleHostApi = unsafe { std::mem::zeroed() };
        t.abi_major = abi::HUDDLE_PLUGIN_ABI_MAJOR;
        t.abi_minor = abi::HUDDLE_PLUGIN_ABI_MINOR;
        t.struct_size = struct_size;
        t.host_capabilities = caps;
        if lend {
            t.mem_alloc = Some(t_alloc);
            t.mem_alloc_zeroed = Some(t_alloc_zeroed);
            t.mem_dealloc = Some(t_dealloc);
            t.mem_realloc = Some(t_realloc);
        }
        t
    }

    #[test]
    fn only_a_table_that_covers_and_flags_all_four_entries_lends() {
        let full = std::mem::size_of::<HuddleHostApi>();
        let cap = abi::HUDDLE_CAP_HOST_ALLOCATOR;
        let read = |t: &HuddleHostApi| {
            // SAFETY: a whole table on the stack.
            unsafe { lent_by(t) }.is_some()
        };
        assert!(read(&table(full, cap, true)));
        // A 1.10 host: the entries lie past its table (set here, never read).
        let v1_10 = std::mem::offset_of!(HuddleHostApi, mem_alloc);
        assert!(!read(&table(v1_10, cap, true)));
        let short = std::mem::offset_of!(HuddleHostApi, mem_realloc);
        assert!(!read(&table(short, cap, true)));
        assert!(!read(&table(full, 0, true)), "no capability bit");
        assert!(!read(&table(full, cap, false)), "null entries");
        let mut one_null = table(full, cap, true);
        one_null.mem_realloc = None;
        assert!(!read(&one_null));
        let mut major2 = table(full, cap, true);
        major2.abi_major = 2;
        assert!(!read(&major2));
        // SAFETY: null is allowed.
        assert!(unsafe { lent_by(std::ptr::null()) }.is_none());
        // This library's own host side is never taken: it would lend the plugin itself.
        let mut own = table(full, cap, true);
        own.mem_alloc = crate::hosting::lent_alloc_fn();
        assert!(!read(&own));
    }
}
