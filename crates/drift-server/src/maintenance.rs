//! Background upkeep: repair (every live chunk on its R replicas), garbage
//! collection of unreferenced chunks after a grace period, tombstone expiry,
//! and scrub (re-verify local chunks, re-fetch corrupt ones).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drift_crypto::ChunkId;
use drift_p2p::PeerId;

use crate::chunks::{self, placement};
use crate::clock::Clock;
use crate::manifest::Manifest;
use crate::node::{Shared, blocking, periodically};
use crate::proto::{MAX_IDS_PER_REQUEST, Msg};

/// What a repair pass did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RepairReport {
    pub pushed: u64,
    pub under_replicated: u64,
    pub collected: u64,
    /// Quarantined or suspect live chunks a good copy was found of.
    pub recovered: u64,
    /// Quarantined or suspect live chunks no reachable node had a good copy of.
    pub missing: u64,
}

/// Every chunk a live entry references, or `None` if some manifest part
/// could not be read (then nothing may be collected this round).
async fn live_chunks(shared: &Arc<Shared>) -> Option<HashSet<ChunkId>> {
    let index = shared.index.clone();
    let entries = blocking(move || index.entries()).await.ok()?.ok()?;
    let mut live = HashSet::new();
    let mut complete = true;
    // An indirect manifest never changes (its parts are content-addressed), so
    // the data chunk ids it lists are cached by its list of parts, and only
    // for as long as some live entry still uses it.
    let mut cache =
        std::mem::take(&mut *shared.part_lists.lock().unwrap_or_else(|p| p.into_inner()));
    let mut still_used = HashMap::new();
    for entry in entries.into_iter().filter(|e| !e.deleted) {
        let Ok(manifest) = Manifest::decode(&entry.content, entry.size) else {
            complete = false;
            continue;
        };
        live.extend(manifest.direct_ids());
        if !matches!(manifest, Manifest::Indirect { .. }) {
            continue;
        }
        let parts: Vec<ChunkId> = manifest.direct_ids().collect();
        let ids = match cache.remove(&parts) {
            Some(ids) => ids,
            None => match crate::files::chunk_list(shared, manifest).await {
                Ok(refs) => Arc::new(refs.iter().map(|r| r.id).collect::<Vec<_>>()),
                Err(_) => {
                    complete = false;
                    continue;
                }
            },
        };
        live.extend(ids.iter().copied());
        still_used.insert(parts, ids);
    }
    *shared.part_lists.lock().unwrap_or_else(|p| p.into_inner()) = still_used;
    complete.then_some(live)
}

/// Which of `ids` `peer` holds, asked in batches.
async fn peer_has(shared: &Arc<Shared>, peer: PeerId, ids: &[ChunkId]) -> Option<Vec<bool>> {
    let conn = shared.members().conn(&peer)?;
    let mut bits = Vec::with_capacity(ids.len());
    for batch in ids.chunks(MAX_IDS_PER_REQUEST) {
        match conn
            .request(Msg::HasChunks {
                ids: batch.to_vec(),
            })
            .await
        {
            Ok(Msg::Have { bits: b }) if b.len() == batch.len() => bits.extend(b),
            _ => return None,
        }
    }
    Some(bits)
}

/// One pass: push every live local chunk to those of its replicas that lack
/// it, hand off chunks this node holds only as a fallback, and collect
/// chunks unreferenced for longer than the grace period.
pub(crate) async fn repair_pass(shared: &Arc<Shared>) -> RepairReport {
    let mut report = RepairReport::default();
    let live = live_chunks(shared).await;
    let store = shared.chunks.clone();
    let local: Vec<ChunkId> =
        match blocking(move || store.ids().filter_map(Result::ok).collect()).await {
            Ok(ids) => ids,
            Err(_) => return report,
        };
    // Group the live local chunks by the peers that should also hold them.
    let mut wanted_on: HashMap<PeerId, Vec<ChunkId>> = HashMap::new();
    let mut targets_of: HashMap<ChunkId, (Vec<PeerId>, bool)> = HashMap::new();
    let mut dead = Vec::new();
    for id in &local {
        let is_live = live.as_ref().is_none_or(|l| l.contains(id));
        if !is_live {
            dead.push(*id);
            continue;
        }
        let (ranked, r) = placement(shared, id);
        let keep = ranked
            .iter()
            .take(r.max(KEEP_RANKS))
            .any(|n| *n == shared.me);
        let targets: Vec<PeerId> = ranked.into_iter().take(r).collect();
        for t in targets.iter().filter(|t| **t != shared.me) {
            wanted_on.entry(*t).or_default().push(*id);
        }
        targets_of.insert(*id, (targets, keep));
    }
    let mut held: HashMap<ChunkId, usize> = HashMap::new();
    for (peer, ids) in &wanted_on {
        let Some(bits) = peer_has(shared, *peer, ids).await else {
            continue;
        };
        for (id, has) in ids.iter().zip(bits) {
            let ok = has || push(shared, *peer, *id).await;
            if ok {
                *held.entry(*id).or_default() += 1;
                report.pushed += u64::from(!has);
            }
        }
    }
    for (id, (targets, keep)) in &targets_of {
        let me_target = targets.contains(&shared.me);
        let copies = held.get(id).copied().unwrap_or(0) + usize::from(me_target);
        if copies < targets.len() {
            report.under_replicated += 1;
        } else if !me_target && !keep {
            // Every replica holds it; this node only kept it as a fallback.
            let store = shared.chunks.clone();
            let id = *id;
            let _ = blocking(move || store.delete(&id)).await;
        }
    }
    shared
        .under_replicated
        .store(report.under_replicated, Ordering::Relaxed);
    if live.is_some() {
        report.collected = collect(shared, dead).await;
    }
    expire_tombstones(shared).await;
    // Last, so a slow search cannot delay the pushes above. Without the full
    // live set, last pass's count stands.
    if let Some(live) = &live {
        suspect_unheld(shared, live, &local).await;
        (report.recovered, report.missing) = recheck_lost(shared, live).await;
        shared.missing.store(report.missing, Ordering::Relaxed);
    }
    report
}

/// Notes as suspects the live chunks that no holder's pass would report:
/// ones this node holds no copy of although it is one of their replicas, or
/// one of whose replicas is not up. Every up peer is asked; a chunk none of
/// them holds is a suspect, which `recheck_lost` then looks for again and
/// counts as missing if no good copy is found. (Without this, a chunk whose
/// every holder died was missing without any node saying so.) A chunk some
/// peer holds is left to its holders' passes: after a join, say, it is
/// simply not pushed yet.
async fn suspect_unheld(shared: &Arc<Shared>, live: &HashSet<ChunkId>, local: &[ChunkId]) {
    let up: Vec<PeerId> = shared
        .members()
        .up_conns()
        .iter()
        .map(|c| c.peer_id())
        .collect();
    let local: HashSet<&ChunkId> = local.iter().collect();
    let mut unheld: Vec<ChunkId> = live
        .iter()
        .filter(|id| !local.contains(id))
        .filter(|id| {
            let (ranked, r) = placement(shared, id);
            let targets = &ranked[..r.min(ranked.len())];
            targets.contains(&shared.me) || !targets.iter().all(|t| up.contains(t))
        })
        .copied()
        .collect();
    for peer in up {
        if unheld.is_empty() {
            return;
        }
        // No answer: nothing is known, so nothing is suspected.
        let Some(bits) = peer_has(shared, peer, &unheld).await else {
            return;
        };
        let mut bits = bits.into_iter();
        unheld.retain(|_| !bits.next().unwrap_or(true));
    }
    for id in unheld {
        shared.suspect(id);
    }
}

/// A node keeps its copy of a chunk ranked this high for it, whatever its own
/// R says. Nodes do not share their `--replicas`: a node started with a
/// smaller R than the rest would otherwise delete copies the others count as
/// replicas (an audit lost acknowledged files that way, with two nodes at
/// R = 1 in an R = 3 cluster). 3 is the default R.
const KEEP_RANKS: usize = 3;

/// Longest a repair pass spends looking for copies of lost chunks (each
/// fetch can wait for a request timeout per peer); what is left is counted
/// missing and looked for again at the next pass.
const RECHECK_BUDGET: Duration = Duration::from_secs(20);

/// Looks again for a good copy of every live chunk this node quarantined and
/// should hold, and of every chunk a read here found none of (suspects). A
/// chunk this node should hold is kept: holders' pushes would bring most back
/// too, but only this node knows to look for the ones no holder has left, so
/// it can report them. Returns (found again, still without a good copy).
async fn recheck_lost(shared: &Arc<Shared>, live: &HashSet<ChunkId>) -> (u64, u64) {
    let suspects = std::mem::take(&mut *shared.suspects.lock().unwrap_or_else(|p| p.into_inner()));
    let store = shared.chunks.clone();
    let listed = blocking(move || {
        let quarantined = store.quarantined_ids().unwrap_or_else(|e| {
            tracing::warn!("cannot list the quarantine: {e}");
            Vec::new()
        });
        let absent = |ids: Vec<ChunkId>| -> Vec<ChunkId> {
            ids.into_iter().filter(|id| !store.has(id)).collect()
        };
        (absent(quarantined), absent(suspects.into_iter().collect()))
    })
    .await;
    let Ok((quarantined, suspects)) = listed else {
        return (0, 0);
    };
    let suspects: HashSet<ChunkId> = suspects.into_iter().collect();
    let is_replica = |id: &ChunkId| {
        let (ranked, r) = placement(shared, id);
        ranked.iter().take(r).any(|n| *n == shared.me)
    };
    // Every live suspect; a live quarantined chunk only if this node should hold it.
    let wanted: Vec<ChunkId> = suspects
        .iter()
        .copied()
        .filter(|id| live.contains(id))
        .chain(
            quarantined
                .into_iter()
                .filter(|id| live.contains(id) && !suspects.contains(id) && is_replica(id)),
        )
        .collect();
    let deadline = tokio::time::Instant::now() + RECHECK_BUDGET;
    let (mut found, mut missing) = (0, 0);
    for id in wanted {
        // As a replica of it, this node keeps the copy it fetches.
        match tokio::time::timeout_at(deadline, chunks::fetch_sealed(shared, id)).await {
            Ok(Ok(_)) => found += 1,
            Ok(Err(_)) => {
                tracing::debug!(chunk = %id, "no reachable node has a good copy of a live chunk");
                missing += 1;
                // fetch_sealed noted it as a suspect again, for the next pass.
            }
            Err(_) => {
                // Out of time: not found yet, so missing until a pass finds it.
                missing += 1;
                shared.suspect(id);
            }
        }
    }
    (found, missing)
}

async fn push(shared: &Arc<Shared>, peer: PeerId, id: ChunkId) -> bool {
    let store = shared.chunks.clone();
    let Ok(Ok(sealed)) = blocking(move || store.get(&id)).await else {
        return false;
    };
    chunks::put_on(shared, peer, id, sealed.into()).await
}

/// Deletes chunks that have stayed unreferenced for the grace period.
async fn collect(shared: &Arc<Shared>, unreferenced: Vec<ChunkId>) -> u64 {
    let now = Instant::now();
    let grace = shared.config.gc_grace;
    let doomed: Vec<ChunkId> = {
        let mut seen = shared
            .gc_candidates
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let still: HashSet<ChunkId> = unreferenced.iter().copied().collect();
        seen.retain(|id, _| still.contains(id));
        // Only a chunk already a candidate at an earlier pass (and untouched
        // since) can go, whatever the grace, even zero: a store in progress
        // touches its chunks more often than passes run, so its chunks are
        // never collected from under it on any node.
        unreferenced
            .into_iter()
            .filter(|id| match seen.entry(*id) {
                Entry::Occupied(first) => now.duration_since(*first.get()) >= grace,
                Entry::Vacant(new) => {
                    new.insert(now);
                    false
                }
            })
            .collect()
    };
    let store = shared.chunks.clone();
    let n = blocking(move || {
        doomed
            .iter()
            .filter(|id| matches!(store.delete(id), Ok(true)))
            .count()
    })
    .await
    .unwrap_or(0);
    n as u64
}

async fn expire_tombstones(shared: &Arc<Shared>) {
    let ttl_ms = shared.config.tombstone_ttl.as_millis() as u64;
    let cutoff = Clock::now_time().saturating_sub(ttl_ms << 16);
    let index = shared.index.clone();
    if let Ok(Ok(n)) = blocking(move || index.purge_tombstones(cutoff)).await
        && n > 0
    {
        shared.index_changed();
    }
}

/// Runs repair passes periodically and whenever membership changes.
pub(crate) async fn run_repair(shared: Arc<Shared>) {
    let every = shared.config.repair_interval;
    periodically(&shared, every, Some(&shared.wake_repair), || async {
        let r = repair_pass(&shared).await;
        if r.missing > 0 {
            // A node cut off from its peers (a network blip, a paused
            // process) finds every chunk it does not hold missing: the
            // peer count tells that apart from lost data.
            let (up, known) = {
                let table = shared.members();
                (table.up_conns().len(), table.by_id.len())
            };
            tracing::warn!(
                missing = r.missing,
                "live chunks have no good copy on any reachable node ({up} of {known} peers up): \
                 their files cannot be read until a copy is reachable"
            );
        }
        if r.pushed + r.collected + r.recovered > 0 {
            tracing::info!(
                pushed = r.pushed,
                collected = r.collected,
                recovered = r.recovered,
                under_replicated = r.under_replicated,
                "repair pass"
            );
        }
    })
    .await;
}

/// Re-verifies every local chunk; returns (corrupt found, repaired).
pub(crate) async fn scrub_pass(shared: &Arc<Shared>) -> (u64, u64) {
    let store = shared.chunks.clone();
    let ids: Vec<ChunkId> = blocking(move || store.ids().filter_map(Result::ok).collect())
        .await
        .unwrap_or_default();
    let (mut corrupt, mut repaired) = (0, 0);
    for id in ids {
        if shared.cancel.is_cancelled() {
            break;
        }
        let store = shared.chunks.clone();
        let verdict = blocking(move || store.get(&id)).await;
        if let Ok(Err(drift_store::GetError::Corrupt { .. })) = verdict {
            corrupt += 1;
            tracing::warn!(chunk = %id, "scrub found a corrupt chunk; fetching a good copy");
            // fetch_sealed writes the verified copy back after local corruption.
            if chunks::fetch_sealed(shared, id).await.is_ok() {
                repaired += 1;
            }
        }
    }
    (corrupt, repaired)
}

/// Runs scrub passes until shutdown.
pub(crate) async fn run_scrub(shared: Arc<Shared>) {
    let every = shared.config.scrub_interval;
    periodically(&shared, every, None, || async {
        let (found, fixed) = scrub_pass(&shared).await;
        if found > 0 {
            tracing::info!(found, fixed, "scrub pass");
        }
    })
    .await;
}
