//! Process-wide settings that the service applies once, at start-up.

/// Allocations of at least this size get a mapping of their own, returned to the
/// kernel when freed.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD_BYTES: i32 = 512 * 1024;

/// Keep the heap from creeping over a long recording.
///
/// glibc raises its mmap threshold each time a large block is freed, so buffers of a
/// megabyte or so (Matroska clusters being built, packets, frames) move into the heap
/// arenas, where fragmentation holds on to them: RSS steps up at the first chunk
/// rotations and then creeps for minutes. A fixed threshold, which also turns that
/// adjustment off, keeps them in mappings of their own. Measured at real time (benches,
/// figure 2): flat RSS, at no CPU cost that the benchmark can see.
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
