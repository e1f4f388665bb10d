//! Scenario 5: outsiders without the secret. Connection attempts with no or
//! a wrong secret achieve nothing and are closed within seconds; idle
//! connections are closed by timeout with node memory bounded; random bytes
//! leave the node serving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use drift_crypto::ClusterSecret;
use drift_server::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Lab, Report, Rng, Scale, content};

/// How a connection attempt ended.
enum Outcome {
    /// The node closed it after this long.
    Closed(Duration),
    /// Still open at the cap.
    Open,
    /// The handshake succeeded: an outsider got in.
    Accepted,
}

/// Reads until the node closes the connection (EOF or reset), at most `cap`.
async fn until_closed(tcp: &mut TcpStream, started: Instant, cap: Duration) -> Outcome {
    let mut buf = vec![0u8; 64 * 1024];
    let wait = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(cap, wait).await {
        Ok(()) => Outcome::Closed(started.elapsed()),
        Err(_) => Outcome::Open,
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// One attempt of kind `k % 4`, with no secret or a wrong one.
async fn attempt(addr: SocketAddr, k: u64, cap: Duration) -> Outcome {
    let started = Instant::now();
    let mut rng = Rng::new(k.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0xABCD);
    if k.is_multiple_of(4) {
        // A wrong secret, through the real client: the Noise PSK does not match.
        let wrong = ClusterSecret::generate().unwrap();
        return match Client::connect(addr, &wrong, Duration::from_secs(5)).await {
            Ok(client) => {
                // Should be unreachable; try an operation to prove it either way.
                let got_in = client.list().await.is_ok();
                client.close().await;
                if got_in {
                    Outcome::Accepted
                } else {
                    Outcome::Closed(started.elapsed())
                }
            }
            Err(_) => Outcome::Closed(started.elapsed()),
        };
    }
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return Outcome::Closed(started.elapsed());
    };
    let bytes = match k % 4 {
        // A well-formed first handshake message (an ephemeral key is any 32
        // bytes), then a garbage third one: no secret, so it cannot finish.
        1 => frame(&rng.bytes(32)),
        // Unframed garbage.
        2 => rng.bytes(64),
        // A frame that claims 4 GiB.
        _ => vec![0xff; 8],
    };
    if tcp.write_all(&bytes).await.is_err() {
        return Outcome::Closed(started.elapsed());
    }
    if k % 4 == 1 {
        // Wait for the node's second message, then answer with junk.
        let mut head = [0u8; 4];
        if tcp.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes(head) as usize;
            let mut msg2 = vec![0u8; len.min(65_535)];
            let _ = tcp.read_exact(&mut msg2).await;
            let _ = tcp.write_all(&frame(&rng.bytes(64))).await;
        }
    }
    until_closed(&mut tcp, started, cap).await
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn outsiders_get_nothing() {
    let scale = Scale::get();
    let n_attempts = scale.pick(200u64, 1000);
    let n_idle = scale.pick(150usize, 500);
    let seed = Rng::seed();
    let lab = Lab::start("outsiders", 1, false, |_| vec![]);
    let mut report = Report::new("outsiders");
    report.method = "raw TCP and wrong-secret clients from the test process".into();
    report.figure("seed", seed);
    let addr = lab.clients.addrs[0];
    let pid = lab.nodes[0].pid().unwrap();
    let data = content(seed, 1, 300_000);
    assert!(lab.put(0, "precious", &data).status.success());
    let before = lab.clients.status(0).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cap = Duration::from_secs(20);

    // 1. Connection attempts with no secret or a wrong one, 50 at a time.
    let (mut accepted, mut closed, mut still_open, mut slowest) =
        (0u64, 0u64, 0u64, Duration::ZERO);
    rt.block_on(async {
        for batch in 0..n_attempts.div_ceil(50) {
            let mut set = tokio::task::JoinSet::new();
            for k in batch * 50..((batch + 1) * 50).min(n_attempts) {
                set.spawn(attempt(addr, k, cap));
            }
            while let Some(r) = set.join_next().await {
                match r.unwrap() {
                    Outcome::Closed(d) => {
                        closed += 1;
                        slowest = slowest.max(d);
                    }
                    Outcome::Open => still_open += 1,
                    Outcome::Accepted => accepted += 1,
                }
            }
        }
    });
    report.figure(
        "attempts (wrong secret / bad handshake / garbage / 4 GiB frame)",
        format!(
            "{n_attempts}: {closed} closed, slowest after {:.2} s",
            slowest.as_secs_f64()
        ),
    );
    report.check(accepted == 0, || format!("{accepted} outsider(s) got in"));
    report.check(still_open == 0, || {
        format!("{still_open} attempt(s) still open after {cap:?}")
    });
    report.check(slowest < Duration::from_secs(10), || {
        format!("an attempt took {slowest:?} to be closed")
    });

    // 2. Idle connections: opened, never written to.
    let rss_before = rss_kib(pid);
    let (mut idle_closed, mut idle_open, mut at_once, mut by_timeout, mut idle_slowest) =
        (0u64, 0u64, 0u64, 0u64, Duration::ZERO);
    let mut rss_peak = rss_before;
    let mut legit_during = String::new();
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..n_idle {
            if let Ok(tcp) = TcpStream::connect(addr).await {
                conns.push((tcp, Instant::now()));
            }
        }
        rss_peak = rss_peak.max(rss_kib(pid));
        // What a real client meets while the slots are held.
        let clients = lab.clients.clone();
        legit_during = tokio::task::spawn_blocking(move || {
            let out = clients.run(0, &["ls"]);
            if out.status.success() {
                "served".to_string()
            } else {
                super::stderr_line(&out)
            }
        })
        .await
        .unwrap();
        let mut set = tokio::task::JoinSet::new();
        for (mut tcp, started) in conns {
            set.spawn(async move { until_closed(&mut tcp, started, cap).await });
        }
        let waiter = async {
            while let Some(r) = set.join_next().await {
                match r.unwrap() {
                    Outcome::Closed(d) => {
                        idle_closed += 1;
                        idle_slowest = idle_slowest.max(d);
                        if d < Duration::from_secs(1) {
                            at_once += 1;
                        } else {
                            by_timeout += 1;
                        }
                    }
                    _ => idle_open += 1,
                }
            }
        };
        // Samples memory until every connection ended (each is capped).
        let sampler = async {
            for _ in 0..1000 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                rss_peak = rss_peak.max(rss_kib(pid));
            }
        };
        tokio::select! {
            _ = waiter => {}
            _ = sampler => {}
        }
    });
    let rss_after = rss_kib(pid);
    report.figure(
        "idle connections",
        format!(
            "{n_idle}: {by_timeout} closed by the handshake timeout, {at_once} refused at once (connection limit), slowest {:.1} s",
            idle_slowest.as_secs_f64()
        ),
    );
    report.figure(
        "node RSS (before / peak / after)",
        format!(
            "{} / {} / {} MiB",
            rss_before / 1024,
            rss_peak / 1024,
            rss_after / 1024
        ),
    );
    report.figure(
        "a real client while the idle connections were open",
        &legit_during,
    );
    report.check(idle_open == 0, || {
        format!("{idle_open} idle connection(s) never closed")
    });
    report.check(idle_closed as usize == n_idle, || {
        format!("only {idle_closed} of {n_idle} idle connections were opened and closed")
    });
    report.check(rss_peak.saturating_sub(rss_before) < 64 * 1024, || {
        format!("RSS grew from {rss_before} KiB to {rss_peak} KiB")
    });

    // 3. Random bytes at the port.
    let n_blasts = 20u64;
    let blasted: u64 = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for k in 0..n_blasts {
            set.spawn(async move {
                let mut rng = Rng::new(seed ^ k);
                let Ok(mut tcp) = TcpStream::connect(addr).await else {
                    return 0u64;
                };
                let mut sent = 0u64;
                for _ in 0..16 {
                    let junk = rng.bytes(16 * 1024);
                    match tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&junk)).await {
                        Ok(Ok(())) => sent += junk.len() as u64,
                        _ => break,
                    }
                }
                sent
            });
        }
        let mut total = 0;
        while let Some(r) = set.join_next().await {
            total += r.unwrap();
        }
        total
    });
    report.figure(
        "random bytes",
        format!(
            "{n_blasts} connections, {} KiB accepted by the socket before it closed",
            blasted / 1024
        ),
    );

    // Still serving, and nothing changed.
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    report.check(alive, || "the node process died".into());
    let out = lab.clients.run(0, &["get", "precious"]);
    report.check(out.status.success() && out.stdout == data, || {
        format!("the node no longer serves: {}", super::stderr_line(&out))
    });
    let after = lab.clients.status(0).unwrap();
    for key in ["names", "tombstones", "chunks", "bytes"] {
        report.check(after[key] == before[key], || {
            format!("{key} changed from {} to {}", before[key], after[key])
        });
    }
    report.operations = n_attempts + n_idle as u64 + n_blasts;
    report.faults = report.operations;
    report.files_checked = 1;
    report.files_lost = u64::from(!(out.status.success() && out.stdout == data));
    report.figure("operations accepted from outsiders", accepted);
    report.did = format!(
        "1 node; {n_attempts} connection attempts with no or a wrong secret, {n_idle} idle connections, {n_blasts} connections of random bytes"
    );
    report.finish(lab);
}
