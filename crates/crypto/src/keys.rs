//! Static X25519 identities, public keys and the key-file format.

use core::fmt;
use core::str::FromStr;
use std::path::Path;

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::provider::KEY_LEN;
use crate::{Error, Result};

/// The first line of a key file.
pub const KEY_FILE_HEADER: &str = "netproto-x25519-secret-v1";

/// An X25519 public key, such as a peer's static key.
///
/// `Display`, `Debug` and `FromStr` use 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    /// Parses 64 hex digits.
    fn from_str(s: &str) -> Result<Self> {
        let bytes =
            decode_hex32(s.trim()).ok_or(Error::KeyFile("public key is not 64 hex digits"))?;
        Ok(Self(*bytes))
    }
}

impl From<[u8; KEY_LEN]> for PublicKey {
    fn from(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
}

/// A static X25519 key pair: a node's long-term identity.
///
/// The secret is zeroized on drop and never shown by `Debug`.
///
/// # Key-file format
///
/// A key file is ASCII text of exactly two lines, each ending in `\n`:
///
/// ```text
/// netproto-x25519-secret-v1
/// <64 lowercase hex digits: the 32-byte X25519 secret scalar>
/// ```
///
/// Readers accept upper- or lowercase hex, a trailing `\r` on either line and a
/// missing final newline; anything else is [`Error::KeyFile`]. The public key is
/// derived from the secret and is not stored. On Unix, [`Keypair::write_key_file`]
/// creates the file with mode `0600` and refuses to overwrite an existing file.
#[derive(Clone)]
pub struct Keypair {
    secret: StaticSecret,
    public: PublicKey,
}

impl Keypair {
    /// Generates a fresh key pair from `rng`.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret_bytes(*bytes)
    }

    /// Builds the key pair whose secret scalar is `secret` (clamped by X25519 when used).
    pub fn from_secret_bytes(secret: [u8; KEY_LEN]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The public half.
    pub const fn public(&self) -> &PublicKey {
        &self.public
    }

    /// A copy of the secret scalar, zeroized when dropped. Handle with care.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The key file text (see [`Keypair`]).
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(KEY_FILE_HEADER.len() + 66));
        text.push_str(KEY_FILE_HEADER);
        text.push('\n');
        for byte in self.secret.as_bytes() {
            text.push(hex_digit(byte >> 4));
            text.push(hex_digit(byte & 0x0f));
        }
        text.push('\n');
        text
    }

    /// Parses key file text (see [`Keypair`]).
    ///
    /// # Errors
    ///
    /// [`Error::KeyFile`] if the text is not in the documented format.
    pub fn from_key_file(text: &str) -> Result<Self> {
        let mut lines = text
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line));
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(Error::KeyFile("missing header line"));
        }
        let secret = lines
            .next()
            .and_then(decode_hex32)
            .ok_or(Error::KeyFile("secret is not 64 hex digits"))?;
        match (lines.next(), lines.next()) {
            (None | Some(""), None) => Ok(Self::from_secret_bytes(*secret)),
            _ => Err(Error::KeyFile("trailing data")),
        }
    }

    /// Writes the key file to `path`, with mode `0600` on Unix.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file exists already or cannot be written.
    pub fn write_key_file(&self, path: impl AsRef<Path>) -> Result<()> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        file.write_all(self.to_key_file().as_bytes())?;
        file.sync_all()?;
        Ok(())
    }

    /// Reads a key file written by [`write_key_file`](Self::write_key_file).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read, [`Error::KeyFile`] if malformed.
    pub fn read_key_file(path: impl AsRef<Path>) -> Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        Self::from_key_file(&text)
    }

    pub(crate) const fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(
        b"0123456789abcdef"
            .get(usize::from(nibble))
            .copied()
            .unwrap_or(b'0'),
    )
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex32(s: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let digits = s.as_bytes();
    if digits.len() != 2 * KEY_LEN {
        return None;
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (hex_value(*hi)? << 4) | hex_value(*lo)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_format() {
        let pair = Keypair::from_secret_bytes([7; 32]);
        let text = pair.to_key_file();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("netproto-x25519-secret-v1\n0707"));
        let back = Keypair::from_key_file(&text).unwrap();
        assert_eq!(back.public(), pair.public());
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(
            Keypair::from_key_file(&crlf).unwrap().public(),
            pair.public()
        );
        let no_newline = text.trim_end();
        assert_eq!(
            Keypair::from_key_file(no_newline).unwrap().public(),
            pair.public()
        );
    }

    #[test]
    fn malformed_key_files_are_rejected() {
        let good = Keypair::from_secret_bytes([1; 32]).to_key_file();
        for bad in [
            String::new(),
            "netproto-x25519-secret-v2\n".to_owned() + &"00".repeat(32),
            good.replace("netproto", "other"),
            good[..good.len() - 3].to_owned(),
            good.to_string() + "extra\n",
            good.replace("01", "zz"),
        ] {
            assert!(
                matches!(Keypair::from_key_file(&bad), Err(Error::KeyFile(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_and_errors_hide_the_secret() {
        let pair = Keypair::from_secret_bytes([0xab; 32]);
        let debug = format!("{pair:?}");
        assert!(!debug.contains("abab"), "{debug}");
        assert!(debug.contains(&pair.public().to_string()));
        let err = Keypair::from_key_file("netproto-x25519-secret-v1\nabab").unwrap_err();
        assert!(!err.to_string().contains("abab"));
    }

    #[test]
    fn public_key_hex_round_trip() {
        let key = *Keypair::from_secret_bytes([3; 32]).public();
        assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
        assert!("00".parse::<PublicKey>().is_err());
    }

    #[test]
    fn key_file_is_private_and_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("netproto-keytest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let pair = Keypair::from_secret_bytes([9; 32]);
        pair.write_key_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(pair.write_key_file(&path), Err(Error::Io(_))));
        assert_eq!(
            Keypair::read_key_file(&path).unwrap().public(),
            pair.public()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
