//! A hybrid logical clock: versions that order every write in the cluster.
//!
//! `time` is milliseconds since the Unix epoch shifted left 16 bits, plus a
//! logical counter in the low bits; `node` breaks ties between nodes. A node
//! never issues a version at or below one it has seen, so a delete written
//! after a store always wins, even across clock skew.
//!
//! A version too far ahead of this node's wall clock ([`MAX_AHEAD`]) is not
//! plausible and is refused: observed, one such version (a member's broken
//! clock, or a faulty member's `u64::MAX`) would make every later version
//! here follow it, and a name written with it could not be overwritten or
//! deleted until the wall clock caught up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drift_store::Version;

/// How far ahead of this node's wall clock a version may be. Generous for
/// clocks kept by NTP; a node further ahead has its writes refused (and
/// logged) by the others until its clock is fixed.
pub const MAX_AHEAD: Duration = Duration::from_secs(10 * 60);

/// Whether `v` is at most [`MAX_AHEAD`] ahead of the wall clock.
pub fn plausible(v: drift_store::Version) -> bool {
    v.time <= wall().saturating_add((MAX_AHEAD.as_millis() as u64) << 16)
}

/// Issues versions for one node.
#[derive(Debug)]
pub struct Clock {
    node: u64,
    last: u64,
}

fn wall() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << 16
}

impl Clock {
    /// A clock for `node` that has already seen `last`.
    pub fn new(node: u64, last: u64) -> Self {
        Self { node, last }
    }

    /// A version newer than every version issued or observed here.
    pub fn next(&mut self) -> Version {
        self.last = wall().max(self.last.saturating_add(1));
        Version {
            time: self.last,
            node: self.node,
        }
    }

    /// Records a version seen from elsewhere.
    pub fn observe(&mut self, v: Version) {
        self.last = self.last.max(v.time);
    }

    /// The wall-clock part of the current time, in the same units as `Version::time`.
    pub fn now_time() -> u64 {
        wall()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_pass_observed_ones() {
        let mut c = Clock::new(1, 0);
        let a = c.next();
        let b = c.next();
        assert!(b > a);
        let far = Version {
            time: a.time + (1000 << 16),
            node: 2,
        };
        c.observe(far);
        let d = c.next();
        assert!(d > far);
        assert_eq!(d.node, 1);
    }

    #[test]
    fn versions_far_ahead_of_the_wall_clock_are_not_plausible() {
        let now = Clock::new(1, 0).next();
        assert!(plausible(now));
        let minute = 60_000u64 << 16;
        let soon = Version {
            time: now.time + minute,
            node: 2,
        };
        assert!(plausible(soon));
        let later = Version {
            time: now.time + 11 * minute,
            node: 2,
        };
        assert!(!plausible(later));
        assert!(!plausible(Version {
            time: u64::MAX,
            node: 2
        }));
    }
}
