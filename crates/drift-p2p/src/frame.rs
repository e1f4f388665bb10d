//! Length-delimited framing of the TCP byte stream, and sealing/opening frames with Noise.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use crate::proto::{LEN_FIELD_LEN, MAX_FRAME_LEN, TAG_LEN};

/// How much the reader asks the socket for at once.
const READ_CHUNK: usize = 256 * 1024;
/// Plaintexts smaller than this are copied into their own allocation, so a tiny
/// message can never pin a whole frame buffer (at most 4x memory amplification).
const SMALL_PLAINTEXT: usize = 16 * 1024;
/// Frame buffers kept for reuse per connection.
const POOL_MAX: usize = 32;

/// The frame codec: a 4-byte big-endian length, at most [`MAX_FRAME_LEN`].
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(LEN_FIELD_LEN)
        .big_endian()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// Splits `bytes` into frames as a reader would, stopping at the first error.
/// Returns the frames and whether the input ended on a frame boundary.
#[doc(hidden)]
pub fn decode_frames(bytes: &[u8]) -> (Vec<BytesMut>, Result<(), io::Error>) {
    let mut codec = codec();
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, Ok(())),
            Err(e) => return (frames, Err(e)),
        }
    }
}

/// Reads frames from a byte stream; keeps what it has buffered across calls.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    codec: LengthDelimitedCodec,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec: codec(),
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream. Cancel safe.
    pub(crate) async fn next(&mut self) -> io::Result<Option<BytesMut>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated frame",
                    ))
                };
            }
        }
    }
}

/// Appends one length-prefixed frame holding `body` to `out`.
pub(crate) fn put_frame(out: &mut BytesMut, body: &[u8]) {
    out.put_u32(body.len() as u32);
    out.extend_from_slice(body);
}

/// The sending half of a Noise transport: seals plaintexts into frames.
pub(crate) struct Sealer {
    noise: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    pub(crate) fn new(noise: Arc<StatelessTransportState>) -> Self {
        Sealer { noise, nonce: 0 }
    }

    /// Appends the frame carrying `plain` (at most `MAX_FRAME_LEN - 16` bytes) to `out`.
    pub(crate) fn seal_into(
        &mut self,
        plain: &[u8],
        out: &mut BatchBuf,
    ) -> Result<(), snow::Error> {
        let start = out.used;
        let end = start + LEN_FIELD_LEN + plain.len() + TAG_LEN;
        if out.buf.len() < end {
            out.buf.resize(end, 0);
        }
        let n = self.noise.write_message(
            self.nonce,
            plain,
            &mut out.buf[start + LEN_FIELD_LEN..end],
        )?;
        self.nonce += 1;
        out.buf[start..start + LEN_FIELD_LEN].copy_from_slice(&(n as u32).to_be_bytes());
        out.used = start + LEN_FIELD_LEN + n;
        Ok(())
    }
}

/// The writer's output buffer. Its bytes stay initialized between batches
/// (only `used` is reset), so sealing never pays for zeroing memory.
pub(crate) struct BatchBuf {
    buf: Vec<u8>,
    used: usize,
}

impl BatchBuf {
    pub(crate) fn new(capacity: usize) -> Self {
        BatchBuf {
            buf: vec![0; capacity],
            used: 0,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.used]
    }

    pub(crate) fn len(&self) -> usize {
        self.used
    }

    pub(crate) fn clear(&mut self) {
        self.used = 0;
    }
}

/// The receiving half of a Noise transport: opens frames into plaintexts.
///
/// Large plaintexts are decrypted into frame-sized buffers from a pool and
/// handed out as `Bytes` without a copy; the buffer returns to the pool when the
/// application drops the last reference. Pooled buffers stay initialized, so
/// no frame pays for zeroing or fresh pages.
pub(crate) struct Opener {
    noise: Arc<StatelessTransportState>,
    nonce: u64,
    pool: Arc<Pool>,
}

#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        let reused = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; MAX_FRAME_LEN])
    }

    fn put(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

/// A pooled buffer owned by a `Bytes`.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

impl Opener {
    pub(crate) fn new(noise: Arc<StatelessTransportState>) -> Self {
        Opener {
            noise,
            nonce: 0,
            pool: Arc::default(),
        }
    }

    /// Decrypts and authenticates one frame body (at most `MAX_FRAME_LEN` bytes).
    pub(crate) fn open(&mut self, frame: &[u8]) -> Result<Bytes, snow::Error> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(snow::Error::Input);
        }
        let mut buf = self.pool.take();
        // ring decrypts in place, so the output needs room for the tag too.
        let opened = self
            .noise
            .read_message(self.nonce, frame, &mut buf[..frame.len()]);
        let n = match opened {
            Ok(n) => n,
            Err(e) => {
                self.pool.put(buf);
                return Err(e);
            }
        };
        self.nonce += 1;
        if n < SMALL_PLAINTEXT {
            let small = Bytes::copy_from_slice(&buf[..n]);
            self.pool.put(buf);
            return Ok(small);
        }
        Ok(Bytes::from_owner(Pooled {
            buf,
            len: n,
            pool: self.pool.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for b in bodies {
            put_frame(&mut out, b);
        }
        out.to_vec()
    }

    proptest! {
        #[test]
        fn frames_survive_any_split(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let stream = framed(&bodies);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut codec = codec();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            for cut in cuts {
                buf.extend_from_slice(&stream[at..cut]);
                at = cut;
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert_eq!(got, bodies);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let (frames, _) = decode_frames(&bytes);
            for f in frames {
                prop_assert!(f.len() <= MAX_FRAME_LEN);
            }
        }
    }

    #[test]
    fn oversized_lengths_are_rejected_before_allocating() {
        for claim in [u32::MAX, (MAX_FRAME_LEN + 1) as u32] {
            let mut bytes = claim.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0; 16]);
            let mut buf = BytesMut::from(&bytes[..]);
            let before = buf.capacity();
            assert!(codec().decode(&mut buf).is_err());
            assert!(buf.capacity() <= before.max(64));
        }
        let (frames, res) = decode_frames(&[0, 0, 0, 10, 1, 2]);
        assert!(frames.is_empty());
        assert!(
            res.is_err(),
            "a truncated frame is an error at end of stream"
        );
    }
}
