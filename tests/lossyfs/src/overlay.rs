//! The writes to one file that have not been fsync'd yet: what a disk's
//! volatile cache holds, and what a power cut takes.
//!
//! An [`Overlay`] sits over the file's backing file. Readers see the
//! backing bytes with the overlay on top; only [`Overlay::persist`] (an
//! fsync) writes it through. Whole 4 KiB pages are kept, as a page cache
//! keeps them, so a partly persisted overlay ([`Overlay::persist_some`])
//! tears at page boundaries like a real crash.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes per page of the overlay.
pub const PAGE: u64 = 4096;

/// Unsynced writes and size changes of one file.
#[derive(Debug)]
pub struct Overlay {
    /// The file's size as readers see it.
    size: u64,
    /// Backing bytes at and past this offset were truncated away (not yet
    /// synced): they read as zeros.
    cut_at: u64,
    /// Page index -> the whole page as readers see it.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// An empty overlay over a backing file of `backing_len` bytes.
    pub fn new(backing_len: u64) -> Overlay {
        Overlay {
            size: backing_len,
            cut_at: backing_len,
            pages: BTreeMap::new(),
        }
    }

    /// The size readers see.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in memory (for logs).
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// Reads `buf.len()` backing bytes at `offset` as readers see them:
    /// zeros past the end and past a pending truncation.
    fn read_backing(&self, backing: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let valid = self.cut_at.saturating_sub(offset).min(buf.len() as u64) as usize;
        let mut done = 0;
        while done < valid {
            let n = backing.read_at(&mut buf[done..valid], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(())
    }

    fn page_mut(&mut self, backing: &File, idx: u64) -> io::Result<&mut [u8]> {
        if !self.pages.contains_key(&idx) {
            let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
            self.read_backing(backing, idx * PAGE, &mut page)?;
            self.pages.insert(idx, page);
        }
        // Inserted just above when it was missing.
        Ok(self.pages.get_mut(&idx).expect("page present"))
    }

    /// Reads up to `len` bytes at `offset`; short only at the end of file.
    pub fn read(&self, backing: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(self.size);
        if end <= offset {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        self.read_backing(backing, offset, &mut out)?;
        for (&idx, page) in self.pages.range(offset / PAGE..end.div_ceil(PAGE)) {
            let start = (idx * PAGE).max(offset);
            let stop = ((idx + 1) * PAGE).min(end);
            out[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(
                &page[(start - idx * PAGE) as usize..(stop - idx * PAGE) as usize],
            );
        }
        Ok(out)
    }

    /// Writes `data` at `offset` (in memory only).
    pub fn write(&mut self, backing: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let idx = pos / PAGE;
            let stop = ((idx + 1) * PAGE).min(end);
            let page = self.page_mut(backing, idx)?;
            page[(pos - idx * PAGE) as usize..(stop - idx * PAGE) as usize]
                .copy_from_slice(&data[(pos - offset) as usize..(stop - offset) as usize]);
            pos = stop;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Sets the size (in memory only): a shrink drops the pages past it
    /// and hides the backing bytes past it; a grow reads as zeros.
    pub fn truncate(&mut self, backing: &File, size: u64) -> io::Result<()> {
        if size < self.size {
            if !size.is_multiple_of(PAGE) {
                let within = (size % PAGE) as usize;
                self.page_mut(backing, size / PAGE)?[within..].fill(0);
            }
            let _ = self.pages.split_off(&size.div_ceil(PAGE));
            self.cut_at = self.cut_at.min(size);
        }
        self.size = size;
        Ok(())
    }

    /// Writes page `idx` through (only its bytes below the size).
    fn write_page(&self, backing: &File, idx: u64, page: &[u8]) -> io::Result<()> {
        let start = idx * PAGE;
        let len = self.size.saturating_sub(start).min(PAGE) as usize;
        backing.write_all_at(&page[..len], start)
    }

    /// Writes everything through, as fsync does; the overlay is empty after.
    pub fn persist(&mut self, backing: &File) -> io::Result<()> {
        if self.cut_at < backing.metadata()?.len() {
            backing.set_len(self.cut_at)?;
        }
        for (&idx, page) in &self.pages {
            self.write_page(backing, idx, page)?;
        }
        if backing.metadata()?.len() != self.size {
            backing.set_len(self.size)?;
        }
        self.pages.clear();
        self.cut_at = self.size;
        Ok(())
    }

    /// What a power cut leaves: the pages for which `keep` says yes reach
    /// the backing file (a page past its end extends it), the rest and any
    /// pending truncation are lost. The overlay is to be dropped after.
    pub fn persist_some(&self, backing: &File, mut keep: impl FnMut() -> bool) -> io::Result<()> {
        for (&idx, page) in &self.pages {
            if keep() {
                self.write_page(backing, idx, page)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing(content: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, f)
    }

    fn on_disk(f: &File) -> Vec<u8> {
        let mut v = vec![0u8; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn readers_see_unsynced_writes_and_the_disk_does_not() {
        let (_d, f) = backing(b"hello world");
        let mut o = Overlay::new(11);
        o.write(&f, 6, b"there, and a longer tail").unwrap();
        assert_eq!(
            o.read(&f, 0, 100).unwrap(),
            b"hello there, and a longer tail"
        );
        assert_eq!(o.size(), 30);
        assert_eq!(on_disk(&f), b"hello world");
    }

    #[test]
    fn persist_writes_everything_through() {
        let (_d, f) = backing(&[7u8; 10_000]);
        let mut o = Overlay::new(10_000);
        o.write(&f, 5000, &[1u8; 9000]).unwrap();
        o.persist(&f).unwrap();
        let mut want = vec![7u8; 5000];
        want.extend_from_slice(&[1u8; 9000]);
        assert_eq!(on_disk(&f), want);
        assert_eq!(o.dirty_bytes(), 0);
        assert_eq!(o.read(&f, 0, 20_000).unwrap(), want);
    }

    #[test]
    fn a_truncate_is_lost_unless_synced_and_a_regrow_reads_zeros() {
        let (_d, f) = backing(&[9u8; 3 * PAGE as usize]);
        let mut o = Overlay::new(3 * PAGE);
        o.truncate(&f, 100).unwrap();
        o.truncate(&f, 2 * PAGE).unwrap();
        let seen = o.read(&f, 0, 3 * PAGE as usize).unwrap();
        assert_eq!(seen.len(), 2 * PAGE as usize);
        assert!(seen[..100].iter().all(|&b| b == 9));
        assert!(seen[100..].iter().all(|&b| b == 0));
        // Not synced: the disk still has the old bytes.
        assert_eq!(on_disk(&f), vec![9u8; 3 * PAGE as usize]);
        o.persist(&f).unwrap();
        assert_eq!(on_disk(&f), seen);
    }

    #[test]
    fn a_power_cut_keeps_only_the_pages_it_chose() {
        let (_d, f) = backing(b"");
        let mut o = Overlay::new(0);
        o.write(&f, 0, &[1u8; 3 * PAGE as usize]).unwrap();
        let mut n = 0;
        // Keep the first and the third page.
        o.persist_some(&f, || {
            n += 1;
            n != 2
        })
        .unwrap();
        let disk = on_disk(&f);
        assert_eq!(disk.len(), 3 * PAGE as usize);
        assert!(disk[..PAGE as usize].iter().all(|&b| b == 1));
        assert!(
            disk[PAGE as usize..2 * PAGE as usize]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(disk[2 * PAGE as usize..].iter().all(|&b| b == 1));
    }
}
