//! End-to-end tests of the `drift` binary: real node processes on loopback.

mod chaos;
mod harness;

use std::time::Duration;

use harness::{Cluster, bin, drift, drift_to, free_port, spawn_with_stderr};

#[test]
fn keygen_prints_a_fresh_secret() {
    let a = drift(&["keygen"], None).assert_ok();
    let b = drift(&["keygen"], None).assert_ok();
    assert_eq!(a.trim().len(), 64);
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn put_get_rm_ls_status_across_three_nodes() {
    let c = Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("report.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();

    c.run(0, &["put", input.to_str().unwrap()]).assert_ok();
    c.run(
        0,
        &["put", input.to_str().unwrap(), "--name", "copy/of/report"],
    )
    .assert_ok();

    // Through a node that did not ingest it, to stdout and to a file.
    let out = c.run_bytes(2, &["get", "report.bin"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
    let target = dir.path().join("fetched.bin");
    c.run(
        1,
        &["get", "copy/of/report", "-o", target.to_str().unwrap()],
    )
    .assert_ok();
    assert_eq!(std::fs::read(&target).unwrap(), data);

    let ls = c.run(1, &["ls"]).assert_ok();
    assert!(
        ls.contains("report.bin") && ls.contains("copy/of/report"),
        "{ls}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.run(2, &["ls", "--json"]).assert_ok()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    let status = c.run(0, &["status"]).assert_ok();
    assert!(status.contains("2 of 2 peer(s) up"), "{status}");
    let status: serde_json::Value =
        serde_json::from_str(&c.run(0, &["status", "--json"]).assert_ok()).unwrap();
    assert_eq!(status["names"], 2);
    assert_eq!(status["peers"].as_array().unwrap().len(), 2);

    c.run(2, &["rm", "report.bin"]).assert_ok();
    let err = c.run(0, &["get", "report.bin"]).assert_err();
    assert_eq!(err.trim(), "drift: no such file: report.bin");
    let json: serde_json::Value =
        serde_json::from_str(&c.run(0, &["ls", "--json"]).assert_ok()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
}

#[test]
fn a_killed_node_does_not_stop_gets_or_puts() {
    let mut c = Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("survivor.txt");
    std::fs::write(&input, b"still here").unwrap();
    c.run(0, &["put", input.to_str().unwrap()]).assert_ok();
    c.kill(2);
    assert_eq!(
        c.run_bytes(1, &["get", "survivor.txt"]).stdout,
        b"still here"
    );
    let second = dir.path().join("second.txt");
    std::fs::write(&second, b"written with a node down").unwrap();
    c.run(1, &["put", second.to_str().unwrap()]).assert_ok();
    assert_eq!(
        c.run_bytes(0, &["get", "second.txt"]).stdout,
        b"written with a node down"
    );
}

#[test]
fn every_error_is_one_clear_line() {
    let c = Cluster::start(1);
    let node = c.addr(0).to_string();
    let one_line = |s: &str| {
        assert_eq!(s.trim_end().lines().count(), 1, "{s:?}");
        s.trim().to_string()
    };

    // Missing secret.
    let e = drift(&["ls", "--node", &node], None).assert_err();
    assert!(
        one_line(&e).contains("cluster secret missing: pass --secret-file or set DRIFT_SECRET"),
        "{e}"
    );
    // Malformed secret.
    let e = drift(&["ls", "--node", &node], Some("not-a-secret")).assert_err();
    assert!(one_line(&e).contains("malformed cluster secret"), "{e}");
    // A secret file that does not exist.
    let e = drift(
        &[
            "ls",
            "--node",
            &node,
            "--secret-file",
            "/nonexistent/secret",
        ],
        None,
    )
    .assert_err();
    assert!(
        one_line(&e).contains("cannot read secret file /nonexistent/secret"),
        "{e}"
    );
    // A device given as the secret file is read only so far.
    let e = drift(&["ls", "--node", &node, "--secret-file", "/dev/zero"], None).assert_err();
    assert!(one_line(&e).contains("malformed cluster secret"), "{e}");
    // The wrong secret.
    let wrong = drift(&["keygen"], None).assert_ok();
    let e = drift(&["ls", "--node", &node], Some(wrong.trim())).assert_err();
    assert!(one_line(&e).contains("cluster secret"), "{e}");
    // A node that cannot be reached, reported within seconds.
    let started = std::time::Instant::now();
    let dead = format!("127.0.0.1:{}", free_port());
    let e = drift(&["ls", "--node", &dead], Some(&c.secret)).assert_err();
    assert!(
        one_line(&e).contains(&format!("cannot reach node {dead}")),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A name that does not exist.
    let e = c.run(0, &["get", "ghost.txt"]).assert_err();
    assert_eq!(one_line(&e), "drift: no such file: ghost.txt");
    let e = c.run(0, &["rm", "ghost.txt"]).assert_err();
    assert_eq!(one_line(&e), "drift: no such file: ghost.txt");
    // A name over the limit is named as such, not as a message too large.
    let long = "n".repeat(100_000);
    let e = c.run(0, &["get", &long]).assert_err();
    assert!(
        one_line(&e).contains("invalid file name: names are at most 1024 bytes"),
        "{e}"
    );
    let input = tempfile::NamedTempFile::new().unwrap();
    let e = c
        .run(0, &["put", input.path().to_str().unwrap(), "--name", &long])
        .assert_err();
    assert!(one_line(&e).contains("names are at most 1024 bytes"), "{e}");
    // An input file that cannot be read.
    let e = c.run(0, &["put", "/nonexistent/input.bin"]).assert_err();
    assert!(
        one_line(&e).contains("cannot read /nonexistent/input.bin"),
        "{e}"
    );
    // A failed get -o leaves no file behind.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.bin");
    c.run(0, &["get", "ghost.txt", "-o", target.to_str().unwrap()])
        .assert_err();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn node_reports_a_port_in_use_and_an_unwritable_data_dir() {
    let c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let e = drift(
        &[
            "node",
            "--listen",
            &c.addr(0).to_string(),
            "--data",
            dir.path().join("d").to_str().unwrap(),
        ],
        Some(&c.secret),
    )
    .assert_err();
    assert!(
        e.contains("cannot listen on") && e.contains("in use"),
        "{e}"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let port = free_port();
    let e = drift(
        &[
            "node",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            file.join("sub").to_str().unwrap(),
        ],
        Some(&c.secret),
    )
    .assert_err();
    assert!(e.contains("cannot open data directory"), "{e}");
    // The data directory itself is a file.
    let e = drift(
        &[
            "node",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            file.to_str().unwrap(),
        ],
        Some(&c.secret),
    )
    .assert_err();
    assert!(e.contains("is not a directory"), "{e}");
}

#[test]
fn a_node_warns_when_a_bootstrap_peer_cannot_be_reached() {
    let secret = drift(&["keygen"], None).assert_ok().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let (_node, lines) = spawn_with_stderr(
        &[
            "node",
            "--listen",
            &listen,
            "--data",
            dir.path().to_str().unwrap(),
            "--peer",
            &nobody,
            "--exit-with-parent",
        ],
        &secret,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("cannot reach bootstrap peer") && line.contains(&nobody) => {
                break;
            }
            Ok(line) => seen.push(line),
            Err(_) => panic!("no warning about {nobody} within 20 s; stderr: {seen:#?}"),
        }
    }
    // `drift status` says so too, with the reason.
    let out = drift(&["status", "--node", &listen], Some(&secret)).assert_ok();
    assert!(
        out.contains(&format!("not reached {nobody} (")) && out.contains("cannot connect"),
        "{out}"
    );
}

#[test]
fn sigterm_shuts_a_node_down_cleanly_and_its_data_survives() {
    let mut c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("durable.txt");
    std::fs::write(&input, b"flushed before exit").unwrap();
    c.run(0, &["put", input.to_str().unwrap()]).assert_ok();
    assert!(c.terminate(0), "drift node exits 0 on SIGTERM");
    c.restart(0);
    assert_eq!(
        c.run_bytes(0, &["get", "durable.txt"]).stdout,
        b"flushed before exit"
    );
}

#[test]
fn a_node_started_with_exit_with_parent_stops_when_its_parent_dies() {
    // A shell starts the node in the background, prints its pid, lives a
    // moment longer, and exits.
    let secret = drift(&["keygen"], None).assert_ok();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{} node --listen 127.0.0.1:{} --data {} --exit-with-parent >/dev/null 2>&1 & echo $!; sleep 1",
        harness::bin(),
        free_port(),
        dir.path().display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("DRIFT_SECRET", secret.trim())
        .output()
        .unwrap();
    let pid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!pid.is_empty());
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while proc_dir.exists()
        && !std::fs::read_to_string(proc_dir.join("stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned node {pid} is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn usage_errors_are_one_line_and_short_addresses_work() {
    let run = drift(&["put"], None);
    assert_eq!(run.0.status.code(), Some(2));
    let e = String::from_utf8(run.0.stderr).unwrap();
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("<FILE>"), "{e}");
    // No command at all: one line that names the commands, not the help text.
    let run = drift(&[], None);
    assert_eq!(run.0.status.code(), Some(2));
    let e = String::from_utf8(run.0.stderr).unwrap();
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.starts_with("drift: a command is required: keygen, node, put"),
        "{e}"
    );
    // A node's memory for transfers has a floor.
    let run = drift(
        &[
            "node",
            "--listen",
            ":0",
            "--data",
            "x",
            "--transfer-memory",
            "8",
        ],
        None,
    );
    assert_eq!(run.0.status.code(), Some(2));
    let e = String::from_utf8(run.0.stderr).unwrap();
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("--transfer-memory") && e.contains("16"), "{e}");
    // `:PORT` means loopback, as the original demo wrote its nodes.
    let c = Cluster::start(1);
    let port = c.addr(0).port().to_string();
    let out = drift(&["ls", "--node", &format!(":{port}")], Some(&c.secret)).assert_ok();
    assert!(out.contains("0 file(s)"), "{out}");
    let out = drift(
        &["ls", "--node", &format!("localhost:{port}")],
        Some(&c.secret),
    )
    .assert_ok();
    assert!(out.contains("0 file(s)"), "{out}");
}

#[test]
fn get_to_a_fifo_or_through_a_symlink_keeps_what_the_path_is() {
    use std::os::unix::fs::FileTypeExt;
    let c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    c.run(0, &["put", input.to_str().unwrap(), "--name", "f"])
        .assert_ok();

    // A FIFO (as /dev/null is a device) is written in place, not replaced.
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    c.run(0, &["get", "f", "-o", fifo.to_str().unwrap()])
        .assert_ok();
    // Checked before joining: had the FIFO been replaced, its reader would
    // never see a writer.
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(reader.join().unwrap(), data);

    // A symlink stays a link; the file it names gets the bytes.
    let real = dir.path().join("real.bin");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.path().join("link.bin");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    c.run(0, &["get", "f", "-o", link.to_str().unwrap()])
        .assert_ok();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&real).unwrap(), data);
}

#[test]
fn get_to_a_file_gives_the_usual_mode_and_names_only_that_file() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, b"mode test").unwrap();
    c.run(0, &["put", input.to_str().unwrap(), "--name", "m"])
        .assert_ok();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A new file: the mode any program's new file gets under this umask
    // (the input was made the same way), not a temporary file's 0600.
    let fresh = dir.path().join("fresh.txt");
    c.run(0, &["get", "m", "-o", fresh.to_str().unwrap()])
        .assert_ok();
    assert_eq!(std::fs::read(&fresh).unwrap(), b"mode test");
    assert_eq!(mode(&fresh), mode(&input));
    // A replaced file keeps its mode.
    let kept = dir.path().join("kept.txt");
    std::fs::write(&kept, b"old").unwrap();
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
    c.run(0, &["get", "m", "-o", kept.to_str().unwrap()])
        .assert_ok();
    assert_eq!(std::fs::read(&kept).unwrap(), b"mode test");
    assert_eq!(mode(&kept), 0o640);
    // A failure names the file asked for, not the temporary one.
    let nowhere = dir.path().join("no-such-dir").join("out.txt");
    let e = c
        .run(0, &["get", "m", "-o", nowhere.to_str().unwrap()])
        .assert_err();
    assert!(e.contains(nowhere.to_str().unwrap()), "{e}");
    assert!(!e.contains(".drift-get-"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `drift status | head -0`: the reader is gone before drift writes.
    let c = Cluster::start(1);
    let node = c.addr(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, vec![5u8; 3 << 20]).unwrap();
    drift(
        &[
            "put",
            input.to_str().unwrap(),
            "--name",
            "f",
            "--node",
            &node,
        ],
        Some(&c.secret),
    )
    .assert_ok();
    for args in [
        vec!["status", "--node", &node],
        vec!["ls", "--node", &node],
        vec!["keygen"],
        vec!["get", "f", "--node", &node],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let run = drift_to(&args, Some(&c.secret), writer.into());
        let stderr = String::from_utf8_lossy(&run.0.stderr).into_owned();
        assert!(run.0.status.success(), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// A put from a standard input that stays open and silent ends as soon as
/// the node refuses it (here: a name over 1024 bytes), rather than waiting
/// on its input for ever.
#[test]
fn a_put_from_a_silent_stdin_ends_when_the_node_refuses_it() {
    let c = Cluster::start(1);
    let long_name = "n".repeat(1100);
    let mut child = std::process::Command::new(bin())
        .args([
            "put",
            "-",
            "--name",
            &long_name,
            "--node",
            &c.addr(0).to_string(),
        ])
        .env("DRIFT_SECRET", &c.secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Open, and silent.
    let stdin = child.stdin.take().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the put still waits on its silent input after the node refused it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("invalid file name"), "{err}");
    drop(stdin);
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
#[cfg(target_os = "linux")]
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A burst of reads grows a node's memory; once they end, the node gives it
/// back instead of keeping it for good.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_node_gives_memory_back_after_a_burst_of_reads() {
    let c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i * 131 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    c.run(0, &["put", file.to_str().unwrap(), "--name", "f"])
        .assert_ok();
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let node = c.addr(0).to_string();
            let secret = c.secret.clone();
            std::thread::spawn(move || {
                drift(
                    &["get", "f", "-o", "/dev/null", "--node", &node],
                    Some(&secret),
                )
                .assert_ok();
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let pid = c.pid(0);
    let peak = proc_kib(pid, "VmHWM");
    // 16 readers, each with chunks read ahead: the burst took memory (else
    // this test would show nothing).
    assert!(peak > 96 << 10, "peak RSS only {peak} KiB");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rss = proc_kib(pid, "VmRSS");
        if rss < peak / 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "RSS still {rss} KiB 20 s after the reads (peak {peak} KiB)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
