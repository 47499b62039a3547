//! libav's own log lines, caught while grabd asks libav for something that may be
//! refused: the reason for a refusal ("width not divisible by 2", "timebase 1/1000000
//! not supported") is only in libav's log, and its return code says just "Invalid
//! argument". [`capture`] runs a call and returns, with its result, the error lines
//! libav logged on this thread meanwhile; lines logged elsewhere go to stderr as before
//! (at the level set in `media::ensure_init`).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

use ffmpeg_next::ffi;

thread_local! {
    /// The lines caught on this thread, while a [`capture`] runs on it.
    static CAUGHT: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Run `call`, returning its result and the error lines libav logged on this thread
/// during it (without libav's `[codec @ 0x…]` prefix, repeats left out).
pub fn capture<T>(call: impl FnOnce() -> T) -> (T, Vec<String>) {
    install();
    let outer = CAUGHT.with(|c| c.replace(Some(Vec::new())));
    let result = call();
    let lines = CAUGHT.with(|c| c.replace(outer)).unwrap_or_default();
    (result, lines)
}

/// `message`, followed by the lines libav logged about it, as one line.
pub fn with_reason(message: String, lines: &[String]) -> String {
    if lines.is_empty() {
        message
    } else {
        format!("{message}: {}", lines.join("; "))
    }
}

fn install() {
    static INSTALL: Once = Once::new();
    // SAFETY: `log_line` has the signature libav's log callback needs (VaList is
    // bindgen's spelling of C's va_list on this target) and is safe to call from any
    // thread at once: it only touches the calling thread's own thread-local buffer, or
    // hands the line to libav's default callback, which is thread-safe.
    INSTALL.call_once(|| unsafe { ffi::av_log_set_callback(Some(log_line)) });
}

// How bindgen spells a `va_list` parameter depends on the target's C ABI: on x86_64
// (System V) va_list is a one-element array, passed as a pointer to its element; on
// AArch64, 32-bit ARM and x86 it is passed by value as the `va_list` type itself.
#[cfg(target_arch = "x86_64")]
type VaList = *mut ffi::__va_list_tag;
#[cfg(not(target_arch = "x86_64"))]
type VaList = ffi::va_list;

/// libav's log callback. It may run on any thread (codecs log from their workers), so
/// it never blocks and never panics (unwinding out of an `extern "C"` fn aborts).
// On AArch64 bindgen's va_list is an opaque `[u64; 4]`, which rustc flags as not
// FFI-safe although it is only passed through to C.
#[allow(improper_ctypes_definitions)]
unsafe extern "C" fn log_line(avcl: *mut c_void, level: c_int, fmt: *const c_char, vl: VaList) {
    let capturing = CAUGHT
        .try_with(|c| c.try_borrow().is_ok_and(|c| c.is_some()))
        .unwrap_or(false);
    if !capturing {
        // SAFETY: the arguments are libav's own, passed on unchanged.
        unsafe { ffi::av_log_default_callback(avcl, level, fmt, vl) };
        return;
    }
    if level > ffi::AV_LOG_ERROR as c_int {
        return;
    }
    let mut buf = [0 as c_char; 512];
    let mut print_prefix: c_int = 0;
    // SAFETY: `buf` is writable for its length and NUL-terminated by libav (it
    // truncates); fmt and vl are libav's own, consumed once.
    let line = unsafe {
        ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            vl,
            buf.as_mut_ptr(),
            buf.len() as c_int,
            &mut print_prefix,
        );
        CStr::from_ptr(buf.as_ptr())
    };
    // One clause of grabd's line: no trailing full stop.
    let line = line.to_string_lossy();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.trim_end_matches('.').to_owned();
    if line.is_empty() {
        return;
    }
    let _ = CAUGHT.try_with(|c| {
        if let Ok(mut caught) = c.try_borrow_mut() {
            if let Some(lines) = caught.as_mut() {
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_caught_on_their_own_thread_only() {
        crate::recording::media::ensure_init();
        let log = |text: &str| {
            let text = std::ffi::CString::new(text).unwrap();
            // SAFETY: a plain "%s" format with one C string argument.
            unsafe {
                ffi::av_log(
                    std::ptr::null_mut(),
                    ffi::AV_LOG_ERROR as c_int,
                    c"%s".as_ptr(),
                    text.as_ptr(),
                )
            }
        };
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    let ((), lines) = capture(|| {
                        for _ in 0..100 {
                            log(&format!("thread {i} says no\n"));
                        }
                    });
                    lines
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), [format!("thread {i} says no")]);
        }
        // Outside a capture nothing is kept.
        let ((), lines) = capture(|| ());
        assert!(lines.is_empty());
        assert_eq!(
            with_reason("open".into(), &["a".into(), "b".into()]),
            "open: a; b"
        );
    }
}
