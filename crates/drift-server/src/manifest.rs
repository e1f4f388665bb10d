//! The manifest: which chunks make a file, carried sealed inside its name entry.
//!
//! Small files list their chunks inline. Larger ones list *parts*: the full
//! chunk list, postcard-encoded, cut into chunks and sealed like file data, so
//! an entry stays small enough to replicate to every node in one message.
//!
//! ```text
//! NameEntry.content = postcard(Manifest)
//! Manifest::Inline   { chunk_size, chunks: [ChunkRef] }            (<= INLINE_MAX_CHUNKS)
//! Manifest::Indirect { chunk_size, n_chunks, parts: [ChunkRef] }   parts decode to postcard(Vec<ChunkRef>)
//! ```
//! **API boundary:** this is part of the on-disk and wire format; variants are append-only.

use drift_crypto::{ChunkId, ChunkRef, MAX_CHUNK_SIZE};
use serde::{Deserialize, Serialize};

/// Most chunk references kept inline in an entry (about 14 KiB).
pub const INLINE_MAX_CHUNKS: usize = 256;

/// Most parts an indirect manifest may have, bounding the entry's size.
pub const MAX_PARTS: usize = 256;

/// Which chunks make a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Manifest {
    /// The chunk list itself.
    Inline {
        /// Bytes per chunk (the last may be shorter).
        chunk_size: u32,
        /// The chunks in file order.
        chunks: Vec<ChunkRef>,
    },
    /// Sealed chunks that hold the chunk list.
    Indirect {
        /// Bytes per chunk (the last may be shorter).
        chunk_size: u32,
        /// How many data chunks the parts list.
        n_chunks: u64,
        /// The sealed parts, in order.
        parts: Vec<ChunkRef>,
    },
}

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// It did not decode.
    #[error("file manifest is malformed: {0}")]
    Malformed(String),
    /// It claims sizes no honest writer produces.
    #[error("file manifest is inconsistent: {0}")]
    Inconsistent(&'static str),
}

impl Manifest {
    /// Decodes and sanity-checks a manifest against the entry's size.
    pub fn decode(bytes: &[u8], size: u64) -> Result<Self, ManifestError> {
        let m: Manifest =
            postcard::from_bytes(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let (chunk_size, n_chunks) = match &m {
            Manifest::Inline { chunk_size, chunks } => (*chunk_size, chunks.len() as u64),
            Manifest::Indirect {
                chunk_size,
                n_chunks,
                parts,
            } => {
                if parts.len() > MAX_PARTS {
                    return Err(ManifestError::Inconsistent("too many manifest parts"));
                }
                (*chunk_size, *n_chunks)
            }
        };
        if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_SIZE {
            return Err(ManifestError::Inconsistent("chunk size out of range"));
        }
        if n_chunks != size.div_ceil(u64::from(chunk_size)) {
            return Err(ManifestError::Inconsistent(
                "chunk count does not match file size",
            ));
        }
        Ok(m)
    }

    /// The encoded form stored in a name entry.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding owned, plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The ids of the chunks the entry itself names (data chunks when inline,
    /// part chunks when indirect).
    pub fn direct_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        let refs = match self {
            Manifest::Inline { chunks, .. } => chunks,
            Manifest::Indirect { parts, .. } => parts,
        };
        refs.iter().map(|r| r.id)
    }
}

/// Decodes the chunk list held by an indirect manifest's parts (concatenated, opened).
pub fn decode_parts(bytes: &[u8], n_chunks: u64) -> Result<Vec<ChunkRef>, ManifestError> {
    let list: Vec<ChunkRef> =
        postcard::from_bytes(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if list.len() as u64 != n_chunks {
        return Err(ManifestError::Inconsistent(
            "manifest parts list the wrong number of chunks",
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drift_crypto::ChunkKey;

    fn r(i: u8) -> ChunkRef {
        ChunkRef {
            id: ChunkId::from_bytes([i; 20]),
            key: ChunkKey::from_bytes([i; 32]),
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let m = Manifest::Inline {
            chunk_size: 4,
            chunks: vec![r(1), r(2)],
        };
        assert_eq!(Manifest::decode(&m.encode(), 7).unwrap(), m);
        assert!(Manifest::decode(&m.encode(), 9).is_err());
        assert!(Manifest::decode(&[0xff, 0xff, 0xff], 0).is_err());
        let zero = Manifest::Inline {
            chunk_size: 0,
            chunks: vec![],
        };
        assert!(Manifest::decode(&zero.encode(), 0).is_err());
        let empty = Manifest::Inline {
            chunk_size: 1 << 20,
            chunks: vec![],
        };
        assert_eq!(Manifest::decode(&empty.encode(), 0).unwrap(), empty);
    }

    #[test]
    fn an_inline_manifest_of_the_maximum_fits_a_message() {
        let m = Manifest::Inline {
            chunk_size: 1 << 20,
            chunks: (0..INLINE_MAX_CHUNKS).map(|i| r(i as u8)).collect(),
        };
        assert!(m.encode().len() < 16 * 1024);
    }
}
