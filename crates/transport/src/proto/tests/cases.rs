//! The connection core's behaviour, case by case, on a deterministic [`Pair`].

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use netproto_wire::{
    Compression, Credit, DataFlags, Envelope, ErrorCode, ErrorFrame, Frame, GoAway, Headers,
};

use super::{Pair, quiet, request};
use crate::{Error, Incoming, TimeoutKind};

/// A frame header and body as bytes, whatever they say.
fn raw_frame(kind: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u32(u32::try_from(body.len()).unwrap());
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_slice(body);
    out.to_vec()
}

/// The error one plain-mode side reports after receiving `bytes`.
fn error_after(bytes: &[u8]) -> Error {
    let mut pair = Pair::plain(&quiet());
    pair.b.receive(bytes, pair.now);
    pair.b.error.take().expect("the bytes were accepted")
}

#[test]
fn messages_cross_both_ways_in_plain_and_noise_mode() {
    for mut pair in [Pair::plain(&quiet()), Pair::noise(&quiet(), 0)] {
        for id in 1..=50 {
            pair.a.send(&request(id, id as usize * 7));
            pair.b.send(&request(1000 + id, 3));
        }
        pair.drive();
        let at_b = pair.b.messages();
        let at_a = pair.a.messages();
        assert_eq!(
            at_b,
            (1..=50)
                .map(|id| request(id, id as usize * 7))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            at_a,
            (1..=50).map(|id| request(1000 + id, 3)).collect::<Vec<_>>()
        );
        assert!(pair.a.error.is_none() && pair.b.error.is_none());
    }
}

#[test]
fn a_frame_split_at_every_byte_is_still_one_frame() {
    let mut pair = Pair::noise(&quiet(), 0);
    pair.a.send(&request(1, 300));
    let wire = pair.a.transmit(pair.now);
    for byte in wire.chunks(1) {
        assert!(pair.b.messages().is_empty());
        pair.b.receive(byte, pair.now);
    }
    assert_eq!(pair.b.messages(), vec![request(1, 300)]);
    assert!(pair.b.error.is_none());
}

#[test]
fn compressed_bodies_small_and_large_arrive_intact() {
    let mut config = quiet();
    config.compression = Compression::Lz4;
    config.compression_threshold = 512;
    let mut pair = Pair::noise(&config, 0);
    // 2 KiB is decompressed in line; 256 KiB declares more than the
    // offload threshold and is decompressed aside.
    for (id, len) in [(1, 2048), (2, 256 * 1024), (3, 100)] {
        pair.a.send(&request(id, len));
    }
    pair.drive();
    let got = pair.b.messages();
    assert_eq!(
        got,
        vec![request(1, 2048), request(2, 256 * 1024), request(3, 100)]
    );
    // The large body travelled compressed.
    assert!(
        pair.a_to_b < 128 * 1024,
        "{} bytes on the wire",
        pair.a_to_b
    );
}

#[test]
fn heartbeats_keep_a_quiet_connection_alive() {
    let mut config = quiet();
    config.heartbeat_interval = Some(Duration::from_secs(1));
    config.heartbeat_misses = 3;
    let mut pair = Pair::plain(&config);
    pair.advance(Duration::from_secs(60));
    assert!(pair.a.error.is_none(), "{:?}", pair.a.error);
    assert!(pair.b.error.is_none(), "{:?}", pair.b.error);
    // Both sides fell quiet at once: each pings every second (the pong
    // answering the other's ping goes out at the same instant).
    assert_eq!((pair.a.pings, pair.b.pings), (60, 60));
    // Pongs are consumed by the core; nothing reaches the application.
    assert!(pair.a.delivered.is_empty() && pair.b.delivered.is_empty());
}

#[test]
fn a_silent_peer_is_dead_after_exactly_its_missed_heartbeats() {
    let mut config = quiet();
    config.heartbeat_interval = Some(Duration::from_secs(1));
    config.heartbeat_misses = 3;
    let mut pair = Pair::plain(&config);
    pair.b.mute = true;
    pair.advance(Duration::from_millis(2999));
    assert!(pair.a.error.is_none(), "{:?}", pair.a.error);
    pair.advance(Duration::from_millis(1));
    assert_eq!(pair.elapsed(), Duration::from_secs(3));
    let error = pair.a.error.take().unwrap();
    assert!(
        matches!(error, Error::Timeout { kind: TimeoutKind::Heartbeat, after } if after == Duration::from_secs(3)),
        "{error:?}"
    );
    // The silent side heard pings all along.
    assert!(pair.b.error.is_none());
    // Pings at 1 s and 2 s; at 3 s the peer is dead before a third is due.
    assert_eq!(pair.a.pings, 2);
}

#[test]
fn idle_timeout_counts_data_not_heartbeats() {
    let mut config = quiet();
    config.heartbeat_interval = Some(Duration::from_secs(1));
    config.idle_timeout = Some(Duration::from_secs(5));
    let mut pair = Pair::plain(&config);
    pair.advance(Duration::from_secs(3));
    // A message at 3 s moves both sides' idle clocks.
    pair.a.send(&request(1, 10));
    pair.advance(Duration::from_millis(4999));
    assert!(pair.a.error.is_none() && pair.b.error.is_none());
    assert_eq!(pair.b.messages().len(), 1);
    pair.advance(Duration::from_millis(1));
    for side in [&mut pair.a, &mut pair.b] {
        let error = side.error.take().unwrap();
        assert!(
            matches!(error, Error::Timeout { kind: TimeoutKind::Idle, after } if after == Duration::from_secs(5)),
            "{error:?}"
        );
    }
}

#[test]
fn records_rekey_across_many_records_and_large_messages() {
    // A rekey every 2 records in each direction: 40 single-record batches
    // and a 300 KiB message spanning 5 records cross 20-odd key changes.
    let mut pair = Pair::noise(&quiet(), 2);
    for id in 1..=40 {
        pair.a.send(&request(id, 100));
        pair.drive();
    }
    pair.a.send(&request(41, 300 * 1024));
    pair.b.send(&request(42, 300 * 1024));
    pair.drive();
    let got = pair.b.messages();
    assert_eq!(got.len(), 41);
    assert_eq!(got[40], request(41, 300 * 1024));
    assert_eq!(pair.a.messages(), vec![request(42, 300 * 1024)]);
    assert!(pair.a.error.is_none() && pair.b.error.is_none());
}

#[test]
fn a_side_that_rekeys_on_another_schedule_fails_the_record() {
    let mut fast = Pair::noise(&quiet(), 2);
    let slow = Pair::noise(&quiet(), 3);
    // b opens with a schedule that differs from a's sealing schedule.
    fast.b = slow.b;
    for id in 1..=3 {
        fast.a.send(&request(id, 10));
        fast.drive();
    }
    assert_eq!(fast.b.messages().len(), 2);
    assert!(
        matches!(fast.b.error, Some(Error::Crypto(_))),
        "{:?}",
        fast.b.error
    );
}

/// A request with a header block in front of `len` bytes of payload,
/// flagged HEADERS and `extra`.
fn request_with_headers(id: u64, len: usize, extra: DataFlags) -> (Envelope, Headers) {
    let mut headers = Headers::default();
    headers.deadline = Some(250);
    headers.stream = Some(8);
    headers.fingerprint = Some(0x0102_0304_0506_0708);
    let mut payload = BytesMut::new();
    headers.encode(&mut payload);
    payload.put_slice(&request(id, len).payload);
    let envelope = Envelope::new(id, request(id, 0).msg_type, payload.freeze())
        .with_flags(DataFlags::HEADERS | extra);
    (envelope, headers)
}

#[test]
fn messages_with_their_flags_and_control_frames_reach_the_application_in_order() {
    for mut pair in [Pair::plain(&quiet()), Pair::noise(&quiet(), 0)] {
        let goaway = GoAway::new(7, ErrorCode::NO_ERROR, "draining");
        let error = ErrorFrame::new(3, ErrorCode::NO_HANDLER, "no handler for FOO");
        let item = request(3, 20).with_flags(DataFlags::STREAM);
        let (with_headers, headers) = request_with_headers(4, 10, DataFlags::NONE);
        pair.a.send(&request(1, 5));
        pair.a.send_frame(&Frame::Error(error.clone()));
        pair.a.send_frame(&Frame::Credit(Credit::new(3, 16)));
        pair.a.send(&item);
        pair.a.send_frame(&Frame::Cancel(2));
        pair.a.send(&with_headers);
        pair.a.send_frame(&Frame::End(3));
        pair.a.send_frame(&Frame::GoAway(goaway.clone()));
        // Pongs are consumed by the core.
        pair.a.send_frame(&Frame::Pong(99));
        pair.drive();
        let got: Vec<Incoming> = pair.b.delivered.drain(..).collect();
        assert_eq!(
            got,
            vec![
                Incoming::Message(request(1, 5)),
                Incoming::Error(error),
                Incoming::Credit(Credit::new(3, 16)),
                Incoming::Message(item),
                Incoming::Cancel(2),
                Incoming::Message(with_headers),
                Incoming::End(3),
                Incoming::GoAway(goaway),
            ]
        );
        let Some(Incoming::Message(mut received)) = got.into_iter().nth(5) else {
            unreachable!("checked above");
        };
        assert_eq!(received.take_headers(), Ok(Some(headers)));
        assert_eq!(received.payload, request(4, 10).payload);
        assert!(pair.a.error.is_none() && pair.b.error.is_none());
    }
}

#[test]
fn stream_items_and_headers_survive_compression_in_line_and_aside() {
    let mut config = quiet();
    config.compression = Compression::Lz4;
    config.compression_threshold = 512;
    let mut pair = Pair::noise(&config, 0);
    // 2 KiB is decompressed in line, 256 KiB aside; 100 bytes is not
    // compressed at all.
    let sent: Vec<_> = [(1, 2048), (2, 256 * 1024), (3, 100)]
        .into_iter()
        .map(|(id, len)| request_with_headers(id, len, DataFlags::STREAM))
        .collect();
    let item = request(4, 4096).with_flags(DataFlags::STREAM);
    for (envelope, _) in &sent {
        pair.a.send(envelope);
    }
    pair.a.send(&item);
    pair.drive();
    assert!(pair.a_to_b < 64 * 1024, "{} bytes on the wire", pair.a_to_b);
    let mut got = pair.b.messages();
    assert_eq!(got.pop(), Some(item));
    assert_eq!(got.len(), sent.len());
    for (mut received, (envelope, headers)) in got.into_iter().zip(sent) {
        assert_eq!(received, envelope);
        assert_eq!(received.take_headers(), Ok(Some(headers)));
        assert_eq!(received.flags, DataFlags::STREAM);
        let len = received.payload.len();
        assert_eq!(received.payload, request(envelope.request_id, len).payload);
    }
}

#[test]
fn a_malformed_header_block_would_close_with_bad_message() {
    let error = Error::Protocol(netproto_wire::Error::BadHeaders);
    let Some(Frame::Error(frame)) = super::super::closing_frame(&error) else {
        panic!("no closing frame for {error:?}");
    };
    assert_eq!(
        (frame.request_id, frame.code, frame.message.as_str()),
        (0, ErrorCode::BAD_MESSAGE, "malformed header block")
    );
}

#[test]
fn every_malformed_frame_is_a_protocol_error() {
    use netproto_wire::Error as Wire;
    let ping_body = 5u64.to_be_bytes();
    type Expected = fn(&Wire) -> bool;
    let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
        ("kind 0x00", raw_frame(0x00, 0, &ping_body), |e| {
            matches!(e, Wire::UnknownKind(0))
        }),
        ("kind 0x09", raw_frame(0x09, 0, &ping_body), |e| {
            matches!(e, Wire::UnknownKind(9))
        }),
        (
            "reserved data flag",
            raw_frame(0x01, 0b0001_0000, b"x"),
            |e| matches!(e, Wire::UnknownFlags(0x10)),
        ),
        (
            "stream flag on a ping",
            raw_frame(0x02, 0b0000_1000, &ping_body),
            |e| matches!(e, Wire::UnknownFlags(0x08)),
        ),
        ("short cancel", raw_frame(0x06, 0, &ping_body[..7]), |e| {
            matches!(
                e,
                Wire::BadBodyLength {
                    kind: "cancel",
                    len: 7
                }
            )
        }),
        ("long credit", raw_frame(0x07, 0, &[0; 13]), |e| {
            matches!(
                e,
                Wire::BadBodyLength {
                    kind: "credit",
                    len: 13
                }
            )
        }),
        ("compression 3", raw_frame(0x01, 0b11, b"x"), |e| {
            matches!(e, Wire::UnknownFlags(_))
        }),
        ("compressed ping", raw_frame(0x02, 1, &ping_body), |e| {
            matches!(e, Wire::CompressedControl)
        }),
        ("short ping", raw_frame(0x02, 0, &ping_body[..7]), |e| {
            matches!(e, Wire::BadBodyLength { .. })
        }),
        ("short goaway", raw_frame(0x04, 0, &[0; 9]), |e| {
            matches!(e, Wire::BadBodyLength { .. })
        }),
        ("huge control", raw_frame(0x05, 0, &[0; 5000]), |e| {
            matches!(e, Wire::ControlTooLarge(_))
        }),
        ("empty envelope", raw_frame(0x01, 0, b""), |e| {
            matches!(e, Wire::BadEnvelope)
        }),
        (
            "cut envelope",
            raw_frame(0x01, 0, &[0x01, 0x09, b'E']),
            |e| matches!(e, Wire::BadEnvelope),
        ),
    ];
    for (name, bytes, expected) in cases {
        match error_after(&bytes) {
            Error::Protocol(wire) => assert!(expected(&wire), "{name}: {wire:?}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_frame_longer_than_the_limit_is_refused_from_its_header() {
    let mut header = BytesMut::new();
    header.put_u32(quiet().max_frame_len + 1);
    header.put_u8(0x01);
    header.put_u8(0);
    // No body needed: the header alone is refused.
    assert!(matches!(
        error_after(&header),
        Error::Protocol(netproto_wire::Error::FrameTooLarge { .. })
    ));
}

#[test]
fn bodies_that_do_not_decompress_are_compression_errors() {
    // Garbage after a declared length, and a declared length past the frame
    // limit (a decompression bomb), both in LZ4 and Zstd framing.
    let mut bomb = BytesMut::new();
    bomb.put_u32_le(u32::MAX);
    bomb.put_slice(&[0; 16]);
    let mut garbage = BytesMut::new();
    garbage.put_u32_le(4096);
    garbage.put_slice(&[0xff; 40]);
    for flags in [1, 2] {
        for body in [&bomb[..], &garbage[..]] {
            let error = error_after(&raw_frame(0x01, flags, body));
            assert!(
                matches!(error, Error::Compression(_)),
                "flags {flags}: {error:?}"
            );
        }
    }
}

#[test]
fn a_tampered_record_fails_and_nothing_after_it_is_delivered() {
    let mut pair = Pair::noise(&quiet(), 0);
    pair.a.send(&request(1, 50));
    let mut wire = pair.a.transmit(pair.now).to_vec();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    pair.b.receive(&wire, pair.now);
    assert!(
        matches!(pair.b.error, Some(Error::Crypto(_))),
        "{:?}",
        pair.b.error
    );
    assert!(pair.b.delivered.is_empty());
}

#[test]
fn the_stream_may_end_only_at_a_frame_boundary() {
    for noise in [false, true] {
        let make = || {
            if noise {
                Pair::noise(&quiet(), 0)
            } else {
                Pair::plain(&quiet())
            }
        };
        // At a boundary: a clean close.
        let mut pair = make();
        pair.a.send(&request(1, 10));
        pair.drive();
        pair.b.receive_eof();
        assert!(
            matches!(pair.b.error, Some(Error::PeerClosed)),
            "{:?}",
            pair.b.error
        );
        // Inside a frame (or record): an error.
        let mut pair = make();
        pair.a.send(&request(1, 10));
        let wire = pair.a.transmit(pair.now);
        pair.b.receive(&wire[..wire.len() - 3], pair.now);
        pair.b.receive_eof();
        match pair.b.error.take() {
            Some(Error::Io(error)) => assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("noise {noise}: {other:?}"),
        }
    }
}

#[test]
fn frames_past_the_configured_limit_fail_on_both_sides_of_the_check() {
    let mut config = quiet();
    config.max_frame_len = 1024;
    let mut pair = Pair::plain(&config);
    // Exactly at the limit passes; one byte more is refused.
    let at_limit = request(1, 1024 - request(1, 0).encoded_len());
    assert_eq!(at_limit.encoded_len(), 1024);
    pair.a.send(&at_limit);
    pair.drive();
    assert_eq!(pair.b.messages(), vec![at_limit]);
    assert_eq!(pair.b.config().max_frame_len, 1024);
    let error = error_after_with(&config, &raw_frame(0x01, 0, &[0; 1025]));
    assert!(
        matches!(
            error,
            Error::Protocol(netproto_wire::Error::FrameTooLarge { .. })
        ),
        "{error:?}"
    );
}

/// As [`error_after`], with `config`.
fn error_after_with(config: &crate::ConnectionConfig, bytes: &[u8]) -> Error {
    let mut pair = Pair::plain(config);
    pair.b.receive(bytes, pair.now);
    pair.b.error.take().expect("the bytes were accepted")
}
