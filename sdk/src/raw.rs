//! Small helpers for reading what crosses the ABI: borrowed byte slices and text from
//! `(pointer, length)` pairs that may be null when empty.
#![allow(unsafe_code)]

/// Borrows `len` bytes at `ptr`; a zero length yields an empty slice whatever `ptr` is.
///
/// # Safety
/// When `len > 0`, `ptr` must point to `len` initialised bytes that stay valid and unmodified
/// for `'a` (the ABI guarantees this for the duration of a call).
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() || len > isize::MAX as usize {
        return None;
    }
    // SAFETY: non-null, length bounded, validity for `'a` is the caller's promise.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows UTF-8 text at `ptr`; `None` when the pointer is null with a non-zero length or the
/// bytes are not UTF-8.
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn text<'a>(ptr: *const u8, len: usize) -> Option<&'a str> {
    // SAFETY: forwarded to the caller.
    let b = unsafe { bytes(ptr, len) }?;
    // Nearly every text crossing is short ASCII (names, header values of a request sent in
    // parts): checked inline, without the validator's call and setup.
    if b.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).ok()
}

/// The text of a panic payload, for the log line that reports it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a non-string panic payload)"
    }
}
