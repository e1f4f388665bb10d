//! Reading the file `drift put` stores and writing the one `drift get -o`
//! fetches without passing them through the page cache, and writing what
//! `drift get` sends to stdout with one copy per byte.
//!
//! Large files spent most of their time on fresh page-cache pages: on the
//! bench machine (a VM whose host reclaims free pages) a 1 GiB `get -o` took
//! 3.3 s, ~2 s of it system time, and a `put` of a 1 GiB file not in the
//! cache 2.8 s, 1.8 s of it system time. [`BlockWriter::uncached`] gathers fetched
//! bytes into aligned 1 MiB blocks and writes each with
//! [`drift_store::write_uncached`]; [`UncachedSource`] reads a file in 1 MiB
//! blocks straight from the disk with [`drift_store::UncachedReader`]. Both
//! do their I/O on the blocking pool, one block ahead of (or behind) the
//! network.

use std::fs::File;
use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use drift_store::UncachedReader;
use futures_util::Stream;
use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;

/// Bytes per read or write.
const BLOCK: usize = 1 << 20;

/// A file's bytes as a stream of blocks, read a block ahead (see the module
/// docs). Each block goes to [`drift_server::client::Client::put_blocks`], which
/// sends slices of it: the bytes are not copied on their way to the socket.
pub struct UncachedSource {
    file: Arc<UncachedReader>,
    /// Where the next block starts.
    offset: u64,
    /// The block handed out last; its buffer takes the read after the next
    /// once nothing else holds it.
    last: Option<Bytes>,
    /// The next block, being read; `None` once the file has ended.
    reading: Option<JoinHandle<io::Result<BytesMut>>>,
    /// The file's size when it was opened. Ending at another size means it
    /// changed while it was read (truncated, say), and what was read is not
    /// the file: the stream ends with an error instead.
    expected: u64,
}

impl UncachedSource {
    /// Reads `file`, which had `expected` bytes when it was opened.
    pub fn new(file: UncachedReader, expected: u64) -> UncachedSource {
        let mut source = UncachedSource {
            file: Arc::new(file),
            offset: 0,
            last: None,
            reading: None,
            expected,
        };
        source.start_read(drift_store::aligned_buffer(BLOCK));
        source
    }

    fn start_read(&mut self, mut buf: BytesMut) {
        let (file, offset) = (self.file.clone(), self.offset);
        self.reading = Some(tokio::task::spawn_blocking(move || {
            file.read_at(offset, BLOCK, &mut buf).map(|()| buf)
        }));
    }
}

impl Stream for UncachedSource {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(task) = &mut this.reading else {
            return Poll::Ready(None);
        };
        let read = ready!(Pin::new(task).poll(cx));
        this.reading = None;
        let next = match read {
            Ok(Ok(next)) => next,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => {
                let e = io::Error::other(format!("file reader stopped: {e}"));
                return Poll::Ready(Some(Err(e)));
            }
        };
        this.offset += next.len() as u64;
        // A short block is the file's last.
        let last = next.len() < BLOCK;
        if last && this.offset != this.expected {
            let e = io::Error::other(format!(
                "the file changed size while it was read ({} bytes when opened, {} read): \
                 it was not stored",
                this.expected, this.offset
            ));
            return Poll::Ready(Some(Err(e)));
        }
        if next.is_empty() {
            return Poll::Ready(None);
        }
        if !last {
            // By now the block before last has been sent (its pieces were
            // copied into frames), so its buffer is usually free again.
            let buf = this
                .last
                .take()
                .and_then(|b| b.try_into_mut().ok())
                .filter(|b| b.capacity() >= BLOCK)
                .unwrap_or_else(|| drift_store::aligned_buffer(BLOCK));
            this.start_read(buf);
        }
        let block = next.freeze();
        this.last = Some(block.clone());
        Poll::Ready(Some(Ok(block)))
    }
}

/// A block written on the blocking pool hands back the file and the buffer.
type Written = (File, BytesMut, io::Result<()>);

/// An [`AsyncWrite`] onto a file, written block by block on the blocking pool
/// while the next block fills. Call `flush` (or `shutdown`) before
/// [`BlockWriter::into_file`].
///
/// Each byte is copied once, into the block; a `BufWriter` over tokio's
/// stdout copied it twice (and std's line buffering scanned it for
/// newlines). A 1 GiB `drift get NAME` into a pipe, 5 runs each of the old
/// and new client, alternating: 0.98–1.07 s before, 0.89–0.97 s after, with
/// the client's user time down from 0.28–0.32 s to 0.22–0.27 s.
pub struct BlockWriter {
    /// `None` while a block is being written (the task holds it), and for
    /// good once a block failed.
    file: Option<File>,
    /// Whether blocks go to the disk directly (a new regular file), or
    /// through plain writes (stdout, a pipe, a device).
    uncached: bool,
    /// The block being filled.
    filling: BytesMut,
    /// A written block's buffer, for the next one.
    spare: Option<BytesMut>,
    writing: Option<JoinHandle<Written>>,
}

impl BlockWriter {
    /// Writes into a new regular file from its start, with direct I/O where
    /// the file system allows (see the module docs).
    pub fn uncached(file: File) -> BlockWriter {
        BlockWriter::new(file, true)
    }

    /// Writes into anything `write(2)` takes (stdout, a pipe, a device) from
    /// wherever it is.
    pub fn plain(file: File) -> BlockWriter {
        BlockWriter::new(file, false)
    }

    fn new(file: File, uncached: bool) -> BlockWriter {
        BlockWriter {
            file: Some(file),
            uncached,
            filling: drift_store::aligned_buffer(BLOCK),
            spare: None,
            writing: None,
        }
    }

    /// The file, once everything is flushed; `None` if a write is still
    /// running (flush first) or failed.
    pub fn into_file(self) -> Option<File> {
        self.file.filter(|_| self.filling.is_empty())
    }

    /// Waits for the block being written, if any.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(task) = &mut self.writing else {
            return Poll::Ready(Ok(()));
        };
        let joined = ready!(Pin::new(task).poll(cx));
        self.writing = None;
        let (file, mut buf, result) =
            joined.map_err(|e| io::Error::other(format!("file writer stopped: {e}")))?;
        // After a failed block the file's end is unknown: keep the file only
        // while every block went in, so later writes fail too.
        if result.is_ok() {
            self.file = Some(file);
        }
        buf.clear();
        self.spare = Some(buf);
        Poll::Ready(result)
    }

    /// Starts writing the filled block; no write may be running.
    fn start_write(&mut self) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("an earlier write to this file failed"));
        };
        debug_assert!(self.writing.is_none());
        let next = self
            .spare
            .take()
            .unwrap_or_else(|| drift_store::aligned_buffer(BLOCK));
        let block = std::mem::replace(&mut self.filling, next);
        let uncached = self.uncached;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let result = if uncached {
                drift_store::write_uncached(&mut file, &block)
            } else {
                file.write_all(&block)
            };
            (file, block, result)
        }));
        Ok(())
    }
}

impl AsyncWrite for BlockWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.filling.len() == BLOCK {
            ready!(this.poll_written(cx))?;
            this.start_write()?;
        }
        // Never past BLOCK, so the buffer keeps its aligned allocation.
        let n = (BLOCK - this.filling.len()).min(data.len());
        this.filling.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_written(cx))?;
        if !this.filling.is_empty() {
            this.start_write()?;
            ready!(this.poll_written(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Sizes around the block and the alignment, fed in pieces of the
    /// transport's size and in odd ones, as a get does.
    #[tokio::test]
    async fn every_byte_lands_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0,
            1,
            4095,
            4097,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 12_345,
        ];
        for (i, &len) in sizes.iter().enumerate() {
            for piece in [61_440, 1_000] {
                let data: Vec<u8> = (0..len).map(|j| (j * 13 + i) as u8).collect();
                for uncached in [true, false] {
                    let path = dir.path().join(format!("{len}-{piece}-{uncached}"));
                    let file = File::create_new(&path).unwrap();
                    let mut out = if uncached {
                        BlockWriter::uncached(file)
                    } else {
                        BlockWriter::plain(file)
                    };
                    for p in data.chunks(piece) {
                        out.write_all(p).await.unwrap();
                    }
                    out.flush().await.unwrap();
                    let file = out.into_file().expect("flushed");
                    file.sync_all().unwrap();
                    let back = std::fs::read(&path).unwrap();
                    assert!(back == data, "{len} in {piece}s, uncached: {uncached}");
                }
            }
        }
    }

    /// What `drift get NAME | consumer` does: blocks into a pipe, read at
    /// the other end while they are written.
    #[tokio::test]
    async fn a_pipe_gets_every_byte_in_order() {
        let (mut rx, tx) = std::io::pipe().unwrap();
        let len = 3 * BLOCK + 777;
        let data: Vec<u8> = (0..len).map(|j| (j * 31 + 5) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut rx, &mut back).map(|_| back)
        });
        let mut out = BlockWriter::plain(File::from(std::os::fd::OwnedFd::from(tx)));
        for p in data.chunks(61_440) {
            out.write_all(p).await.unwrap();
        }
        out.flush().await.unwrap();
        // Closing the write end ends the reader's stream.
        drop(out.into_file().expect("flushed"));
        let back = reader.join().unwrap().unwrap();
        assert!(back == data, "{} bytes back of {len}", back.len());
    }

    /// `drift get NAME | head -c 10`: the reader goes away, and the get
    /// fails with the pipe's error instead of hanging or panicking.
    #[tokio::test]
    async fn a_closed_pipe_is_an_error() {
        let (rx, tx) = std::io::pipe().unwrap();
        drop(rx);
        let mut out = BlockWriter::plain(File::from(std::os::fd::OwnedFd::from(tx)));
        let block = vec![7u8; BLOCK];
        let wrote = out.write_all(&block).await;
        let flushed = out.flush().await;
        let err = wrote.and(flushed).expect_err("nobody reads the pipe");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }

    /// A file cut short while it is read (or grown) is not handed on as if
    /// its first part were the whole file: the stream ends with an error.
    #[tokio::test]
    async fn a_file_that_changes_size_while_read_ends_in_an_error() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shrinks");
        std::fs::write(&path, vec![5u8; 3 * BLOCK]).unwrap();
        let mut source =
            UncachedSource::new(UncachedReader::open(&path).unwrap(), 3 * BLOCK as u64);
        // The first block was read ahead when the source was made; the
        // second is being read now. Cut the file inside the third.
        assert_eq!(source.next().await.unwrap().unwrap().len(), BLOCK);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(2 * BLOCK as u64 + 10)
            .unwrap();
        let mut err = None;
        while let Some(block) = source.next().await {
            if let Err(e) = block {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("a file cut short read as if whole");
        assert!(
            err.to_string().contains("changed size while it was read"),
            "{err}"
        );
        // Growing counts too: the size it was opened with is what is stored.
        std::fs::write(&path, vec![5u8; 10]).unwrap();
        let mut source = UncachedSource::new(UncachedReader::open(&path).unwrap(), 5);
        assert!(source.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_file_reads_back_whole_in_blocks() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [0, 1, 4096, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 999]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            let path = dir.path().join(format!("{len}"));
            std::fs::write(&path, &data).unwrap();
            // Dropping each block before the next (as a put does) lets its
            // buffer be read into again; keeping them all must not change
            // a byte of what comes back.
            for keep in [false, true] {
                let mut source =
                    UncachedSource::new(UncachedReader::open(&path).unwrap(), len as u64);
                let mut back = Vec::new();
                let mut kept = Vec::new();
                let mut sizes = Vec::new();
                while let Some(block) = source.next().await {
                    let block = block.unwrap();
                    sizes.push(block.len());
                    back.extend_from_slice(&block);
                    if keep {
                        kept.push(block);
                    }
                }
                assert!(back == data, "{len} bytes, blocks kept: {keep}");
                let kept_bytes: Vec<u8> = kept.concat();
                assert!(
                    !keep || kept_bytes == data,
                    "{len} bytes, kept blocks changed"
                );
                let (last, full) = sizes.split_last().map_or((0, &[][..]), |(l, f)| (*l, f));
                assert!(
                    full.iter().all(|s| *s == BLOCK),
                    "{len} bytes in blocks {sizes:?}"
                );
                assert!(
                    last <= BLOCK && (len == 0 || last > 0),
                    "{len} bytes in blocks {sizes:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_write_error_is_reported_and_later_writes_fail() {
        // A file opened read-only refuses every write.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"").unwrap();
        let mut out = BlockWriter::uncached(File::open(&path).unwrap());
        let block = vec![1u8; BLOCK];
        out.write_all(&block).await.unwrap();
        // The full block goes out with the next write; its error shows at
        // the latest on flush, and every write after it fails.
        let first = out.write_all(&block).await;
        let flushed = out.flush().await;
        assert!(first.is_err() || flushed.is_err());
        let later = out.write_all(&block).await;
        let later_flush = out.flush().await;
        assert!(later.is_err() || later_flush.is_err());
        assert!(out.into_file().is_none());
    }
}
