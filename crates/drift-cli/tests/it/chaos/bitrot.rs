//! Scenario 3: flip one byte in each of 10 random chunk files on one node.
//! Reads return the right bytes or a clear integrity error, never wrong
//! bytes; the scrub finds and repairs all 10.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Lab, Report, Rng, Scale, bad_chunk_files, chunk_files, content, wait_until};

/// Flips one byte of `path` in place (a random position, a random nonzero mask).
fn rot(path: &Path, rng: &mut Rng) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = rng.range(0, bytes.len() as u64) as usize;
    bytes[at] ^= rng.range(1, 256) as u8;
    std::fs::write(path, bytes).unwrap();
}

fn pick(files: &[PathBuf], n: usize, rng: &mut Rng) -> Vec<PathBuf> {
    let mut pool = files.to_vec();
    let mut out = Vec::new();
    while out.len() < n && !pool.is_empty() {
        out.push(pool.swap_remove(rng.range(0, pool.len() as u64) as usize));
    }
    out
}

fn quarantined(lab: &Lab, i: usize) -> u64 {
    lab.clients
        .status(i)
        .and_then(|s| s["quarantined"].as_u64())
        .unwrap_or(0)
}

#[test]
fn bit_rot_is_detected_and_repaired() {
    let scale = Scale::get();
    let n_files = scale.pick(8u64, 30);
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    // Node 0 scrubs every 2 s; the others only hourly, so reads meet their rot first.
    let lab = Lab::start("bitrot", 3, false, |i| {
        if i == 0 {
            vec!["--scrub-interval".into(), "2".into()]
        } else {
            vec![]
        }
    });
    let mut report = Report::new("bit rot");
    report.method = "one byte flipped in place in chunk files".into();
    report.figure("seed", seed);
    let size = |i: u64| 300_000 + i as usize * 250_000 % 2_400_000;
    for i in 0..n_files {
        let out = lab.put(0, &format!("rot/{i}"), &content(seed, i, size(i)));
        assert!(out.status.success(), "{}", super::stderr_line(&out));
    }
    let read_all = |node: usize, report: &mut Report| -> (u64, u64) {
        let (mut right, mut integrity_errors) = (0, 0);
        for i in 0..n_files {
            let out = lab.clients.run(node, &["get", &format!("rot/{i}")]);
            if out.status.success() {
                report.check(out.stdout == content(seed, i, size(i)), || {
                    format!("rot/{i} via node {node} returned WRONG BYTES")
                });
                right += 1;
            } else {
                let err = super::stderr_line(&out);
                report.check(err.contains("integrity error"), || {
                    format!("rot/{i} via node {node} failed unclearly: {err}")
                });
                integrity_errors += 1;
            }
        }
        (right, integrity_errors)
    };

    // Phase 1, reads: rot 10 chunks on node 1 (hourly scrub), read everything through it.
    let files1 = chunk_files(&lab.nodes[1].dir);
    assert!(files1.len() >= 10, "only {} chunk files", files1.len());
    let rotten1 = pick(&files1, 10, &mut rng);
    for p in &rotten1 {
        rot(p, &mut rng);
    }
    let (right, errs) = read_all(1, &mut report);
    report.figure(
        "reads through the rotten node",
        format!("{right} right bytes, {errs} integrity errors, 0 wrong"),
    );
    let healed_by_reads = rotten1.iter().filter(|p| p.exists()).count();
    report.figure(
        "rotten chunks re-fetched by reads (read repair)",
        healed_by_reads,
    );

    // Phase 2, scrub: rot 10 chunks on node 0 and let its scrub find them.
    let files0 = chunk_files(&lab.nodes[0].dir);
    let rotten0 = pick(&files0, 10, &mut rng);
    let before = quarantined(&lab, 0);
    for p in &rotten0 {
        rot(p, &mut rng);
    }
    let scrubbed = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        quarantined(&lab, 0) >= before + 10
            && rotten0.iter().all(|p| p.exists())
            && bad_chunk_files(&lab.nodes[0].dir).is_empty()
    });
    let found = quarantined(&lab, 0) - before;
    let repaired = rotten0.iter().filter(|p| p.exists()).count();
    report.figure("scrub found", found);
    report.figure("scrub repaired", repaired);
    report.check(scrubbed && found == 10 && repaired == 10, || {
        format!("scrub found {found} and repaired {repaired} of 10")
    });

    // Phase 3: a chunk rotten on every replica is a clear integrity error.
    let old: std::collections::HashSet<PathBuf> =
        chunk_files(&lab.nodes[1].dir).into_iter().collect();
    let doomed = content(seed, 9999, 1000);
    assert!(lab.put(1, "rot/doomed", &doomed).status.success());
    let new: Vec<PathBuf> = chunk_files(&lab.nodes[1].dir)
        .into_iter()
        .filter(|p| !old.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "a 1000-byte file is one chunk");
    let rel = new[0]
        .strip_prefix(&lab.nodes[1].dir)
        .unwrap()
        .to_path_buf();
    for node in &lab.nodes[1..] {
        rot(&node.dir.join(&rel), &mut rng);
    }
    // Node 0 scrubs: take its copy away rather than race the scrub.
    let _ = std::fs::remove_file(lab.nodes[0].dir.join(&rel));
    let out = lab.clients.run(1, &["get", "rot/doomed"]);
    let err = super::stderr_line(&out);
    report.check(
        !out.status.success() && out.stdout.is_empty() && err.contains("integrity error"),
        || {
            format!(
                "a chunk rotten everywhere gave: {err:?} and {} bytes",
                out.stdout.len()
            )
        },
    );
    report.figure("chunk rotten on every replica", err);

    // Every file still reads back right from every node.
    let mut lost = 0;
    for node in 0..3 {
        let (right, _) = read_all(node, &mut report);
        lost = lost.max(n_files - right);
    }
    report.faults = 10 + 10 + 2;
    report.operations = n_files + n_files * 4 + 2;
    report.files_checked = n_files;
    report.files_lost = lost;
    report.did = format!(
        "{n_files} files on 3 nodes (R = 3); 10 chunks rotted on node 1 then read, 10 on node 0 left to its scrub (every 2 s), 1 chunk rotted on every replica"
    );
    report.finish(lab);
}
