//! Test vectors: cacophony's Noise vectors (Noise rev 34, sections 5 and 7-9)
//! for `25519_ChaChaPoly_SHA256` and `25519_AESGCM_SHA256`, known answers for
//! Noise AESGCM (section 12.4) and Rekey (section 4.2), and netproto's own
//! session vectors (docs/PROTOCOL.md Part II).

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use netproto_crypto::noise::{HandshakeBuilder, HandshakeState, Pattern, Protocol};
use netproto_crypto::provider::CipherAlgorithm;
use netproto_crypto::{
    Capabilities, CompressionSet, Error, HandshakePayload, Keypair, Opener, Provider, PublicKey,
    RecordConfig, ReplayCache, Sealer, SessionBuilder, provider,
};
use serde::Deserialize;

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[derive(Deserialize)]
struct CacophonyFile {
    vectors: Vec<Cacophony>,
}

#[derive(Deserialize)]
struct Cacophony {
    protocol_name: String,
    init_prologue: String,
    init_ephemeral: String,
    init_static: Option<String>,
    init_remote_static: Option<String>,
    #[serde(default)]
    init_psks: Vec<String>,
    resp_prologue: String,
    resp_ephemeral: Option<String>,
    resp_static: Option<String>,
    resp_remote_static: Option<String>,
    #[serde(default)]
    resp_psks: Vec<String>,
    handshake_hash: String,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    payload: String,
    ciphertext: String,
}

struct Side<'a> {
    prologue: &'a str,
    ephemeral: Option<&'a String>,
    local_static: Option<&'a String>,
    remote_static: Option<&'a String>,
    psks: &'a [String],
}

fn build(
    protocol: &Protocol,
    side: Side<'_>,
    initiator: bool,
    provider: &Arc<dyn Provider>,
) -> HandshakeState {
    let mut builder = HandshakeBuilder::from_protocol(protocol.clone())
        .provider(Arc::clone(provider))
        .prologue(&hex::decode(side.prologue).unwrap());
    if let Some(e) = side.ephemeral {
        builder = builder.danger_fixed_ephemeral(Keypair::from_secret_bytes(hex32(e)));
    }
    if let Some(s) = side.local_static {
        builder = builder.local_static(Keypair::from_secret_bytes(hex32(s)));
    }
    if let Some(rs) = side.remote_static {
        builder = builder.remote_static(PublicKey::from_bytes(hex32(rs)));
    }
    for psk in side.psks {
        builder = builder.psk(hex32(psk));
    }
    let mut rng = rand::rngs::OsRng;
    if initiator {
        builder.build_initiator(&mut rng)
    } else {
        builder.build_responder(&mut rng)
    }
    .unwrap()
}

fn run_cacophony(v: &Cacophony, provider: &Arc<dyn Provider>) {
    let name = &v.protocol_name;
    let protocol = Protocol::from_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&protocol.name(), name);
    if protocol.cipher == CipherAlgorithm::ChaCha20Poly1305 {
        let pattern = Pattern::from_protocol_name(name).unwrap();
        assert_eq!(&pattern.protocol_name(), name);
    } else {
        assert!(Pattern::from_protocol_name(name).is_err(), "{name}");
    }
    let pattern = &protocol.pattern;
    let mut init = build(
        &protocol,
        Side {
            prologue: &v.init_prologue,
            ephemeral: Some(&v.init_ephemeral),
            local_static: v.init_static.as_ref(),
            remote_static: v.init_remote_static.as_ref(),
            psks: &v.init_psks,
        },
        true,
        provider,
    );
    let mut resp = build(
        &protocol,
        Side {
            prologue: &v.resp_prologue,
            ephemeral: v.resp_ephemeral.as_ref(),
            local_static: v.resp_static.as_ref(),
            remote_static: v.resp_remote_static.as_ref(),
            psks: &v.resp_psks,
        },
        false,
        provider,
    );

    let handshake_len = pattern.messages().len();
    let (handshake, transport) = v.messages.split_at(handshake_len);
    for (i, m) in handshake.iter().enumerate() {
        let (writer, reader) = if i.is_multiple_of(2) {
            (&mut init, &mut resp)
        } else {
            (&mut resp, &mut init)
        };
        assert!(
            writer.is_my_turn() && !reader.is_my_turn(),
            "{name} msg {i}"
        );
        let mut out = Vec::new();
        writer
            .write_message(&hex::decode(&m.payload).unwrap(), &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(&out),
            m.ciphertext,
            "{name} handshake message {i}"
        );
        let mut payload = Vec::new();
        reader.read_message(&out, &mut payload).unwrap();
        assert_eq!(
            hex::encode(&payload),
            m.payload,
            "{name} handshake payload {i}"
        );
    }
    assert!(init.is_finished() && resp.is_finished());
    assert_eq!(init.cipher(), protocol.cipher);
    assert_eq!(
        hex::encode(init.handshake_hash()),
        v.handshake_hash,
        "{name} handshake hash"
    );
    assert_eq!(
        hex::encode(resp.handshake_hash()),
        v.handshake_hash,
        "{name} handshake hash"
    );

    let config = RecordConfig::default();
    let (mut init_sealer, mut init_opener) = init.into_split(&config).unwrap();
    let (mut resp_sealer, mut resp_opener) = resp.into_split(&config).unwrap();
    assert_eq!(init_sealer.cipher(), protocol.cipher);
    assert_eq!(resp_opener.cipher(), protocol.cipher);
    for (j, m) in transport.iter().enumerate() {
        let i = handshake_len + j;
        // One-way patterns send every transport message from the initiator.
        let from_initiator = pattern.is_one_way() || i.is_multiple_of(2);
        let (sealer, opener) = if from_initiator {
            (&mut init_sealer, &mut resp_opener)
        } else {
            (&mut resp_sealer, &mut init_opener)
        };
        let mut wire = BytesMut::new();
        sealer
            .seal(&hex::decode(&m.payload).unwrap(), &mut wire)
            .unwrap();
        // A record is the 2-byte length plus exactly one Noise transport message.
        assert_eq!(
            usize::from(u16::from_be_bytes([wire[0], wire[1]])),
            wire.len() - 2
        );
        assert_eq!(
            hex::encode(&wire[2..]),
            m.ciphertext,
            "{name} transport message {i}"
        );
        let plaintext = opener.open(&mut wire).unwrap().unwrap();
        assert_eq!(
            hex::encode(&plaintext),
            m.payload,
            "{name} transport payload {i}"
        );
    }
}

fn providers() -> Vec<Arc<dyn Provider>> {
    vec![
        provider::rust_crypto(),
        #[cfg(feature = "ring")]
        provider::ring(),
    ]
}

fn run_cacophony_file(file: &str, suffix: &str) {
    let text = std::fs::read_to_string(vector_path(file)).unwrap();
    let file: CacophonyFile = serde_json::from_str(&text).unwrap();
    assert_eq!(file.vectors.len(), 59);
    for provider in &providers() {
        let mut passed = 0;
        for v in &file.vectors {
            assert!(v.protocol_name.ends_with(suffix), "{}", v.protocol_name);
            run_cacophony(v, provider);
            passed += 1;
        }
        assert_eq!(passed, 59, "{provider:?}");
    }
}

#[test]
fn cacophony_vectors() {
    run_cacophony_file("cacophony.json", "_25519_ChaChaPoly_SHA256");
}

/// The same 59 protocols with the AESGCM cipher (cacophony, as shipped in snow's tests).
#[test]
fn cacophony_aesgcm_vectors() {
    run_cacophony_file("cacophony_aesgcm.json", "_25519_AESGCM_SHA256");
}

#[derive(Deserialize)]
struct AesGcmFile {
    aead: Vec<AeadVector>,
    record_stream: RecordStreamVector,
}

#[derive(Deserialize)]
struct AeadVector {
    name: String,
    key: String,
    nonce: u64,
    ad: String,
    plaintext: String,
    ciphertext: String,
}

#[derive(Deserialize)]
struct RecordStreamVector {
    key: String,
    rekey_interval: u64,
    plaintexts: Vec<String>,
    records: Vec<String>,
}

fn aesgcm_vectors() -> AesGcmFile {
    let text = std::fs::read_to_string(vector_path("noise_aesgcm.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The raw AEAD of each provider with Noise's AESGCM nonce layout (section 12.4).
#[test]
fn aesgcm_known_answers() {
    let file = aesgcm_vectors();
    assert_eq!(file.aead.len(), 5);
    for provider in &providers() {
        for v in &file.aead {
            let name = &v.name;
            let cipher = provider
                .cipher(CipherAlgorithm::Aes256Gcm, &hex32(&v.key))
                .unwrap();
            let ad = hex::decode(&v.ad).unwrap();
            let mut buf = hex::decode(&v.plaintext).unwrap();
            let tag = cipher.encrypt_in_place(v.nonce, &ad, &mut buf).unwrap();
            buf.extend_from_slice(&tag);
            assert_eq!(hex::encode(&buf), v.ciphertext, "{name} {provider:?}");
            let body_len = buf.len() - 16;
            let (body, tag) = buf.split_at_mut(body_len);
            let tag: [u8; 16] = (&*tag).try_into().unwrap();
            cipher.decrypt_in_place(v.nonce, &ad, body, &tag).unwrap();
            assert_eq!(hex::encode(&*body), v.plaintext, "{name} {provider:?}");
            if let Some(byte) = body.first_mut() {
                *byte ^= 1;
                assert!(cipher.decrypt_in_place(v.nonce, &ad, body, &tag).is_err());
            }
        }
    }
}

/// An AESGCM record stream across two rekeys, sealed and opened by each provider.
#[test]
fn aesgcm_record_stream_vector() {
    let v = aesgcm_vectors().record_stream;
    let mut config = RecordConfig::default();
    config.rekey_interval = v.rekey_interval;
    for provider in &providers() {
        let key = hex32(&v.key);
        let (cipher, p) = (CipherAlgorithm::Aes256Gcm, Arc::clone(provider));
        let mut sealer =
            Sealer::from_key_with_cipher(Arc::clone(&p), cipher, &key, &config).unwrap();
        let mut opener = Opener::from_key_with_cipher(p, cipher, &key, &config).unwrap();
        for (plaintext, record) in v.plaintexts.iter().zip(&v.records) {
            let mut wire = BytesMut::new();
            sealer
                .seal(&hex::decode(plaintext).unwrap(), &mut wire)
                .unwrap();
            assert_eq!(hex::encode(&wire), *record, "{provider:?}");
            let opened = opener.open(&mut wire).unwrap().unwrap();
            assert_eq!(hex::encode(&opened), *plaintext);
        }
        assert_eq!(sealer.nonce(), 6);
    }
}

#[derive(Deserialize)]
struct SessionFile {
    payloads: Vec<PayloadVector>,
    bad_payloads: Vec<BadPayload>,
    record_streams: Vec<RecordStream>,
    first_messages: Vec<FirstMessage>,
}

#[derive(Deserialize)]
struct PayloadVector {
    name: String,
    timestamp_ms: u64,
    nonce: String,
    max_frame_len: u32,
    compression: u8,
    hex: String,
}

#[derive(Deserialize)]
struct BadPayload {
    name: String,
    hex: String,
    error: String,
}

#[derive(Deserialize)]
struct RecordStream {
    name: String,
    key: String,
    rekey_interval: u64,
    plaintexts: Vec<String>,
    records: Vec<String>,
}

#[derive(Deserialize)]
struct FirstMessage {
    name: String,
    prologue: String,
    ephemeral_secret: String,
    payload: String,
    now_ms: u64,
    hex: String,
}

fn session_vectors() -> SessionFile {
    let text = std::fs::read_to_string(vector_path("session.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// docs/PROTOCOL.md Part II, "Handshake payload".
#[test]
fn session_payload_vectors() {
    let file = session_vectors();
    assert!(!file.payloads.is_empty() && !file.bad_payloads.is_empty());
    for v in &file.payloads {
        let nonce: [u8; 16] = hex::decode(&v.nonce).unwrap().try_into().unwrap();
        let caps = Capabilities::new(
            v.max_frame_len,
            CompressionSet::from_bits_truncate(v.compression),
        );
        let payload = HandshakePayload::new(v.timestamp_ms, nonce, caps);
        assert_eq!(hex::encode(payload.encode()), v.hex, "{}", v.name);
        assert_eq!(
            HandshakePayload::decode(&hex::decode(&v.hex).unwrap()).unwrap(),
            payload,
            "{}",
            v.name
        );
    }
    for v in &file.bad_payloads {
        let err = HandshakePayload::decode(&hex::decode(&v.hex).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), v.error, "{}", v.name);
    }
}

/// docs/PROTOCOL.md Part II, "Records" and "Nonces and rekey".
#[test]
fn session_record_vectors() {
    for v in session_vectors().record_streams {
        let key = hex32(&v.key);
        let mut config = RecordConfig::default();
        config.rekey_interval = v.rekey_interval;
        let mut sealer = Sealer::from_key(provider::rust_crypto(), &key, &config).unwrap();
        let mut opener = Opener::from_key(provider::rust_crypto(), &key, &config).unwrap();
        let mut stream = BytesMut::new();
        for (i, (plaintext, record)) in v.plaintexts.iter().zip(&v.records).enumerate() {
            let mut wire = BytesMut::new();
            sealer
                .seal(&hex::decode(plaintext).unwrap(), &mut wire)
                .unwrap();
            assert_eq!(hex::encode(&wire), *record, "{} record {i}", v.name);
            stream.extend_from_slice(&hex::decode(record).unwrap());
        }
        for (i, plaintext) in v.plaintexts.iter().enumerate() {
            let got = opener.open(&mut stream).unwrap().unwrap();
            assert_eq!(hex::encode(&got), *plaintext, "{} open {i}", v.name);
        }
        assert!(stream.is_empty());
    }
}

/// docs/PROTOCOL.md Part II, "Handshake messages": message 0 of XX.
#[test]
fn session_first_message_vectors() {
    for v in session_vectors().first_messages {
        let prologue = hex::decode(&v.prologue).unwrap();
        let expected = hex::decode(&v.hex).unwrap();

        // Our engine builds exactly these bytes from the documented parts.
        let mut noise = HandshakeBuilder::new(Pattern::xx())
            .prologue(&prologue)
            .local_static(Keypair::from_secret_bytes([1; 32]))
            .danger_fixed_ephemeral(Keypair::from_secret_bytes(hex32(&v.ephemeral_secret)))
            .build_initiator(&mut rand::rngs::OsRng)
            .unwrap();
        let mut message = Vec::new();
        noise
            .write_message(&hex::decode(&v.payload).unwrap(), &mut message)
            .unwrap();
        let mut framed = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&message);
        assert_eq!(hex::encode(&framed), v.hex, "{}", v.name);

        // A netproto responder accepts it once, and caches its nonce.
        let payload = HandshakePayload::decode(&hex::decode(&v.payload).unwrap()).unwrap();
        let responder = || {
            SessionBuilder::new(Keypair::from_secret_bytes([2; 32]))
                .prologue(&prologue)
                .build_responder(&mut rand::rngs::OsRng)
                .unwrap()
        };
        let mut replay = ReplayCache::default();
        let mut input = BytesMut::from(&expected[..]);
        assert!(
            responder()
                .read_message(&mut input, v.now_ms, &mut replay)
                .unwrap(),
            "{}",
            v.name
        );
        assert!(replay.contains(&payload.nonce));
        let mut input = BytesMut::from(&expected[..]);
        let err = responder()
            .read_message(&mut input, v.now_ms, &mut replay)
            .unwrap_err();
        assert!(matches!(err, Error::Replay), "{}: {err}", v.name);
        let mut input = BytesMut::from(&expected[..]);
        let late = v.now_ms + 10_000;
        let err = responder()
            .read_message(&mut input, late, &mut ReplayCache::default())
            .unwrap_err();
        assert!(matches!(err, Error::ClockSkew { .. }), "{}: {err}", v.name);
    }
}

/// The record vectors again through the ring provider.
#[cfg(feature = "ring")]
#[test]
fn ring_provider_matches_the_vectors() {
    let v = session_vectors().record_streams.remove(0);
    let mut config = RecordConfig::default();
    config.rekey_interval = v.rekey_interval;
    let mut sealer = Sealer::from_key(provider::ring(), &hex32(&v.key), &config).unwrap();
    for (plaintext, record) in v.plaintexts.iter().zip(&v.records) {
        let mut wire = BytesMut::new();
        sealer
            .seal(&hex::decode(plaintext).unwrap(), &mut wire)
            .unwrap();
        assert_eq!(hex::encode(&wire), *record);
    }
}
