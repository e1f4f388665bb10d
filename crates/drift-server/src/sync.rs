//! Anti-entropy: nodes compare name-index digests and pull the entries they lack.
//!
//! Pull only: each node asks each peer for a digest of its index; when the
//! digests differ it fetches the peer's (name hash, version) list and then the
//! entries that are newer there. Since every node does this with every peer,
//! all converge on the newest version of every name, tombstones included.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use drift_p2p::Connection;
use drift_store::{NameEntry, Version};
use futures_util::future::join_all;

use crate::error::check_name;
use crate::node::{Shared, blocking};
use crate::proto::{MAX_IDS_PER_REQUEST, Msg};

/// Most remote (hash, version) pairs accepted in one sync, bounding memory.
const MAX_REMOTE_VERSIONS: usize = 4_000_000;

/// What [`apply_entries`] did with a batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Applied {
    /// Entries newer than ours, now in the index.
    pub applied: usize,
    /// Entries refused: an invalid name, or a version too far ahead of this
    /// node's clock. They are not in the index.
    pub refused: usize,
}

/// Keeps the entries that are newer than ours, refusing implausible ones.
pub(crate) async fn apply_entries(
    shared: &Arc<Shared>,
    entries: Vec<NameEntry>,
) -> Result<Applied, String> {
    let n = entries.len();
    let entries: Vec<NameEntry> = entries
        .into_iter()
        .filter(|e| check_name(&e.name).is_ok() && crate::clock::plausible(e.version))
        .collect();
    let refused = n - entries.len();
    if refused > 0 {
        tracing::warn!(
            refused,
            "entries with an invalid name or a version over {} s ahead of this node's clock were refused: is a member's clock wrong?",
            crate::clock::MAX_AHEAD.as_secs()
        );
    }
    if entries.is_empty() {
        return Ok(Applied {
            applied: 0,
            refused,
        });
    }
    {
        let mut clock = shared.clock();
        for e in &entries {
            clock.observe(e.version);
        }
    }
    let applied = shared
        .index_writer
        .run(entries)
        .await?
        .map_err(|e| e.to_string())?;
    let n = applied.iter().filter(|a| **a).count();
    if n > 0 {
        shared.index_changed();
    }
    Ok(Applied {
        applied: n,
        refused,
    })
}

/// A digest of the whole index and its entry count, cached until it changes.
pub(crate) async fn local_digest(shared: &Arc<Shared>) -> ([u8; 32], u64) {
    let generation = shared.index_generation.load(Ordering::Relaxed);
    let cached = *shared
        .digest_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((g, d, n)) = cached
        && g == generation
    {
        return (d, n);
    }
    let versions = local_versions(shared).await.unwrap_or_default();
    let mut h = blake3::Hasher::new();
    for (hash, v) in &versions {
        h.update(hash);
        h.update(&v.time.to_be_bytes());
        h.update(&v.node.to_be_bytes());
    }
    let digest = *h.finalize().as_bytes();
    let n = versions.len() as u64;
    *shared
        .digest_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some((generation, digest, n));
    (digest, n)
}

async fn local_versions(shared: &Arc<Shared>) -> Result<Vec<([u8; 32], Version)>, String> {
    let index = shared.index.clone();
    blocking(move || index.versions())
        .await?
        .map_err(|e| e.to_string())
}

/// Pulls whatever `conn`'s peer has newer than us.
pub(crate) async fn sync_with(shared: &Arc<Shared>, conn: &Connection<Msg>) {
    if let Err(e) = try_sync(shared, conn).await {
        tracing::debug!(peer = %conn.peer_id().short(), "anti-entropy failed: {e}");
    }
}

async fn try_sync(shared: &Arc<Shared>, conn: &Connection<Msg>) -> Result<usize, String> {
    let theirs = match conn
        .request(Msg::IndexDigest)
        .await
        .map_err(|e| e.to_string())?
    {
        Msg::Digest { digest, .. } => digest,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    if theirs == local_digest(shared).await.0 {
        return Ok(0);
    }
    let ours: HashMap<[u8; 32], Version> = local_versions(shared).await?.into_iter().collect();
    let mut wanted = Vec::new();
    let mut s = conn.open().await.map_err(|e| e.to_string())?;
    s.send(&Msg::IndexVersions)
        .await
        .map_err(|e| e.to_string())?;
    s.finish().await.map_err(|e| e.to_string())?;
    let mut seen = 0usize;
    while let Some(msg) = s.recv().await.map_err(|e| e.to_string())? {
        let Msg::Versions { batch } = msg else {
            return Err("unexpected message in a version list".into());
        };
        seen += batch.len();
        if seen > MAX_REMOTE_VERSIONS {
            return Err("peer's version list is over the limit".into());
        }
        wanted.extend(
            batch
                .into_iter()
                .filter(|(hash, v)| ours.get(hash).is_none_or(|mine| v > mine))
                .map(|(hash, _)| hash),
        );
    }
    let mut applied = 0;
    for hashes in wanted.chunks(MAX_IDS_PER_REQUEST) {
        let mut s = conn.open().await.map_err(|e| e.to_string())?;
        s.send(&Msg::GetEntries {
            hashes: hashes.to_vec(),
        })
        .await
        .map_err(|e| e.to_string())?;
        s.finish().await.map_err(|e| e.to_string())?;
        while let Some(msg) = s.recv().await.map_err(|e| e.to_string())? {
            let Msg::Entries { entries } = msg else {
                return Err("unexpected message in an entry list".into());
            };
            applied += apply_entries(shared, entries).await?.applied;
        }
    }
    if applied > 0 {
        tracing::debug!(peer = %conn.peer_id().short(), applied, "anti-entropy pulled entries");
    }
    Ok(applied)
}

/// One anti-entropy round with every connected peer: names, and members
/// (so a node that joined through someone else is found even if it never
/// dialed us).
pub(crate) async fn sync_all(shared: &Arc<Shared>) {
    let conns = shared.members().up_conns();
    join_all(conns.iter().map(|c| async move {
        sync_with(shared, c).await;
        crate::members::exchange_peers(shared, c).await;
    }))
    .await;
}

/// Runs anti-entropy rounds until shutdown.
pub(crate) async fn run_anti_entropy(shared: Arc<Shared>) {
    let every = shared.config.anti_entropy_interval;
    crate::node::periodically(&shared, every, None, || sync_all(&shared)).await;
}
