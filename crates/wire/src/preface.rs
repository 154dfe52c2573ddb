//! The connection preface: the first bytes each side sends.

use crate::Error;

/// The four magic bytes every preface starts with: ASCII `NETP`.
pub const MAGIC: [u8; 4] = *b"NETP";

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Length in bytes of a [`Preface`] and of a [`PrefaceAnswer`].
pub const PREFACE_LEN: usize = 8;

/// How the bytes after the preface are protected.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// Frames travel in the clear (for loopback, tests, or an outer secure channel).
    Plain,
    /// A Noise handshake follows, then records that carry the frame stream.
    Noise,
    /// A TLS handshake follows, then TLS records that carry the frame stream.
    Tls,
}

impl SecurityMode {
    /// The byte that stands for this mode on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Plain => 0,
            Self::Noise => 1,
            Self::Tls => 2,
        }
    }

    /// The mode a wire byte stands for.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSecurityMode`] for a byte no mode uses.
    pub const fn from_byte(byte: u8) -> Result<Self, Error> {
        match byte {
            0 => Ok(Self::Plain),
            1 => Ok(Self::Noise),
            2 => Ok(Self::Tls),
            other => Err(Error::UnknownSecurityMode(other)),
        }
    }
}

/// What the connecting side sends first: magic, version and security mode.
///
/// In Noise mode the eight encoded bytes are also the Noise prologue, so a
/// peer in the middle that rewrites them breaks the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Preface {
    /// Protocol version the connecting side speaks.
    pub version: u8,
    /// Security mode the connecting side asks for.
    pub mode: SecurityMode,
}

impl Preface {
    /// A preface for this crate's protocol version.
    pub const fn new(mode: SecurityMode) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            mode,
        }
    }

    /// The eight bytes of this preface.
    pub const fn to_bytes(self) -> [u8; PREFACE_LEN] {
        let [a, b, c, d] = MAGIC;
        [a, b, c, d, self.version, self.mode.to_byte(), 0, 0]
    }

    /// Parses a preface from the start of `buf`.
    ///
    /// Returns `Ok(None)` while fewer than [`PREFACE_LEN`] bytes are present.
    /// The version is returned as sent, not checked: the answering side
    /// decides whether it can speak it.
    ///
    /// # Errors
    ///
    /// [`Error::BadMagic`], [`Error::UnknownSecurityMode`] or
    /// [`Error::ReservedNotZero`] for bytes that are not a preface.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, Error> {
        let Some([version, mode, r0, r1]) = after_magic(buf)? else {
            return Ok(None);
        };
        if r0 != 0 || r1 != 0 {
            return Err(Error::ReservedNotZero("preface byte"));
        }
        Ok(Some(Self {
            version,
            mode: SecurityMode::from_byte(mode)?,
        }))
    }
}

/// The answering side's verdict on a [`Preface`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrefaceStatus {
    /// The connection proceeds in the mode and version of the answer.
    Accept,
    /// The answering side does not speak the requested version; the answer
    /// carries the version it does speak. The connection is then closed.
    UnsupportedVersion,
    /// The answering side does not offer the requested security mode; the
    /// answer carries the mode it does offer. The connection is then closed.
    ModeNotOffered,
    /// The answering side is at capacity or shutting down. The connection is then closed.
    Busy,
}

impl PrefaceStatus {
    const fn to_byte(self) -> u8 {
        match self {
            Self::Accept => 0,
            Self::UnsupportedVersion => 1,
            Self::ModeNotOffered => 2,
            Self::Busy => 3,
        }
    }

    const fn from_byte(byte: u8) -> Result<Self, Error> {
        match byte {
            0 => Ok(Self::Accept),
            1 => Ok(Self::UnsupportedVersion),
            2 => Ok(Self::ModeNotOffered),
            3 => Ok(Self::Busy),
            other => Err(Error::UnknownPrefaceStatus(other)),
        }
    }
}

/// What the accepting side sends back after reading a [`Preface`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefaceAnswer {
    /// Protocol version the answering side speaks.
    pub version: u8,
    /// Security mode the answering side uses.
    pub mode: SecurityMode,
    /// Whether the connection goes on.
    pub status: PrefaceStatus,
}

impl PrefaceAnswer {
    /// The answer this implementation gives to `preface` when it offers only `offered`.
    pub fn to(preface: Preface, offered: SecurityMode) -> Self {
        let status = if preface.version != PROTOCOL_VERSION {
            PrefaceStatus::UnsupportedVersion
        } else if preface.mode != offered {
            PrefaceStatus::ModeNotOffered
        } else {
            PrefaceStatus::Accept
        };
        Self {
            version: PROTOCOL_VERSION,
            mode: offered,
            status,
        }
    }

    /// The eight bytes of this answer.
    pub const fn to_bytes(self) -> [u8; PREFACE_LEN] {
        let [a, b, c, d] = MAGIC;
        [
            a,
            b,
            c,
            d,
            self.version,
            self.mode.to_byte(),
            self.status.to_byte(),
            0,
        ]
    }

    /// Parses an answer from the start of `buf`; `Ok(None)` while it is incomplete.
    ///
    /// # Errors
    ///
    /// [`Error::BadMagic`], [`Error::UnknownSecurityMode`],
    /// [`Error::UnknownPrefaceStatus`] or [`Error::ReservedNotZero`].
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, Error> {
        let Some([version, mode, status, r0]) = after_magic(buf)? else {
            return Ok(None);
        };
        if r0 != 0 {
            return Err(Error::ReservedNotZero("preface byte"));
        }
        Ok(Some(Self {
            version,
            mode: SecurityMode::from_byte(mode)?,
            status: PrefaceStatus::from_byte(status)?,
        }))
    }
}

/// The four bytes after the magic of the preface or answer at the start of
/// `buf`; `Ok(None)` while it is incomplete.
fn after_magic(buf: &[u8]) -> Result<Option<[u8; 4]>, Error> {
    let Some(&[a, b, c, d, rest @ ..]) = buf.first_chunk::<PREFACE_LEN>() else {
        return check_magic_prefix(buf).map(|()| None);
    };
    if [a, b, c, d] != MAGIC {
        return Err(Error::BadMagic);
    }
    Ok(Some(rest))
}

/// Fails early on a partial preface whose bytes so far cannot start the magic.
fn check_magic_prefix(buf: &[u8]) -> Result<(), Error> {
    if MAGIC.iter().zip(buf).all(|(m, b)| m == b) {
        Ok(())
    } else {
        Err(Error::BadMagic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_round_trips() {
        for mode in [SecurityMode::Plain, SecurityMode::Noise, SecurityMode::Tls] {
            let p = Preface::new(mode);
            assert_eq!(Preface::parse(&p.to_bytes()), Ok(Some(p)));
        }
    }

    #[test]
    fn partial_preface_waits_or_fails_early() {
        let bytes = Preface::new(SecurityMode::Noise).to_bytes();
        for n in 0..PREFACE_LEN {
            assert_eq!(Preface::parse(&bytes[..n]), Ok(None));
        }
        assert_eq!(Preface::parse(b"GET /"), Err(Error::BadMagic));
    }

    #[test]
    fn answer_reports_mismatches() {
        let p = Preface::new(SecurityMode::Plain);
        let a = PrefaceAnswer::to(p, SecurityMode::Noise);
        assert_eq!(a.status, PrefaceStatus::ModeNotOffered);
        assert_eq!(PrefaceAnswer::parse(&a.to_bytes()), Ok(Some(a)));
        let old = Preface { version: 9, ..p };
        assert_eq!(
            PrefaceAnswer::to(old, SecurityMode::Plain).status,
            PrefaceStatus::UnsupportedVersion
        );
    }
}
