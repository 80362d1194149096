//! The process's use of glibc's allocator, which keeps what the server frees in its per-thread
//! arenas: after a burst of ingest, about 13 MB of freed blocks stayed resident until the
//! process ended (BENCHMARKS.md, "figures of 2026-12-03, night"). Elsewhere (musl, other
//! systems) these do nothing.

/// Fixes glibc's mmap threshold at its default (128 KiB). Left dynamic, glibc raises it to the
/// size of the largest mapped block freed (up to 32 MiB): after the server's multi-MB transients
/// (training a dictionary, writing a run of message ids) later blocks of that size come from the
/// arenas, and stay there when freed. Call before any other thread exists.
pub fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives the pages of freed blocks inside the arenas back to the system (`malloc_trim`): what
/// requests and transients fragmented stays resident otherwise. Takes each arena's lock in turn
/// for a walk over its free blocks (1-3 ms during the ingest benchmark). Returns whether any
/// memory went back.
pub(crate) fn release_free() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only returns free pages to the system.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
