//! How chunk bytes meet the page cache: large chunks bypass it with direct
//! I/O (`O_DIRECT`) where the file system and the buffer allow; the rest goes
//! through it, and large buffered chunks are dropped from it after use.
//!
//! Why: chunk bytes are cold once written (every read re-verifies them), and
//! on a VM that hands free pages back to its host, as the bench machine does,
//! every page the page cache claims anew is slow to touch. Measured there with
//! 1 MiB files (CPU time of the process doing the I/O):
//!
//! | 1 MiB files                      | CPU-ms per MiB |
//! |----------------------------------|---------------:|
//! | write + fsync, then DONTNEED     | 0.28–0.31      |
//! | direct write + fsync             | 0.09–0.15      |
//! | read, then DONTNEED              | 0.27–0.35      |
//! | direct read                      | 0.06–0.07      |
//!
//! Direct I/O needs the buffer's address, the file offset and the length
//! aligned to the device's block size ([`ALIGN`] covers every common one).
//! Writes use it for the aligned part of an aligned buffer
//! ([`aligned_buffer`] makes one) and write the short tail buffered; reads
//! use it for whole chunks into a buffer this module aligns. Everything here
//! falls back to buffered I/O: a file system that refuses direct I/O (tmpfs
//! before Linux 6.6, some network file systems) only loses speed. Durability is unchanged:
//! callers still fsync (direct writes may sit in the disk's volatile cache).

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use bytes::{Buf, BytesMut};

/// Alignment of buffers, offsets and lengths for direct I/O.
pub const ALIGN: usize = 4096;

/// Chunks at least this large bypass (or leave) the page cache; smaller ones
/// (small files, manifests) stay cached: dropping them sent every 4 KiB get
/// to the disk (24,800 -> 16,200 gets/s on the bench machine).
pub(crate) const UNCACHED_MIN: usize = 64 * 1024;

/// An empty buffer with room for `len` bytes whose first byte is
/// [`ALIGN`]-aligned, so [`ChunkStore::put`](crate::ChunkStore::put) can
/// write it to disk directly. Fill it without growing it past `len`
/// (growing may move the bytes off the alignment, which costs only speed).
pub fn aligned_buffer(len: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(len + ALIGN);
    let skip = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
    buf.resize(skip, 0);
    buf.advance(skip);
    buf
}

pub(crate) fn is_aligned(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize).is_multiple_of(ALIGN)
}

/// Writes `bytes` at `file`'s position, bypassing the page cache where it
/// can: the aligned part of a large buffer that is aligned in memory (see
/// [`aligned_buffer`]), written at an aligned position, goes to the disk
/// directly and the tail through the page cache; anything else is written
/// buffered. For large files written block by block (a chunk, or a fetched
/// file of any size): on the bench machine, 1 GiB written buffered and
/// fsynced took 2.9 s, 2.4 of them system time, and 0.9 s directly.
///
/// As with any write, call `sync_all` before relying on the bytes.
pub fn write_uncached(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() >= UNCACHED_MIN && is_aligned(bytes) {
        let at = file.stream_position()?;
        if at.is_multiple_of(ALIGN as u64) {
            return write_direct(file, at, bytes);
        }
    }
    file.write_all(bytes)
}

/// Writes the aligned part of `bytes` at `at` (the file's position) with
/// direct I/O and the tail buffered. If the direct part fails for any reason
/// (an unusual block size, a misaligned buffer, a file system with its own
/// rules), all of it is written again, buffered, from `at`, over whatever
/// went through; only that attempt's error is reported (a full disk fails
/// both ways).
fn write_direct(file: &mut File, at: u64, bytes: &[u8]) -> io::Result<()> {
    if set_direct(file, true).is_err() {
        return file.write_all(bytes);
    }
    let direct_len = bytes.len() / ALIGN * ALIGN;
    let direct = file.write_all(&bytes[..direct_len]);
    set_direct(file, false)?;
    if direct.is_err() {
        file.seek(io::SeekFrom::Start(at))?;
        return file.write_all(bytes);
    }
    file.write_all(&bytes[direct_len..])
}

/// A file read block by block straight from the disk, where the file system
/// allows direct I/O, without filling the page cache: on the bench machine,
/// 1 GiB not in the cache read through it took 1.9 s, 1.6 of them system
/// time, and 0.8 s directly. The price: a file that is in the cache is read
/// from the disk all the same (0.7 s for that 1 GiB here, against 0.2 s from
/// memory). Probing the cache first (`RWF_NOWAIT`) would not help: a probe
/// that misses starts readahead into the cache.
#[derive(Debug)]
pub struct UncachedReader {
    cached: File,
    direct: Option<File>,
}

impl UncachedReader {
    /// Opens `path` for reading (a regular file twice, where direct I/O is
    /// available).
    pub fn open(path: &std::path::Path) -> io::Result<UncachedReader> {
        let cached = File::open(path)?;
        let direct = if cached.metadata()?.is_file() {
            open_direct(path)
        } else {
            None
        };
        Ok(UncachedReader { cached, direct })
    }

    /// The file, opened normally (for its metadata).
    pub fn file(&self) -> &File {
        &self.cached
    }

    /// The file, opened normally (to read a FIFO or a device as a stream).
    pub fn into_file(self) -> File {
        self.cached
    }

    /// Reads up to `len` bytes at `offset` into `buf`, replacing its
    /// contents; fewer only at the end of the file. Make `buf` with
    /// [`aligned_buffer`] and keep `offset` and `len` multiples of [`ALIGN`],
    /// or every read goes through the page cache. Pass the buffer of an
    /// earlier read back in: only what lies beyond its old bytes is zeroed.
    pub fn read_at(&self, offset: u64, len: usize, buf: &mut BytesMut) -> io::Result<()> {
        make_len(buf, len);
        let mut n = 0;
        while n < len {
            let at = offset + n as u64;
            let rest = &mut buf[n..];
            let direct_ok = at.is_multiple_of(ALIGN as u64)
                && rest.len().is_multiple_of(ALIGN)
                && is_aligned(rest);
            let got = match &self.direct {
                Some(direct) if direct_ok => {
                    pread(direct, rest, at).or_else(|_| pread(&self.cached, rest, at))?
                }
                _ => pread(&self.cached, rest, at)?,
            };
            if got == 0 {
                break;
            }
            n += got;
        }
        buf.truncate(n);
        Ok(())
    }
}

/// Makes `buf` `len` bytes long to be read into. Reads need initialised
/// memory (the workspace has no unsafe), but zeroing a whole 1 MiB buffer for
/// every read cost ~6 % of a serving node's CPU and 7.5 % of a `drift put`
/// client's; a reused buffer holds the bytes of its last read, so only what
/// lies beyond them is zeroed.
fn make_len(buf: &mut BytesMut, len: usize) {
    if buf.len() > len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
}

/// `pread` that retries when interrupted.
fn pread(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    loop {
        match read_at(file, buf, at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, at)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, at)
}

/// Opens `path` for reading without waiting for a writer if it is a FIFO;
/// for a regular file, the same as [`File::open`].
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(crate) fn open_nonblocking(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(crate) fn open_nonblocking(path: &std::path::Path) -> io::Result<File> {
    File::open(path)
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn open_direct(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn open_direct(_: &std::path::Path) -> Option<File> {
    None
}

/// Reads the whole of a chunk file that `fstat` says is `len` bytes long
/// (at most `max`), directly when it is large; a direct read that fails for
/// any reason is done again, buffered, from the start. Returns at most
/// `max + 1` bytes, so a file that grew past the limit shows as too long.
/// `spare`, a buffer an earlier read returned, is read into if it suits.
pub(crate) fn read_all(
    file: &mut File,
    len: usize,
    max: usize,
    spare: Option<BytesMut>,
) -> io::Result<BytesMut> {
    if len >= UNCACHED_MIN && len <= max && set_direct(file, true).is_ok() {
        if let Ok(buf) = read_direct(file, len, spare) {
            return Ok(buf);
        }
        set_direct(file, false)?;
        file.seek(io::SeekFrom::Start(0))?;
    }
    let mut buf = Vec::with_capacity(len.min(max));
    file.take(max as u64 + 1).read_to_end(&mut buf)?;
    drop_from_cache(file, buf.len());
    // No copy: the vector's allocation becomes the buffer's.
    Ok(BytesMut::from(bytes::Bytes::from(buf)))
}

/// Reads up to `len` rounded up to [`ALIGN`] bytes with direct I/O, into
/// `spare` if it is aligned and large enough.
fn read_direct(file: &mut File, len: usize, spare: Option<BytesMut>) -> io::Result<BytesMut> {
    let cap = len.div_ceil(ALIGN) * ALIGN;
    let mut buf = match spare {
        Some(b) if is_aligned(&b) && b.capacity() >= cap => b,
        _ => aligned_buffer(cap),
    };
    make_len(&mut buf, cap);
    let mut n = 0;
    while n < cap {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                // A short read ends at the end of the file; the next offset
                // would not be aligned.
                if !k.is_multiple_of(ALIGN) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    Ok(fcntl_setfl(file, flags)?)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn set_direct(_: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::ErrorKind::Unsupported.into())
    } else {
        Ok(())
    }
}

/// Lets the kernel drop a large chunk's pages from the page cache: after a
/// buffered write (once fsynced, when they are clean) and after a buffered
/// read. Advice only: a failure changes nothing but speed.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(crate) fn drop_from_cache(file: &File, len: usize) {
    if len >= UNCACHED_MIN {
        let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(crate) fn drop_from_cache(_: &File, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_start_aligned_and_hold_their_length() {
        for len in [0, 1, 4095, 4096, 65_536, 1 << 20, (1 << 20) + 17] {
            let mut b = aligned_buffer(len);
            assert!(b.is_empty());
            assert!(b.capacity() >= len, "{len}");
            b.resize(len, 7);
            assert!(is_aligned(&b), "{len}");
            // Freezing keeps the bytes where they are, and so does taking
            // the buffer back once it is no longer shared (a spare).
            let frozen = b.freeze();
            assert!(is_aligned(&frozen) || len == 0, "{len}");
            let back = frozen.try_into_mut().unwrap();
            assert!(is_aligned(&back) || len == 0, "{len}");
            assert!(back.capacity() >= len && back.len() == len, "{len}");
        }
    }

    /// A spare buffer is read into without zeroing what the read overwrites,
    /// and holds exactly the file's bytes afterwards, whatever it held before.
    #[test]
    fn reads_into_a_spare_buffer_return_only_the_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(1 << 20)).map(|j| (j % 253) as u8).collect();
        let small: Vec<u8> = (0..100_000).map(|j| (j % 7) as u8).collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("small"), &small).unwrap();
        let read = |name: &str, len: usize, spare: Option<BytesMut>| {
            let mut f = File::open(dir.path().join(name)).unwrap();
            read_all(&mut f, len, 2 << 20, spare).unwrap()
        };
        let first = read("big", big.len(), None);
        let ptr = first.as_ptr();
        let second = read("small", small.len(), Some(first));
        assert_eq!(&second[..], &small[..]);
        let third = read("big", big.len(), Some(second));
        assert_eq!(&third[..], &big[..]);
        if third.as_ptr() == ptr {
            // Reused (direct I/O worked here): the same memory, refilled.
            assert!(is_aligned(&third));
        }
        // An unaligned or too small spare is not used.
        let mut odd = BytesMut::with_capacity(2 << 20);
        odd.extend_from_slice(&[9; 3]);
        odd.advance(1);
        assert_eq!(&read("big", big.len(), Some(odd))[..], &big[..]);
        assert_eq!(&read("big", big.len(), Some(BytesMut::new()))[..], &big[..]);
    }

    /// Round trips through both paths, at sizes around the alignment and the
    /// threshold, from aligned and unaligned buffers.
    #[test]
    fn writes_and_reads_return_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            1,
            UNCACHED_MIN - 1,
            UNCACHED_MIN,
            UNCACHED_MIN + 1,
            (1 << 20) - 1,
            1 << 20,
            (1 << 20) + ALIGN + 3,
        ];
        for (i, &len) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            let mut aligned = aligned_buffer(len);
            aligned.extend_from_slice(&data);
            let unaligned = &data[..];
            for (k, bytes) in [&aligned[..], unaligned].into_iter().enumerate() {
                let path = dir.path().join(format!("{len}-{k}"));
                let mut f = File::create_new(&path).unwrap();
                write_uncached(&mut f, bytes).unwrap();
                f.sync_all().unwrap();
                drop(f);
                assert_eq!(std::fs::read(&path).unwrap(), data, "write {len} ({k})");
                let mut f = File::open(&path).unwrap();
                let back = read_all(&mut f, len, 2 << 20, None).unwrap();
                assert_eq!(&back[..], &data[..], "read {len} ({k})");
            }
        }
    }

    /// A misaligned buffer makes the kernel refuse the direct write: the
    /// fallback writes every byte buffered.
    #[test]
    fn a_refused_direct_write_falls_back_to_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * UNCACHED_MIN + 5;
        let mut buf = aligned_buffer(len + 1);
        buf.extend((0..=len).map(|j| (j % 251) as u8));
        let misaligned = &buf[1..];
        let path = dir.path().join("f");
        let mut f = File::create_new(&path).unwrap();
        write_direct(&mut f, 0, misaligned).unwrap();
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), misaligned);
    }

    /// Block after block, as a fetched file is written: aligned blocks at
    /// aligned positions go direct, a short block moves the position off the
    /// alignment and later blocks are written buffered; a refused direct
    /// write starts again where it began, not at the start of the file.
    #[test]
    fn appended_blocks_land_in_order_whatever_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = [1 << 20, 1 << 20, UNCACHED_MIN + 7, 1 << 20, 3, 1 << 20];
        let mut want = Vec::new();
        let path = dir.path().join("f");
        let mut f = File::create_new(&path).unwrap();
        for (i, &len) in blocks.iter().enumerate() {
            let mut b = aligned_buffer(len);
            b.extend((0..len).map(|j| (j * 7 + i) as u8));
            write_uncached(&mut f, &b).unwrap();
            want.extend_from_slice(&b);
        }
        // A misaligned buffer at a non-zero position: the kernel refuses
        // the direct part, the fallback rewrites from that position.
        let at = f.stream_position().unwrap();
        let mut b = aligned_buffer(UNCACHED_MIN + 1);
        b.extend((0..=UNCACHED_MIN).map(|j| (j % 13) as u8));
        write_direct(&mut f, at, &b[1..]).unwrap();
        want.extend_from_slice(&b[1..]);
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    /// Cold, warm and partly cached files read block by block give back
    /// every byte, the last block short; so do misaligned requests.
    #[test]
    fn uncached_reads_return_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 3 * (1 << 20) + 5000;
        let data: Vec<u8> = (0..len).map(|j| (j % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = File::open(&path).unwrap();
        f.sync_all().unwrap();
        // Drop it from the cache, then warm one block in the middle.
        drop_from_cache(&f, len);
        let mut warm = vec![0u8; 1 << 20];
        pread(&f, &mut warm, 1 << 20).unwrap();
        let reader = UncachedReader::open(&path).unwrap();
        for block in [1usize << 20, 64 * 1024, 3000] {
            let mut back = Vec::new();
            let mut buf = aligned_buffer(block);
            let mut at = 0u64;
            loop {
                reader.read_at(at, block, &mut buf).unwrap();
                back.extend_from_slice(&buf);
                at += buf.len() as u64;
                if buf.len() < block {
                    break;
                }
            }
            assert_eq!(back.len(), data.len(), "blocks of {block}");
            assert!(back == data, "blocks of {block}");
        }
    }

    #[test]
    fn a_read_never_returns_more_than_the_limit_plus_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![1u8; 300_000]).unwrap();
        // fstat said less than the file holds (it grew): bounded by the rounding.
        let mut f = File::open(&path).unwrap();
        let got = read_all(&mut f, 100_000, 200_000, None).unwrap();
        assert!(got.len() <= 100_000usize.div_ceil(ALIGN) * ALIGN);
        // Claimed larger than the limit: buffered, cut at limit + 1.
        let mut f = File::open(&path).unwrap();
        assert_eq!(
            read_all(&mut f, 300_000, 200_000, None).unwrap().len(),
            200_001
        );
    }
}
