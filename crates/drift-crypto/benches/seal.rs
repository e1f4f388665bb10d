//! Chunk sealing and opening against the raw primitives they are built from, on 1 MiB buffers.
//!
//! Sealing runs BLAKE3-keyed, AES-256-CTR and SHA-1 over every byte, so its
//! ideal throughput is the pipeline of the three:
//! `1 / (1/sha1 + 1/aes + 1/blake3)`. Compare `seal` and `open` with that.

use std::hint::black_box;

use aes::cipher::{KeyIvInit, StreamCipher};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use drift_crypto::{ClusterSecret, DEFAULT_CHUNK_SIZE};
use sha1::{Digest, Sha1};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

fn bench(c: &mut Criterion) {
    let keys = ClusterSecret::from_bytes([7; 32]).keys();
    let plain: Vec<u8> = (0..DEFAULT_CHUNK_SIZE)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut sealed = plain.clone();
    let chunk_ref = keys.convergence.seal(&mut sealed);

    let mut group = c.benchmark_group("1MiB");
    group.throughput(Throughput::Bytes(plain.len() as u64));

    group.bench_function("aes256ctr", |b| {
        let mut buf = plain.clone();
        b.iter(|| {
            let mut cipher = Aes256Ctr::new(&[1u8; 32].into(), &[0u8; 16].into());
            cipher.apply_keystream(black_box(&mut buf));
        });
    });
    group.bench_function("sha1", |b| b.iter(|| Sha1::digest(black_box(&plain))));
    group.bench_function("blake3_keyed", |b| {
        b.iter(|| blake3::keyed_hash(&[2u8; 32], black_box(&plain)));
    });
    group.bench_function("seal", |b| {
        // Sealing the previous output is the same work as sealing fresh
        // plaintext, and keeps a buffer copy out of the measurement.
        let mut buf = plain.clone();
        b.iter(|| keys.convergence.seal(black_box(&mut buf)));
    });
    group.bench_function("open", |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |buf| keys.convergence.open(&chunk_ref, black_box(buf)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
