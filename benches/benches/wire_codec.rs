//! Frame encode and decode against tokio-util's `LengthDelimitedCodec` and a
//! plain memcpy, at 64 B, 1 KiB, 64 KiB and 1 MiB; and a message envelope's
//! encode and decode at 64 B and 1 KiB (the per-message cost above the frame).
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
use netproto_wire::{Data, Decoder, Encoder, Envelope, Frame, MessageType};
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

/// Frames per prepared buffer: about 8 MiB of input, and at least 64 frames,
/// so that the two clock reads and the loop's start of each timed batch are
/// spread over enough frames to vanish (with 8 frames of 1 MiB they added
/// 15-40 ns to every frame).
fn batch(size: usize) -> usize {
    ((8 << 20) / size).clamp(64, 4096)
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

/// Times `decode_one` per frame and returns the time of `iters` frames.
///
/// The input buffer `buf` is re-filled from `wire` (which holds `per_buffer`
/// frames) outside the timed sections, and every timed section decodes a whole
/// buffer: `iters` is rounded up to whole buffers and the time scaled back to
/// `iters` frames. Criterion asks for a few hundred frames per sample at 1 MiB,
/// as it counts the untimed refills in its plan, and a short last batch would
/// spread the two clock reads over a handful of frames.
fn time_batches(
    iters: u64,
    buf: &mut BytesMut,
    wire: &BytesMut,
    per_buffer: usize,
    frame_len: usize,
    mut decode_one: impl FnMut(&mut BytesMut),
) -> Duration {
    let batches = iters.div_ceil(per_buffer as u64).max(1);
    let mut total = Duration::ZERO;
    for _ in 0..batches {
        // The decoded frames were dropped before the refill, so the buffer
        // is unique again and is reused in place.
        buf.clear();
        buf.extend_from_slice(wire);
        for offset in (0..buf.len()).step_by(frame_len) {
            black_box(buf[offset]);
        }
        // The refill evicted the buffer's shared reference count from the
        // caches, which a running reader keeps hot: touch it, as a split does.
        // The handle also keeps the allocation alive until the clock stops: a
        // decoder that moves the buffer (LengthDelimitedCodec reserves room
        // for the next header once the buffer is empty) would otherwise have
        // the old allocation's release counted, a 64 MiB munmap.
        let keep = black_box(buf.split_to(0));
        let start = Instant::now();
        for _ in 0..per_buffer {
            decode_one(buf);
        }
        total += start.elapsed();
        drop(keep);
    }
    let frames = (batches * per_buffer as u64) as f64;
    total.mul_f64(iters as f64 / frames)
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
        let mut buf = BytesMut::with_capacity(ours.len());
        group.bench_function(BenchmarkId::new("netproto", name), |b| {
            b.iter_custom(|iters| {
                time_batches(
                    iters,
                    &mut buf,
                    &ours,
                    k,
                    size + netproto_wire::HEADER_LEN,
                    |buf| {
                        black_box(decoder.decode(buf).unwrap());
                    },
                )
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
                time_batches(iters, &mut buf, &theirs, k, size + 4, |buf| {
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

/// An envelope of a request, written as a whole frame and read back from a
/// data body: what a connection does per message on top of the framing.
fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    let encoder = Encoder::new(u32::MAX);
    for (size, name) in &SIZES[..2] {
        let envelope = Envelope::new(300, MessageType::new("DATA_PROCESS").unwrap(), body(*size));
        group.throughput(Throughput::Bytes(*size as u64));
        let mut dst = BytesMut::with_capacity(size + 64);
        group.bench_function(BenchmarkId::new("encode_frame", name), |b| {
            b.iter(|| {
                dst.clear();
                black_box(&envelope)
                    .encode_frame(&encoder, &mut dst)
                    .unwrap();
                black_box(&dst);
            });
        });
        let mut encoded = BytesMut::new();
        envelope.encode(&mut encoded);
        let encoded = encoded.freeze();
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| black_box(Envelope::decode(black_box(&encoded).clone()).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode, envelope);
criterion_main!(benches);
