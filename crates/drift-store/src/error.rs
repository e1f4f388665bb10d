//! The store's errors: one type per kind of operation, each message saying what to do where known.

use std::io;
use std::path::{Path, PathBuf};

use drift_crypto::ChunkId;

/// Why the store could not open, list, count or delete.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed on `path`.
    #[error("cannot {action} {}: {source}{}", path.display(), io_hint(source))]
    Io {
        /// What the store was doing, e.g. "create data directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The name index database could not be opened.
    #[error("cannot open name index {}: {source}{}", path.display(), db_hint(source))]
    Database {
        /// The database file.
        path: PathBuf,
        /// redb's error (boxed: it is large, and errors are rare).
        source: Box<redb::Error>,
    },
    /// Another store (another drift node, in this process or another) has the
    /// data directory open.
    #[error(
        "{} is locked: another drift node is using this data directory; stop it or choose another directory",
        lock.display()
    )]
    InUse {
        /// The data directory's lock file.
        lock: PathBuf,
    },
    /// The name index database is damaged so badly that opening it failed
    /// inside the database library itself.
    #[error("cannot open name index {}: it is damaged ({detail}){DAMAGED_HINT}", path.display())]
    IndexDamaged {
        /// The database file.
        path: PathBuf,
        /// What the database library said.
        detail: String,
    },
    /// The name index opened but refused its contents (e.g. another cluster secret).
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What to do about a damaged name index.
const DAMAGED_HINT: &str = "; move it aside and start the node again: it rejoins under a new node id \
     and gets the names back from its peers";

impl StoreError {
    /// An I/O error while doing `action` on `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why [`ChunkStore::put`](crate::ChunkStore::put) failed. In every case no
/// partial or temporary file is left behind.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The bytes are not the ones the id names; nothing was written.
    #[error(
        "chunk bytes do not match id {expected} (their SHA-1 is {actual}); nothing was written"
    )]
    IdMismatch {
        /// The id the caller claimed.
        expected: ChunkId,
        /// The SHA-1 of the bytes given.
        actual: ChunkId,
    },
    /// The chunk is bigger than any chunk drift makes; nothing was written.
    #[error("chunk {id} is {len} bytes, over the {max}-byte chunk limit; nothing was written")]
    TooLarge {
        /// The chunk.
        id: ChunkId,
        /// Its length.
        len: usize,
        /// The limit ([`drift_crypto::MAX_CHUNK_SIZE`]).
        max: usize,
    },
    /// The store's quota is reached, or the file system is full.
    #[error("disk full: no space left for chunk {id} in {}: {reason}", dir.display())]
    NoSpace {
        /// The chunk that did not fit.
        id: ChunkId,
        /// The directory it was to be written to.
        dir: PathBuf,
        /// Which limit was hit and what to do about it.
        reason: String,
    },
    /// Any other file system error.
    #[error(transparent)]
    Io(#[from] StoreError),
}

/// Why [`ChunkStore::get`](crate::ChunkStore::get) returned no bytes.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// This store does not hold the chunk.
    #[error("chunk {id} is not stored here")]
    NotFound {
        /// The chunk asked for.
        id: ChunkId,
    },
    /// The stored bytes did not match the id; the file was moved to quarantine.
    #[error(
        "chunk {id} is corrupt on disk and was quarantined: fetch it again from another replica"
    )]
    Corrupt {
        /// The chunk asked for.
        id: ChunkId,
    },
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] StoreError),
}

/// Why a name index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// redb reported an error (I/O, a full disk, a damaged database file).
    #[error("name index database error: {0}")]
    Database(Box<redb::Error>),
    /// A stored record did not open or decode: it is damaged, or was sealed
    /// with another cluster secret. No bytes of it are returned.
    #[error("name index record {key} cannot be read: {reason}")]
    Corrupt {
        /// The record's key: a name hash in hex, or a meta key.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The index was written with another cluster secret.
    #[error(
        "name index {} was written with another cluster secret: use this cluster's secret, or another data directory",
        path.display()
    )]
    WrongSecret {
        /// The database file.
        path: PathBuf,
    },
    /// A record could not be sealed (the OS random number generator failed).
    #[error(transparent)]
    Seal(#[from] drift_crypto::SealError),
    /// A record could not be encoded.
    #[error("cannot encode name index record: {0}")]
    Encode(postcard::Error),
}

impl IndexError {
    /// Turns any of redb's error types into an [`IndexError`].
    pub(crate) fn db(e: impl Into<redb::Error>) -> Self {
        IndexError::Database(Box::new(e.into()))
    }
}

/// A suggestion for the common I/O errors, appended to the message.
fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => ": check that drift's user may write there",
        io::ErrorKind::NotADirectory => {
            ": a parent of this path is a file, not a directory; choose another data directory"
        }
        // What `create_dir_all` says when a file sits where a directory should.
        io::ErrorKind::AlreadyExists => {
            ": it exists and is not a directory; move it or choose another data directory"
        }
        io::ErrorKind::ReadOnlyFilesystem => ": the file system is read-only; remount it writable",
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            ": the disk is full; free space"
        }
        _ => "",
    }
}

fn db_hint(e: &redb::Error) -> &'static str {
    match e {
        redb::Error::DatabaseAlreadyOpen => {
            ": another drift node is using this data directory; stop it or choose another directory"
        }
        redb::Error::Corrupted(_) => DAMAGED_HINT,
        redb::Error::Io(e) if e.kind() == io::ErrorKind::InvalidData => DAMAGED_HINT,
        _ => "",
    }
}

/// True if `e` means the file system has no room left.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_no_space() {
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EACCES)));
    }

    #[test]
    fn messages_name_the_path_and_suggest_a_fix() {
        let e = StoreError::io(
            "create data directory",
            Path::new("/srv/drift"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot create data directory /srv/drift: "),
            "{msg}"
        );
        assert!(
            msg.ends_with("check that drift's user may write there"),
            "{msg}"
        );
        let file_in_the_way = tempfile::NamedTempFile::new().unwrap();
        let e = std::fs::create_dir_all(file_in_the_way.path()).unwrap_err();
        let msg = StoreError::io("create data directory", file_in_the_way.path(), e).to_string();
        assert!(
            msg.ends_with("is not a directory; move it or choose another data directory"),
            "{msg}"
        );
        let id = ChunkId::of(b"x");
        let msg = GetError::NotFound { id }.to_string();
        assert_eq!(msg, format!("chunk {id} is not stored here"));
        assert!(!msg.ends_with('.'));
    }
}
