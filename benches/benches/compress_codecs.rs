//! LZ4 and Zstd at 1 MiB, on compressible and on random data.
//!
//! `cargo bench -p netproto-benches --bench compress_codecs`

// Benchmark: setup failures abort the run; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netproto_compress::Codec;
use netproto_wire::Compression;
use rand::{RngCore, SeedableRng};

const SIZE: usize = 1 << 20;

fn inputs() -> [(&'static str, Bytes); 2] {
    // Compressible: log-like lines with varying numbers.
    let mut text = String::with_capacity(SIZE + 100);
    let mut i = 0u64;
    while text.len() < SIZE {
        text.push_str(&format!(
            "2026-11-25T01:{:02}:{:02}Z INFO conn_id={} peer=127.0.0.1:{} frame_type=data len={}\n",
            i % 60,
            (i * 7) % 60,
            i,
            40_000 + i % 1000,
            i * 13 % 4096
        ));
        i += 1;
    }
    text.truncate(SIZE);
    let mut random = vec![0u8; SIZE];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut random);
    [
        ("text", text.into_bytes().into()),
        ("random", random.into()),
    ]
}

fn codecs(c: &mut Criterion) {
    for (algorithm, name) in [(Compression::Lz4, "lz4"), (Compression::Zstd, "zstd")] {
        let mut group = c.benchmark_group(format!("{name}_1MiB"));
        group.throughput(Throughput::Bytes(SIZE as u64));
        for (data_name, input) in inputs() {
            let mut codec = Codec::default();
            let mut out = BytesMut::with_capacity(2 * SIZE);
            group.bench_function(BenchmarkId::new("compress", data_name), |b| {
                b.iter(|| {
                    out.clear();
                    codec
                        .compress_into(algorithm, black_box(&input), &mut out)
                        .unwrap();
                });
            });
            out.clear();
            codec.compress_into(algorithm, &input, &mut out).unwrap();
            let compressed = out.clone();
            eprintln!(
                "{name} {data_name}: {} -> {} bytes (ratio {:.2})",
                input.len(),
                compressed.len(),
                input.len() as f64 / compressed.len() as f64
            );
            group.bench_function(BenchmarkId::new("decompress", data_name), |b| {
                b.iter(|| {
                    black_box(
                        codec
                            .decompress_body(algorithm, black_box(&compressed))
                            .unwrap(),
                    )
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
