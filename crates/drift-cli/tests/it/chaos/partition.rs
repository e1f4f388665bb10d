//! Scenario 2: cut one node off while stores and deletes go on, heal, and
//! check that it catches up: every new file, no deleted one, every chunk.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::netns::Net;
use super::{Lab, Report, Rng, Scale, chunk_files, content, wait_until};

fn chunk_names(dir: &std::path::Path) -> HashSet<String> {
    chunk_files(dir)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect()
}

#[test]
fn partition_heals() {
    let scale = Scale::get();
    let cut_for = scale.pick(Duration::from_secs(8), Duration::from_secs(30));
    let n_before = scale.pick(6u64, 20);
    let seed = Rng::seed();
    let use_netns = Net::available();
    let lab = Lab::start("partition", 3, use_netns, |_| vec![]);
    let mut report = Report::new("partition");
    report.method = if use_netns {
        "network namespaces + veth: the cut node's bridge port set down".into()
    } else {
        "SIGSTOP/SIGCONT of the cut node's process (not root or no `ip`)".into()
    };
    report.figure("seed", seed);
    let size = |i: u64| 50_000 + (i as usize * 97_003) % 1_500_000;
    let (a, cut) = (0usize, 2usize);

    for i in 0..n_before {
        let out = lab.put(a, &format!("before/{i}"), &content(seed, i, size(i)));
        assert!(out.status.success(), "{}", super::stderr_line(&out));
    }
    let all_before = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        lab.clients
            .ls(cut)
            .is_some_and(|l| l.len() as u64 == n_before)
    });
    assert!(all_before, "node {cut} did not get the first files");

    // Cut.
    let pid = lab.nodes[cut].pid().unwrap();
    match &lab.net {
        Some(net) => net.cut(cut).unwrap(),
        None => super::signal(pid, "STOP"),
    }
    report.faults = 1;
    let started = Instant::now();
    let (mut stored, mut deleted, mut ops, mut failed) = (Vec::new(), Vec::new(), 0u64, 0u64);
    let mut k = 0u64;
    // Bounded in count and time: stores and deletes through the two others.
    while started.elapsed() < cut_for && k < 1000 {
        let via = (k % 2) as usize;
        if k % 3 == 2 && (deleted.len() as u64) < n_before / 2 {
            let i = deleted.len() as u64;
            let out = lab.clients.run(via, &["rm", &format!("before/{i}")]);
            report.check(out.status.success(), || {
                format!(
                    "delete during the partition failed: {}",
                    super::stderr_line(&out)
                )
            });
            deleted.push(i);
        } else {
            let i = 1000 + k;
            let out = lab.put(via, &format!("during/{i}"), &content(seed, i, size(i)));
            if out.status.success() {
                stored.push(i);
            } else {
                failed += 1;
                report.check(false, || {
                    format!(
                        "store during the partition failed: {}",
                        super::stderr_line(&out)
                    )
                });
            }
        }
        ops += 1;
        k += 1;
    }
    let cut_secs = started.elapsed().as_secs_f64();

    // Heal.
    match &lab.net {
        Some(net) => net.heal(cut).unwrap(),
        None => super::signal(pid, "CONT"),
    }
    let healed = Instant::now();
    let want_names: HashSet<String> = (0..n_before)
        .filter(|i| !deleted.contains(i))
        .map(|i| format!("before/{i}"))
        .chain(stored.iter().map(|i| format!("during/{i}")))
        .collect();
    let converged = wait_until(Duration::from_secs(90), Duration::from_millis(300), || {
        let names_ok = lab.clients.ls(cut).is_some_and(|l| {
            l.iter().map(|(n, _)| n.clone()).collect::<HashSet<_>>() == want_names
        });
        names_ok && chunk_names(&lab.nodes[a].dir).is_subset(&chunk_names(&lab.nodes[cut].dir))
    });
    let catch_up = healed.elapsed().as_secs_f64();
    report.check(converged, || {
        format!("node {cut} did not converge within 90 s of the heal")
    });

    // Read every new file from the node that was cut off; deleted ones stay deleted.
    let mut lost = 0;
    for i in &stored {
        let out = lab.clients.run(cut, &["get", &format!("during/{i}")]);
        if !out.status.success() || out.stdout != content(seed, *i, size(*i)) {
            lost += 1;
        }
    }
    for i in &deleted {
        let out = lab.clients.run(cut, &["get", &format!("before/{i}")]);
        report.check(
            !out.status.success() && super::stderr_line(&out).contains("no such file"),
            || format!("deleted file before/{i} came back on node {cut}"),
        );
    }
    report.operations = ops;
    report.files_checked = (stored.len() + deleted.len()) as u64;
    report.files_lost = lost;
    report.figure("cut for", format!("{cut_secs:.1} s"));
    report.figure("stores during the cut", stored.len());
    report.figure("deletes during the cut", deleted.len());
    report.figure("failed operations", failed);
    report.figure(
        "cut node caught up (names, tombstones, every chunk) after",
        format!("{catch_up:.1} s"),
    );
    report.did = format!(
        "3 nodes (R = 3); node {cut} cut off for {cut_secs:.0} s while the others took stores and deletes; healed; node {cut} checked"
    );
    report.finish(lab);
}
