//! Rendezvous (highest random weight) placement of chunks on nodes.
//!
//! Public so tools (the bench, operators' scripts) can ask where a chunk lives
//! without repeating the hash.

use drift_crypto::ChunkId;
use drift_p2p::PeerId;

fn score(node: &PeerId, chunk: &ChunkId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"drift placement v1");
    h.update(&node.0);
    h.update(chunk.as_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// Every node in `nodes`, best home for `chunk` first. The first R are its
/// replicas; the rest are fallbacks. Every node computes the same order from
/// the same membership, and adding or removing one node moves only the chunks
/// that node wins or held.
pub fn rank(chunk: &ChunkId, nodes: &[PeerId]) -> Vec<PeerId> {
    let mut scored: Vec<(u64, PeerId)> = nodes.iter().map(|n| (score(n, chunk), *n)).collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, n)| n).collect()
}

/// How many replica acknowledgements make a write durable: a majority of `r`.
pub fn write_quorum(r: usize) -> usize {
    r / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u8) -> Vec<PeerId> {
        (0..n).map(|i| PeerId([i; 32])).collect()
    }

    #[test]
    fn rank_is_deterministic_and_complete() {
        let id = ChunkId::of(b"c");
        let a = rank(&id, &nodes(5));
        let mut rev = nodes(5);
        rev.reverse();
        assert_eq!(a, rank(&id, &rev));
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn removing_a_node_moves_only_its_chunks() {
        let all = nodes(6);
        let fewer: Vec<_> = all[1..].to_vec();
        for i in 0..200u32 {
            let id = ChunkId::of(&i.to_be_bytes());
            let before: Vec<_> = rank(&id, &all)
                .into_iter()
                .filter(|n| *n != all[0])
                .collect();
            assert_eq!(before, rank(&id, &fewer));
        }
    }

    #[test]
    fn load_spreads() {
        let all = nodes(4);
        let mut firsts = [0u32; 4];
        for i in 0..4000u32 {
            let id = ChunkId::of(&i.to_be_bytes());
            firsts[rank(&id, &all)[0].0[0] as usize] += 1;
        }
        assert!(firsts.iter().all(|&c| c > 800), "{firsts:?}");
    }

    #[test]
    fn quorum() {
        assert_eq!(write_quorum(1), 1);
        assert_eq!(write_quorum(2), 2);
        assert_eq!(write_quorum(3), 2);
        assert_eq!(write_quorum(5), 3);
    }
}
