//! Length-delimited framing of the TCP byte stream, and sealing/opening frames
//! with the transport keys from the Noise handshake.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use crate::proto::{LEN_FIELD_LEN, MAX_FRAME_LEN, TAG_LEN};

/// How much the reader asks the socket for at once.
const READ_CHUNK: usize = 256 * 1024;
/// Plaintexts smaller than this are copied into their own allocation; larger ones
/// stay in (and keep alive) the reader's chunk of [`CHUNK_LEN`] bytes, shared
/// with the frames read with them. This bounds the memory a held payload can
/// pin to about 10x its size (about 1x for a run of full frames).
const SMALL_PLAINTEXT: usize = 32 * 1024;

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
///
/// Handshake frames come from [`FrameReader::next`]. Transport frames come
/// from [`FrameReader::next_open`], which reads the socket into pooled chunks,
/// decrypts every complete frame in place in the chunk, and hands large
/// plaintexts out as slices of it (see [`SMALL_PLAINTEXT`]). A chunk that
/// handed out slices goes back to the pool when the last of them is dropped;
/// pooled chunks stay initialized, so no read pays for zeroing or fresh pages.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    codec: LengthDelimitedCodec,
    /// The transport read chunk, once the handshake is over; `chunk[lo..hi]`
    /// is read but not yet opened.
    chunk: Vec<u8>,
    lo: usize,
    hi: usize,
    /// Opened plaintexts (or the first failure) not yet returned.
    ready: VecDeque<Result<Bytes, CryptoError>>,
    pool: Arc<Pool>,
}

/// Bytes of a transport read chunk: room for a read of `READ_CHUNK` after a
/// partial frame.
const CHUNK_LEN: usize = READ_CHUNK + LEN_FIELD_LEN + MAX_FRAME_LEN;
/// Chunks kept for reuse per connection.
const POOL_MAX: usize = 8;

#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        let reused = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; CHUNK_LEN])
    }

    fn put(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

/// A pooled chunk owned by the `Bytes` slices handed out of it.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec: codec(),
            chunk: Vec::new(),
            lo: 0,
            hi: 0,
            ready: VecDeque::new(),
            pool: Arc::default(),
        }
    }

    /// The next transport frame, opened: `Ok(Some(Err(_)))` if it does not
    /// authenticate, `Ok(None)` on a clean end of stream. Cancel safe.
    pub(crate) async fn next_open(
        &mut self,
        opener: &mut Opener,
    ) -> io::Result<Option<Result<Bytes, CryptoError>>> {
        if self.chunk.is_empty() {
            // First call after the handshake: take over what it read ahead.
            self.chunk = self.pool.take();
            let ahead = std::mem::take(&mut self.buf);
            if ahead.len() > self.chunk.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame too large",
                ));
            }
            self.chunk[..ahead.len()].copy_from_slice(&ahead);
            (self.lo, self.hi) = (0, ahead.len());
        }
        loop {
            if let Some(opened) = self.ready.pop_front() {
                return Ok(Some(opened));
            }
            self.open_buffered(opener)?;
            if !self.ready.is_empty() {
                continue;
            }
            // Make room for the rest of the partial frame and a full read.
            if self.chunk.len() - self.hi < READ_CHUNK {
                self.chunk.copy_within(self.lo..self.hi, 0);
                (self.lo, self.hi) = (0, self.hi - self.lo);
            }
            let n = self.io.read(&mut self.chunk[self.hi..]).await?;
            if n == 0 {
                return if self.hi == self.lo {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated frame",
                    ))
                };
            }
            self.hi += n;
        }
    }

    /// Opens every complete frame in `chunk[lo..hi]` into `ready`, stopping
    /// at the first that fails. If any plaintext stays in the chunk, the
    /// chunk is handed to the `Bytes` and the partial tail moves to a new one.
    fn open_buffered(&mut self, opener: &mut Opener) -> io::Result<()> {
        let mut kept = Vec::new();
        while self.hi - self.lo >= LEN_FIELD_LEN {
            let mut len_field = [0u8; LEN_FIELD_LEN];
            len_field.copy_from_slice(&self.chunk[self.lo..self.lo + LEN_FIELD_LEN]);
            let len = u32::from_be_bytes(len_field) as usize;
            if len > MAX_FRAME_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame too large",
                ));
            }
            let body = self.lo + LEN_FIELD_LEN;
            if self.hi - body < len {
                break;
            }
            self.lo = body + len;
            match opener.open_in_place(&mut self.chunk[body..body + len]) {
                Ok(n) if n < SMALL_PLAINTEXT => {
                    self.ready
                        .push_back(Ok(Bytes::copy_from_slice(&self.chunk[body..body + n])));
                }
                Ok(n) => {
                    kept.push((self.ready.len(), body, n));
                    self.ready.push_back(Ok(Bytes::new()));
                }
                Err(e) => {
                    self.ready.push_back(Err(e));
                    break;
                }
            }
        }
        if !kept.is_empty() {
            let mut next = self.pool.take();
            let tail = self.hi - self.lo;
            next[..tail].copy_from_slice(&self.chunk[self.lo..self.hi]);
            let full = std::mem::replace(&mut self.chunk, next);
            (self.lo, self.hi) = (0, tail);
            let shared = Bytes::from_owner(Pooled {
                buf: full,
                pool: self.pool.clone(),
            });
            for (at, body, n) in kept {
                self.ready[at] = Ok(shared.slice(body..body + n));
            }
        }
        Ok(())
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

/// Why a frame could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CryptoError {
    /// The 64-bit nonce counter is used up; the connection must close rather
    /// than reuse a nonce.
    #[error("nonce counter exhausted")]
    Exhausted,
    /// The plaintext or ciphertext does not fit a frame.
    #[error("frame too large")]
    TooLarge,
    /// The frame is not a ciphertext of ours under this key and nonce.
    #[error("decrypt error")]
    Decrypt,
}

/// One direction's AES-256-GCM cipher with Noise's nonce and empty associated
/// data, so frames are byte-for-byte what snow's transport mode produces:
/// nonce = 4 zero bytes || counter as 64-bit big-endian, the counter starting
/// at 0 and advancing once per frame. Counter value `u64::MAX` is reserved by
/// Noise and never used; reaching it is [`CryptoError::Exhausted`].
struct Cipher {
    key: LessSafeKey,
    counter: u64,
}

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!());
        Cipher {
            key: LessSafeKey::new(unbound),
            counter: 0,
        }
    }

    /// The nonce for the next frame; advances the counter.
    fn next_nonce(&mut self) -> Result<Nonce, CryptoError> {
        if self.counter == u64::MAX {
            return Err(CryptoError::Exhausted);
        }
        let mut bytes = [0u8; NONCE_LEN];
        bytes[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(Nonce::assume_unique_for_key(bytes))
    }
}

/// The sending half of the transport: seals plaintexts into frames.
pub(crate) struct Sealer {
    cipher: Cipher,
}

impl Sealer {
    /// `key` is this side's sending key from the Noise split.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Sealer {
            cipher: Cipher::new(key),
        }
    }

    /// Appends the frame carrying `plain` (at most `MAX_FRAME_LEN - 16` bytes) to
    /// `out`: the plaintext is copied once, into its place in the output, and
    /// encrypted there.
    pub(crate) fn seal_into(
        &mut self,
        plain: &[u8],
        out: &mut BatchBuf,
    ) -> Result<(), CryptoError> {
        let body_len = plain.len() + TAG_LEN;
        if body_len > MAX_FRAME_LEN {
            return Err(CryptoError::TooLarge);
        }
        let nonce = self.cipher.next_nonce()?;
        let start = out.used;
        let text = start + LEN_FIELD_LEN;
        let end = text + body_len;
        if out.buf.len() < end {
            out.buf.resize(end, 0);
        }
        out.buf[start..text].copy_from_slice(&(body_len as u32).to_be_bytes());
        let (text_buf, tag_buf) = out.buf[text..end].split_at_mut(plain.len());
        text_buf.copy_from_slice(plain);
        let tag = self
            .cipher
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), text_buf)
            .map_err(|_| CryptoError::TooLarge)?;
        tag_buf.copy_from_slice(tag.as_ref());
        out.used = end;
        Ok(())
    }

    /// Seals the plaintext `buf[start..]` in place into a frame, which is then
    /// `buf[start - LEN_FIELD_LEN..]`: the length goes in the `LEN_FIELD_LEN`
    /// bytes before `start` (which must exist), the tag is appended.
    pub(crate) fn seal_in_place(
        &mut self,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), CryptoError> {
        let Some(len_at) = start.checked_sub(LEN_FIELD_LEN) else {
            return Err(CryptoError::TooLarge);
        };
        let body_len = buf.len().saturating_sub(start) + TAG_LEN;
        if body_len > MAX_FRAME_LEN || start > buf.len() {
            return Err(CryptoError::TooLarge);
        }
        let nonce = self.cipher.next_nonce()?;
        let tag = self
            .cipher
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf[start..])
            .map_err(|_| CryptoError::TooLarge)?;
        buf.extend_from_slice(tag.as_ref());
        buf[len_at..start].copy_from_slice(&(body_len as u32).to_be_bytes());
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

/// The receiving half of the transport: opens frames in place, where
/// [`FrameReader::next_open`] read them.
pub(crate) struct Opener {
    cipher: Cipher,
}

impl Opener {
    /// `key` is this side's receiving key from the Noise split.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Opener {
            cipher: Cipher::new(key),
        }
    }

    /// Decrypts and authenticates one frame body (at most `MAX_FRAME_LEN`
    /// bytes) in place; returns the length of the plaintext at its start.
    pub(crate) fn open_in_place(&mut self, body: &mut [u8]) -> Result<usize, CryptoError> {
        if body.len() > MAX_FRAME_LEN {
            return Err(CryptoError::TooLarge);
        }
        if body.len() < TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        let nonce = self.cipher.next_nonce()?;
        self.cipher
            .key
            .open_in_place(nonce, Aad::empty(), body)
            .map(|plain| plain.len())
            .map_err(|_| CryptoError::Decrypt)
    }

    /// [`Opener::open_in_place`] on an owned frame, returning the plaintext.
    #[cfg(test)]
    pub(crate) fn open(&mut self, mut frame: BytesMut) -> Result<Bytes, CryptoError> {
        let n = self.open_in_place(&mut frame)?;
        frame.truncate(n);
        Ok(frame.freeze())
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

    /// Two snow handshake states that completed `XXpsk3` with each other.
    fn snow_pair() -> (snow::HandshakeState, snow::HandshakeState) {
        let params: snow::params::NoiseParams = "Noise_XXpsk3_25519_AESGCM_SHA256".parse().unwrap();
        let psk = [7u8; 32];
        let keys = |_| {
            snow::Builder::new(params.clone())
                .generate_keypair()
                .unwrap()
        };
        let (ki, kr) = (keys(0), keys(1));
        let mut i = snow::Builder::new(params.clone())
            .local_private_key(&ki.private)
            .and_then(|b| b.psk(3, &psk))
            .and_then(|b| b.build_initiator())
            .unwrap();
        let mut r = snow::Builder::new(params.clone())
            .local_private_key(&kr.private)
            .and_then(|b| b.psk(3, &psk))
            .and_then(|b| b.build_responder())
            .unwrap();
        let (mut msg, mut scratch) = (vec![0u8; 1024], vec![0u8; 1024]);
        let n = i.write_message(&[], &mut msg).unwrap();
        r.read_message(&msg[..n], &mut scratch).unwrap();
        let n = r.write_message(&[], &mut msg).unwrap();
        i.read_message(&msg[..n], &mut scratch).unwrap();
        let n = i.write_message(&[], &mut msg).unwrap();
        r.read_message(&msg[..n], &mut scratch).unwrap();
        (i, r)
    }

    /// Our frames are exactly snow's transport messages, in both directions,
    /// small (copied out) and large (opened in place) alike.
    #[test]
    fn frames_match_snow_transport_mode() {
        let (mut i, r) = snow_pair();
        let (i_to_r, r_to_i) = i.dangerously_get_raw_split();
        let snow_i = i.into_stateless_transport_mode().unwrap();
        let snow_r = r.into_stateless_transport_mode().unwrap();
        let mut sealer = Sealer::new(&i_to_r);
        let mut opener = Opener::new(&r_to_i);
        let mut out = BatchBuf::new(0);
        let mut theirs = vec![0u8; MAX_FRAME_LEN];
        let lens = [
            0usize,
            1,
            100,
            SMALL_PLAINTEXT - 1,
            SMALL_PLAINTEXT,
            MAX_FRAME_LEN - TAG_LEN,
        ];
        for (nonce, len) in lens.into_iter().enumerate() {
            let plain: Vec<u8> = (0..len).map(|b| (b * 31 + nonce) as u8).collect();
            // initiator -> responder: we seal, snow must produce the same bytes and open them.
            out.clear();
            sealer.seal_into(&plain, &mut out).unwrap();
            let n = snow_i
                .write_message(nonce as u64, &plain, &mut theirs)
                .unwrap();
            assert_eq!(&out.bytes()[..LEN_FIELD_LEN], &(n as u32).to_be_bytes());
            assert_eq!(&out.bytes()[LEN_FIELD_LEN..], &theirs[..n]);
            let mut back = vec![0u8; MAX_FRAME_LEN];
            let m = snow_r
                .read_message(nonce as u64, &out.bytes()[LEN_FIELD_LEN..], &mut back)
                .unwrap();
            assert_eq!(&back[..m], &plain[..]);
            // responder -> initiator: snow seals, we open.
            let n = snow_r
                .write_message(nonce as u64, &plain, &mut theirs)
                .unwrap();
            let opened = opener.open(BytesMut::from(&theirs[..n])).unwrap();
            assert_eq!(&opened[..], &plain[..]);
        }
        // A tampered frame, or a replayed one (stale nonce), does not open.
        let n = snow_r
            .write_message(lens.len() as u64, b"hi", &mut theirs)
            .unwrap();
        let mut bad = BytesMut::from(&theirs[..n]);
        bad[0] ^= 1;
        assert_eq!(opener.open(bad), Err(CryptoError::Decrypt));
        let mut replay = Opener::new(&r_to_i);
        assert_eq!(
            replay.open(BytesMut::from(&theirs[..n])),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            replay.open(BytesMut::from(&theirs[..3])),
            Err(CryptoError::Decrypt)
        );
    }

    /// Transport frames read in odd pieces, after a handshake frame read with
    /// `next`, open in order whatever their size; small and large plaintexts alike.
    #[tokio::test]
    async fn next_open_reads_frames_in_any_pieces() {
        let key = [9u8; 32];
        let mut sealer = Sealer::new(&key);
        let mut wire = BytesMut::new();
        put_frame(&mut wire, b"handshake");
        let mut out = BatchBuf::new(0);
        let mut sent = Vec::new();
        for i in 0..40usize {
            let len = [
                0,
                5,
                SMALL_PLAINTEXT - 1,
                SMALL_PLAINTEXT,
                MAX_FRAME_LEN - TAG_LEN,
            ][i % 5];
            let plain: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
            sealer.seal_into(&plain, &mut out).unwrap();
            sent.push(plain);
        }
        wire.extend_from_slice(out.bytes());
        let (mut tx, rx) = tokio::io::duplex(7001);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&wire).await.unwrap();
        });
        let mut reader = FrameReader::new(rx);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"handshake");
        let mut opener = Opener::new(&key);
        let mut held = Vec::new();
        for plain in &sent {
            let got = reader
                .next_open(&mut opener)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(&got[..], &plain[..]);
            held.push(got);
        }
        writer.await.unwrap();
        assert!(reader.next_open(&mut opener).await.unwrap().is_none());
        // Payloads handed out earlier are untouched by later reads.
        for (got, plain) in held.iter().zip(&sent) {
            assert_eq!(&got[..], &plain[..]);
        }
    }

    /// Sealing in place in a send buffer gives the same frames as sealing into the batch.
    #[test]
    fn sealing_in_place_matches_sealing_into_the_batch() {
        let (mut a, mut b) = (Sealer::new(&[3; 32]), Sealer::new(&[3; 32]));
        for len in [0usize, 1, 5000, MAX_FRAME_LEN - TAG_LEN] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = BatchBuf::new(0);
            a.seal_into(&plain, &mut out).unwrap();
            let mut buf = vec![0xee; 6];
            buf.extend_from_slice(&plain);
            b.seal_in_place(&mut buf, 6).unwrap();
            assert_eq!(&buf[6 - LEN_FIELD_LEN..], out.bytes());
        }
        let mut no_room = vec![0u8; 10];
        assert!(b.seal_in_place(&mut no_room, 3).is_err());
        let mut too_big = vec![0u8; MAX_FRAME_LEN + 4];
        assert!(b.seal_in_place(&mut too_big, 4).is_err());
    }

    #[test]
    fn an_exhausted_counter_never_reuses_a_nonce() {
        let mut sealer = Sealer::new(&[1; 32]);
        sealer.cipher.counter = u64::MAX - 1;
        let mut out = BatchBuf::new(0);
        sealer.seal_into(b"last", &mut out).unwrap();
        assert_eq!(
            sealer.seal_into(b"one more", &mut out),
            Err(CryptoError::Exhausted)
        );
        assert_eq!(
            sealer.seal_into(b"again", &mut out),
            Err(CryptoError::Exhausted)
        );
        let mut opener = Opener::new(&[1; 32]);
        opener.cipher.counter = u64::MAX - 1;
        let frame = BytesMut::from(&out.bytes()[LEN_FIELD_LEN..]);
        assert_eq!(&opener.open(frame.clone()).unwrap()[..], b"last");
        assert_eq!(opener.open(frame), Err(CryptoError::Exhausted));
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
