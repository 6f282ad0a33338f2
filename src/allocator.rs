//! The binary's global allocator: mimalloc, called the way its own C API expects.
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it sends every allocation through
//! `mi_malloc_aligned`, whatever the alignment. In mimalloc v3 that call takes the plain
//! small-object path only for sizes up to 1 KiB whose free block happens to be aligned;
//! every larger block (a boxed connection or request future, a header map's entries, a
//! response buffer: four or five per proxied request) goes through the aligned generic path
//! instead, about twice the instructions of `mi_malloc`'s. callgrind (`benches/profile.sh`):
//! 22,629 -> 22,081 instructions per proxied keep-alive request. The same change is proposed
//! upstream (purpleprotocol/mimalloc_rust#170, open).
//!
//! When is `mi_malloc` enough: it returns blocks aligned as C's `malloc` must, to 16 bytes
//! (`MI_MAX_ALIGN_SIZE` on the 64-bit targets we build for) for blocks of 16 bytes or more,
//! and to the block's own size class (a multiple of 8) below that. So an alignment of at
//! most 16 that is not larger than the size is always met. Anything else keeps the aligned
//! calls. The unit test below checks the alignment of every size and alignment pairing up
//! to 4 KiB.
//!
//! One of the package's two modules with unsafe code; the other is one `setsockopt` call in
//! the library (`src/listen/defer.rs`), which denies it everywhere else (`lib.rs`).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment `mi_malloc` guarantees (`MI_MAX_ALIGN_SIZE`).
const NATURAL: usize = 16;

/// mimalloc as the global allocator.
pub(crate) struct MiMalloc;

/// Whether a block of `size` bytes from the plain calls is aligned enough for `align`.
#[inline(always)]
fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL && align <= size
}

// SAFETY (every method): the pointers handed to mimalloc's free and realloc calls are ones
// this allocator returned (the `GlobalAlloc` contract); mimalloc frees and reallocates
// blocks from its plain and aligned calls alike; alignment is met as the module comment
// explains, and null is returned on failure as `GlobalAlloc` expects.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see above.
        unsafe {
            if natural(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see above.
        unsafe {
            if natural(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see above.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see above.
        unsafe {
            if natural(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_and_alignment_is_met_and_contents_survive_realloc() {
        let a = MiMalloc;
        let mut live = Vec::new();
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in (1..=4096)
                .step_by(7)
                .chain([8, 16, 24, 40, 1024, 1025, 4096])
            {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; the block is written within its size, then
                // reallocated and freed with the layout it was made with.
                unsafe {
                    let p = if size % 3 == 0 {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    if size % 3 == 0 {
                        assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                    }
                    p.write_bytes(0xa5, size);
                    let grown = a.realloc(p, layout, size * 2 + 1);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0, "realloc {size} align {align}");
                    assert!(std::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|&b| b == 0xa5));
                    live.push((
                        grown,
                        Layout::from_size_align_unchecked(size * 2 + 1, align),
                    ));
                }
            }
        }
        for (p, layout) in live {
            // SAFETY: each pointer came from `realloc` above with this layout.
            unsafe { a.dealloc(p, layout) };
        }
    }
}
