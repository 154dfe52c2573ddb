//! The hex test vectors of docs/PROTOCOL.md, read from tests/vectors/frames.json.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use netproto_wire::{
    Compression, Decoder, Encoder, Envelope, Frame, Preface, PrefaceAnswer, PrefaceStatus,
    SecurityMode,
};
use serde_json::Value;

fn load() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/frames.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap()).unwrap()
}

fn expected_frame(v: &Value) -> Frame {
    let f = &v["frame"];
    let u64_of = |k: &str| f[k].as_u64().unwrap();
    let text = || f["text"].as_str().unwrap().to_owned();
    let code = || netproto_wire::ErrorCode(u16::try_from(u64_of("code")).unwrap());
    match f["kind"].as_str().unwrap() {
        "data" => Frame::Data(netproto_wire::Data {
            compression: match f["compression"].as_str().unwrap() {
                "none" => Compression::None,
                "lz4" => Compression::Lz4,
                "zstd" => Compression::Zstd,
                other => panic!("unknown compression {other}"),
            },
            body: Bytes::from(hex_field(f, "body")),
        }),
        "ping" => Frame::Ping(u64_of("token")),
        "pong" => Frame::Pong(u64_of("token")),
        "goaway" => Frame::GoAway(netproto_wire::GoAway::new(u64_of("id"), code(), text())),
        "error" => Frame::Error(netproto_wire::ErrorFrame::new(u64_of("id"), code(), text())),
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn frame_vectors() {
    let doc = load();
    let max = u32::try_from(doc["max_frame_len"].as_u64().unwrap()).unwrap();
    let vectors = doc["frames"].as_array().unwrap();
    assert!(vectors.len() >= 20);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let raw = hex_field(v, "hex");
        let mut buf = BytesMut::from(&raw[..]);
        let got = Decoder::new(max).decode(&mut buf);
        match (v.get("frame"), v.get("error")) {
            (Some(_), None) => {
                let want = expected_frame(v);
                assert_eq!(got, Ok(Some(want.clone())), "{name}");
                assert!(buf.is_empty(), "{name}: bytes left over");
                // The encoder produces exactly the vector's bytes.
                let mut again = BytesMut::new();
                Encoder::new(max).encode(&want, &mut again).unwrap();
                assert_eq!(again.as_ref(), &raw[..], "{name}: encoding differs");
                if let Some(env) = v.get("envelope") {
                    let Frame::Data(data) = want else {
                        panic!("{name}: envelope on a non-data frame")
                    };
                    let decoded = Envelope::decode(data.body).unwrap();
                    assert_eq!(
                        decoded.request_id,
                        env["request_id"].as_u64().unwrap(),
                        "{name}"
                    );
                    assert_eq!(decoded.msg_type.as_str(), env["msg_type"].as_str().unwrap());
                    assert_eq!(decoded.payload.as_ref(), &hex_field(env, "payload")[..]);
                    let mut encoded = BytesMut::new();
                    decoded
                        .encode_frame(&Encoder::new(max), &mut encoded)
                        .unwrap();
                    assert_eq!(
                        encoded.as_ref(),
                        &raw[..],
                        "{name}: envelope encoding differs"
                    );
                }
            }
            (None, Some(msg)) => {
                let err = got.expect_err(name);
                assert_eq!(err.to_string(), msg.as_str().unwrap(), "{name}");
            }
            _ => panic!("{name}: set exactly one of `frame`/`error`"),
        }
    }
}

fn mode(s: &str) -> SecurityMode {
    match s {
        "plain" => SecurityMode::Plain,
        "noise" => SecurityMode::Noise,
        "tls" => SecurityMode::Tls,
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn preface_vectors() {
    let doc = load();
    for v in doc["prefaces"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let raw = hex_field(v, "hex");
        match (v.get("preface"), v.get("error")) {
            (Some(p), None) => {
                let want = Preface {
                    version: u8::try_from(p["version"].as_u64().unwrap()).unwrap(),
                    mode: mode(p["mode"].as_str().unwrap()),
                };
                assert_eq!(Preface::parse(&raw), Ok(Some(want)), "{name}");
                assert_eq!(want.to_bytes().as_slice(), &raw[..], "{name}");
            }
            (None, Some(msg)) => {
                let err = Preface::parse(&raw).expect_err(name);
                assert_eq!(err.to_string(), msg.as_str().unwrap(), "{name}");
            }
            _ => panic!("{name}: set exactly one of `preface`/`error`"),
        }
    }
    for v in doc["answers"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let raw = hex_field(v, "hex");
        match (v.get("answer"), v.get("error")) {
            (Some(a), None) => {
                let status = match a["status"].as_str().unwrap() {
                    "accept" => PrefaceStatus::Accept,
                    "unsupported_version" => PrefaceStatus::UnsupportedVersion,
                    "mode_not_offered" => PrefaceStatus::ModeNotOffered,
                    "busy" => PrefaceStatus::Busy,
                    other => panic!("unknown status {other}"),
                };
                let want = PrefaceAnswer {
                    version: u8::try_from(a["version"].as_u64().unwrap()).unwrap(),
                    mode: mode(a["mode"].as_str().unwrap()),
                    status,
                };
                assert_eq!(PrefaceAnswer::parse(&raw), Ok(Some(want)), "{name}");
                assert_eq!(want.to_bytes().as_slice(), &raw[..], "{name}");
            }
            (None, Some(msg)) => {
                let err = PrefaceAnswer::parse(&raw).expect_err(name);
                assert_eq!(err.to_string(), msg.as_str().unwrap(), "{name}");
            }
            _ => panic!("{name}: set exactly one of `answer`/`error`"),
        }
    }
}

#[test]
fn envelope_error_vectors() {
    let doc = load();
    for v in doc["envelope_errors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let err = Envelope::decode(Bytes::from(hex_field(v, "hex"))).expect_err(name);
        assert_eq!(err.to_string(), v["error"].as_str().unwrap(), "{name}");
    }
}
