//! Scenario 7: a file holding a random marker, stored under a name holding
//! another: neither marker, nor the cluster secret, appears in any byte of
//! any node's data directory or in the bytes captured on the wire.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Clients, Lab, Report, Rng, Scale, contains, walk};

/// A TCP proxy in front of a node that keeps a copy of every byte it relays.
struct Tap {
    addr: SocketAddr,
    captured: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

const CAPTURE_MAX: usize = 256 << 20;

fn pump(mut from: TcpStream, mut to: TcpStream, captured: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    // Ends when either side closes; bounded by the node's own timeouts.
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut c = captured.lock().unwrap();
            if c.len() + n <= CAPTURE_MAX {
                c.extend_from_slice(&buf[..n]);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Tap {
    fn start(upstream: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let captured: Arc<Mutex<Vec<u8>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (captured.clone(), stop.clone());
        std::thread::spawn(move || {
            // At most ten minutes, in case the test never stops it.
            for _ in 0..30_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(node) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let (c1, c2) = (c.clone(), c.clone());
                        let (client2, node2) =
                            (client.try_clone().unwrap(), node.try_clone().unwrap());
                        std::thread::spawn(move || pump(client, node, c1));
                        std::thread::spawn(move || pump(node2, client2, c2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Tap {
            addr,
            captured,
            stop,
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn secrets_never_leak() {
    let scale = Scale::get();
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let marker = format!("DRIFT-CHAOS-MARKER-{:016x}{:016x}", rng.next(), rng.next());
    let name_marker = format!("name-marker-{:016x}", rng.next());
    let lab = Lab::start("leak", 3, false, |_| vec![]);
    let mut report = Report::new("secret never leaks");
    report.method =
        "TCP proxy capturing client-node traffic; every file of every data directory".into();
    report.figure("seed", seed);

    // Random bytes with the marker sprinkled through them: several chunks.
    let len = scale.pick(3_000_000usize, 12_000_000);
    let mut data = rng.bytes(len);
    let mut at = 0;
    let mut copies = 0;
    while at + marker.len() < data.len() {
        data[at..at + marker.len()].copy_from_slice(marker.as_bytes());
        at += 997 + marker.len();
        copies += 1;
    }
    let small = format!("the marker is {marker}\n").into_bytes();
    let tap = Tap::start(lab.clients.addrs[0]);
    let via_tap = Clients {
        addrs: vec![tap.addr],
        netns: vec![None],
        ..lab.clients.clone()
    };
    let big_name = format!("docs/{name_marker}.bin");
    let small_name = format!("docs/{name_marker}.txt");
    let mut ops = 0;
    for (name, bytes) in [(&big_name, &data), (&small_name, &small)] {
        let out = super::put_via(&via_tap, &lab.root, 0, name, bytes);
        assert!(out.status.success(), "{}", super::stderr_line(&out));
        let out = via_tap.run(0, &["get", name]);
        report.check(out.status.success() && &out.stdout == bytes, || {
            format!("{name} did not read back through the proxy")
        });
        ops += 2;
    }
    assert!(via_tap.run(0, &["ls"]).status.success());
    ops += 1;
    // Wait for replication, so every node's directory has had the data.
    let replicated = super::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        (0..3).all(|i| lab.clients.ls(i).is_some_and(|l| l.len() == 2))
    });
    report.check(replicated, || "the files did not reach every node".into());

    let secret_hex = lab.clients.secret.clone();
    let secret_raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&secret_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let needles: [(&str, &[u8]); 4] = [
        ("content marker", marker.as_bytes()),
        ("name marker", name_marker.as_bytes()),
        ("cluster secret (hex)", secret_hex.as_bytes()),
        ("cluster secret (raw)", &secret_raw),
    ];
    // The scanner must be able to see the marker at all.
    assert!(contains(&data, marker.as_bytes()));

    let captured = tap.captured.lock().unwrap().clone();
    drop(tap);
    report.figure("wire bytes captured", captured.len());
    report.check(captured.len() > len, || {
        "the proxy captured less than the file".into()
    });
    for (what, needle) in &needles {
        report.check(!contains(&captured, needle), || {
            format!("{what} seen on the wire")
        });
    }
    let (mut files, mut bytes) = (0u64, 0u64);
    for (i, node) in lab.nodes.iter().enumerate() {
        let mut found = Vec::new();
        walk(&node.dir, &mut |p| {
            let Ok(content) = std::fs::read(p) else {
                return;
            };
            files += 1;
            bytes += content.len() as u64;
            for (what, needle) in &needles {
                if contains(&content, needle) {
                    found.push(format!("{what} in {}", p.display()));
                }
            }
        });
        report.check(found.is_empty(), || format!("node {i}: {found:?}"));
    }
    report.figure(
        "data directory files scanned",
        format!("{files} ({bytes} bytes)"),
    );
    report.figure("marker copies in the plaintext", copies);
    report.operations = ops;
    report.faults = 0;
    report.files_checked = 2;
    report.did = format!(
        "3 nodes; a {len}-byte file with {copies} copies of a random marker and a small one, under names with another marker, stored and read through a capturing proxy; wire and data directories searched"
    );
    report.finish(lab);
}
