//! Floors: the least work a transfer needs on this machine, computed from the
//! same run's reference figures, and drift's figure set against it.
//!
//! Issue 8's limits count only the chunk pipeline and the disk. A transfer
//! between processes also crosses loopback TCP hops, and every process
//! shares the same two cores and the same disk. A floor adds up what no
//! design can skip:
//! - one pass of the seal (or open) pipeline: R2 checks a chunk before its
//!   plaintext leaves a node;
//! - each hop's TCP, at the cost of the reference's plain tokio copy loop;
//! - the transport cipher at both ends of each hop that carries plaintext
//!   (R1); a hop that carries sealed chunks could go without it;
//! - each copy that must be fsynced before the call returns, on the one disk.
//!
//! Where a target asks for more than its floor allows, the report says so:
//! that target is out of reach on this machine, whatever drift does.

use super::refs::Primitives;
use super::report::Row;

pub const SECTION: &str = "Floors: the least work each transfer needs (same run)";

const MIB: f64 = (1 << 20) as f64;
/// The size issue 8's time targets are for.
const TARGET_BYTES: f64 = (256 << 20) as f64;
/// Issue 8's single-node put target: this share of the put limit.
pub const SINGLE_PUT_SHARE: f64 = 0.7;
/// Issue 8's 3-node put target: this share of the single-node put.
pub const THREE_PUT_SHARE: f64 = 0.5;

/// The references a floor is made of.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub prims: Primitives,
    /// The transport's AES-256-GCM, one core, MB/s (opening is taken to cost as much as sealing).
    pub gcm: f64,
    /// One loopback TCP hop, sender and receiver together, CPU-ms/MiB.
    pub hop: f64,
    /// memcpy, one core, MB/s.
    pub memcpy: f64,
    pub cores: f64,
}

/// CPU-ms per MiB at `mb_per_s`.
fn ms_per_mib(mb_per_s: f64) -> f64 {
    MIB / 1e6 / mb_per_s * 1e3
}

impl Floor {
    /// The least CPU per MiB for a transfer through `hops` hops, one of
    /// which carries plaintext, and one pass of the seal (or open) pipeline.
    pub fn cpu(&self, hops: u32) -> f64 {
        ms_per_mib(self.prims.one_core_pipeline())
            + f64::from(hops) * self.hop
            + 2.0 * ms_per_mib(self.gcm)
    }

    /// A stricter CPU floor: every hop only two memcpys (into the kernel and
    /// out), and no transport cipher at all.
    pub fn cpu_bare(&self, hops: u32) -> f64 {
        ms_per_mib(self.prims.one_core_pipeline()) + f64::from(hops) * 2.0 * ms_per_mib(self.memcpy)
    }

    /// The highest rate, MB/s, with the CPU floor spread over every core and
    /// `copies` fsynced copies sharing the one disk.
    pub fn put_rate(&self, hops: u32, copies: u32) -> f64 {
        self.cpu_rate(hops)
            .min(self.prims.fsync_write / f64::from(copies.max(1)))
    }

    /// As [`Floor::put_rate`], for a read of one copy off the disk.
    pub fn get_rate(&self, hops: u32) -> f64 {
        self.cpu_rate(hops).min(self.prims.direct_read)
    }

    fn cpu_rate(&self, hops: u32) -> f64 {
        self.cores * 1e3 / self.cpu(hops) * MIB / 1e6
    }

    /// The single-node put against its floor: the client's hop and one seal.
    pub fn single_put(&self, label: &str, puts: Vec<f64>) -> Row {
        let floor = self.put_rate(1, 1);
        let target = SINGLE_PUT_SHARE * self.prims.put_limit();
        Row::new(SECTION, format!("single-node put, {label}"), "MB/s")
            .samples(puts)
            .against(
                "floor: 1 seal + 1 encrypted hop on every core, 1 fsynced copy",
                floor,
            )
            .note(format!(
                "issue 8's target, 0.7 × the put limit = {target:.0} MB/s, is {} of this floor",
                share(target, floor)
            ))
    }

    /// The 3-node put against the floor of a put that returns at a quorum,
    /// with the floor of one that waits for every copy (as drift does) beside it.
    ///
    /// Its ratio target is a share of the single-node put, so it also says
    /// what that share asks for once the single put meets its own target:
    /// the two targets hold together only if this one is within the floor.
    pub fn three_put(&self, label: &str, puts: Vec<f64>, limit_s: f64) -> Row {
        let quorum = self.put_rate(2, 2);
        let every = self.put_rate(3, 3);
        let target = TARGET_BYTES / limit_s / 1e6;
        let paired = THREE_PUT_SHARE * SINGLE_PUT_SHARE * self.prims.put_limit();
        Row::new(SECTION, format!("3-node put, R = 3, {label}"), "MB/s")
            .samples(puts)
            .against(
                "floor at a quorum: 1 seal + 2 hops (1 encrypted) on every core, 2 fsynced copies on the one disk",
                quorum,
            )
            .note(format!(
                "with all 3 copies before returning, as drift does: 1 seal + 3 hops, 3 copies = {every:.0} MB/s; \
                 the ≤ {limit_s} s target for 256 MiB ({target:.0} MB/s) is {} of the quorum floor and {} of this one;                  {THREE_PUT_SHARE} × a single-node put that meets its own target ({paired:.0} MB/s) is {} of the quorum floor and {} of this one",
                share(target, quorum),
                share(target, every),
                share(paired, quorum),
                share(paired, every)
            ))
    }

    /// The get through a node without a copy against its floor: the holder's
    /// hop to that node, that node's open, its hop to the client.
    pub fn remote_get(&self, label: &str, gets: Vec<f64>, limit_s: f64) -> Row {
        let floor = self.get_rate(2);
        let target = TARGET_BYTES / limit_s / 1e6;
        Row::new(
            SECTION,
            format!("get through a node without a copy, {label}"),
            "MB/s",
        )
        .samples(gets)
        .against("floor: 1 open + 2 hops (1 encrypted) on every core", floor)
        .note(format!(
            "the ≤ {limit_s} s target for 256 MiB ({target:.0} MB/s) is {} of this floor",
            share(target, floor)
        ))
    }

    /// The same get's CPU (nodes and client together) against its floor; the
    /// ratio is drift's CPU over the floor's.
    pub fn remote_get_cpu(&self, cpu: Vec<f64>, limit: f64) -> Row {
        let floor = self.cpu(2);
        let bare = self.cpu_bare(2);
        Row::new(
            SECTION,
            "get through a node without a copy, CPU of the nodes and the client",
            "CPU-ms/MiB",
        )
            .samples(cpu)
            .against("floor: 1 open + 2 hops (1 encrypted)", floor)
            .note(format!(
                "ratio = drift's CPU over the floor; against the ≤ {limit} CPU-ms/MiB target, this floor is {} of it, \
                 and one with no transport cipher and hops of 2 memcpys each ({bare:.2}) is {}",
                share(floor, limit),
                share(bare, limit)
            ))
    }
}

/// `need / have`, flagged above 1: a rate target over its floor's rate, or a
/// CPU floor over its target's CPU, is out of reach.
fn share(need: f64, have: f64) -> String {
    if !(need.is_finite() && have.is_finite() && have > 0.0) {
        return "not known".to_string();
    }
    let s = need / have;
    if s > 1.0 {
        format!("{s:.2} (out of reach on this machine)")
    } else {
        format!("{s:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// References picked so the pipeline costs 1 CPU-ms/MiB, the transport
    /// cipher 0.5 at each end of a hop and the hop's TCP 0.5.
    fn floor() -> Floor {
        let one_third = 3.0 * MIB / 1e6 * 1e3;
        Floor {
            prims: Primitives {
                sha1: one_third,
                aes: one_third,
                blake3: one_third,
                fsync_write: 600.0,
                direct_read: 5000.0,
            },
            gcm: 2.0 * MIB / 1e6 * 1e3,
            hop: 0.5,
            memcpy: 4.0 * MIB / 1e6 * 1e3,
            cores: 2.0,
        }
    }

    #[test]
    fn a_floor_adds_the_pipeline_and_each_hop() {
        let f = floor();
        // The pipeline, and the cipher at both ends of the one hop carrying plaintext.
        assert!((f.cpu(0) - 2.0).abs() < 1e-9);
        assert!((f.cpu(2) - 3.0).abs() < 1e-9);
        assert!((f.cpu_bare(2) - 2.0).abs() < 1e-9);
        // 2 cores at 4 CPU-ms/MiB (3 hops): 500 MiB/s; the disk, shared by 2 copies, allows 300 MB/s.
        assert!((f.get_rate(4) - 500.0 * MIB / 1e6).abs() < 1e-6);
        assert!((f.put_rate(2, 2) - 300.0).abs() < 1e-9);
        assert!((f.put_rate(4, 1) - 524.288).abs() < 1e-6);
    }

    #[test]
    fn a_target_beyond_its_floor_is_called_out_of_reach() {
        let f = floor();
        // 256 MiB in 0.5 s is 537 MB/s, over the quorum floor's 300.
        let put = f.three_put("256 MiB", vec![100.0], 0.5);
        assert!((put.ratio().unwrap() - 100.0 / 300.0).abs() < 1e-9);
        assert!(put.note.contains("1.79 (out of reach"), "{}", put.note);
        // Half of a single put at 0.7 of its limit (the 600 MB/s disk) is
        // 210 MB/s: within the quorum floor, over the all-copies one (200).
        assert!(
            put.note
                .contains("(210 MB/s) is 0.70 of the quorum floor and 1.05 (out of reach"),
            "{}",
            put.note
        );
        // A floor of 3 CPU-ms/MiB is 3 times a 1 CPU-ms/MiB target.
        let cpu = f.remote_get_cpu(vec![5.0], 1.0);
        assert!(cpu.note.contains("3.00 (out of reach"), "{}", cpu.note);
        // 256 MiB in 2 s is 134 MB/s, within the floor's 699.
        let get = f.remote_get("256 MiB", vec![400.0], 2.0);
        assert!(get.note.contains("is 0.19 of this floor"), "{}", get.note);
        assert!(!get.note.contains("out of reach"), "{}", get.note);
    }
}
