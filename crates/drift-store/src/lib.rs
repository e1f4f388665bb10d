//! drift's on-disk storage: a content-addressed chunk store and the encrypted name index.
//! Synchronous `std::fs`; no async runtime.
//!
//! # Overview
//! - [`ChunkStore`]: sealed chunks as files under `<data>/chunks/ab/cd/<40 hex>`,
//!   named by their SHA-1 ([`drift_crypto::ChunkId`]). Writes are atomic and
//!   durable when `put` returns (concurrent puts share one `syncfs` per
//!   barrier, one barrier per put; a crash's leftover temp files are finished
//!   at open); every read re-checks the SHA-1 and quarantines a bad file.
//!   [`StoreOptions`] sets a byte quota and whether to fsync. Chunks of 64 KiB
//!   or more bypass the page cache (direct I/O where the file system allows);
//!   fill chunk bytes into an [`aligned_buffer`] so writes can too
//!   ([`write_uncached`] and [`UncachedReader`] do the same for any file
//!   written or read block by block).
//! - [`NameIndex`]: the map from file names to [`NameEntry`]s (last writer wins
//!   by [`Version`]; deletes are tombstones) in a redb database at
//!   `<data>/index.redb`, plus a little sealed node state (`get_meta`/`set_meta`).
//!   Keys are keyed hashes of names and values are sealed: the data directory
//!   reveals no names.
//! - Errors: [`StoreError`] (open, list, delete), [`PutError`], [`GetError`],
//!   [`IndexError`].
//!
//! **This crate never sees a plaintext byte of file content**: chunks arrive
//! sealed, and an entry's `content` (the server's manifest) is opaque to it.
//!
//! # Example
//! ```
//! use drift_crypto::ClusterSecret;
//! use drift_store::{ChunkStore, NameEntry, NameIndex, Version};
//!
//! let dir = tempfile::tempdir()?;
//! let keys = ClusterSecret::generate()?.keys();
//!
//! let mut chunk = b"hello, drift".to_vec();
//! let chunk_ref = keys.convergence.seal(&mut chunk); // chunk is now ciphertext
//! let store = ChunkStore::open(dir.path())?;
//! assert!(store.put(&chunk_ref.id, &chunk)?);
//! assert_eq!(store.get(&chunk_ref.id)?, chunk);
//!
//! let index = NameIndex::open(dir.path(), &keys)?;
//! let entry = NameEntry {
//!     name: "greeting.txt".into(),
//!     version: Version { time: 1, node: 7 },
//!     deleted: false,
//!     size: 12,
//!     content: chunk_ref.id.as_bytes().to_vec(),
//! };
//! assert_eq!(index.apply(&[entry.clone()])?, [true]);
//! assert_eq!(index.get("greeting.txt")?, Some(entry));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod chunks;
mod direct;
mod entry;
mod error;
mod fanout;
mod group_sync;
mod index;

pub use chunks::{ChunkStore, StoreOptions, StoreUsage};
pub use direct::{ALIGN, UncachedReader, aligned_buffer, write_uncached};
pub use entry::{NameEntry, Version};
pub use error::{GetError, IndexError, PutError, StoreError};
pub use index::NameIndex;
