//! An open file: reads and writes at any offset, with a bounded write buffer
//! that uploads full chunks in the background and commits the layout on
//! `flush` (close-to-open consistency).
//!
//! Chunk states inside a handle, per chunk index:
//! `dirty` (being written) -> `inflight` (upload task running) -> `done`
//! (stored on the quorum, not yet committed) -> committed (in the layout).
//! Their total is bounded by `write_buffer_bytes`; when full, `write` waits
//! for uploads and commits what is done.

use std::collections::BTreeMap;
use std::sync::Arc;

use bigfs_proto::{ChunkId, errno, now_timestamp, pb};
use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::chunk_io::ChunkIo;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::layout::{Held, Layout, LayoutChunk};
use crate::write_buffer::DirtyChunk;

/// The layout of `ino` (its attrs and chunk locations) as the metadata
/// service holds it now.
pub(crate) async fn fetch_layout(io: &ChunkIo, ino: u64) -> Result<Layout> {
    let reply = io
        .meta
        .call("get layout", |mut c| async move {
            c.get_layout(pb::InodeRequest { ino }).await
        })
        .await?;
    Layout::from_reply(reply)
}

/// Largest file size BigFS accepts (2^60 bytes, far past any disk, and
/// safe from overflow in offset arithmetic).
pub const MAX_FILE_SIZE: u64 = 1 << 60;

/// A chunk's new content, stored: in a chunk (`id`), or, for a small chunk
/// index 0, nowhere yet (`id` None): the commit hands it to the metadata
/// service to keep inline.
struct Uploaded {
    id: Option<ChunkId>,
    data: Arc<Vec<u8>>,
}

/// The bytes the file holds at one chunk index (a chunk's used prefix, or
/// the inline bytes).
async fn held_bytes(io: &Arc<ChunkIo>, held: &Held) -> Result<Bytes> {
    match held {
        Held::Chunk(c) => {
            let bytes = io.fetch(c.id, &c.replicas).await?;
            Ok(bytes.slice(..(c.len as usize).min(bytes.len())))
        }
        Held::Inline(data) => Ok(data.clone()),
    }
}

#[derive(Default)]
struct HandleState {
    /// The file size as this handle sees it (committed size + own writes).
    size: u64,
    layout: Option<Arc<Layout>>,
    dirty: BTreeMap<u64, DirtyChunk>,
    inflight: BTreeMap<u64, JoinHandle<Result<Uploaded>>>,
    done: BTreeMap<u64, Uploaded>,
    /// A background upload failed; reported by the next write or flush.
    error: Option<ClientError>,
    /// Writes happened since the last commit.
    needs_commit: bool,
    last_read_end: u64,
    last_attr: Option<pb::Attr>,
}

impl HandleState {
    fn buffered_chunks(&self) -> usize {
        self.dirty.len() + self.inflight.len() + self.done.len()
    }

    fn has_pending(&self) -> bool {
        self.buffered_chunks() > 0
    }

    /// Bytes the buffered chunks will store (an upload in flight counts
    /// as a whole chunk).
    fn buffered_bytes(&self, chunk_size: u64) -> u64 {
        let dirty: u64 = self.dirty.values().map(|d| d.data().len() as u64).sum();
        let done: u64 = self.done.values().map(|u| u.data.len() as u64).sum();
        dirty + done + self.inflight.len() as u64 * chunk_size
    }
}

/// A handle's writes not yet committed, as `stat` must show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The size including the unflushed writes.
    pub size: u64,
    /// Bytes the buffered chunks will store once uploaded.
    pub bytes: u64,
}

pub struct FileHandle {
    io: Arc<ChunkIo>,
    ino: u64,
    chunk_size: u64,
    replication: u32,
    budget_chunks: usize,
    commit_every: usize,
    readahead: u32,
    state: tokio::sync::Mutex<HandleState>,
}

impl FileHandle {
    /// A handle on the file `attr` describes. No network until first use.
    pub fn new(io: Arc<ChunkIo>, attr: &pb::Attr, cfg: &ClientConfig) -> Self {
        let chunk_size = u64::from(attr.chunk_size.max(1));
        let budget_chunks = ((cfg.write_buffer_bytes / chunk_size) as usize).max(2);
        FileHandle {
            io,
            ino: attr.ino,
            chunk_size,
            replication: attr.replication,
            budget_chunks,
            commit_every: cfg.commit_every_chunks.min(budget_chunks).max(1),
            readahead: cfg.readahead_chunks,
            state: tokio::sync::Mutex::new(HandleState {
                size: attr.size,
                ..Default::default()
            }),
        }
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The size as this handle sees it, including unflushed writes.
    pub async fn size(&self) -> u64 {
        self.state.lock().await.size
    }

    /// The size and buffered bytes of unflushed writes, when there are any.
    pub async fn pending(&self) -> Option<Pending> {
        let st = self.state.lock().await;
        (st.has_pending() || st.needs_commit).then(|| Pending {
            size: st.size,
            bytes: st.buffered_bytes(self.chunk_size),
        })
    }

    /// The attributes the metadata service returned for this handle's last
    /// commit or truncate.
    pub async fn last_attr(&self) -> Option<pb::Attr> {
        self.state.lock().await.last_attr.clone()
    }

    async fn layout(&self, st: &mut HandleState) -> Result<Arc<Layout>> {
        if let Some(l) = &st.layout {
            return Ok(Arc::clone(l));
        }
        let layout = Arc::new(fetch_layout(&self.io, self.ino).await?);
        if !st.has_pending() {
            st.size = layout.attr.size;
        }
        st.layout = Some(Arc::clone(&layout));
        Ok(layout)
    }

    /// Drops the cached layout so the next read fetches a fresh one.
    pub async fn invalidate(&self) {
        self.state.lock().await.layout = None;
    }

    /// Takes fresh attributes at a new `open` (close-to-open): without
    /// buffered writes, the size and layout are re-read from the cluster,
    /// or taken from `layout` when the open fetched it already.
    pub async fn reopen(&self, attr: &pb::Attr, layout: Option<Layout>) {
        let mut st = self.state.lock().await;
        if !st.has_pending() && !st.needs_commit {
            st.size = attr.size;
            st.layout = layout.map(Arc::new);
        }
    }

    /// Waits for the upload of chunk `idx` and moves it to `done`.
    async fn await_inflight(&self, st: &mut HandleState, idx: u64) -> Result<()> {
        let Some(h) = st.inflight.remove(&idx) else {
            return Ok(());
        };
        let outcome = h
            .await
            .unwrap_or_else(|e| Err(ClientError::Invalid(format!("upload task failed: {e}"))));
        match outcome {
            Ok(u) => {
                st.done.insert(idx, u);
                Ok(())
            }
            Err(e) => {
                tracing::error!(ino = self.ino, chunk_index = idx, error = %e, "chunk upload failed");
                st.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Moves finished uploads to `done` without waiting.
    async fn harvest(&self, st: &mut HandleState) -> Result<()> {
        let finished: Vec<u64> = st
            .inflight
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(i, _)| *i)
            .collect();
        for idx in finished {
            self.await_inflight(st, idx).await?;
        }
        Ok(())
    }

    /// Starts uploading dirty chunk `idx` in the background.
    async fn start_upload(&self, st: &mut HandleState, idx: u64) -> Result<()> {
        let needs_base = st.dirty.get(&idx).is_some_and(|d| d.needs_base());
        let base = if needs_base {
            self.layout(st).await?.held(idx)
        } else {
            None
        };
        let Some(mut dc) = st.dirty.remove(&idx) else {
            return Ok(());
        };
        if dc.data().is_empty() && !dc.needs_base() {
            return Ok(()); // nothing but a hole
        }
        let io = Arc::clone(&self.io);
        let replication = self.replication;
        let task = tokio::spawn(async move {
            if dc.needs_base() {
                match base {
                    Some(held) => dc.apply_base(&held_bytes(&io, &held).await?),
                    None => dc.apply_base(&[]),
                }
            }
            let data = Arc::new(dc.into_data());
            if idx == 0 && data.len() as u64 <= io.inline_max() {
                return Ok(Uploaded { id: None, data });
            }
            let id = io.upload(Arc::clone(&data), replication).await?;
            Ok(Uploaded { id: Some(id), data })
        });
        st.inflight.insert(idx, task);
        Ok(())
    }

    /// A new dirty chunk for `idx`, based on what the file holds there now.
    async fn new_dirty(&self, st: &mut HandleState, idx: u64) -> Result<DirtyChunk> {
        let cs = self.chunk_size as usize;
        self.await_inflight(st, idx).await?;
        if let Some(u) = st.done.remove(&idx) {
            return Ok(DirtyChunk::from_content(cs, &u.data));
        }
        let committed_end = st
            .size
            .saturating_sub(idx * self.chunk_size)
            .min(self.chunk_size);
        if committed_end == 0 {
            return Ok(DirtyChunk::new(cs, 0));
        }
        let layout = self.layout(st).await?;
        let base_len = match layout.held(idx) {
            Some(Held::Chunk(c)) => c.len as usize,
            Some(Held::Inline(data)) => data.len(),
            None => 0,
        };
        Ok(DirtyChunk::new(cs, base_len.min(committed_end as usize)))
    }

    /// Waits until one more chunk fits in the write buffer.
    async fn make_room(&self, st: &mut HandleState) -> Result<()> {
        while st.buffered_chunks() >= self.budget_chunks {
            if !st.done.is_empty()
                && (st.inflight.is_empty() || st.done.len() * 2 >= self.budget_chunks)
            {
                self.commit(st).await?;
            } else if let Some(idx) = st.inflight.keys().next().copied() {
                self.await_inflight(st, idx).await?;
            } else if let Some(idx) = st.dirty.keys().next().copied() {
                self.start_upload(st, idx).await?;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset`. Returns the bytes accepted (all of them).
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or_else(|| ClientError::Remote {
                op: "write",
                errno: errno::EFBIG,
                code: tonic::Code::OutOfRange,
                message: format!("write past the largest file size ({MAX_FILE_SIZE} bytes)"),
            })?;
        let mut st = self.state.lock().await;
        if let Some(e) = st.error.clone() {
            return Err(e);
        }
        let cs = self.chunk_size;
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = offset + pos as u64;
            let idx = abs / cs;
            let off = (abs % cs) as usize;
            let n = (cs as usize - off).min(data.len() - pos);
            if !st.dirty.contains_key(&idx) {
                self.make_room(&mut st).await?;
                let dc = self.new_dirty(&mut st, idx).await?;
                st.dirty.insert(idx, dc);
            }
            let full = match st.dirty.get_mut(&idx) {
                Some(dc) => {
                    dc.write(off, &data[pos..pos + n]);
                    dc.is_full()
                }
                None => false,
            };
            if full {
                self.start_upload(&mut st, idx).await?;
            }
            pos += n;
        }
        st.size = st.size.max(end);
        st.needs_commit = true;
        self.harvest(&mut st).await?;
        if st.done.len() >= self.commit_every {
            self.commit(&mut st).await?;
        }
        Ok(data.len())
    }

    /// Makes `[offset, end)` read as zeros (fallocate's punch hole and zero
    /// range). Only the part inside the file is written: past the size the
    /// file reads as zeros already. Whole chunks of zeros share one stored
    /// chunk (chunks are named by their content), so a punched run of
    /// chunks costs one chunk of space, not its length.
    pub async fn zero_range(&self, offset: u64, end: u64) -> Result<()> {
        let stop = end.min(self.size().await);
        if offset >= stop {
            return Ok(());
        }
        let cs = self.chunk_size;
        let zeros = vec![0u8; cs.min(stop - offset) as usize];
        let mut pos = offset;
        while pos < stop {
            let n = (cs - pos % cs).min(stop - pos);
            self.write(pos, &zeros[..n as usize]).await?;
            pos += n;
        }
        Ok(())
    }

    /// Sends one layout commit: these chunk references (and chunk 0's bytes
    /// to keep inline), size at least `size`, mtime now.
    async fn send_commit(
        &self,
        chunks: Vec<pb::ChunkRef>,
        inline_data: Option<Bytes>,
        size: u64,
    ) -> Result<pb::AttrReply> {
        let req = pb::CommitLayoutRequest {
            ino: self.ino,
            chunks,
            size,
            mtime: Some(now_timestamp()),
            inline_data,
            id: None,
        };
        self.io
            .meta
            .mutate("commit layout", req, |mut c, r| async move {
                c.commit_layout(r).await
            })
            .await
    }

    /// Commits every uploaded chunk and the size in one metadata command.
    async fn commit(&self, st: &mut HandleState) -> Result<()> {
        if st.done.is_empty() && !st.needs_commit {
            return Ok(());
        }
        let mut round = 0;
        loop {
            let chunks: Vec<pb::ChunkRef> = st
                .done
                .iter()
                .filter_map(|(idx, u)| {
                    Some(pb::ChunkRef {
                        index: *idx,
                        id: u.id?.to_vec(),
                        len: u.data.len() as u32,
                    })
                })
                .collect();
            let inline = st
                .done
                .get(&0)
                .filter(|u| u.id.is_none())
                .map(|u| Bytes::copy_from_slice(&u.data));
            match self.send_commit(chunks, inline, st.size).await {
                Ok(reply) => {
                    st.done.clear();
                    st.needs_commit = false;
                    st.layout = None;
                    st.last_attr = reply.attr;
                    return Ok(());
                }
                Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) && round < 2 => {
                    // A chunk we deduplicated against was collected before
                    // our commit, or the service would not keep chunk 0
                    // inline: store our copies and commit again.
                    tracing::warn!(ino = self.ino, error = %e, "layout commit refused, uploading again");
                    round += 1;
                    if st.done.values().any(|u| u.id.is_none()) {
                        self.io.pause_inline();
                    }
                    for u in st.done.values_mut() {
                        let id = self
                            .io
                            .upload(Arc::clone(&u.data), self.replication)
                            .await?;
                        u.id = Some(id);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Uploads every buffered chunk and commits the layout. When this
    /// returns Ok, the data is on the write quorum (fsync'd there) and the
    /// commit is in the metadata log; the log is on disk at once only under
    /// `log_sync = "always"`, else within `log_sync_interval_ms`. For
    /// fsync's promise (survives a power cut) call [`Client::sync`] after
    /// it, as the FUSE `fsync` does; the power-loss test shows a flush
    /// alone can be lost.
    ///
    /// [`Client::sync`]: crate::Client::sync
    pub async fn flush(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        let mut first_err = st.error.take();
        let dirty: Vec<u64> = st.dirty.keys().copied().collect();
        for idx in dirty {
            if let Err(e) = self.start_upload(&mut st, idx).await {
                first_err.get_or_insert(e);
            }
        }
        let inflight: Vec<u64> = st.inflight.keys().copied().collect();
        for idx in inflight {
            if let Err(e) = self.await_inflight(&mut st, idx).await {
                first_err.get_or_insert(e);
            }
        }
        st.error = None;
        if let Some(e) = first_err {
            // What was uploaded is still committed: keep what we can.
            let _ = self.commit(&mut st).await;
            return Err(e);
        }
        self.commit(&mut st).await
    }

    /// Sets the file size (shrink or grow) after flushing buffered writes.
    pub async fn truncate(&self, size: u64) -> Result<pb::Attr> {
        if size > MAX_FILE_SIZE {
            return Err(ClientError::Invalid(format!(
                "size {size} is past the largest file size"
            )));
        }
        self.flush().await?;
        let mut st = self.state.lock().await;
        let req = pb::SetAttrRequest {
            ino: self.ino,
            size: Some(size),
            ..Default::default()
        };
        let reply = self
            .io
            .meta
            .mutate(
                "truncate",
                req,
                |mut c, r| async move { c.set_attr(r).await },
            )
            .await?;
        st.size = size;
        st.layout = None;
        reply
            .attr
            .ok_or_else(|| ClientError::Invalid("setattr reply without attr".into()))
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The committed layout (fetched if not cached).
    pub async fn layout_snapshot(&self) -> Result<Arc<Layout>> {
        let mut st = self.state.lock().await;
        self.layout(&mut st).await
    }

    /// Commits chunk references that already exist on the cluster (a copy
    /// that shares chunks) and grows the size to at least `size`. Buffered
    /// writes are committed first.
    pub async fn commit_shared(&self, chunks: Vec<pb::ChunkRef>, size: u64) -> Result<()> {
        self.flush().await?;
        let mut st = self.state.lock().await;
        let reply = self.send_commit(chunks, None, size).await?;
        st.size = st.size.max(size);
        st.layout = None;
        st.last_attr = reply.attr;
        Ok(())
    }

    /// Reads up to `len` bytes at `offset`; short only at end of file.
    /// Reads up to `len` bytes at `offset`. A read inside one stored chunk
    /// is a slice of the cached chunk, not a copy.
    pub async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        let mut st = self.state.lock().await;
        if st.layout.is_none() && !st.has_pending() {
            self.layout(&mut st).await?;
        }
        let size = st.size;
        if offset >= size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(len as u64).min(size);
        let out_len = (end - offset) as usize;
        // Allocated (zeroed, for holes) only when pieces must be joined.
        let mut out: Option<Vec<u8>> = None;
        let cs = self.chunk_size;
        let mut remote: Vec<(u64, LayoutChunk)> = Vec::new();
        let first = offset / cs;
        let last = (end - 1) / cs;
        for idx in first..=last {
            self.await_inflight(&mut st, idx).await?;
            let local: Option<&[u8]> = if st.dirty.get(&idx).is_some_and(|d| d.needs_base()) {
                let layout = self.layout(&mut st).await?;
                let base = match layout.held(idx) {
                    Some(held) => held_bytes(&self.io, &held).await?,
                    None => Bytes::new(),
                };
                st.dirty.get_mut(&idx).map(|d| {
                    d.apply_base(&base);
                    d.data()
                })
            } else if let Some(d) = st.dirty.get(&idx) {
                Some(d.data())
            } else {
                st.done.get(&idx).map(|u| u.data.as_slice())
            };
            match local {
                Some(bytes) => copy_range(
                    out.get_or_insert_with(|| vec![0u8; out_len]),
                    offset,
                    end,
                    idx * cs,
                    bytes,
                ),
                None => match self.layout(&mut st).await?.held(idx) {
                    Some(Held::Chunk(c)) => remote.push((idx, c)),
                    Some(Held::Inline(data)) => copy_range(
                        out.get_or_insert_with(|| vec![0u8; out_len]),
                        offset,
                        end,
                        idx * cs,
                        &data,
                    ),
                    None => {}
                },
            }
        }
        // Sequential enough: the kernel's own read-ahead sends reads a little
        // out of order, so anything near where the last read ended counts.
        let sequential = offset == 0 || offset.abs_diff(st.last_read_end) <= 2 * cs;
        st.last_read_end = end;
        let layout = st.layout.clone();
        drop(st);

        // Start the read-ahead first, so it overlaps this read's fetches.
        if sequential && let Some(layout) = layout {
            for idx in last + 1..=last + u64::from(self.readahead) {
                if let Some(c) = layout.chunks.get(&idx) {
                    self.io.prefetch(c.id, c.replicas.clone());
                }
            }
        }
        let fetched =
            futures::future::join_all(remote.iter().map(|(_, c)| self.io.fetch(c.id, &c.replicas)))
                .await;
        if out.is_none()
            && let [(idx, c)] = remote.as_slice()
            && let Some(Ok(data)) = fetched.first()
        {
            let start = idx * cs;
            let used = (c.len as usize).min(data.len()) as u64;
            if start <= offset && end <= start + used {
                return Ok(data.slice((offset - start) as usize..(end - start) as usize));
            }
        }
        let mut out = out.unwrap_or_else(|| vec![0u8; out_len]);
        for ((idx, c), data) in remote.iter().zip(fetched) {
            let data = data?;
            let used = &data[..(c.len as usize).min(data.len())];
            copy_range(&mut out, offset, end, idx * cs, used);
        }
        Ok(Bytes::from(out))
    }
}

/// Copies the part of a chunk (starting at file offset `chunk_start`, bytes
/// `data`, zeros after them) that falls in `[offset, end)` into `out`.
fn copy_range(out: &mut [u8], offset: u64, end: u64, chunk_start: u64, data: &[u8]) {
    let a = offset.max(chunk_start);
    let data_end = chunk_start + data.len() as u64;
    let b = end.min(data_end);
    if a < b {
        let src = &data[(a - chunk_start) as usize..(b - chunk_start) as usize];
        out[(a - offset) as usize..(b - offset) as usize].copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::copy_range;

    #[test]
    fn copy_range_zero_fills_past_the_chunk_data() {
        let mut out = vec![9u8; 6];
        // file range [2, 8) over a chunk at 0 holding 5 bytes.
        copy_range(&mut out, 2, 8, 0, b"abcde");
        assert_eq!(&out[..3], b"cde");
        assert_eq!(&out[3..], &[9, 9, 9]); // untouched: caller pre-zeroes
    }

    #[test]
    fn copy_range_with_a_chunk_starting_inside_the_range() {
        let mut out = vec![0u8; 6];
        copy_range(&mut out, 2, 8, 4, b"xyz");
        assert_eq!(out, b"\0\0xyz\0");
    }
}
