//! Properties of the decoder and encoder over arbitrary frames and inputs.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use netproto_wire::{
    Compression, Credit, Data, DataFlags, Decoder, Encoder, Envelope, ErrorCode, ErrorFrame, Frame,
    GoAway, Headers, MessageType, Traceparent,
};
use proptest::prelude::*;

fn arb_frame() -> impl Strategy<Value = Frame> {
    let text = "[a-zA-Z0-9 é]{0,64}";
    prop_oneof![
        (
            prop_oneof![
                Just(Compression::None),
                Just(Compression::Lz4),
                Just(Compression::Zstd)
            ],
            arb_flags(),
            proptest::collection::vec(any::<u8>(), 0..3000)
        )
            .prop_map(|(compression, flags, body)| Frame::Data(Data {
                compression,
                flags,
                body: body.into()
            })),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        (any::<u64>(), any::<u16>(), text).prop_map(|(id, code, t)| Frame::GoAway(GoAway::new(
            id,
            ErrorCode(code),
            t
        ))),
        (any::<u64>(), any::<u16>(), text).prop_map(|(id, code, t)| Frame::Error(ErrorFrame::new(
            id,
            ErrorCode(code),
            t
        ))),
        any::<u64>().prop_map(Frame::Cancel),
        (any::<u64>(), any::<u32>()).prop_map(|(id, items)| Frame::Credit(Credit::new(id, items))),
        any::<u64>().prop_map(Frame::End),
    ]
}

fn arb_flags() -> impl Strategy<Value = DataFlags> {
    (0u8..4).prop_map(|bits| DataFlags::from_bits(bits << 2).unwrap())
}

fn arb_headers() -> impl Strategy<Value = Headers> {
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of((1..=u128::MAX, 1..=u64::MAX, any::<u8>())),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(deadline, traceparent, fingerprint, stream)| {
            let mut headers = Headers::default();
            headers.deadline = deadline;
            headers.traceparent = traceparent
                .and_then(|(trace, parent, flags)| Traceparent::new(trace, parent, flags));
            headers.fingerprint = fingerprint;
            headers.stream = stream;
            headers
        })
}

fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(frame) = decoder.decode(buf).unwrap() {
        out.push(frame);
    }
    out
}

proptest! {
    /// Every frame encodes and decodes to itself, under any split of the input.
    #[test]
    fn frames_round_trip_under_any_split(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            Encoder::default().encode(f, &mut wire).unwrap();
        }
        prop_assert_eq!(wire.len(), frames.iter().map(Frame::encoded_len).sum::<usize>());
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for pair in points.windows(2) {
            buf.extend_from_slice(&wire[pair[0]..pair[1]]);
            got.extend(decode_all(&mut decoder, &mut buf));
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    /// Envelopes round-trip, and their payload is a slice of the frame body.
    #[test]
    fn envelopes_round_trip(
        request_id in any::<u64>(),
        name in "[A-Z_]{1,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let env = Envelope::new(request_id, MessageType::new(name).unwrap(), payload.into());
        let mut wire = BytesMut::new();
        env.encode_frame(&Encoder::default(), &mut wire).unwrap();
        let Some(Frame::Data(data)) = Decoder::default().decode(&mut wire).unwrap() else {
            panic!("not a data frame");
        };
        prop_assert_eq!(env.encoded_len(), data.body.len());
        let decoded = Envelope::decode(data.body.clone()).unwrap();
        prop_assert_eq!(&decoded, &env);
        if !decoded.payload.is_empty() {
            prop_assert!(data.body.as_ptr_range().contains(&decoded.payload.as_ptr()));
        }
    }

    /// Envelopes with flags and a header block round-trip through a frame:
    /// the flags travel in the header, the block comes off, the payload after
    /// it is intact.
    #[test]
    fn headers_round_trip_in_an_envelope(
        headers in arb_headers(),
        flags in arb_flags(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut body = BytesMut::new();
        headers.encode(&mut body);
        prop_assert_eq!(body.len(), headers.encoded_len());
        body.extend_from_slice(&payload);
        let flags = flags | DataFlags::HEADERS;
        let env = Envelope::new(9, MessageType::ECHO, body.freeze()).with_flags(flags);
        let mut wire = BytesMut::new();
        env.encode_frame(&Encoder::default(), &mut wire).unwrap();
        let Some(Frame::Data(data)) = Decoder::default().decode(&mut wire).unwrap() else {
            panic!("not a data frame");
        };
        prop_assert_eq!(data.flags, flags);
        let mut decoded = Envelope::decode_with_flags(data.body, data.flags).unwrap();
        prop_assert_eq!(&decoded, &env);
        prop_assert_eq!(decoded.take_headers(), Ok(Some(headers)));
        prop_assert_eq!(&decoded.payload[..], &payload[..]);
        prop_assert_eq!(decoded.flags, flags.difference(DataFlags::HEADERS));
    }

    /// Arbitrary bytes never make the header block reader panic; what it
    /// accepts, it takes off the front of the payload and nothing more.
    #[test]
    fn arbitrary_header_blocks_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let raw = Bytes::from(input);
        let mut payload = raw.clone();
        match Headers::split_from(&mut payload) {
            Ok(_) => prop_assert!(raw.ends_with(&payload) && payload.len() < raw.len()),
            Err(_) => prop_assert_eq!(payload, raw),
        }
    }

    /// Arbitrary bytes never make the decoder panic, and it never splits off
    /// more than the input held.
    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..4096), max in 0u32..8192) {
        let mut buf = BytesMut::from(&input[..]);
        let mut decoder = Decoder::new(max);
        let mut consumed = 0;
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            consumed += frame.encoded_len();
            if let Frame::Data(data) = frame
                && let Ok(mut envelope) = Envelope::decode_with_flags(data.body, data.flags)
            {
                let _ = envelope.take_headers();
            }
        }
        prop_assert_eq!(consumed + buf.len(), input.len());
        let _ = netproto_wire::Preface::parse(&input);
        let _ = netproto_wire::PrefaceAnswer::parse(&input);
        let _ = Envelope::decode(Bytes::from(input));
    }
}

#[test]
fn one_byte_at_a_time_yields_the_same_frames() {
    let frames = vec![
        Frame::Ping(1),
        Envelope::new(5, MessageType::ECHO, Bytes::from_static(b"abc")).to_frame(),
        Frame::GoAway(GoAway::new(5, ErrorCode::SHUTTING_DOWN, "bye")),
    ];
    let mut wire = BytesMut::new();
    for f in &frames {
        Encoder::default().encode(f, &mut wire).unwrap();
    }
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in wire.iter() {
        buf.extend_from_slice(&[*byte]);
        got.extend(decode_all(&mut decoder, &mut buf));
    }
    assert_eq!(got, frames);
}

#[test]
fn encoder_refuses_oversized_frames_and_leaves_buffer_alone() {
    let mut buf = BytesMut::from(&b"xy"[..]);
    let frame = Frame::Data(Data::plain(Bytes::from(vec![0; 101])));
    let err = Encoder::new(100).encode(&frame, &mut buf).unwrap_err();
    assert_eq!(
        err,
        netproto_wire::Error::EncodeTooLarge { len: 101, max: 100 }
    );
    assert_eq!(buf.as_ref(), b"xy");
    let long = Frame::Error(ErrorFrame::new(1, ErrorCode::INTERNAL, "x".repeat(5000)));
    assert!(Encoder::default().encode(&long, &mut buf).is_err());
}

#[test]
fn a_smaller_limit_applies_at_the_header() {
    let mut wire = BytesMut::new();
    let frame = Frame::Data(Data::plain(Bytes::from(vec![0; 1000])));
    Encoder::default().encode(&frame, &mut wire).unwrap();
    wire.truncate(netproto_wire::HEADER_LEN);
    let err = Decoder::new(999).decode(&mut wire).unwrap_err();
    assert_eq!(
        err,
        netproto_wire::Error::FrameTooLarge {
            len: 1000,
            max: 999
        }
    );
}

/// Fuzz finding (wire_decode): a control frame with a malformed body used to be
/// consumed from the buffer before the error was returned.
#[test]
fn regression_control_body_error_leaves_input_alone() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/regressions/control-body-error-consumed-input.bin"
    );
    let input = std::fs::read(path).unwrap();
    let mut buf = BytesMut::from(&input[..]);
    let mut decoder = Decoder::new(1 << 16);
    let mut consumed = 0;
    let err = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => consumed += frame.encoded_len(),
            Ok(None) => panic!("the input ends in an error, not in a partial frame"),
            Err(err) => break err,
        }
    };
    assert_eq!(consumed + buf.len(), input.len(), "{err}");
    // Decoding again gives the same error: nothing was consumed.
    assert_eq!(decoder.decode(&mut buf), Err(err));
}
