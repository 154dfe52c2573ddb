//! Typed configuration values: names read into enums, keys and pins read
//! from hex, peer entries split into key and address, all when the
//! configuration is loaded.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use netproto_crypto::provider::{self, Provider};
use netproto_crypto::{CipherAlgorithm, PublicKey};
use serde::de::value::StrDeserializer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Reads `text` as one of an enum's configuration names, with serde's
/// error (which lists the names allowed) prefixed by the field.
fn from_name<'de, T: Deserialize<'de>>(text: &'de str, field: &str) -> Result<T> {
    T::deserialize(StrDeserializer::<serde::de::value::Error>::new(text))
        .map_err(|error| Error::Invalid(format!("{field}: {error}")))
}

/// Deserializes one of an enum's names through a string, so that an
/// unknown name is refused with serde's message listing the names allowed
/// (the `config` crate's own enum support does not list them).
pub(super) fn by_name<'de, D: Deserializer<'de>, T: for<'a> Deserialize<'a>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let text = String::deserialize(deserializer)?;
    T::deserialize(StrDeserializer::<serde::de::value::Error>::new(&text))
        .map_err(serde::de::Error::custom)
}

/// As [`by_name`], where an empty name means [`Compression::None`].
pub(super) fn compression_by_name<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Compression, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// How connections are protected (`security.mode`): `noise`, `tls` or
/// `plain`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Noise (`Noise_XX_25519_*`), the default.
    #[default]
    Noise,
    /// TLS 1.2 or 1.3.
    Tls,
    /// No protection: loopback and tests only.
    Plain,
}

impl SecurityMode {
    /// The name configuration files use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Noise => "noise",
            Self::Tls => "tls",
            Self::Plain => "plain",
        }
    }
}

impl From<SecurityMode> for netproto_wire::SecurityMode {
    fn from(mode: SecurityMode) -> Self {
        match mode {
            SecurityMode::Noise => Self::Noise,
            SecurityMode::Tls => Self::Tls,
            SecurityMode::Plain => Self::Plain,
        }
    }
}

impl FromStr for SecurityMode {
    type Err = Error;

    /// Reads `noise`, `tls` or `plain`.
    fn from_str(text: &str) -> Result<Self> {
        from_name(text, "security mode")
    }
}

impl fmt::Display for SecurityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Compression of message bodies (`transport.compression`): `none`, `lz4`
/// or `zstd`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression, the default (an empty name means it too).
    #[default]
    None,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl From<Compression> for netproto_wire::Compression {
    fn from(compression: Compression) -> Self {
        match compression {
            Compression::None => Self::None,
            Compression::Lz4 => Self::Lz4,
            Compression::Zstd => Self::Zstd,
        }
    }
}

impl FromStr for Compression {
    type Err = Error;

    /// Reads `none` (or nothing), `lz4` or `zstd`.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "" => Ok(Self::None),
            name => from_name(name, "compression"),
        }
    }
}

/// The Noise cipher (`security.noise_cipher`): `chachapoly` or `aesgcm`.
///
/// It is part of the protocol name: both sides must agree.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseCipher {
    /// `Noise_XX_25519_ChaChaPoly_SHA256`, the default.
    #[default]
    ChaChaPoly,
    /// `Noise_XX_25519_AESGCM_SHA256`, faster on CPUs with AES instructions.
    AesGcm,
}

impl From<NoiseCipher> for CipherAlgorithm {
    fn from(cipher: NoiseCipher) -> Self {
        match cipher {
            NoiseCipher::ChaChaPoly => Self::ChaCha20Poly1305,
            NoiseCipher::AesGcm => Self::Aes256Gcm,
        }
    }
}

impl FromStr for NoiseCipher {
    type Err = Error;

    /// Reads `chachapoly` or `aesgcm`.
    fn from_str(text: &str) -> Result<Self> {
        from_name(text, "security.noise_cipher")
    }
}

/// The implementation of the Noise primitives (`security.noise_backend`):
/// `ring` or `rustcrypto`. Both speak the same protocol; peers may differ.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseBackend {
    /// ring, the default (the fastest here).
    #[default]
    Ring,
    /// The RustCrypto crates.
    RustCrypto,
}

impl NoiseBackend {
    /// The crypto provider.
    pub fn provider(self) -> Arc<dyn Provider> {
        match self {
            Self::Ring => provider::ring(),
            Self::RustCrypto => provider::rust_crypto(),
        }
    }
}

impl FromStr for NoiseBackend {
    type Err = Error;

    /// Reads `ring` or `rustcrypto`.
    fn from_str(text: &str) -> Result<Self> {
        from_name(text, "security.noise_backend")
    }
}

/// One entry of `cluster.peers` or `balancer.endpoints`: an address, `host:port` or `unix:/path`,
/// optionally prefixed by the peer's Noise public key and `@` to pin it
/// (`<64 hex digits>@host:port`).
///
/// Configuration files hold it as that text; [`FromStr`] and
/// [`Display`](fmt::Display) convert.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    /// The peer's Noise public key, pinned.
    pub key: Option<PublicKey>,
    /// `host:port` (the host name is resolved again on every connection
    /// attempt) or `unix:/path`.
    pub address: String,
}

impl FromStr for PeerAddress {
    type Err = Error;

    /// Reads `host:port`, `unix:/path`, or either prefixed by `<key>@`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad key, a missing or zero port, an empty
    /// path.
    fn from_str(spec: &str) -> Result<Self> {
        let (key, address) = match spec.split_once('@') {
            Some((key, address)) => (Some(public_key(key)?), address),
            None => (None, spec),
        };
        let valid = if let Some(path) = address.strip_prefix("unix:") {
            !path.is_empty()
        } else {
            address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            })
        };
        if !valid {
            return Err(Error::Invalid(format!(
                "{address:?} is not host:port or unix:/path (optionally after <key>@)"
            )));
        }
        Ok(Self {
            key,
            address: address.to_owned(),
        })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "{key}@")?;
        }
        f.write_str(&self.address)
    }
}

impl Serialize for PeerAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Reads a Noise public key written as 64 hex digits.
fn public_key(text: &str) -> Result<PublicKey> {
    text.trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("{text:?} is not a public key (64 hex digits)")))
}

/// Reads a TLS SPKI pin written as 64 hex digits (SHA-256).
fn pin(text: &str) -> Result<[u8; 32]> {
    let invalid = || Error::Invalid(format!("{text:?} is not a pin (64 hex digits)"));
    hex::decode(text.trim())
        .map_err(|_| invalid())?
        .try_into()
        .map_err(|_| invalid())
}

/// `Option<PublicKey>` as an optional hex string.
pub(super) mod hex_key {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        key: &Option<PublicKey>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match key {
            Some(key) => serializer.collect_str(key),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<PublicKey>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| public_key(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `Vec<PublicKey>` as a list of hex strings.
pub(super) mod hex_keys {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        keys: &[PublicKey],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(keys.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<PublicKey>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| public_key(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// `Vec<[u8; 32]>` (SPKI pins) as a list of hex strings.
pub(super) mod hex_pins {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        pins: &[[u8; 32]],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(pins.iter().map(hex::encode))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| pin(text).map_err(serde::de::Error::custom))
            .collect()
    }
}
