//! Test vectors: cacophony's Noise vectors (Noise rev 34, sections 5 and 7-9)
//! and netproto's own session vectors (docs/protocol-session.md).

use std::path::PathBuf;

use bytes::BytesMut;
use netproto_crypto::noise::{HandshakeBuilder, HandshakeState, Pattern};
use netproto_crypto::{Keypair, PublicKey, RecordConfig};
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

fn build(pattern: &Pattern, side: Side<'_>, initiator: bool) -> HandshakeState {
    let mut builder =
        HandshakeBuilder::new(pattern.clone()).prologue(&hex::decode(side.prologue).unwrap());
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

fn run_cacophony(v: &Cacophony) {
    let name = &v.protocol_name;
    let pattern = Pattern::from_protocol_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&pattern.protocol_name(), name);
    let mut init = build(
        &pattern,
        Side {
            prologue: &v.init_prologue,
            ephemeral: Some(&v.init_ephemeral),
            local_static: v.init_static.as_ref(),
            remote_static: v.init_remote_static.as_ref(),
            psks: &v.init_psks,
        },
        true,
    );
    let mut resp = build(
        &pattern,
        Side {
            prologue: &v.resp_prologue,
            ephemeral: v.resp_ephemeral.as_ref(),
            local_static: v.resp_static.as_ref(),
            remote_static: v.resp_remote_static.as_ref(),
            psks: &v.resp_psks,
        },
        false,
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

#[test]
fn cacophony_vectors() {
    let text = std::fs::read_to_string(vector_path("cacophony.json")).unwrap();
    let file: CacophonyFile = serde_json::from_str(&text).unwrap();
    assert_eq!(file.vectors.len(), 59);
    let mut passed = 0;
    for v in &file.vectors {
        run_cacophony(v);
        passed += 1;
    }
    assert_eq!(passed, 59);
}
