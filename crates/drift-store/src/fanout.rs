//! The chunk directory's fan-out layout: paths from ids, and a walk over what is on disk.
//!
//! ```text
//! <data>/chunks/<hex[0..2]>/<hex[2..4]>/<40 hex>                a chunk, named by its lowercase SHA-1
//! <data>/chunks/<hex[0..2]>/<hex[2..4]>/.tmp-<40 hex>-<random>  a write in progress (or a crash's leftover)
//! ```
//!
//! A temp file names the chunk it holds, so a crash's leftover whose bytes
//! hash to that id can be finished at open (see `ChunkStore::open_with`).
//!
//! Paths are only ever built from a parsed [`ChunkId`], whose hex form has
//! exactly 40 characters from `0-9a-f`, so no path can leave the chunk directory.

use std::fs::{self, File, ReadDir};
use std::io;
use std::path::{Path, PathBuf};

use drift_crypto::ChunkId;

/// Prefix of the temporary files a `put` writes before renaming them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// The directory a chunk lives in: `<chunks>/<hex[0..2]>/<hex[2..4]>`.
pub(crate) fn fan_dir(chunks: &Path, id: &ChunkId) -> PathBuf {
    let hex = id.to_hex();
    chunks.join(&hex[0..2]).join(&hex[2..4])
}

/// How the temp files of a chunk's writes begin: `.tmp-<40 hex>-`.
pub(crate) fn temp_prefix(id: &ChunkId) -> String {
    format!("{TEMP_PREFIX}{}-", id.to_hex())
}

/// The file a chunk lives in.
pub(crate) fn chunk_path(chunks: &Path, id: &ChunkId) -> PathBuf {
    fan_dir(chunks, id).join(id.to_hex())
}

/// Flushes a directory's entries (a rename, a new file) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True for the names of fan-out directories: two lowercase hex digits.
fn is_fan_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a file in a leaf fan-out directory is.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A chunk file in its right place.
    Chunk {
        /// The chunk.
        id: ChunkId,
        /// Its file.
        path: PathBuf,
    },
    /// A temporary file: a write in progress, or one a crash left behind.
    Temp {
        /// Its file.
        path: PathBuf,
        /// The chunk its name says it holds, if that chunk belongs in this directory.
        id: Option<ChunkId>,
    },
    /// Anything else (ignored).
    Stray,
}

/// Classifies a file named `name` found in `<chunks>/<top>/<mid>/`.
fn classify(top: &str, mid: &str, name: &str, path: PathBuf) -> Entry {
    if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
        let id = rest
            .split_once('-')
            .and_then(|(hex, _)| id_in_place(top, mid, hex));
        return Entry::Temp { path, id };
    }
    match id_in_place(top, mid, name) {
        Some(id) => Entry::Chunk { id, path },
        None => Entry::Stray,
    }
}

/// The chunk `hex` names, if it is the id's canonical lowercase form and the
/// id maps to `<top>/<mid>`: so every id listed maps back to exactly one file.
fn id_in_place(top: &str, mid: &str, hex: &str) -> Option<ChunkId> {
    hex.parse::<ChunkId>()
        .ok()
        .filter(|id| id.to_hex() == hex && hex[0..2] == *top && hex[2..4] == *mid)
}

/// A lazy walk over `<chunks>/<2 hex>/<2 hex>/*`. Directory read errors are
/// reported once each and the walk goes on with the next directory.
pub(crate) struct Walk {
    chunks: PathBuf,
    top: Option<ReadDir>,
    mid: Option<(String, ReadDir)>,
    leaf: Option<(String, String, ReadDir)>,
}

impl Walk {
    /// Starts a walk; a missing chunk directory is an empty walk.
    pub(crate) fn new(chunks: &Path) -> io::Result<Walk> {
        let top = match fs::read_dir(chunks) {
            Ok(rd) => Some(rd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Walk {
            chunks: chunks.to_path_buf(),
            top,
            mid: None,
            leaf: None,
        })
    }

    /// The next entry of the leaf directory being read, if any is left.
    fn next_leaf(&mut self) -> Option<Result<Entry, (PathBuf, io::Error)>> {
        let (top, mid, rd) = self.leaf.as_mut()?;
        match rd.next() {
            None => {
                self.leaf = None;
                None
            }
            Some(Err(e)) => {
                let path = self.chunks.join(&*top).join(&*mid);
                self.leaf = None;
                Some(Err((path, e)))
            }
            Some(Ok(de)) => {
                let name = de.file_name();
                let entry = match name.to_str() {
                    Some(name) => classify(top, mid, name, de.path()),
                    None => Entry::Stray,
                };
                Some(Ok(entry))
            }
        }
    }

    /// Opens the next two-hex directory below `parent` from `rd`.
    fn next_dir(
        rd: &mut ReadDir,
        parent: &Path,
    ) -> Option<Result<(String, ReadDir), (PathBuf, io::Error)>> {
        loop {
            let de = match rd.next()? {
                Ok(de) => de,
                Err(e) => return Some(Err((parent.to_path_buf(), e))),
            };
            let Some(name) = de.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_fan_name(&name) || !de.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = parent.join(&name);
            return Some(match fs::read_dir(&path) {
                Ok(sub) => Ok((name, sub)),
                Err(e) => Err((path, e)),
            });
        }
    }
}

impl Iterator for Walk {
    type Item = Result<Entry, (PathBuf, io::Error)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.next_leaf() {
                return Some(item);
            }
            if let Some((top, rd)) = self.mid.as_mut() {
                let parent = self.chunks.join(&*top);
                match Walk::next_dir(rd, &parent) {
                    Some(Ok((mid, leaf))) => self.leaf = Some((top.clone(), mid, leaf)),
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.mid = None,
                }
                continue;
            }
            let rd = self.top.as_mut()?;
            match Walk::next_dir(rd, &self.chunks) {
                Some(Ok(mid)) => self.mid = Some(mid),
                Some(Err(e)) => return Some(Err(e)),
                None => self.top = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_id() {
        let id: ChunkId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let p = chunk_path(Path::new("/d/chunks"), &id);
        assert_eq!(
            p,
            Path::new("/d/chunks/01/23/0123456789abcdef0123456789abcdef01234567")
        );
    }

    #[test]
    fn classify_accepts_only_canonical_names_in_place() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        let p = PathBuf::from("x");
        assert!(matches!(
            classify("01", "23", hex, p.clone()),
            Entry::Chunk { .. }
        ));
        assert!(matches!(classify("01", "24", hex, p.clone()), Entry::Stray));
        let upper = hex.to_uppercase();
        assert!(matches!(
            classify("01", "23", &upper, p.clone()),
            Entry::Stray
        ));
        assert!(matches!(
            classify("01", "23", ".tmp-abc", p.clone()),
            Entry::Temp { id: None, .. }
        ));
        // A temp file names its chunk, which must belong in its directory.
        let temp = format!(".tmp-{hex}-x1y2z3");
        assert!(
            matches!(classify("01", "23", &temp, p.clone()), Entry::Temp { id: Some(id), .. } if id.to_hex() == hex)
        );
        assert!(matches!(
            classify("01", "24", &temp, p.clone()),
            Entry::Temp { id: None, .. }
        ));
        assert!(matches!(
            classify("01", "23", &format!(".tmp-{upper}-x1"), p.clone()),
            Entry::Temp { id: None, .. }
        ));
        assert!(matches!(classify("01", "23", "../../x", p), Entry::Stray));
        assert!(
            is_fan_name("0f") && !is_fan_name("0F") && !is_fan_name("..") && !is_fan_name("abc")
        );
    }

    #[test]
    fn walk_finds_chunks_temps_and_strays() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = dir.path().join("chunks");
        let id = ChunkId::of(b"walk");
        let fan = fan_dir(&chunks, &id);
        fs::create_dir_all(&fan).unwrap();
        fs::write(chunk_path(&chunks, &id), b"walk").unwrap();
        fs::write(fan.join(".tmp-zzz"), b"").unwrap();
        fs::write(fan.join("notes.txt"), b"").unwrap();
        fs::create_dir_all(chunks.join("zz/zz")).unwrap();
        fs::write(chunks.join("zz/zz").join(id.to_hex()), b"").unwrap();
        fs::write(chunks.join("README"), b"").unwrap();
        let found: Vec<Entry> = Walk::new(&chunks).unwrap().map(|e| e.unwrap()).collect();
        let n_chunks = found
            .iter()
            .filter(|e| matches!(e, Entry::Chunk { .. }))
            .count();
        let n_temps = found
            .iter()
            .filter(|e| matches!(e, Entry::Temp { .. }))
            .count();
        assert_eq!((n_chunks, n_temps, found.len()), (1, 1, 3));
        assert_eq!(Walk::new(&dir.path().join("missing")).unwrap().count(), 0);
    }
}
