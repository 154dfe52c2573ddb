//! Frame encode and decode against tokio-util's `LengthDelimitedCodec` and a
//! plain memcpy, at 64 B, 1 KiB, 64 KiB and 1 MiB.
//!
//! `cargo bench -p netproto-benches --bench wire_codec`
//!
//! Decode benches measure splitting a frame that is already in the receive
//! buffer: each timed run decodes a batch of frames from a prepared buffer, so
//! neither the buffer's preparation nor the clock's overhead is counted. The
//! frame headers and the buffer's reference count are touched once before
//! timing, so they are in cache as they are in a running reader: what is left
//! is the decoder's own cost, not the aftermath of the multi-MiB refill.

// Benchmark: setup failures abort the run; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netproto_wire::{Data, Decoder, Encoder, Frame};
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

/// Frames per prepared buffer: about 8 MiB of input, at least 8 frames.
fn batch(size: usize) -> usize {
    ((8 << 20) / size).clamp(8, 4096)
}

fn body(size: usize) -> Bytes {
    (0..size).map(|i| i as u8).collect::<Vec<_>>().into()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (size, name) in SIZES {
        let payload = body(size);
        group.throughput(Throughput::Bytes(size as u64));
        let frame = Frame::Data(Data::plain(payload.clone()));
        let encoder = Encoder::new(u32::MAX);
        let mut dst = BytesMut::with_capacity(size + 64);
        group.bench_function(BenchmarkId::new("netproto", name), |b| {
            b.iter(|| {
                dst.clear();
                encoder.encode(black_box(&frame), &mut dst).unwrap();
                black_box(&dst);
            });
        });
        let mut codec = LengthDelimitedCodec::builder()
            .max_frame_length(usize::MAX)
            .new_codec();
        let mut dst = BytesMut::with_capacity(size + 64);
        group.bench_function(BenchmarkId::new("length_delimited", name), |b| {
            b.iter(|| {
                dst.clear();
                codec.encode(black_box(payload.clone()), &mut dst).unwrap();
                black_box(&dst);
            });
        });
        // The copy every encoder must make, to the same destination offset
        // as netproto's body (after its 6-byte header): see PERFORMANCE.md
        // on this machine's copy quirk.
        let mut dst = vec![0u8; size + 64];
        group.bench_function(BenchmarkId::new("memcpy", name), |b| {
            b.iter(|| {
                dst[netproto_wire::HEADER_LEN..netproto_wire::HEADER_LEN + size]
                    .copy_from_slice(black_box(&payload));
                black_box(&dst);
            });
        });
    }
    group.finish();
}

/// Times `decode_one` over `iters` frames, re-filling the input buffer from
/// `wire` (which holds `per_buffer` frames) outside the timed sections.
fn time_batches(
    iters: u64,
    wire: &BytesMut,
    per_buffer: usize,
    frame_len: usize,
    mut decode_one: impl FnMut(&mut BytesMut),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    // One allocation for the whole run: the decoded frames are dropped before
    // the next refill, so the buffer is unique again and is reused in place.
    let mut buf = BytesMut::with_capacity(wire.len());
    while left > 0 {
        let n = left.min(per_buffer as u64);
        buf.clear();
        buf.extend_from_slice(wire);
        for offset in (0..buf.len()).step_by(frame_len) {
            black_box(buf[offset]);
        }
        // The refill evicted the buffer's shared reference count from the
        // caches, which a running reader keeps hot: touch it, as a split does.
        drop(black_box(buf.split_to(0)));
        let start = Instant::now();
        for _ in 0..n {
            decode_one(&mut buf);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (size, name) in SIZES {
        let payload = body(size);
        let k = batch(size);
        group.throughput(Throughput::Bytes(size as u64));

        let mut ours = BytesMut::new();
        let frame = Frame::Data(Data::plain(payload.clone()));
        for _ in 0..k {
            Encoder::new(u32::MAX).encode(&frame, &mut ours).unwrap();
        }
        let mut decoder = Decoder::new(u32::MAX);
        group.bench_function(BenchmarkId::new("netproto", name), |b| {
            b.iter_custom(|iters| {
                time_batches(iters, &ours, k, size + netproto_wire::HEADER_LEN, |buf| {
                    black_box(decoder.decode(buf).unwrap());
                })
            });
        });

        let mut codec = LengthDelimitedCodec::builder()
            .max_frame_length(usize::MAX)
            .new_codec();
        let mut theirs = BytesMut::new();
        for _ in 0..k {
            codec.encode(payload.clone(), &mut theirs).unwrap();
        }
        group.bench_function(BenchmarkId::new("length_delimited", name), |b| {
            b.iter_custom(|iters| {
                time_batches(iters, &theirs, k, size + 4, |buf| {
                    black_box(codec.decode(buf).unwrap());
                })
            });
        });

        // What a copying decoder pays: the body copied out of the buffer.
        let mut out = vec![0u8; size];
        group.bench_function(BenchmarkId::new("memcpy", name), |b| {
            b.iter(|| {
                out.copy_from_slice(black_box(&payload));
                black_box(&out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
