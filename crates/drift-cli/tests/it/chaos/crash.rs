//! Scenario 1: SIGKILL nodes at random moments while stores run; every
//! acknowledged store must read back byte-identical from every node, no file
//! may be partial, and no temp file may survive a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Lab, Report, Rng, Scale, bad_chunk_files, content, put_via, temp_files, wait_until};

/// The size of store `i`: mostly small, every 25th spans several chunks.
fn size_of(seed: u64, i: u64) -> usize {
    let mut r = Rng::new(seed ^ i.wrapping_mul(0x51_7CC1_B727_220A));
    if i.is_multiple_of(25) {
        r.range(1_200_000, 2_600_000) as usize
    } else {
        r.range(1, 150_000) as usize
    }
}

#[test]
fn crash_during_writes() {
    let scale = Scale::get();
    // At least this many stores and kills; stores go on until both are done.
    let n_stores = scale.pick(60usize, 1000);
    let n_kills = scale.pick(4u64, 25);
    let max_stores = n_stores * 40;
    let writers = 3;
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let mut lab = Lab::start("crash", 3, false, |_| vec!["--replicas".into(), "3".into()]);
    let mut report = Report::new("crash during writes");
    report.method = "SIGKILL of node processes".into();
    report.figure("seed", seed);

    // Writers: each takes the next store number and stores it through a
    // random node (which may be dead at that moment: then the store fails).
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<BTreeMap<u64, bool>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..writers {
        let (clients, root) = (lab.clients.clone(), lab.root.clone());
        let (next, results, done, stop) =
            (next.clone(), results.clone(), done.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut pick = Rng::new(seed ^ (w as u64 + 7));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_stores || (i >= n_stores && stop.load(Ordering::Relaxed)) {
                    break;
                }
                let i = i as u64;
                let data = content(seed, i, size_of(seed, i));
                let node = pick.range(0, 3) as usize;
                let out = put_via(&clients, &root, node, &format!("crash/{i}"), &data);
                results.lock().unwrap().insert(i, out.status.success());
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }

    // The killer: SIGKILL a random node at a random moment, restart it after
    // a random pause; check the temp files the crash left are gone once it is back.
    let deadline = Instant::now() + scale.pick(Duration::from_secs(120), Duration::from_secs(480));
    let (mut kills, mut temps_left, mut temps_survived) = (0u64, 0u64, 0u64);
    while done.load(Ordering::Relaxed) < writers && Instant::now() < deadline {
        if kills >= n_kills {
            stop.store(true, Ordering::Relaxed);
        }
        // Random moments are the fault being injected, not synchronisation.
        std::thread::sleep(Duration::from_millis(rng.range(100, 1000)));
        if done.load(Ordering::Relaxed) == writers {
            break;
        }
        let victim = rng.range(0, 3) as usize;
        lab.kill(victim);
        kills += 1;
        let left = temp_files(&lab.nodes[victim].dir);
        temps_left += left.len() as u64;
        std::thread::sleep(Duration::from_millis(rng.range(50, 500)));
        lab.restart(victim);
        temps_survived += left.iter().filter(|p| p.exists()).count() as u64;
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    report.check(kills >= n_kills, || {
        format!("only {kills} of {n_kills} kills happened")
    });
    report.check(done.load(Ordering::Relaxed) == writers, || {
        "the stores did not finish in time".into()
    });
    report.faults = kills;
    let results = results.lock().unwrap().clone();
    let acked: Vec<u64> = results
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(i, _)| *i)
        .collect();
    report.operations = results.len() as u64;
    report.figure("stores acknowledged", acked.len());
    report.figure(
        "stores failed (node down mid-store)",
        results.len() - acked.len(),
    );
    report.figure("temp files left by crashes", temps_left);
    report.figure("temp files surviving a restart", temps_survived);
    report.check(temps_survived == 0, || {
        format!("{temps_survived} temp file(s) survived a restart")
    });
    report.check(acked.len() * 2 > results.len(), || {
        format!("only {} of {} stores succeeded", acked.len(), results.len())
    });

    // Heal, converge, and read everything back from every node.
    lab.wait_mesh(Duration::from_secs(60));
    let want: Vec<String> = acked.iter().map(|i| format!("crash/{i}")).collect();
    for node in 0..3 {
        let ok = wait_until(Duration::from_secs(60), Duration::from_millis(300), || {
            lab.clients.ls(node).is_some_and(|ls| {
                let names: std::collections::HashSet<&str> =
                    ls.iter().map(|(n, _)| n.as_str()).collect();
                want.iter().all(|w| names.contains(w.as_str()))
            })
        });
        report.check(ok, || {
            format!("node {node} did not list every acknowledged store")
        });
    }
    // Every listed name (acknowledged or not: a store may land although its
    // client saw the connection die) must be whole.
    let listed: Vec<(String, u64)> = lab.clients.ls(0).unwrap_or_default();
    let lost = Arc::new(AtomicUsize::new(0));
    let partial = Arc::new(AtomicUsize::new(0));
    let checked = Arc::new(AtomicUsize::new(0));
    let work: Arc<Mutex<Vec<(u64, bool)>>> = Arc::new(Mutex::new(
        results.iter().map(|(i, ok)| (*i, *ok)).collect(),
    ));
    let listed_names: std::collections::HashMap<String, u64> = listed.into_iter().collect();
    let listed_names = Arc::new(listed_names);
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let clients = lab.clients.clone();
            let (work, lost, partial, checked, listed_names, failures) = (
                work.clone(),
                lost.clone(),
                partial.clone(),
                checked.clone(),
                listed_names.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                loop {
                    let Some((i, acked)) = work.lock().unwrap().pop() else {
                        break;
                    };
                    let name = format!("crash/{i}");
                    let expect = content(seed, i, size_of(seed, i));
                    let Some(size) = listed_names.get(&name) else {
                        if acked {
                            lost.fetch_add(1, Ordering::Relaxed);
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{name} is not listed"));
                        }
                        continue;
                    };
                    checked.fetch_add(1, Ordering::Relaxed);
                    if *size != expect.len() as u64 {
                        partial.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut bad = false;
                    for node in 0..3 {
                        let out = clients.run(node, &["get", &name]);
                        if !out.status.success() || out.stdout != expect {
                            bad = true;
                            failures.lock().unwrap().push(format!(
                                "{name} via node {node}: {}",
                                if out.status.success() {
                                    format!(
                                        "wrong bytes ({} of {})",
                                        out.stdout.len(),
                                        expect.len()
                                    )
                                } else {
                                    super::stderr_line(&out)
                                }
                            ));
                        }
                    }
                    if bad {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    report.files_checked = checked.load(Ordering::Relaxed) as u64;
    report.files_lost = lost.load(Ordering::Relaxed) as u64;
    let partial = partial.load(Ordering::Relaxed);
    report.figure(
        "unacknowledged stores that landed (read back whole)",
        report.files_checked - acked.len() as u64,
    );
    report.figure("reads", report.files_checked * 3);
    report.check(partial == 0, || {
        format!("{partial} file(s) listed with a wrong size")
    });
    for f in failures.lock().unwrap().iter().take(10) {
        report.check(false, || f.clone());
    }
    for (i, node) in lab.nodes.iter().enumerate() {
        let bad = bad_chunk_files(&node.dir);
        report.check(bad.is_empty(), || {
            format!("node {i} holds {} torn chunk file(s)", bad.len())
        });
    }
    report.did = format!(
        "{} stores by {writers} writers through 3 nodes (R = 3); SIGKILL of a random node at random moments, each restarted; every store read back from every node",
        results.len()
    );
    report.finish(lab);
}
