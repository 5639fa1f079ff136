//! One chunk's worth of unflushed writes.
//!
//! A dirty chunk records which byte ranges the application wrote. When it is
//! uploaded, bytes it did not write come from the chunk's committed content
//! (its "base"): read-modify-write, paid only for partly overwritten chunks.

use std::ops::Range;

#[derive(Debug, Clone)]
pub struct DirtyChunk {
    data: Vec<u8>,
    /// Sorted, disjoint, non-adjacent ranges the application wrote.
    covered: Vec<Range<usize>>,
    chunk_size: usize,
    /// Length of the committed content still to merge under the writes
    /// (0 = nothing to merge).
    base_len: usize,
}

impl DirtyChunk {
    /// A chunk whose committed content is `base_len` bytes long, not yet
    /// loaded.
    pub fn new(chunk_size: usize, base_len: usize) -> Self {
        DirtyChunk {
            data: Vec::new(),
            covered: Vec::new(),
            chunk_size,
            base_len,
        }
    }

    /// A chunk starting from known content.
    pub fn from_content(chunk_size: usize, content: &[u8]) -> Self {
        let mut c = DirtyChunk::new(chunk_size, 0);
        c.write(0, content);
        c
    }

    /// Writes `bytes` at `offset` within the chunk. The caller keeps
    /// `offset + bytes.len() <= chunk_size`.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        debug_assert!(end <= self.chunk_size);
        if bytes.is_empty() {
            return;
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        self.cover(offset..end);
    }

    fn cover(&mut self, r: Range<usize>) {
        let mut start = r.start;
        let mut end = r.end;
        let mut out = Vec::with_capacity(self.covered.len() + 1);
        for c in self.covered.drain(..) {
            if c.end < start || c.start > end {
                out.push(c);
            } else {
                start = start.min(c.start);
                end = end.max(c.end);
            }
        }
        out.push(start..end);
        out.sort_by_key(|c| c.start);
        self.covered = out;
    }

    /// Every byte of the chunk has been written.
    pub fn is_full(&self) -> bool {
        self.covered.len() == 1 && self.covered[0] == (0..self.chunk_size)
    }

    /// Committed content must be merged before the bytes are complete.
    pub fn needs_base(&self) -> bool {
        if self.base_len == 0 {
            return false;
        }
        !(self.covered.len() == 1
            && self.covered[0].start == 0
            && self.covered[0].end >= self.base_len)
    }

    pub fn base_len(&self) -> usize {
        self.base_len
    }

    /// Fills every byte not written by the application from `base` (the
    /// committed content, already cut to the length the file uses).
    pub fn apply_base(&mut self, base: &[u8]) {
        let base = &base[..base.len().min(self.chunk_size)];
        if self.data.len() < base.len() {
            self.data.resize(base.len(), 0);
        }
        let mut pos = 0;
        let written = std::mem::take(&mut self.covered);
        for c in &written {
            if pos < c.start {
                let e = c.start.min(base.len());
                if pos < e {
                    self.data[pos..e].copy_from_slice(&base[pos..e]);
                }
            }
            pos = c.end;
        }
        if pos < base.len() {
            self.data[pos..].copy_from_slice(&base[pos..]);
        }
        self.covered = written;
        let len = self.data.len();
        self.cover(0..len);
        self.base_len = 0;
    }

    /// The chunk's bytes; only complete when `needs_base()` is false.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Keeps only the first `len` bytes (a truncate while buffered).
    pub fn truncate(&mut self, len: usize) {
        self.data.truncate(len);
        self.base_len = self.base_len.min(len);
        for c in &mut self.covered {
            c.end = c.end.min(len);
        }
        self.covered.retain(|c| c.start < c.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_coverage_in_pieces_needs_no_base() {
        let mut c = DirtyChunk::new(8, 8);
        c.write(4, b"efgh");
        assert!(!c.is_full());
        assert!(c.needs_base());
        c.write(0, b"abcd");
        assert!(c.is_full());
        assert!(!c.needs_base());
        assert_eq!(c.data(), b"abcdefgh");
    }

    #[test]
    fn base_fills_only_unwritten_bytes() {
        let mut c = DirtyChunk::new(16, 10);
        c.write(2, b"XY");
        c.write(6, b"Z");
        c.apply_base(b"0123456789");
        assert_eq!(c.data(), b"01XY45Z789");
        assert!(!c.needs_base());
    }

    #[test]
    fn writes_past_the_base_keep_their_length() {
        let mut c = DirtyChunk::new(16, 4);
        c.write(8, b"tail");
        c.apply_base(b"abcd");
        assert_eq!(c.data(), b"abcd\0\0\0\0tail");
    }

    #[test]
    fn a_base_longer_than_the_writes_extends_the_chunk() {
        let mut c = DirtyChunk::new(16, 12);
        c.write(0, b"AB");
        c.apply_base(b"abcdefghijkl");
        assert_eq!(c.data(), b"ABcdefghijkl");
    }

    #[test]
    fn overlapping_writes_merge_ranges() {
        let mut c = DirtyChunk::new(10, 0);
        c.write(0, b"aaaa");
        c.write(2, b"bbbb");
        c.write(6, b"cccc");
        assert!(c.is_full());
        assert_eq!(c.data(), b"aabbbbcccc");
    }
}
