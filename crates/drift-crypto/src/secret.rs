//! The cluster secret and the keys derived from it, one per purpose.

use std::fmt;
use std::str::FromStr;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::chunk::ConvergenceKey;
use crate::record::{NameKey, RecordKey};

/// Length of the cluster secret in bytes.
pub const SECRET_LEN: usize = 32;

/// The one 32-byte secret every member of a cluster (and every client) holds.
///
/// All other keys are derived from it. `Debug` never prints it; the only way to
/// see its bytes is [`ClusterSecret::to_hex`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClusterSecret([u8; SECRET_LEN]);

/// Why a string is not a cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretParseError {
    /// The trimmed input does not have 64 characters.
    #[error("malformed cluster secret: expected 64 hex characters, got {0} characters")]
    Length(usize),
    /// The input has a character outside `0-9a-fA-F`.
    #[error("malformed cluster secret: it must contain only hex characters (0-9, a-f)")]
    NotHex,
}

/// Why a secret could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the operating system's random number generator: {0}")]
pub struct RngError(getrandom::Error);

impl ClusterSecret {
    /// A fresh secret from the operating system's random number generator.
    pub fn generate() -> Result<Self, RngError> {
        let mut bytes = [0u8; SECRET_LEN];
        getrandom::getrandom(&mut bytes).map_err(RngError)?;
        Ok(Self(bytes))
    }

    /// A secret from raw bytes (for tests and for key files).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters; surrounding whitespace (a trailing newline in a
    /// secret file) is ignored.
    pub fn from_hex(text: &str) -> Result<Self, SecretParseError> {
        let text = text.trim();
        let chars = text.chars().count();
        if chars != 2 * SECRET_LEN {
            return Err(SecretParseError::Length(chars));
        }
        let mut bytes = [0u8; SECRET_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| SecretParseError::NotHex)?;
        Ok(Self(bytes))
    }

    /// The secret as 64 lowercase hex characters, for `drift keygen`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Derives the 32-byte key for one purpose. Distinct purposes give
    /// independent keys (BLAKE3's key derivation mode with distinct contexts).
    pub fn derive(&self, purpose: KeyPurpose) -> [u8; 32] {
        blake3::derive_key(purpose.context(), &self.0)
    }

    /// Derives every key drift uses.
    pub fn keys(&self) -> Keys {
        Keys {
            convergence: ConvergenceKey::new(self.derive(KeyPurpose::Convergence)),
            name: NameKey::new(self.derive(KeyPurpose::NameIndex)),
            record: RecordKey::new(
                self.derive(KeyPurpose::RecordEncryption),
                self.derive(KeyPurpose::RecordMac),
            ),
            transport_psk: self.derive(KeyPurpose::TransportPsk),
        }
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl FromStr for ClusterSecret {
    type Err = SecretParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

/// What a derived key is for. Each purpose has its own derivation context, so
/// no key is ever used for two jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Keyed hash of chunk plaintext, giving the chunk's AES key.
    Convergence,
    /// Keyed hash of file names, giving name-index keys.
    NameIndex,
    /// AES-256-CTR key for small records (name-index values).
    RecordEncryption,
    /// MAC key for small records.
    RecordMac,
    /// Noise pre-shared key for the transport.
    TransportPsk,
}

impl KeyPurpose {
    /// Every purpose, for tests that check the keys are distinct.
    pub const ALL: [KeyPurpose; 5] = [
        KeyPurpose::Convergence,
        KeyPurpose::NameIndex,
        KeyPurpose::RecordEncryption,
        KeyPurpose::RecordMac,
        KeyPurpose::TransportPsk,
    ];

    // These strings are part of the on-disk and wire format: changing one
    // changes every key derived from a secret.
    fn context(self) -> &'static str {
        match self {
            KeyPurpose::Convergence => "drift 2026-11 chunk convergence key",
            KeyPurpose::NameIndex => "drift 2026-11 name index key",
            KeyPurpose::RecordEncryption => "drift 2026-11 record encryption key",
            KeyPurpose::RecordMac => "drift 2026-11 record mac key",
            KeyPurpose::TransportPsk => "drift 2026-11 noise transport psk",
        }
    }
}

/// Every key derived from one cluster secret.
#[derive(Clone)]
pub struct Keys {
    /// Seals chunks (keyed convergent encryption).
    pub convergence: ConvergenceKey,
    /// Hashes file names into name-index keys.
    pub name: NameKey,
    /// Seals name-index values.
    pub record: RecordKey,
    /// The Noise pre-shared key.
    pub transport_psk: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let s = ClusterSecret::generate().unwrap();
        let parsed = ClusterSecret::from_hex(&format!("{}\n", s.to_hex())).unwrap();
        assert_eq!(parsed.to_hex(), s.to_hex());
        assert_eq!(
            ClusterSecret::from_hex("abc").unwrap_err(),
            SecretParseError::Length(3)
        );
        let bad = "g".repeat(64);
        assert_eq!(
            ClusterSecret::from_hex(&bad).unwrap_err(),
            SecretParseError::NotHex
        );
        let multibyte = "é".repeat(32);
        assert_eq!(
            ClusterSecret::from_hex(&multibyte).unwrap_err(),
            SecretParseError::Length(32)
        );
        // 64 characters, one of them two bytes long: not hex, whatever its length in bytes.
        let one_off = format!("{}é", "a".repeat(63));
        assert_eq!(
            ClusterSecret::from_hex(&one_off).unwrap_err(),
            SecretParseError::NotHex
        );
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let s = ClusterSecret::from_bytes([0xab; 32]);
        let shown = format!("{s:?} {:?}", s.keys());
        assert!(!shown.contains("ab"), "{shown}");
        assert!(!shown.to_lowercase().contains(&s.to_hex()[..8]));
    }

    #[test]
    fn purposes_give_distinct_keys() {
        let s = ClusterSecret::from_bytes([7; 32]);
        let keys: Vec<_> = KeyPurpose::ALL.iter().map(|p| s.derive(*p)).collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let other = ClusterSecret::from_bytes([8; 32]);
        assert_ne!(
            s.derive(KeyPurpose::TransportPsk),
            other.derive(KeyPurpose::TransportPsk)
        );
    }

    #[test]
    fn generated_secrets_differ() {
        let a = ClusterSecret::generate().unwrap();
        let b = ClusterSecret::generate().unwrap();
        assert_ne!(a.to_hex(), b.to_hex());
    }
}
