//! Copies between files inside the cluster. Whole aligned chunks become
//! shared references (chunks are immutable and content-addressed), so a
//! copy inside the mount moves no data; the rest is copied byte by byte.

use bigfs_proto::pb;

use crate::client::Client;
use crate::error::Result;
use crate::file::FileHandle;

/// Bytes moved per read/write step of a byte copy.
const COPY_STEP: usize = 1 << 20;

/// Copies `len` bytes from `src` at `off_in` to `dst` at `off_out`.
/// Returns the bytes copied (short only at the end of `src`).
pub async fn copy_range(
    _client: &Client,
    src: &FileHandle,
    off_in: u64,
    dst: &FileHandle,
    off_out: u64,
    len: u64,
) -> Result<u64> {
    src.flush().await?;
    let src_size = src.size().await;
    if off_in >= src_size || len == 0 {
        return Ok(0);
    }
    let len = len.min(src_size - off_in);
    let cs = src.chunk_size();
    let mut done = 0u64;
    if cs == dst.chunk_size()
        && off_in.is_multiple_of(cs)
        && off_out.is_multiple_of(cs)
        && src.ino() != dst.ino()
    {
        dst.flush().await?;
        let dst_size = dst.size().await;
        let layout = src.layout_snapshot().await?;
        let mut refs = Vec::new();
        let mut shared = 0u64;
        while shared < len {
            let idx = (off_in + shared) / cs;
            let piece = cs.min(len - shared);
            let whole = piece == cs;
            // A partial last chunk may be shared only when nothing of the
            // destination follows it (its unused tail reads as zeros).
            let tail_ok =
                off_in + shared + piece == src_size && off_out + shared + piece >= dst_size;
            match layout.chunks.get(&idx) {
                Some(c) if (whole || tail_ok) && u64::from(c.len) <= piece => {
                    refs.push(pb::ChunkRef {
                        index: (off_out + shared) / cs,
                        id: c.id.to_vec(),
                        len: c.len,
                    })
                }
                // Holes and chunks that cannot be shared are copied below.
                _ => break,
            }
            shared += piece;
        }
        if !refs.is_empty() {
            dst.commit_shared(refs, off_out + shared).await?;
            done = shared;
        }
    }
    while done < len {
        let step = COPY_STEP.min((len - done) as usize);
        let data = src.read(off_in + done, step).await?;
        if data.is_empty() {
            break;
        }
        dst.write(off_out + done, &data).await?;
        done += data.len() as u64;
    }
    dst.flush().await?;
    Ok(done)
}
