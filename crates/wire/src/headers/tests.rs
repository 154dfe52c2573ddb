use bytes::BufMut;

use super::*;
use crate::{DataFlags, Envelope, MessageType};

const TRACEPARENT_TEXT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traceparent() -> Traceparent {
    Traceparent::parse(TRACEPARENT_TEXT.as_bytes()).unwrap()
}

fn all_fields() -> Headers {
    Headers {
        deadline: Some(300),
        traceparent: Some(traceparent()),
        fingerprint: Some(0x0123_4567_89ab_cdef),
        stream: Some(u32::MAX),
    }
}

/// `block` followed by `rest`, split: the headers and what is left.
fn split(block: &[u8], rest: &[u8]) -> (Result<Headers, Error>, Bytes) {
    let mut payload = BytesMut::from(block);
    payload.put_slice(rest);
    let mut payload = payload.freeze();
    let result = Headers::split_from(&mut payload);
    (result, payload)
}

#[test]
fn every_field_alone_and_together_round_trips() {
    let full = all_fields();
    let mut singles = vec![Headers::default(), full.clone()];
    for i in 0..4 {
        let mut one = Headers::default();
        match i {
            0 => one.deadline = full.deadline,
            1 => one.traceparent = full.traceparent,
            2 => one.fingerprint = full.fingerprint,
            _ => one.stream = full.stream,
        }
        singles.push(one);
    }
    for headers in singles {
        let mut block = BytesMut::new();
        headers.encode(&mut block);
        assert_eq!(block.len(), headers.encoded_len(), "{headers:?}");
        let (got, rest) = split(&block, b"app");
        assert_eq!(got, Ok(headers.clone()));
        assert_eq!(&rest[..], b"app");
    }
}

#[test]
fn the_encoding_is_the_one_the_spec_shows() {
    let headers = Headers {
        deadline: Some(300),
        stream: Some(1),
        ..Headers::default()
    };
    let mut block = BytesMut::new();
    headers.encode(&mut block);
    // Length 7; key 1, length 2, 300 = ac 02; key 4, length 1, 1.
    assert_eq!(&block[..], &[7, 1, 2, 0xac, 0x02, 4, 1, 1]);
    let mut empty = BytesMut::new();
    Headers::default().encode(&mut empty);
    assert_eq!(&empty[..], &[0]);
    assert!(Headers::default().is_empty() && !headers.is_empty());
}

#[test]
fn the_payload_left_is_a_slice_of_the_same_buffer() {
    let mut block = BytesMut::new();
    all_fields().encode(&mut block);
    block.put_slice(b"the application payload");
    let body = block.freeze();
    let mut payload = body.clone();
    Headers::split_from(&mut payload).unwrap();
    assert_eq!(&payload[..], b"the application payload");
    assert!(body.as_ptr_range().contains(&payload.as_ptr()));
}

#[test]
fn unknown_keys_are_skipped_whatever_their_value() {
    // Key 1 = 5, key 5 (unknown, this document's), key 64 (an application's)
    // with a value that is no varint, key 300 (two-byte key), empty.
    let block = [12, 1, 1, 5, 5, 2, 0xff, 0xff, 64, 1, 0x80, 0xac, 0x02, 0];
    // The block says 12 bytes but holds 13: its last field runs past it.
    assert_eq!(split(&block, b"").0, Err(Error::BadHeaders));
    let mut fixed = block;
    fixed[0] = 13;
    let (got, rest) = split(&fixed, b"!");
    let want = Headers {
        deadline: Some(5),
        ..Headers::default()
    };
    assert_eq!(got, Ok(want));
    assert_eq!(&rest[..], b"!");
}

#[test]
fn malformed_blocks_are_refused_and_the_payload_left_alone() {
    let cases: [(&str, &[u8]); 13] = [
        ("empty payload", &[]),
        ("truncated length", &[0x80]),
        ("block past the payload", &[20, 1, 1, 0]),
        ("field past the block", &[3, 1, 2, 7, 9]),
        ("length past the block", &[1, 1]),
        ("key truncated", &[1, 0x81]),
        ("duplicate key", &[6, 1, 1, 1, 1, 1, 2]),
        ("keys in decreasing order", &[6, 4, 1, 1, 1, 1, 2]),
        ("deadline with a byte too many", &[4, 1, 2, 1, 0]),
        ("deadline that is a cut varint", &[3, 1, 1, 0x80]),
        (
            "stream over u32::MAX",
            &[7, 4, 5, 0x80, 0x80, 0x80, 0x80, 0x10],
        ),
        ("fingerprint of 7 bytes", &[9, 3, 7, 1, 2, 3, 4, 5, 6, 7]),
        ("empty deadline", &[2, 1, 0]),
    ];
    for (name, block) in cases {
        let (got, rest) = split(block, b"tail");
        assert_eq!(got, Err(Error::BadHeaders), "{name}");
        assert_eq!(rest.len(), block.len() + 4, "{name}: the payload changed");
        assert_eq!(got.unwrap_err().to_string(), "malformed header block");
    }
}

#[test]
fn a_malformed_traceparent_is_ignored() {
    let bad = [
        TRACEPARENT_TEXT.to_uppercase(),
        TRACEPARENT_TEXT.replace("00-4b", "01-4b"),
        TRACEPARENT_TEXT.replace("-00f0", "_00f0"),
        TRACEPARENT_TEXT.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
        TRACEPARENT_TEXT.replace("00f067aa0ba902b7", &"0".repeat(16)),
        TRACEPARENT_TEXT.replace("-01", "-0g"),
        format!("{TRACEPARENT_TEXT}0"),
        TRACEPARENT_TEXT[..54].to_owned(),
    ];
    for text in bad {
        assert_eq!(Traceparent::parse(text.as_bytes()), None, "{text}");
        let mut block = BytesMut::new();
        block.put_u8(u8::try_from(2 + text.len()).unwrap());
        block.put_u8(2);
        block.put_u8(u8::try_from(text.len()).unwrap());
        block.put_slice(text.as_bytes());
        assert_eq!(split(&block, b"").0, Ok(Headers::default()), "{text}");
    }
}

#[test]
fn traceparents_are_built_from_their_parts() {
    let tp = traceparent();
    assert_eq!(tp.as_str(), TRACEPARENT_TEXT);
    assert_eq!(tp.to_string(), TRACEPARENT_TEXT);
    assert_eq!(
        format!("{tp:?}"),
        format!("Traceparent({TRACEPARENT_TEXT:?})")
    );
    let built = Traceparent::new(tp.trace_id(), tp.parent_id(), tp.trace_flags()).unwrap();
    assert_eq!(built, tp);
    let max = Traceparent::new(u128::MAX, u64::MAX, 0xff).unwrap();
    assert_eq!(
        max.as_str(),
        format!("00-{}-{}-ff", "f".repeat(32), "f".repeat(16))
    );
    assert_eq!(Traceparent::parse(max.as_bytes()), Some(max));
    let one = Traceparent::new(1, 1, 0).unwrap();
    assert_eq!(
        (one.trace_id(), one.parent_id(), one.trace_flags()),
        (1, 1, 0)
    );
    assert_eq!(Traceparent::new(0, 1, 0), None);
    assert_eq!(Traceparent::new(1, 0, 0), None);
}

#[test]
fn take_headers_clears_the_flag_and_leaves_a_failed_envelope_alone() {
    let mut block = BytesMut::new();
    all_fields().encode(&mut block);
    block.put_slice(b"x");
    let flags = DataFlags::HEADERS | DataFlags::STREAM;
    let mut envelope = Envelope::new(1, MessageType::ECHO, block.freeze()).with_flags(flags);
    assert_eq!(envelope.take_headers(), Ok(Some(all_fields())));
    assert_eq!(envelope.flags, DataFlags::STREAM);
    assert_eq!(&envelope.payload[..], b"x");
    assert_eq!(envelope.take_headers(), Ok(None));
    assert_eq!(&envelope.payload[..], b"x");

    let bad = Envelope::new(2, MessageType::ECHO, Bytes::from_static(&[9, 1]))
        .with_flags(DataFlags::HEADERS);
    let mut taken = bad.clone();
    assert_eq!(taken.take_headers(), Err(Error::BadHeaders));
    assert_eq!(taken, bad);

    // Without the flag the payload is not looked at.
    let mut plain = Envelope::new(3, MessageType::ECHO, Bytes::from_static(&[9, 1]));
    assert_eq!(plain.take_headers(), Ok(None));
    assert_eq!(&plain.payload[..], &[9, 1]);
}
