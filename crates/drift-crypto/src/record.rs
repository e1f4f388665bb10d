//! Sealing of small records (name-index values) and keyed hashing of names.
//!
//! A sealed record, integers big-endian:
//!
//! ```text
//! +---------+-----------+----------------------+----------+
//! | version | nonce     | ciphertext           | tag      |
//! | 1 byte  | 16 bytes  | len(plaintext) bytes | 32 bytes |
//! +---------+-----------+----------------------+----------+
//! ciphertext = AES-256-CTR(K_rec_enc, iv = nonce, plaintext)
//! tag        = BLAKE3-keyed(K_rec_mac, len(ad) as u64 || ad || version || nonce || ciphertext)
//! ```
//!
//! Encrypt-then-MAC with a random nonce; the associated data `ad` (the record's
//! index key) binds a value to its slot, so values cannot be swapped between names.

use std::fmt;

use aes::cipher::{KeyIvInit, StreamCipher};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

const RECORD_VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// Bytes a sealed record adds to its plaintext.
pub const RECORD_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Length of a keyed name hash.
pub const NAME_HASH_LEN: usize = 32;

/// Hashes file names into name-index keys, so names never appear on disk.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct NameKey([u8; 32]);

impl NameKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The index key of a name: BLAKE3-keyed(K_name, name).
    pub fn hash(&self, name: &[u8]) -> [u8; NAME_HASH_LEN] {
        *blake3::keyed_hash(&self.0, name).as_bytes()
    }
}

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NameKey(<redacted>)")
    }
}

/// Seals and opens small records.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RecordKey {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordKey(<redacted>)")
    }
}

/// Why a sealed record did not open. No plaintext is released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than the fixed overhead.
    #[error("sealed record is truncated ({0} bytes)")]
    Truncated(usize),
    /// A format version this build does not know.
    #[error("sealed record has unknown format version {0}")]
    UnknownVersion(u8),
    /// The tag does not match: changed bytes, a record moved from another
    /// slot, or a different cluster secret.
    #[error(
        "sealed record failed authentication: it was changed, moved, or sealed with another cluster secret"
    )]
    BadTag,
}

/// Why a record could not be sealed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the operating system's random number generator: {0}")]
pub struct SealError(getrandom::Error);

impl RecordKey {
    pub(crate) fn new(enc: [u8; 32], mac: [u8; 32]) -> Self {
        Self { enc, mac }
    }

    fn tag(&self, ad: &[u8], header_and_ct: &[u8]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.mac);
        h.update(&(ad.len() as u64).to_be_bytes());
        h.update(ad);
        h.update(header_and_ct);
        *h.finalize().as_bytes()
    }

    /// Seals `plaintext`, bound to the associated data `ad`.
    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(SealError)?;
        let mut out = Vec::with_capacity(plaintext.len() + RECORD_OVERHEAD);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        Aes256Ctr::new((&self.enc).into(), (&nonce).into())
            .apply_keystream(&mut out[1 + NONCE_LEN..]);
        let tag = self.tag(ad, &out);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a record sealed by [`RecordKey::seal`] with the same `ad`.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, RecordError> {
        if sealed.len() < RECORD_OVERHEAD {
            return Err(RecordError::Truncated(sealed.len()));
        }
        if sealed[0] != RECORD_VERSION {
            return Err(RecordError::UnknownVersion(sealed[0]));
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        if !bool::from(self.tag(ad, body).ct_eq(tag)) {
            return Err(RecordError::BadTag);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[1..1 + NONCE_LEN]);
        let mut plaintext = body[1 + NONCE_LEN..].to_vec();
        Aes256Ctr::new((&self.enc).into(), (&nonce).into()).apply_keystream(&mut plaintext);
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterSecret;
    use proptest::prelude::*;

    fn key(b: u8) -> RecordKey {
        ClusterSecret::from_bytes([b; 32]).keys().record
    }

    /// A record sealed by an earlier release (the nonce is random, so the
    /// bytes were recorded once): every later release must open it.
    #[test]
    fn a_record_sealed_by_an_earlier_release_opens() {
        let sealed = hex::decode(concat!(
            "010983d965460df78786a264205a59324be8af3acac8c555138bf690e2674772fa4b4dba838f250a1aa5ae4321",
            "83d006bbe5101093cd09de7173bd47a2cb8cf4cf64e1f267a2ca86dff55bf0b85678818474009205ce2d06867a9d",
        ))
        .unwrap();
        let plain = key(4).open(b"name slot", &sealed).unwrap();
        assert_eq!(plain, b"a record longer than one 16-byte AES block");
    }

    proptest! {
        #[test]
        fn round_trip(ad in proptest::collection::vec(any::<u8>(), 0..64),
                      data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let k = key(1);
            let sealed = k.seal(&ad, &data).unwrap();
            prop_assert_eq!(sealed.len(), data.len() + RECORD_OVERHEAD);
            prop_assert_eq!(k.open(&ad, &sealed).unwrap(), data);
        }

        #[test]
        fn tampering_is_detected(data in proptest::collection::vec(any::<u8>(), 0..512),
                                 pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = key(2);
            let mut sealed = k.seal(b"slot", &data).unwrap();
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(k.open(b"slot", &sealed).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = key(3).open(b"x", &bytes);
        }
    }

    #[test]
    fn wrong_slot_wrong_secret_truncation() {
        let k = key(4);
        let sealed = k.seal(b"name-a", b"entry").unwrap();
        assert_eq!(k.open(b"name-b", &sealed), Err(RecordError::BadTag));
        assert_eq!(key(5).open(b"name-a", &sealed), Err(RecordError::BadTag));
        assert_eq!(
            k.open(b"name-a", &sealed[..10]),
            Err(RecordError::Truncated(10))
        );
        assert!(k.open(b"name-a", &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let k = key(6);
        assert_ne!(k.seal(b"", b"same").unwrap(), k.seal(b"", b"same").unwrap());
    }

    #[test]
    fn name_hash_is_keyed() {
        let a = ClusterSecret::from_bytes([1; 32]).keys().name;
        let b = ClusterSecret::from_bytes([2; 32]).keys().name;
        assert_eq!(a.hash(b"file"), a.hash(b"file"));
        assert_ne!(a.hash(b"file"), a.hash(b"file2"));
        assert_ne!(a.hash(b"file"), b.hash(b"file"));
    }
}
