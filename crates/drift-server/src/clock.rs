//! A hybrid logical clock: versions that order every write in the cluster.
//!
//! `time` is milliseconds since the Unix epoch shifted left 16 bits, plus a
//! logical counter in the low bits; `node` breaks ties between nodes. A node
//! never issues a version at or below one it has seen, so a delete written
//! after a store always wins, even across clock skew.

use std::time::{SystemTime, UNIX_EPOCH};

use drift_store::Version;

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
}
