//! Process-wide settings (`runtime::process`), in a test binary of their own because
//! they change the whole process.

/// After `keep_heap_flat`, a 5 MiB block is still given its own mapping even once a
/// 16 MiB block has been freed (which, by default, raises glibc's threshold past it and
/// sends the next such block into the heap, where fragmentation keeps it).
#[cfg(target_env = "gnu")]
#[test]
fn large_blocks_keep_their_own_mappings() {
    use std::hint::black_box;

    fn mapped_blocks() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { nix::libc::mallinfo2() }.hblks
    }

    grabd::runtime::process::keep_heap_flat();
    drop(black_box(vec![1u8; 16 << 20]));
    let before = mapped_blocks();
    let block = black_box(vec![1u8; 5 << 20]);
    assert_eq!(
        mapped_blocks(),
        before + 1,
        "the 5 MiB block is not mapped on its own"
    );
    drop(block);
    assert_eq!(mapped_blocks(), before, "its mapping is not returned");
}
