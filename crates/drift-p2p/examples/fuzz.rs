//! A mutation fuzzer for the frame and envelope decoders that runs on stable.
//!
//! `cargo run --release -p drift-p2p --example fuzz -- --seconds 10 [--seed N]`
//!
//! Seeds are valid frames and envelopes; each execution mutates one (bit flips,
//! random bytes, inserts, deletes, truncation, splices, interesting lengths) and
//! feeds it to the decoders under `catch_unwind`. Prints one line per target,
//! `fuzz: <target> executions=<n> crashes=<k>`, and exits non-zero on any crash.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use drift_p2p::proto::{Body, Envelope, Hello, decode_envelope, encode_envelope};
use drift_p2p::{NodeKey, PROTOCOL_VERSION, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// An application message shaped like drift-server's (bytes, strings, nesting).
#[derive(Serialize, Deserialize, Debug)]
enum AppMessage {
    Get { name: String, offset: u64 },
    Chunk(Bytes),
    List(Vec<(String, u64)>),
    Error(Option<String>),
}

fn seeds() -> Vec<Vec<u8>> {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        peer_id: NodeKey::generate().peer_id(),
        role: Role::Node,
        listen_addr: Some("127.0.0.1:3000".parse().expect("valid address")),
        stream_window: 1 << 20,
        max_streams: 256,
    };
    let app = [
        AppMessage::Get {
            name: "a/b.txt".into(),
            offset: 1 << 40,
        },
        AppMessage::Chunk(Bytes::from(vec![7u8; 300])),
        AppMessage::List(vec![("x".into(), 1), ("y".into(), u64::MAX)]),
        AppMessage::Error(Some("no such file".into())),
    ];
    let mut bodies: Vec<Body> = vec![
        Body::Open,
        Body::Fin,
        Body::Reset("too many open streams".into()),
        Body::Credit(u32::MAX),
        Body::Ping(1),
        Body::Pong(u64::MAX),
        Body::Close("bye".into()),
        Body::Hello(hello),
    ];
    for m in &app {
        bodies.push(Body::Data(
            postcard::to_allocvec(m).expect("encodable").into(),
        ));
    }
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            encode_envelope(&Envelope {
                stream: (i as u32) * 977,
                body,
            })
        })
        .collect()
}

fn framed(envelopes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for e in envelopes {
        out.put_u32(e.len() as u32);
        out.extend_from_slice(e);
    }
    out.to_vec()
}

fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = if rng.gen_ratio(1, 20) {
        (0..rng.gen_range(0..256)).map(|_| rng.r#gen()).collect()
    } else {
        corpus[rng.gen_range(0..corpus.len())].clone()
    };
    for _ in 0..rng.gen_range(1..6) {
        let len = data.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = rng.r#gen();
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                data.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 32));
                data.drain(a..b);
            }
            4 => data.truncate(rng.gen_range(0..=len)),
            5 => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                let at = rng.gen_range(0..=len);
                data.truncate(at);
                data.extend_from_slice(&other[rng.gen_range(0..=other.len())..]);
            }
            6 if len >= 4 => {
                let interesting = [0u32, 1, 127, 128, 65_535, 65_536, u32::MAX, u32::MAX >> 1];
                let v = interesting[rng.gen_range(0..interesting.len())].to_be_bytes();
                let i = rng.gen_range(0..=len - 4);
                data[i..i + 4].copy_from_slice(&v);
            }
            _ if len > 0 => {
                // A varint continuation run: the classic overflow probe.
                let i = rng.gen_range(0..len);
                let end = (i + rng.gen_range(1..12)).min(len);
                data[i..end].iter_mut().for_each(|b| *b |= 0x80);
            }
            _ => {}
        }
    }
    data
}

/// Runs `target` on mutated inputs for `budget`; returns (executions, crashes).
fn run(
    name: &str,
    budget: Duration,
    rng: &mut StdRng,
    corpus: &[Vec<u8>],
    target: impl Fn(&[u8]),
) -> u64 {
    let deadline = Instant::now() + budget;
    let (mut executions, mut crashes) = (0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..256 {
            let input = mutate(rng, corpus);
            executions += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                crashes += 1;
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                eprintln!("fuzz: {name} crashed on input {hex}");
            }
        }
    }
    println!("fuzz: {name} executions={executions} crashes={crashes}");
    crashes
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let seconds = arg("--seconds").unwrap_or(10);
    let seed = arg("--seed").unwrap_or_else(rand::random);
    eprintln!("fuzz: seed {seed}, {seconds} s");
    let mut rng = StdRng::seed_from_u64(seed);
    let envelopes = seeds();
    let frame_corpus: Vec<Vec<u8>> = (0..envelopes.len())
        .map(|i| framed(&envelopes[i..(i + 3).min(envelopes.len())]))
        .collect();
    let app_corpus: Vec<Vec<u8>> = envelopes
        .iter()
        .filter_map(|e| match decode_envelope(Bytes::copy_from_slice(e)) {
            Ok(Envelope {
                body: Body::Data(d),
                ..
            }) => Some(d.to_vec()),
            _ => None,
        })
        .collect();
    let budget = Duration::from_millis(seconds * 1000 / 3);

    let mut crashes = run("frames", budget, &mut rng, &frame_corpus, |input| {
        let (frames, _) = drift_p2p::decode_frames(input);
        assert!(frames.iter().all(|f| f.len() <= drift_p2p::MAX_FRAME_LEN));
    });
    crashes += run("envelope", budget, &mut rng, &envelopes, |input| {
        if let Ok(env) = decode_envelope(Bytes::copy_from_slice(input)) {
            // Anything accepted must re-encode to the same bytes (canonical) or decode again.
            let again = decode_envelope(encode_envelope(&env).into());
            assert_eq!(again.as_ref().ok(), Some(&env));
        }
    });
    crashes += run("message", budget, &mut rng, &app_corpus, |input| {
        let _ = postcard::from_bytes::<AppMessage>(input);
    });
    if crashes > 0 {
        std::process::exit(1);
    }
}
