//! [`Admission`]: the places of inbound connections still in their handshake.
//!
//! Anyone who can reach the port can open a connection, and it holds a place
//! from `accept` until its handshake and hello end or time out. Places are
//! few (`max_pending_handshakes`), so a full table does not turn a newcomer
//! away: it evicts the oldest place of the source holding the most (an IPv4
//! address, or an IPv6 /64), and that handshake is dropped.
//!
//! Silent sockets, from any address, therefore cannot lock a real peer out:
//! it waits for nothing but its own handshake. A flood from other addresses
//! evicts their places before the peer's, as the peer never holds the most.
//! What remains is a flood from the peer's own address, fast enough to evict
//! it mid-handshake.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// The handshake places of one endpoint.
#[derive(Debug)]
pub(crate) struct Admission {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// In admission order: the first of a source is its oldest.
    held: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    id: u64,
    source: Source,
    evict: CancellationToken,
}

/// Where connections come from, for sharing places: one IPv4 address, or
/// one IPv6 /64 (what a single host usually controls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Source(u128);

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => Source((u128::from(v6) >> 64) | (1 << 127)),
        }
    }
}

/// One admitted connection's place; freed when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    admission: Arc<Admission>,
    id: u64,
    /// Cancelled when a newcomer takes this place.
    pub(crate) evicted: CancellationToken,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.admission.lock().held.retain(|h| h.id != self.id);
    }
}

impl Admission {
    /// Room for `max` handshakes at once (at least 1).
    pub(crate) fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max: max.max(1),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives a connection from `ip` a place, evicting another if needed;
    /// returns the place and whether a handshake was evicted for it.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> (Place, bool) {
        let source = Source::of(ip);
        let mut state = self.lock();
        let victim = if state.held.len() >= self.max {
            busiest(&state.held)
        } else {
            None
        };
        let evicted = victim
            .and_then(|v| state.held.iter().position(|h| h.source == v))
            .map(|at| state.held.remove(at).evict.cancel())
            .is_some();
        let id = state.next_id;
        state.next_id += 1;
        let evict = CancellationToken::new();
        state.held.push(Held {
            id,
            source,
            evict: evict.clone(),
        });
        let place = Place {
            admission: self.clone(),
            id,
            evicted: evict,
        };
        (place, evicted)
    }

    /// Places held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().held.len()
    }
}

/// The source holding the most places; among equals, the one whose oldest
/// place is oldest.
fn busiest(held: &[Held]) -> Option<Source> {
    let mut best: Option<(Source, usize)> = None;
    for h in held {
        if best.is_some_and(|(s, _)| s == h.source) {
            continue;
        }
        let n = held.iter().filter(|x| x.source == h.source).count();
        if best.is_none_or(|(_, most)| n > most) {
            best = Some((h.source, n));
        }
    }
    best.map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn places_are_given_until_full_and_freed_on_drop() {
        let a = Admission::new(8);
        let places: Vec<_> = (1..=8)
            .map(|i| a.admit(ip(&format!("10.0.0.{i}"))))
            .collect();
        assert!(
            places
                .iter()
                .all(|(p, evicted)| !evicted && !p.evicted.is_cancelled())
        );
        assert_eq!(a.held(), 8);
        drop(places);
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_place_of_the_busiest_source() {
        let a = Admission::new(4);
        let (peer, _) = a.admit(ip("10.0.0.9"));
        let flood: Vec<_> = (0..3).map(|_| a.admit(ip("10.0.0.1")).0).collect();
        let (newcomer, evicted) = a.admit(ip("10.0.0.2"));
        assert!(evicted);
        assert!(flood[0].evicted.is_cancelled());
        assert!(flood[1..].iter().all(|p| !p.evicted.is_cancelled()));
        assert!(!peer.evicted.is_cancelled() && !newcomer.evicted.is_cancelled());
        assert_eq!(a.held(), 4);
        // A flood from one source only ever evicts itself.
        let (more, evicted) = a.admit(ip("10.0.0.1"));
        assert!(evicted && flood[1].evicted.is_cancelled());
        assert!(!peer.evicted.is_cancelled() && !more.evicted.is_cancelled());
    }

    #[test]
    fn among_equal_sources_the_oldest_place_goes() {
        let a = Admission::new(4);
        let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|s| a.admit(ip(s)).0)
            .collect();
        let (newcomer, evicted) = a.admit(ip("10.0.0.5"));
        assert!(evicted);
        assert!(held[0].evicted.is_cancelled());
        assert!(held[1..].iter().all(|p| !p.evicted.is_cancelled()));
        assert!(!newcomer.evicted.is_cancelled());
        assert_eq!(a.held(), 4);
    }

    #[test]
    fn busiest_picks_the_source_with_most_places() {
        let a = Admission::new(16);
        let _x = a.admit(ip("10.0.0.1"));
        let _flood: Vec<_> = (0..3).map(|_| a.admit(ip("10.0.0.2"))).collect();
        assert_eq!(busiest(&a.lock().held), Some(Source::of(ip("10.0.0.2"))));
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8::ffff:1234"))
        );
        assert_ne!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8:0:1::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
        assert_ne!(Source::of(ip("10.0.0.1")), Source::of(ip("10.0.0.2")));
    }
}
