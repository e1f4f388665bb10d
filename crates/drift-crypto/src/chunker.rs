//! Cuts any `std::io::Read` into fixed-size chunks, holding one chunk at a time.

use std::io::{self, Read};

/// The default chunk size (1 MiB). The size is recorded with each file, never assumed.
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;

/// The largest chunk size drift accepts, from a config or from a peer.
pub const MAX_CHUNK_SIZE: usize = 8 << 20;

/// Reads from `reader` until `buf` is full or the input ends, retrying
/// interrupted reads. Returns how many bytes were read; fewer than
/// `buf.len()` means end of input.
pub fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An iterator over the chunks of a reader: every chunk but the last has
/// exactly `chunk_size` bytes; empty input gives no chunks. Memory use is
/// one chunk, whatever the input's length.
pub struct Chunker<R> {
    reader: R,
    chunk_size: usize,
    done: bool,
}

impl<R: Read> Chunker<R> {
    /// Chunks `reader` into pieces of `chunk_size` bytes, clamped to
    /// `1..=MAX_CHUNK_SIZE`.
    pub fn new(reader: R, chunk_size: usize) -> Self {
        Self {
            reader,
            chunk_size: chunk_size.clamp(1, MAX_CHUNK_SIZE),
            done: false,
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = vec![0u8; self.chunk_size];
        match read_full(&mut self.reader, &mut buf) {
            Ok(n) => {
                if n < self.chunk_size {
                    self.done = true;
                    if n == 0 {
                        return None;
                    }
                    buf.truncate(n);
                }
                Some(Ok(buf))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands out its data in pieces of the given sizes.
    struct Splitting {
        data: Vec<u8>,
        pos: usize,
        splits: Vec<usize>,
        turn: usize,
    }

    impl Read for Splitting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.splits[self.turn % self.splits.len()].max(1);
            self.turn += 1;
            if self.turn % 7 == 3 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = want.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_input(
            data in proptest::collection::vec(any::<u8>(), 0..50_000),
            chunk_size in 1usize..9_000,
            splits in proptest::collection::vec(1usize..5_000, 1..8),
        ) {
            let reader = Splitting { data: data.clone(), pos: 0, splits, turn: 0 };
            let chunks: Vec<Vec<u8>> = Chunker::new(reader, chunk_size)
                .collect::<io::Result<_>>().unwrap();
            prop_assert_eq!(chunks.len(), data.len().div_ceil(chunk_size));
            for c in chunks.iter().rev().skip(1) {
                prop_assert_eq!(c.len(), chunk_size);
            }
            prop_assert_eq!(chunks.concat(), data);
        }
    }

    #[test]
    fn read_errors_surface_once() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut c = Chunker::new(Failing, 16);
        assert!(c.next().unwrap().is_err());
        assert!(c.next().is_none());
    }
}
