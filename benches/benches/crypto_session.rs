//! netproto-crypto against snow and against the raw AEAD of the same backend.
//!
//! `cargo bench -p netproto-benches --bench crypto_session`
//!
//! Groups (each compares lines measured in the same run):
//! - `crypto_xx_handshake`: a whole XX handshake, both sides in memory, from
//!   building the states to transport keys: our raw Noise engine, snow, and
//!   (for information) our netproto session layer with payload checks.
//! - `crypto_seal_open_64KiB`: seal + open of 64 KiB through our record layer
//!   versus one in-place encrypt + decrypt of the same size with the raw
//!   ChaCha20-Poly1305 of the same backend (RustCrypto, ring), and the same
//!   for the AESGCM cipher (`Noise_*_25519_AESGCM_SHA256`) against ring's raw
//!   AES-256-GCM (`ring_aesgcm`; `rustcrypto_aesgcm` for information).
//! - `crypto_1000_frames_64B`: 1,000 frames of 64 bytes coalesced into one
//!   seal + open, versus 1,000 separate snow transport messages.

// Benchmark: setup failures abort the run; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netproto_crypto::noise::{HandshakeBuilder, Pattern};
use netproto_crypto::{
    CipherAlgorithm, Keypair, Provider, RecordConfig, ReplayCache, SessionBuilder, provider,
};

const BULK: usize = 64 * 1024;
const FRAMES: usize = 1_000;
const FRAME: usize = 64;
const XX: &str = "Noise_XX_25519_ChaChaPoly_SHA256";

fn handshake(c: &mut Criterion) {
    let mut rng = rand::thread_rng();
    let (client_key, server_key) = (Keypair::generate(&mut rng), Keypair::generate(&mut rng));
    let (client_secret, server_secret) = (client_key.secret_bytes(), server_key.secret_bytes());
    let mut group = c.benchmark_group("crypto_xx_handshake");

    group.bench_function("netproto_noise", |b| {
        let mut msg = Vec::with_capacity(256);
        let mut payload = Vec::with_capacity(64);
        b.iter(|| {
            let mut i = HandshakeBuilder::new(Pattern::xx())
                .local_static(client_key.clone())
                .build_initiator(&mut rng)
                .unwrap();
            let mut r = HandshakeBuilder::new(Pattern::xx())
                .local_static(server_key.clone())
                .build_responder(&mut rng)
                .unwrap();
            for step in 0..3 {
                msg.clear();
                payload.clear();
                let (writer, reader) = if step % 2 == 0 {
                    (&mut i, &mut r)
                } else {
                    (&mut r, &mut i)
                };
                writer.write_message(&[], &mut msg).unwrap();
                reader.read_message(&msg, &mut payload).unwrap();
            }
            let config = RecordConfig::default();
            black_box((
                i.into_split(&config).unwrap(),
                r.into_split(&config).unwrap(),
            ))
        });
    });

    group.bench_function("snow", |b| {
        let mut msg = vec![0u8; 256];
        let mut payload = vec![0u8; 256];
        b.iter(|| {
            let mut i = snow::Builder::new(XX.parse().unwrap())
                .local_private_key(&client_secret[..])
                .build_initiator()
                .unwrap();
            let mut r = snow::Builder::new(XX.parse().unwrap())
                .local_private_key(&server_secret[..])
                .build_responder()
                .unwrap();
            for step in 0..3 {
                let (writer, reader) = if step % 2 == 0 {
                    (&mut i, &mut r)
                } else {
                    (&mut r, &mut i)
                };
                let n = writer.write_message(&[], &mut msg).unwrap();
                reader.read_message(&msg[..n], &mut payload).unwrap();
            }
            black_box((
                i.into_transport_mode().unwrap(),
                r.into_transport_mode().unwrap(),
            ))
        });
    });

    group.bench_function("netproto_session", |b| {
        let mut replay = ReplayCache::default();
        let now = 1_700_000_000_000;
        let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
        b.iter(|| {
            let mut client = SessionBuilder::new(client_key.clone())
                .build_initiator(&mut rng)
                .unwrap();
            let mut server = SessionBuilder::new(server_key.clone())
                .build_responder(&mut rng)
                .unwrap();
            client.write_message(now, &mut to_server).unwrap();
            server
                .read_message(&mut to_server, now, &mut replay)
                .unwrap();
            server.write_message(now, &mut to_client).unwrap();
            client.read_message(&mut to_client).unwrap();
            client.write_message(now, &mut to_server).unwrap();
            server
                .read_message(&mut to_server, now, &mut replay)
                .unwrap();
            black_box((
                client.into_session().unwrap(),
                server.into_session().unwrap(),
            ))
        });
    });
    group.finish();
}

/// Our record layer: seal 64 KiB into `wire` and open every record again.
fn ours_seal_open(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    provider: Arc<dyn Provider>,
    cipher: CipherAlgorithm,
) {
    let key = [7u8; 32];
    let config = RecordConfig::default();
    let mut sealer =
        netproto_crypto::Sealer::from_key_with_cipher(Arc::clone(&provider), cipher, &key, &config)
            .unwrap();
    let mut opener =
        netproto_crypto::Opener::from_key_with_cipher(provider, cipher, &key, &config).unwrap();
    let plaintext = vec![0x5au8; BULK];
    let mut wire = BytesMut::with_capacity(2 * BULK);
    c.bench_function("netproto", |b| {
        b.iter(|| {
            sealer.seal(black_box(&plaintext), &mut wire).unwrap();
            let mut total = 0;
            while let Some(chunk) = opener.open(&mut wire).unwrap() {
                total += chunk.len();
            }
            assert_eq!(total, BULK);
        });
    });
}

fn seal_open(c: &mut Criterion) {
    {
        let mut group = c.benchmark_group("crypto_seal_open_64KiB/rustcrypto");
        group.throughput(Throughput::Bytes(BULK as u64));
        ours_seal_open(
            &mut group,
            provider::rust_crypto(),
            CipherAlgorithm::ChaCha20Poly1305,
        );
        let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
        let mut buf = vec![0x5au8; BULK];
        let mut n = 0u64;
        group.bench_function("raw_aead", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                let nonce = Nonce::from(nonce);
                let tag = cipher
                    .encrypt_in_place_detached(&nonce, &[], &mut buf)
                    .unwrap();
                cipher
                    .decrypt_in_place_detached(&nonce, &[], &mut buf, &tag)
                    .unwrap();
            });
        });
        group.finish();
    }
    {
        use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce as RingNonce, UnboundKey};
        let mut group = c.benchmark_group("crypto_seal_open_64KiB/ring");
        group.throughput(Throughput::Bytes(BULK as u64));
        ours_seal_open(
            &mut group,
            provider::ring(),
            CipherAlgorithm::ChaCha20Poly1305,
        );
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).unwrap());
        let mut buf = vec![0x5au8; BULK];
        let mut n = 0u64;
        group.bench_function("raw_aead", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        RingNonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut buf,
                    )
                    .unwrap();
                key.open_in_place_separate_tag(
                    RingNonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    tag,
                    &mut buf,
                    0..,
                )
                .unwrap();
            });
        });
        group.finish();
    }
    {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as RingNonce, UnboundKey};
        let mut group = c.benchmark_group("crypto_seal_open_64KiB/ring_aesgcm");
        group.throughput(Throughput::Bytes(BULK as u64));
        ours_seal_open(&mut group, provider::ring(), CipherAlgorithm::Aes256Gcm);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
        let mut buf = vec![0x5au8; BULK];
        let mut n = 0u64;
        group.bench_function("raw_aead", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        RingNonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut buf,
                    )
                    .unwrap();
                key.open_in_place_separate_tag(
                    RingNonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    tag,
                    &mut buf,
                    0..,
                )
                .unwrap();
            });
        });
        group.finish();
    }
    {
        // For information: the RustCrypto provider's AESGCM (aes-gcm crate).
        let mut group = c.benchmark_group("crypto_seal_open_64KiB/rustcrypto_aesgcm");
        group.throughput(Throughput::Bytes(BULK as u64));
        ours_seal_open(
            &mut group,
            provider::rust_crypto(),
            CipherAlgorithm::Aes256Gcm,
        );
        group.finish();
    }
}

fn small_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("crypto_1000_frames_64B");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let key = [9u8; 32];
    let config = RecordConfig::default();
    // The frame byte stream of 1,000 frames, as the transport would coalesce them.
    let stream = vec![0x42u8; FRAMES * FRAME];
    let mut sealer =
        netproto_crypto::Sealer::from_key(provider::rust_crypto(), &key, &config).unwrap();
    let mut opener =
        netproto_crypto::Opener::from_key(provider::rust_crypto(), &key, &config).unwrap();
    let mut wire = BytesMut::with_capacity(2 * FRAMES * FRAME);
    group.bench_function("netproto_coalesced", |b| {
        b.iter(|| {
            sealer.seal(black_box(&stream), &mut wire).unwrap();
            let mut total = 0;
            while let Some(chunk) = opener.open(&mut wire).unwrap() {
                total += chunk.len();
            }
            assert_eq!(total, FRAMES * FRAME);
        });
    });

    let (mut snow_tx, mut snow_rx) = snow_transport_pair();
    let frame = [0x42u8; FRAME];
    let mut msg = vec![0u8; 128];
    let mut out = vec![0u8; 128];
    group.bench_function("snow_separate", |b| {
        b.iter(|| {
            for _ in 0..FRAMES {
                let n = snow_tx.write_message(black_box(&frame), &mut msg).unwrap();
                let m = snow_rx.read_message(&msg[..n], &mut out).unwrap();
                assert_eq!(m, FRAME);
            }
        });
    });
    group.finish();
}

fn snow_transport_pair() -> (snow::TransportState, snow::TransportState) {
    let mut i = snow::Builder::new("Noise_NN_25519_ChaChaPoly_SHA256".parse().unwrap())
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new("Noise_NN_25519_ChaChaPoly_SHA256".parse().unwrap())
        .build_responder()
        .unwrap();
    let (mut a, mut b) = (vec![0u8; 256], vec![0u8; 256]);
    let n = i.write_message(&[], &mut a).unwrap();
    r.read_message(&a[..n], &mut b).unwrap();
    let n = r.write_message(&[], &mut a).unwrap();
    i.read_message(&a[..n], &mut b).unwrap();
    (
        i.into_transport_mode().unwrap(),
        r.into_transport_mode().unwrap(),
    )
}

criterion_group!(benches, handshake, seal_open, small_frames);
criterion_main!(benches);
