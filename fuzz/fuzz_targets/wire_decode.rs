//! Arbitrary bytes to the frame decoder (with a small limit, so both sides of
//! the limit are reached); every frame that decodes must encode to the same
//! bytes and decode again to itself. A data frame's envelope gets the frame's
//! flags, and a header block it announces is taken off and checked the same
//! way: encoded again, it must read back to the same headers and payload.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use netproto_wire::{
    DataFlags, Decoder, Encoder, Envelope, Frame, Headers, Preface, PrefaceAnswer,
};

fuzz_target!(|data: &[u8]| {
    let _ = Preface::parse(data);
    let _ = PrefaceAnswer::parse(data);
    check_headers(Bytes::copy_from_slice(data));
    let limit = 1 << 16;
    let mut decoder = Decoder::new(limit);
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let mut again = BytesMut::new();
        Encoder::new(limit)
            .encode(&frame, &mut again)
            .expect("a decoded frame re-encodes");
        assert_eq!(again.as_ref(), &data[consumed..consumed + again.len()]);
        consumed += again.len();
        assert_eq!(decoder.decode(&mut again), Ok(Some(frame.clone())));
        if let Frame::Data(d) = frame {
            if let Ok(envelope) = Envelope::decode_with_flags(d.body, d.flags) {
                let mut body = BytesMut::new();
                envelope.encode(&mut body);
                let decoded = Envelope::decode(body.freeze()).map(|e| e.with_flags(d.flags));
                assert_eq!(decoded, Ok(envelope.clone()));
                if envelope.flags.contains(DataFlags::HEADERS) {
                    check_headers(envelope.payload);
                }
            }
        }
    }
    assert_eq!(consumed + buf.len(), data.len());
});

/// Takes a header block off `payload`: on success only a prefix is gone, and
/// the headers encoded again in front of what is left read back the same; on
/// failure `payload` is untouched.
fn check_headers(payload: Bytes) {
    let mut rest = payload.clone();
    match Headers::split_from(&mut rest) {
        Ok(headers) => {
            assert!(rest.len() < payload.len() && payload.ends_with(&rest));
            let mut encoded = BytesMut::new();
            headers.encode(&mut encoded);
            assert_eq!(encoded.len(), headers.encoded_len());
            encoded.extend_from_slice(&rest);
            let mut again = encoded.freeze();
            assert_eq!(Headers::split_from(&mut again), Ok(headers));
            assert_eq!(again, rest);
        }
        Err(_) => assert_eq!(rest, payload),
    }
}
