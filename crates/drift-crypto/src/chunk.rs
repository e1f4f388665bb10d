//! Chunk sealing and opening (keyed convergent encryption) and SHA-1 content ids.
//!
//! ```text
//! k          = BLAKE3-keyed(K_conv, plaintext)           32 bytes, the chunk key
//! ciphertext = AES-256-CTR(key = k, iv = 0, plaintext)   same length as plaintext
//! ChunkId    = SHA-1(ciphertext)                         20 bytes, the content address
//! ```
//!
//! `k` is unique to the content, so the fixed IV never encrypts two different
//! plaintexts under one key. Opening checks the id, decrypts, then recomputes
//! `k` from the plaintext and compares in constant time: a changed byte, a
//! truncation, a swapped chunk or a wrong key is an error, and the buffer is
//! zeroed before the error is returned, so no plaintext escapes.

use std::fmt;
use std::str::FromStr;

use aes::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Size of a [`ChunkId`] in bytes (a SHA-1 digest).
pub const CHUNK_ID_LEN: usize = 20;

/// Encryption and hashing interleave over blocks of this size, so SHA-1 reads
/// ciphertext that AES has just written and is still in the L1/L2 cache.
const PIPELINE_BLOCK: usize = 32 * 1024;

/// Computes a [`ChunkId`] over sealed bytes given in pieces ([`ChunkId::hasher`]).
#[derive(Clone)]
pub struct ChunkHasher(Sha1);

impl ChunkHasher {
    /// Adds the next piece.
    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// The id of all the pieces, in order.
    pub fn finish(self) -> ChunkId {
        ChunkId(self.0.finalize().into())
    }
}

/// The content address of a sealed chunk: SHA-1 of its ciphertext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId([u8; CHUNK_ID_LEN]);

impl ChunkId {
    /// The id of some sealed bytes.
    pub fn of(ciphertext: &[u8]) -> Self {
        Self(Sha1::digest(ciphertext).into())
    }

    /// An incremental [`ChunkId::of`], for sealed bytes that arrive in pieces:
    /// hashing each piece as it lands, while it is still in the cache, costs
    /// less than hashing the whole chunk afterwards.
    pub fn hasher() -> ChunkHasher {
        ChunkHasher(Sha1::new())
    }

    /// An id from its raw digest.
    pub fn from_bytes(bytes: [u8; CHUNK_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; CHUNK_ID_LEN] {
        &self.0
    }

    /// The id as 40 lowercase hex characters (the chunk's file name).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

/// Why a string is not a chunk id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunk id: expected 40 lowercase or uppercase hex characters")]
pub struct ChunkIdParseError;

impl FromStr for ChunkId {
    type Err = ChunkIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 2 * CHUNK_ID_LEN {
            return Err(ChunkIdParseError);
        }
        let mut bytes = [0u8; CHUNK_ID_LEN];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ChunkIdParseError)?;
        Ok(Self(bytes))
    }
}

/// A BLAKE3 digest of a sealed chunk's bytes, for carrying them across a
/// network hop: [`ConvergenceKey::seal_for_transfer`] computes it in the pass
/// that computes the id, from the same cache-hot bytes, so a receiver that
/// checks it knows it got the bytes the id was computed over (a memory error
/// or a framing bug after the seal shows as a mismatch), at about a sixth of
/// the cost of checking the SHA-1 id itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferDigest([u8; 32]);

impl TransferDigest {
    /// The digest of some sealed bytes.
    pub fn of(sealed: &[u8]) -> Self {
        Self(*blake3::hash(sealed).as_bytes())
    }

    /// An incremental [`TransferDigest::of`], for bytes that arrive in pieces.
    pub fn hasher() -> TransferHasher {
        TransferHasher(blake3::Hasher::new())
    }
}

impl fmt::Debug for TransferDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferDigest({})", hex::encode(&self.0[..8]))
    }
}

/// Computes a [`TransferDigest`] over sealed bytes given in pieces.
#[derive(Clone)]
pub struct TransferHasher(blake3::Hasher);

impl TransferHasher {
    /// Adds the next piece.
    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// The digest of all the pieces, in order.
    pub fn finish(self) -> TransferDigest {
        TransferDigest(*self.0.finalize().as_bytes())
    }
}

/// The per-chunk AES key, `BLAKE3-keyed(K_conv, plaintext)`. Whoever holds it
/// (and the id) can open the chunk; it lives only inside sealed records.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct ChunkKey([u8; 32]);

impl ChunkKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(<redacted>)")
    }
}

/// What it takes to find and open one chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Where the sealed chunk is stored.
    pub id: ChunkId,
    /// How to open it.
    pub key: ChunkKey,
}

/// The cluster-wide key of the convergent keyed hash (`K_conv`).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ConvergenceKey([u8; 32]);

impl fmt::Debug for ConvergenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConvergenceKey(<redacted>)")
    }
}

impl ConvergenceKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn chunk_key(&self, plaintext: &[u8]) -> ChunkKey {
        ChunkKey(*blake3::keyed_hash(&self.0, plaintext).as_bytes())
    }

    /// Seals `buf` in place: on return it holds the ciphertext, and the
    /// returned reference names and opens it. Identical plaintext always gives
    /// the identical chunk (this is what makes dedup work).
    pub fn seal(&self, buf: &mut [u8]) -> ChunkRef {
        self.seal_with(buf, None)
    }

    /// [`ConvergenceKey::seal`], also returning the sealed bytes'
    /// [`TransferDigest`], hashed block by block beside the id.
    pub fn seal_for_transfer(&self, buf: &mut [u8]) -> (ChunkRef, TransferDigest) {
        let mut digest = TransferDigest::hasher();
        let chunk = self.seal_with(buf, Some(&mut digest));
        (chunk, digest.finish())
    }

    fn seal_with(&self, buf: &mut [u8], mut digest: Option<&mut TransferHasher>) -> ChunkRef {
        let key = self.chunk_key(buf);
        let mut cipher = Aes256Ctr::new((&key.0).into(), &[0u8; 16].into());
        let mut sha = Sha1::new();
        for block in buf.chunks_mut(PIPELINE_BLOCK) {
            cipher.apply_keystream(block);
            sha.update(&*block);
            if let Some(d) = digest.as_deref_mut() {
                d.update(block);
            }
        }
        ChunkRef {
            id: ChunkId(sha.finalize().into()),
            key,
        }
    }

    /// Opens `buf` (a sealed chunk) in place. On success it holds the
    /// plaintext; on any error it is zeroed, so nothing half-decrypted leaks.
    pub fn open(&self, chunk: &ChunkRef, buf: &mut [u8]) -> Result<(), OpenError> {
        if ChunkId::of(buf) != chunk.id {
            return Err(OpenError::IdMismatch { id: chunk.id });
        }
        self.open_id_checked(chunk, buf)
    }

    /// [`ConvergenceKey::open`] for bytes whose id the caller has just
    /// checked (`drift-store`'s `ChunkStore::get` and a verified network
    /// fetch both do): skips the second SHA-1, the costliest step.
    ///
    /// Integrity does not rest on that check: the chunk key is a keyed hash
    /// of the plaintext, so any change to the bytes still fails with
    /// [`OpenError::KeyMismatch`] and releases nothing. The id check only
    /// names the failure ([`OpenError::IdMismatch`]) before decrypting.
    pub fn open_id_checked(&self, chunk: &ChunkRef, buf: &mut [u8]) -> Result<(), OpenError> {
        let mut cipher = Aes256Ctr::new((&chunk.key.0).into(), &[0u8; 16].into());
        cipher.apply_keystream(buf);
        let expected = self.chunk_key(buf);
        if bool::from(expected.0.ct_eq(&chunk.key.0)) {
            Ok(())
        } else {
            buf.zeroize();
            Err(OpenError::KeyMismatch { id: chunk.id })
        }
    }
}

/// Why a sealed chunk did not open. No plaintext is released in either case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The bytes are not the ones the id names (changed, truncated or swapped).
    #[error("chunk {id} is corrupt: its bytes do not match its SHA-1 id")]
    IdMismatch {
        /// The chunk that was asked for.
        id: ChunkId,
    },
    /// The bytes match the id but the key is wrong for them (a forged
    /// reference, or a different cluster secret).
    #[error("chunk {id} failed authentication: wrong key or wrong cluster secret")]
    KeyMismatch {
        /// The chunk that was asked for.
        id: ChunkId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterSecret;
    use proptest::prelude::*;

    fn conv(byte: u8) -> ConvergenceKey {
        ClusterSecret::from_bytes([byte; 32]).keys().convergence
    }

    proptest! {
        #[test]
        fn hashing_in_pieces_gives_the_same_id(
            data in proptest::collection::vec(any::<u8>(), 0..100_000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut h = ChunkId::hasher();
            let mut at = 0;
            for cut in cuts {
                h.update(&data[at..cut]);
                at = cut;
            }
            prop_assert_eq!(h.finish(), ChunkId::of(&data));
        }

        #[test]
        fn sealing_for_transfer_gives_the_same_chunk_and_the_digest_of_its_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..200_000),
            cut in any::<prop::sample::Index>(),
        ) {
            let k = conv(1);
            let (mut plain, mut sealed) = (data.clone(), data);
            let r = k.seal(&mut plain);
            let (r2, digest) = k.seal_for_transfer(&mut sealed);
            prop_assert_eq!(&r, &r2);
            prop_assert_eq!(&plain, &sealed);
            prop_assert_eq!(digest, TransferDigest::of(&sealed));
            let cut = cut.index(sealed.len() + 1);
            let mut h = TransferDigest::hasher();
            h.update(&sealed[..cut]);
            h.update(&sealed[cut..]);
            prop_assert_eq!(h.finish(), digest);
            if !sealed.is_empty() {
                let at = cut.min(sealed.len() - 1);
                sealed[at] ^= 1;
                prop_assert_ne!(TransferDigest::of(&sealed), digest);
            }
        }

        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..200_000)) {
            let k = conv(1);
            let mut buf = data.clone();
            let r = k.seal(&mut buf);
            prop_assert_eq!(r.id, ChunkId::of(&buf));
            if data.len() >= 16 {
                prop_assert_ne!(&buf, &data);
            }
            k.open(&r, &mut buf).unwrap();
            prop_assert_eq!(buf, data);
        }

        #[test]
        fn any_flipped_bit_is_detected(
            data in proptest::collection::vec(any::<u8>(), 1..5_000),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let k = conv(2);
            let mut buf = data.clone();
            let r = k.seal(&mut buf);
            let i = pos.index(buf.len());
            buf[i] ^= 1 << bit;
            let mut unchecked = buf.clone();
            let err = k.open(&r, &mut buf).unwrap_err();
            prop_assert_eq!(err, OpenError::IdMismatch { id: r.id });
            // Without the id check, the keyed hash still catches it and
            // releases nothing.
            let err = k.open_id_checked(&r, &mut unchecked).unwrap_err();
            prop_assert_eq!(err, OpenError::KeyMismatch { id: r.id });
            prop_assert!(unchecked.iter().all(|b| *b == 0));
        }

        #[test]
        fn truncation_is_detected(
            data in proptest::collection::vec(any::<u8>(), 1..5_000),
            cut in any::<prop::sample::Index>(),
        ) {
            let k = conv(3);
            let mut buf = data;
            let r = k.seal(&mut buf);
            buf.truncate(cut.index(buf.len()));
            prop_assert!(k.open(&r, &mut buf).is_err());
        }
    }

    /// Chunks already on disk must open with every later release: a fixed
    /// secret and plaintext give this id and these sealed bytes, which
    /// pins the key derivation, the keyed hash, AES-256-CTR (IV 0, 128-bit
    /// big-endian counter) and SHA-1 together.
    #[test]
    fn sealing_gives_the_same_bytes_as_every_earlier_release() {
        let k = conv(9);
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut buf = plain.clone();
        let r = k.seal(&mut buf);
        assert_eq!(r.id.to_hex(), "92ec9c4eee3bb7527e5b60f72b338120f7fe1ecb");
        assert_eq!(hex::encode(&buf[..16]), "264b86c27e66bc24c67754b76a365a75");
        assert_eq!(
            hex::encode(&buf[buf.len() - 16..]),
            "5125ee8ae923838737dbb71687d60d3e"
        );
        k.open(&r, &mut buf).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn identical_plaintext_gives_identical_chunks() {
        let k = conv(4);
        let (mut a, mut b) = (b"same bytes".to_vec(), b"same bytes".to_vec());
        assert_eq!(k.seal(&mut a), k.seal(&mut b));
        assert_eq!(a, b);
        let mut c = b"other bytes".to_vec();
        assert_ne!(k.seal(&mut c).id, k.seal(&mut a.clone()).id);
    }

    #[test]
    fn swapped_chunk_is_detected() {
        let k = conv(5);
        let mut a = vec![1u8; 1000];
        let mut b = vec![2u8; 1000];
        let ra = k.seal(&mut a);
        k.seal(&mut b);
        assert!(matches!(
            k.open(&ra, &mut b),
            Err(OpenError::IdMismatch { .. })
        ));
    }

    #[test]
    fn wrong_key_or_secret_releases_nothing() {
        let mut data = b"attack at dawn, attack at dawn!!".to_vec();
        let r = conv(6).seal(&mut data);
        // A different cluster secret: the id matches, the authentication fails.
        let mut buf = data.clone();
        assert_eq!(
            conv(7).open(&r, &mut buf),
            Err(OpenError::KeyMismatch { id: r.id })
        );
        assert!(buf.iter().all(|&b| b == 0), "no plaintext after failure");
        // A forged key with the right id.
        let forged = ChunkRef {
            id: r.id,
            key: ChunkKey::from_bytes([9; 32]),
        };
        let mut buf = data.clone();
        assert!(conv(6).open(&forged, &mut buf).is_err());
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn chunk_id_hex_round_trip() {
        let id = ChunkId::of(b"x");
        assert_eq!(id.to_hex().parse::<ChunkId>(), Ok(id));
        assert_eq!(id.to_string().len(), 40);
        assert!("zz".repeat(20).parse::<ChunkId>().is_err());
        assert!("../etc/passwd".parse::<ChunkId>().is_err());
        assert!("ab".parse::<ChunkId>().is_err());
    }
}
