//! The hex test vectors of docs/PROTOCOL.md (Parts I and III), read from
//! tests/vectors/frames.json.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{BufMut, Bytes, BytesMut};
use netproto_wire::{
    Compression, Credit, DataFlags, Decoder, Encoder, Envelope, Frame, Headers, MessageType,
    Preface, PrefaceAnswer, PrefaceStatus, SecurityMode, Traceparent,
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
            flags: data_flags(f),
            body: Bytes::from(hex_field(f, "body")),
        }),
        "ping" => Frame::Ping(u64_of("token")),
        "pong" => Frame::Pong(u64_of("token")),
        "goaway" => Frame::GoAway(netproto_wire::GoAway::new(u64_of("id"), code(), text())),
        "error" => Frame::Error(netproto_wire::ErrorFrame::new(u64_of("id"), code(), text())),
        "cancel" => Frame::Cancel(u64_of("id")),
        "credit" => Frame::Credit(Credit::new(
            u64_of("id"),
            u32::try_from(u64_of("items")).unwrap(),
        )),
        "end" => Frame::End(u64_of("id")),
        other => panic!("unknown kind {other}"),
    }
}

/// A data frame's `flags`: a list of names, none when absent.
fn data_flags(f: &Value) -> DataFlags {
    let Some(names) = f.get("flags") else {
        return DataFlags::NONE;
    };
    names
        .as_array()
        .unwrap()
        .iter()
        .map(|name| match name.as_str().unwrap() {
            "headers" => DataFlags::HEADERS,
            "stream" => DataFlags::STREAM,
            other => panic!("unknown flag {other}"),
        })
        .fold(DataFlags::NONE, |all, flag| all | flag)
}

/// A header block's fields, as the vectors write them.
fn expected_headers(h: &Value) -> Headers {
    let fields = h.as_object().unwrap();
    for key in fields.keys() {
        assert!(
            ["deadline", "traceparent", "fingerprint", "stream"].contains(&key.as_str()),
            "unknown header field {key}"
        );
    }
    let mut headers = Headers::default();
    headers.deadline = h.get("deadline").map(|v| v.as_u64().unwrap());
    headers.traceparent = h
        .get("traceparent")
        .map(|v| Traceparent::parse(v.as_str().unwrap().as_bytes()).unwrap());
    headers.fingerprint = h
        .get("fingerprint")
        .map(|v| u64::from_str_radix(v.as_str().unwrap(), 16).unwrap());
    headers.stream = h
        .get("stream")
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap());
    headers
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
                    check_envelope(name, want, env, &raw, max);
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

/// Checks a data frame's envelope both ways: decoded (with the frame's
/// flags, its header block taken off when there is one) to the vector's
/// fields, and built from those fields to the frame's bytes.
fn check_envelope(name: &str, frame: Frame, env: &Value, raw: &[u8], max: u32) {
    let Frame::Data(data) = frame else {
        panic!("{name}: envelope on a non-data frame")
    };
    let flags = data.flags;
    let mut decoded = Envelope::decode_with_flags(data.body, flags).unwrap();
    let request_id = env["request_id"].as_u64().unwrap();
    let msg_type = env["msg_type"].as_str().unwrap();
    assert_eq!(decoded.request_id, request_id, "{name}");
    assert_eq!(decoded.msg_type.as_str(), msg_type, "{name}");
    assert_eq!(decoded.flags, flags, "{name}");
    // With HEADERS, `payload` is what follows the header block.
    let headers = env.get("headers").map(expected_headers);
    assert_eq!(decoded.take_headers().unwrap(), headers, "{name}");
    assert!(!decoded.flags.contains(DataFlags::HEADERS), "{name}");
    assert_eq!(
        decoded.payload.as_ref(),
        &hex_field(env, "payload")[..],
        "{name}"
    );
    let mut payload = BytesMut::new();
    if let Some(headers) = &headers {
        headers.encode(&mut payload);
    }
    payload.put_slice(&decoded.payload);
    let built = Envelope::new(
        request_id,
        MessageType::new(msg_type).unwrap(),
        payload.freeze(),
    )
    .with_flags(flags);
    let mut encoded = BytesMut::new();
    built
        .encode_frame(&Encoder::new(max), &mut encoded)
        .unwrap();
    assert_eq!(encoded.as_ref(), raw, "{name}: envelope encoding differs");
}

#[test]
fn header_block_vectors() {
    let doc = load();
    let vectors = doc["header_blocks"].as_array().unwrap();
    assert!(vectors.len() >= 20);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let raw = Bytes::from(hex_field(v, "hex"));
        let mut payload = raw.clone();
        let got = Headers::split_from(&mut payload);
        match (v.get("headers"), v.get("error")) {
            (Some(h), None) => {
                let want = expected_headers(h);
                assert_eq!(got, Ok(want.clone()), "{name}");
                assert_eq!(payload.as_ref(), &hex_field(v, "rest")[..], "{name}");
                // A canonical block is what the encoder writes; the others
                // (unknown keys, ignored values, longer varints) are read only.
                let mut encoded = BytesMut::new();
                want.encode(&mut encoded);
                assert_eq!(encoded.len(), want.encoded_len(), "{name}");
                encoded.put_slice(&payload);
                let canonical = v.get("canonical").is_none_or(|c| c.as_bool().unwrap());
                assert_eq!(encoded.as_ref() == raw.as_ref(), canonical, "{name}");
            }
            (None, Some(msg)) => {
                assert_eq!(
                    got.expect_err(name).to_string(),
                    msg.as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(payload, raw, "{name}: the payload changed");
            }
            _ => panic!("{name}: set exactly one of `headers`/`error`"),
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
