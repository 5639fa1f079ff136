//! What the fuzz targets share: an allocator that refuses a huge single
//! allocation, and a reader that carves typed values out of fuzz input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;

/// Largest single allocation a target may make. Every input the targets
/// decode is at most a few MiB (`-max_len`), and no decoder should reserve
/// more than a small multiple of its input: 256 MiB means a length field
/// was trusted.
pub const MAX_ALLOC: usize = 256 << 20;

/// The system allocator, aborting (a crash libFuzzer records with its
/// input) on any allocation above [`MAX_ALLOC`].
pub struct CappedAlloc;

#[cold]
fn huge(size: usize) -> ! {
    // Writing a fixed message allocates nothing.
    eprintln!("bigfs-fuzz: an allocation of {size} bytes exceeds MAX_ALLOC");
    std::process::abort()
}

// SAFETY: every call forwards to `System` with the caller's arguments; the
// only addition is a size check before it.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            huge(layout.size());
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            huge(layout.size());
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC {
            huge(new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Fuzz input read front to back; past the end every read answers zeros
/// or an empty slice, so a target never has to check lengths.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let b = self.bytes(8);
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A slice prefixed by its u16 length.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A runtime shared by every run of a target (a multi-thread one: the
/// daemons' code spawns blocking tasks and background work).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the fuzz target")
    })
}
