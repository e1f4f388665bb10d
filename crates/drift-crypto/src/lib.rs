//! drift's cryptography: the cluster secret, key derivation, chunk sealing and
//! SHA-1 content ids. Synchronous, no I/O.
//!
//! # Overview
//! - [`ClusterSecret`]: the 32-byte secret a cluster shares; [`Keys`] derives one
//!   key per purpose from it.
//! - [`ConvergenceKey::seal`] / [`ConvergenceKey::open`]: keyed convergent
//!   encryption of chunks (AES-256-CTR, BLAKE3-keyed, SHA-1 ids), so identical
//!   content dedups and any tampering is an error.
//! - [`ChunkId`]: SHA-1 of a sealed chunk, the content address.
//! - [`RecordKey`]: authenticated sealing of small records; [`NameKey`]: keyed
//!   hashes of file names.
//! - [`Chunker`]: fixed-size chunks from any `std::io::Read`.
//!
//! # Example
//! ```
//! use drift_crypto::{ClusterSecret, Chunker};
//!
//! let keys = ClusterSecret::generate()?.keys();
//! let file = vec![42u8; 3000];
//! for chunk in Chunker::new(&file[..], 1024) {
//!     let mut buf = chunk?;
//!     let plain = buf.clone();
//!     let chunk_ref = keys.convergence.seal(&mut buf); // buf is now ciphertext
//!     assert_eq!(chunk_ref.id, drift_crypto::ChunkId::of(&buf));
//!     keys.convergence.open(&chunk_ref, &mut buf)?;
//!     assert_eq!(buf, plain);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod chunk;
mod chunker;
mod record;
mod secret;

pub use chunk::{
    CHUNK_ID_LEN, ChunkHasher, ChunkId, ChunkIdParseError, ChunkKey, ChunkRef, ConvergenceKey,
    OpenError, TransferDigest, TransferHasher,
};
pub use chunker::{Chunker, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, read_full};
pub use record::{NAME_HASH_LEN, NameKey, RECORD_OVERHEAD, RecordError, RecordKey, SealError};
pub use secret::{ClusterSecret, KeyPurpose, Keys, RngError, SECRET_LEN, SecretParseError};
