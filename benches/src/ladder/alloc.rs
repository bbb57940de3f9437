//! A counting global allocator: `std::alloc::System` plus a count of
//! allocation calls (alloc, alloc_zeroed, realloc) and of the bytes they
//! asked for. The counters are sharded per thread (cache-line padded) so
//! that two cores allocating do not bounce one line between them; a read
//! sums the shards. Counting can be switched off (the node child process).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

const SHARDS: usize = 32;

#[repr(align(128))]
struct Shard {
    calls: AtomicU64,
    bytes: AtomicU64,
}

static COUNTS: [Shard; SHARDS] = [const {
    Shard {
        calls: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    }
}; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    // Const-initialized and without a destructor: usable inside the
    // allocator (it never allocates and lives as long as the thread).
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn count(bytes: usize) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    let shard = SHARD
        .try_with(|s| {
            let v = s.get();
            if v != usize::MAX {
                return v;
            }
            let n = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
            s.set(n);
            n
        })
        .unwrap_or(0);
    let s = &COUNTS[shard];
    s.calls.fetch_add(1, Relaxed);
    s.bytes.fetch_add(bytes as u64, Relaxed);
}

pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; counting only
// touches atomics and a const thread-local, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Allocation calls and bytes so far, over all threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Allocs {
    pub calls: u64,
    pub bytes: u64,
}

impl Allocs {
    pub fn now() -> Allocs {
        COUNTS.iter().fold(Allocs::default(), |a, s| Allocs {
            calls: a.calls + s.calls.load(Relaxed),
            bytes: a.bytes + s.bytes.load(Relaxed),
        })
    }

    pub fn since(self, start: Allocs) -> Allocs {
        Allocs {
            calls: self.calls.saturating_sub(start.calls),
            bytes: self.bytes.saturating_sub(start.bytes),
        }
    }
}

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}
