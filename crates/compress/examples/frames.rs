//! Frames, compresses and decodes a few messages, and prints what it did.
//!
//! `cargo run -p netproto-compress --example frames`

// Example: short error handling keeps the point visible; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::print_stdout)] // printing is this example's job

use bytes::{Bytes, BytesMut};
use netproto_compress::Codec;
use netproto_wire::{
    Compression, Decoder, Encoder, Envelope, ErrorCode, Frame, GoAway, Message, Preface,
    SecurityMode,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let preface = Preface::new(SecurityMode::Plain);
    println!("preface: {}", hex(&preface.to_bytes()));

    let mut codec = Codec::default();
    let encoder = Encoder::default();
    let mut wire = BytesMut::new();
    let report = "status=ok ".repeat(200);
    let messages = [
        (1, Message::Echo("hello".into()), Compression::None),
        (2, Message::Ping, Compression::None),
        (
            3,
            Message::custom("REPORT", report.into_bytes())?,
            Compression::Lz4,
        ),
        (
            4,
            Message::custom("REPORT", vec![7u8; 5000])?,
            Compression::Zstd,
        ),
    ];
    for (id, message, algorithm) in &messages {
        let envelope = message.to_envelope(*id);
        let mut body = BytesMut::new();
        envelope.encode(&mut body);
        let plain_len = body.len();
        let data = codec.compress(*algorithm, body.freeze())?;
        println!(
            "sent   request {id}: {} ({plain_len} bytes, {:?} body of {} bytes)",
            message.message_type(),
            data.compression,
            data.body.len()
        );
        encoder.encode(&Frame::Data(data), &mut wire)?;
    }
    encoder.encode(
        &Frame::GoAway(GoAway::new(4, ErrorCode::NO_ERROR, "done")),
        &mut wire,
    )?;
    println!("wire: {} bytes in all", wire.len());

    // The receiver gets the bytes in 100-byte pieces.
    let wire: Bytes = wire.freeze();
    let mut decoder = Decoder::default();
    let mut received = BytesMut::new();
    for piece in wire.chunks(100) {
        received.extend_from_slice(piece);
        while let Some(frame) = decoder.decode(&mut received)? {
            match frame {
                Frame::Data(data) => {
                    let envelope = Envelope::decode(codec.decompress(data)?)?;
                    let id = envelope.request_id;
                    let message = Message::try_from(envelope)?;
                    let shown = match &message {
                        Message::Echo(text) => format!("ECHO {text:?}"),
                        Message::Custom { msg_type, data } => {
                            format!("{msg_type} with {} bytes", data.len())
                        }
                        other => other.message_type().to_owned(),
                    };
                    println!("decoded request {id}: {shown}");
                }
                Frame::GoAway(goaway) => println!(
                    "decoded goaway: last request {}, reason {:?}",
                    goaway.last_request_id, goaway.reason
                ),
                other => println!("decoded {:?}", other.kind()),
            }
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
