//! [`NameEntry`] and [`Version`], and how an entry is sealed into a name index record.
//!
//! A record in the `entries` table (an **API boundary**: the on-disk format):
//!
//! ```text
//! key   = BLAKE3-keyed(K_name, name)                              32 bytes
//! value = RecordKey::seal(ad = key, postcard(NameEntry))          see drift_crypto's record format
//!
//! postcard(NameEntry) = name: varint len + UTF-8 | version.time: varint | version.node: varint
//!                     | deleted: 1 byte | size: varint | content: varint len + bytes
//! ```
//!
//! Field order is the format: append new fields at the end, never reorder.

use drift_crypto::{Keys, NAME_HASH_LEN, NameKey, RecordKey};
use serde::{Deserialize, Serialize};

use crate::error::IndexError;

/// Orders all writes to a name: later time wins, the node id breaks ties.
///
/// The derived order compares `time` first, then `node`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    /// A hybrid logical clock reading (the server decides its unit).
    pub time: u64,
    /// The id of the node that made the write.
    pub node: u64,
}

/// What the index holds for one name: the newest write, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// The file's name.
    pub name: String,
    /// Which write this is; the greatest version wins.
    pub version: Version,
    /// A tombstone: the name was deleted at `version`.
    pub deleted: bool,
    /// The file's size in bytes.
    pub size: u64,
    /// Opaque to the store (the server's manifest); sealed with the rest.
    pub content: Vec<u8>,
}

/// The keys the index seals with (cloned out of [`Keys`]).
#[derive(Clone)]
pub(crate) struct Sealer {
    name: NameKey,
    record: RecordKey,
}

/// Associated data that binds a meta value to its key, kept apart from entry keys.
fn meta_ad(key: &str) -> Vec<u8> {
    let mut ad = b"drift meta\0".to_vec();
    ad.extend_from_slice(key.as_bytes());
    ad
}

impl Sealer {
    pub(crate) fn new(keys: &Keys) -> Sealer {
        Sealer {
            name: keys.name.clone(),
            record: keys.record.clone(),
        }
    }

    pub(crate) fn name_hash(&self, name: &str) -> [u8; NAME_HASH_LEN] {
        self.name.hash(name.as_bytes())
    }

    /// The sealed record for an entry, bound to its key.
    pub(crate) fn seal_entry(
        &self,
        key: &[u8; 32],
        entry: &NameEntry,
    ) -> Result<Vec<u8>, IndexError> {
        let plain = postcard::to_allocvec(entry).map_err(IndexError::Encode)?;
        Ok(self.record.seal(key, &plain)?)
    }

    /// Opens a record found under `key`, checking it belongs there.
    pub(crate) fn open_entry(&self, key: &[u8], sealed: &[u8]) -> Result<NameEntry, IndexError> {
        let corrupt = |reason: String| IndexError::Corrupt {
            key: hex_key(key),
            reason,
        };
        if key.len() != NAME_HASH_LEN {
            return Err(corrupt(format!("its key has {} bytes, not 32", key.len())));
        }
        let plain = self
            .record
            .open(key, sealed)
            .map_err(|e| corrupt(e.to_string()))?;
        let entry: NameEntry =
            postcard::from_bytes(&plain).map_err(|e| corrupt(format!("cannot decode it: {e}")))?;
        if self.name_hash(&entry.name) != key {
            return Err(corrupt("it names a different file than its key".into()));
        }
        Ok(entry)
    }

    pub(crate) fn seal_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, IndexError> {
        Ok(self.record.seal(&meta_ad(key), value)?)
    }

    pub(crate) fn open_meta(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>, IndexError> {
        self.record
            .open(&meta_ad(key), sealed)
            .map_err(|e| IndexError::Corrupt {
                key: format!("meta {key:?}"),
                reason: e.to_string(),
            })
    }

    pub(crate) fn record(&self) -> &RecordKey {
        &self.record
    }
}

/// A record key for messages: hex, shortened (a name hash reveals nothing).
pub(crate) fn hex_key(key: &[u8]) -> String {
    key.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use drift_crypto::ClusterSecret;
    use proptest::prelude::*;

    fn sealer(b: u8) -> Sealer {
        Sealer::new(&ClusterSecret::from_bytes([b; 32]).keys())
    }

    pub(crate) fn arb_entry() -> impl Strategy<Value = NameEntry> {
        (
            any::<String>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(name, time, node, deleted, size, content)| NameEntry {
                name,
                version: Version { time, node },
                deleted,
                size,
                content,
            })
    }

    proptest! {
        #[test]
        fn postcard_round_trip(entry in arb_entry()) {
            let bytes = postcard::to_allocvec(&entry).unwrap();
            prop_assert_eq!(postcard::from_bytes::<NameEntry>(&bytes).unwrap(), entry);
        }

        #[test]
        fn sealed_round_trip(entry in arb_entry()) {
            let s = sealer(1);
            let key = s.name_hash(&entry.name);
            let sealed = s.seal_entry(&key, &entry).unwrap();
            prop_assert_eq!(s.open_entry(&key, &sealed).unwrap(), entry);
        }

        #[test]
        fn truncated_or_flipped_records_are_corrupt(
            entry in arb_entry(),
            cut in any::<prop::sample::Index>(),
            pos in any::<prop::sample::Index>(),
        ) {
            let s = sealer(2);
            let key = s.name_hash(&entry.name);
            let sealed = s.seal_entry(&key, &entry).unwrap();
            let short = &sealed[..cut.index(sealed.len())];
            let is_corrupt = matches!(s.open_entry(&key, short), Err(IndexError::Corrupt { .. }));
            prop_assert!(is_corrupt);
            let mut flipped = sealed.clone();
            flipped[pos.index(sealed.len())] ^= 0x40;
            prop_assert!(s.open_entry(&key, &flipped).is_err());
        }

        #[test]
        fn garbage_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let s = sealer(3);
            prop_assert!(s.open_entry(&key, &bytes).is_err());
            let _ = postcard::from_bytes::<NameEntry>(&bytes);
        }

        #[test]
        fn meta_round_trip(key in any::<String>(), value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = sealer(4);
            let sealed = s.seal_meta(&key, &value).unwrap();
            prop_assert_eq!(s.open_meta(&key, &sealed).unwrap(), value);
        }
    }

    #[test]
    fn a_record_moved_to_another_key_does_not_open() {
        let s = sealer(5);
        let entry = NameEntry {
            name: "a".into(),
            version: Version { time: 1, node: 1 },
            deleted: false,
            size: 0,
            content: vec![],
        };
        let sealed = s.seal_entry(&s.name_hash("a"), &entry).unwrap();
        assert!(s.open_entry(&s.name_hash("b"), &sealed).is_err());
        assert!(sealer(6).open_entry(&s.name_hash("a"), &sealed).is_err());
        let meta = s.seal_meta("clock", b"1").unwrap();
        assert!(s.open_meta("identity", &meta).is_err());
    }

    #[test]
    fn versions_order_by_time_then_node() {
        let v = |time, node| Version { time, node };
        assert!(v(1, 9) < v(2, 0));
        assert!(v(2, 1) < v(2, 2));
        assert_eq!(v(3, 3).max(v(3, 2)), v(3, 3));
    }
}
