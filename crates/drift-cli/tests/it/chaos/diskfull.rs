//! Scenario 6: nodes run out of space (a `--max-bytes` quota in the store).
//! Stores place replicas elsewhere or fail with a clear error; nothing is
//! torn, and full nodes keep serving reads.

use super::{Lab, Report, Rng, Scale, bad_chunk_files, chunk_files, content, temp_files};

const FILE_LEN: usize = 600_000;

#[test]
fn full_disks_fail_clearly() {
    let scale = Scale::get();
    let max_stores = scale.pick(30u64, 60);
    let seed = Rng::seed();
    // Node 0 is unlimited; nodes 1..3 fill up after 4, 8 and 12 chunks.
    let quota = |i: usize| (i as u64) * 4 * FILE_LEN as u64 + FILE_LEN as u64 / 2;
    let lab = Lab::start("diskfull", 4, false, |i| {
        let mut a = vec!["--replicas".to_string(), "3".to_string()];
        if i > 0 {
            a.extend(["--max-bytes".to_string(), quota(i).to_string()]);
        }
        a
    });
    let mut report = Report::new("disk full");
    report.method = "--max-bytes quota in the chunk store".into();
    report.figure("seed", seed);

    let (mut ok, mut refused, mut unclear) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_error = String::new();
    let mut streak = 0;
    for i in 0..max_stores {
        let out = lab.put(
            (i % 4) as usize,
            &format!("full/{i}"),
            &content(seed, i, FILE_LEN),
        );
        if out.status.success() {
            ok.push(i);
            streak = 0;
        } else {
            let err = super::stderr_line(&out);
            let clear = err.lines().count() == 1 && err.contains("out of space");
            if !clear {
                unclear.push(err.clone());
            }
            if first_error.is_empty() {
                first_error = err;
            }
            refused.push(i);
            streak += 1;
            if streak >= 5 {
                break;
            }
        }
    }
    report.figure("stores accepted", ok.len());
    report.figure("stores refused", refused.len());
    report.figure("the error a refused store gave", &first_error);
    report.check(!refused.is_empty(), || "the disks never filled up".into());
    report.check(unclear.is_empty(), || {
        format!("unclear errors: {unclear:?}")
    });

    // Nothing torn: a refused store left no name; every chunk file is whole.
    for i in &refused {
        for node in 0..4 {
            let out = lab.clients.run(node, &["get", &format!("full/{i}")]);
            report.check(
                !out.status.success() && super::stderr_line(&out).contains("no such file"),
                || format!("refused store full/{i} is visible on node {node}"),
            );
        }
    }
    for (i, node) in lab.nodes.iter().enumerate() {
        let bytes: u64 = chunk_files(&node.dir)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        report.figure(
            &format!("node {i} chunk bytes"),
            match i {
                0 => format!("{bytes} (no quota)"),
                _ => format!("{bytes} of a {} quota", quota(i)),
            },
        );
        if i > 0 {
            report.check(bytes <= quota(i), || {
                format!("node {i} went over its quota")
            });
        }
        report.check(temp_files(&node.dir).is_empty(), || {
            format!("node {i} left temp files")
        });
        report.check(bad_chunk_files(&node.dir).is_empty(), || {
            format!("node {i} has torn chunks")
        });
    }

    // Every accepted store reads back through every node, full ones included.
    let mut lost = 0;
    for i in &ok {
        let expect = content(seed, *i, FILE_LEN);
        let mut good = true;
        for node in 0..4 {
            let out = lab.clients.run(node, &["get", &format!("full/{i}")]);
            if !out.status.success() || out.stdout != expect {
                good = false;
                report.check(false, || {
                    format!("full/{i} via node {node}: {}", super::stderr_line(&out))
                });
            }
        }
        lost += u64::from(!good);
    }
    report.operations = (ok.len() + refused.len()) as u64 * 5;
    report.faults = 3;
    report.files_checked = (ok.len() + refused.len()) as u64;
    report.files_lost = lost;
    report.did = format!(
        "4 nodes (R = 3), 3 of them with small quotas; {FILE_LEN}-byte stores until 5 in a row were refused; every store checked on every node"
    );
    report.finish(lab);
}
