//! Arbitrary bytes to the frame decoder (with a small limit, so both sides of
//! the limit are reached); every frame that decodes must encode to the same
//! bytes and decode again to itself.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netproto_wire::{Decoder, Encoder, Envelope, Frame, Preface, PrefaceAnswer};

fuzz_target!(|data: &[u8]| {
    let _ = Preface::parse(data);
    let _ = PrefaceAnswer::parse(data);
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
            if let Ok(envelope) = Envelope::decode(d.body) {
                let mut body = BytesMut::new();
                envelope.encode(&mut body);
                assert_eq!(Envelope::decode(body.freeze()), Ok(envelope));
            }
        }
    }
    assert_eq!(consumed + buf.len(), data.len());
});
