//! A global allocator that aborts on any single allocation over
//! [`LIMIT`]: the fuzz targets read at most 64 KiB of input
//! (`-max_len`), so an allocation that large means a decoder trusted a
//! length field of the input. libFuzzer's own `-malloc_limit_mb` needs a
//! sanitizer's malloc hooks, which these builds do not have.

use std::alloc::{GlobalAlloc, Layout, System};

/// Twice `MAX_FRAME_LEN`: no decoder has a reason to ask for more.
pub const LIMIT: usize = 2 * meridian_proto::MAX_FRAME_LEN;

pub struct BoundedAlloc;

fn check(size: usize) {
    if size > LIMIT {
        // No allocation here: write the message and abort (libFuzzer keeps the input).
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"bounded_alloc: one allocation over the limit: a decoder trusts a length from its input\n",
        );
        std::process::abort();
    }
}

unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;
