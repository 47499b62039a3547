//! Process-wide settings that the service applies once, at start-up.

/// Allocations of at least this size get a mapping of their own, returned to the
/// kernel when freed. Matroska cluster buffers (a few MB at most) stay below it: mapped
/// afresh for every cluster they would cost a page fault per 4 KiB (measured: +30 %
/// page faults and 1–2 % CPU for W1 with 512 KiB).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD_BYTES: i32 = 4 << 20;

/// Keep the heap from creeping over a long recording.
///
/// glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so
/// buffers of several megabytes (raw frames, codec buffers) move into the heap arenas,
/// where fragmentation holds on to them: RSS steps up at the first chunk rotations and
/// then creeps for minutes. A fixed threshold, which also turns that adjustment off,
/// keeps them in mappings of their own. Measured at real time on W1 with 2 s chunks
/// (benches, figure 2): +11 MB over 26 s by default, flat with 4 MiB (8 MiB still
/// creeps), with the same page faults as the default when fed flat out.
pub fn keep_heap_flat() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes allocator parameters, under the allocator's own
        // lock; any thread may call it at any time.
        let ok = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        if ok != 1 {
            tracing::warn!("could not fix the allocator's mmap threshold");
        }
    }
}
