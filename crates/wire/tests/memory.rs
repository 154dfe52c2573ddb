//! Memory held by the decoder, measured with a counting global allocator.
//!
//! The counting allocator sees every thread, so this binary has a single
//! `#[test]` that runs the measurements one after another: no other test
//! thread can allocate while one measures.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::System;

use bytes::{BufMut, BytesMut};
use netproto_wire::{Decoder, FrameKind, HEADER_LEN, Header, READ_CHUNK};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes live now that were not live when `region` started.
fn live(region: &Region<'_, System>) -> isize {
    // stats_alloc already counts a reallocation's growth in `bytes_allocated`
    // (and its shrinking in `bytes_deallocated`).
    let s = region.change();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

fn data_header(len: u32) -> [u8; HEADER_LEN] {
    Header {
        len,
        kind: FrameKind::Data,
        compression: netproto_wire::Compression::None,
        flags: netproto_wire::DataFlags::NONE,
    }
    .to_bytes()
}

fn a_4_gib_declaration_allocates_nothing() {
    // The counting allocator also sees the test harness's own thread, which
    // may allocate at any moment: measure a few times and keep the quietest
    // run. What the decoder allocates, it allocates in every run.
    let mut fewest = None;
    for _ in 0..5 {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_slice(&data_header(u32::MAX));
        buf.put_slice(b"a few body bytes");
        let mut decoder = Decoder::new(u32::MAX);
        let region = Region::new(GLOBAL);
        for _ in 0..100 {
            assert_eq!(decoder.decode(&mut buf), Ok(None));
        }
        let hint = decoder.read_room(&buf).unwrap();
        let stats = region.change();
        assert_eq!(hint, READ_CHUNK, "asks for one chunk, not 4 GiB");
        assert_eq!(buf.capacity(), 64);
        let count = stats.allocations + stats.reallocations;
        if fewest.is_none_or(|(fewest, _)| count < fewest) {
            fewest = Some((count, stats));
        }
        if count == 0 {
            break;
        }
    }
    let (count, stats) = fewest.unwrap();
    assert_eq!(count, 0, "{stats:?}");
}

fn memory_for_a_frame_is_bytes_received_plus_one_chunk() {
    // A peer declares 12 MiB and sends it slowly, in pieces of at most 3000 bytes.
    const DECLARED: u32 = 12 << 20;
    const SLACK: isize = 1024;
    let mut decoder = Decoder::new(16 << 20);
    let peer_bytes: Vec<u8> = data_header(DECLARED)
        .into_iter()
        .chain((0..DECLARED).map(|i| i as u8))
        .collect();
    let region = Region::new(GLOBAL);
    let mut buf = BytesMut::new();
    let mut received = 0usize;
    let mut peak = 0isize;
    let mut frame = None;
    while received < peer_bytes.len() {
        let room = decoder.prepare_read(&mut buf).unwrap();
        assert!((READ_CHUNK / 2..=READ_CHUNK).contains(&room), "{room}");
        // The "socket" delivers at most 3000 bytes and at most the room made.
        let n = room.min(3000).min(peer_bytes.len() - received);
        buf.put_slice(&peer_bytes[received..received + n]);
        received += n;
        let held = live(&region);
        peak = peak.max(held);
        assert!(
            held <= received as isize + READ_CHUNK as isize + SLACK,
            "holding {held} bytes after receiving {received}"
        );
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            frame = Some(f);
        }
    }
    let Some(netproto_wire::Frame::Data(data)) = frame else {
        panic!("the whole frame arrived but did not decode");
    };
    assert_eq!(data.body.len(), DECLARED as usize);
    assert_eq!(&data.body[..], &peer_bytes[HEADER_LEN..]);
    assert!(
        peak >= DECLARED as isize,
        "the frame itself must be held: {peak}"
    );
}

fn decoding_a_buffered_frame_copies_nothing() {
    let mut buf = BytesMut::new();
    buf.put_slice(&data_header(1 << 20));
    buf.put_bytes(7, 1 << 20);
    let mut decoder = Decoder::default();
    let region = Region::new(GLOBAL);
    let frame = decoder.decode(&mut buf).unwrap();
    let stats = region.change();
    assert!(frame.is_some());
    // Splitting the buffer may allocate its small shared header, never the body.
    assert!(stats.bytes_allocated < 1024, "{stats:?}");
}

#[test]
fn decoder_memory() {
    a_4_gib_declaration_allocates_nothing();
    memory_for_a_frame_is_bytes_received_plus_one_chunk();
    decoding_a_buffered_frame_copies_nothing();
}
