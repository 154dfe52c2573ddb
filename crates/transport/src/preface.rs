//! The preface exchange at the start of every connection.

use netproto_wire::{PREFACE_LEN, Preface, PrefaceAnswer, PrefaceStatus, SecurityMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, Io};

/// Sends the client preface for `mode` and waits for the server's answer.
///
/// Returns the preface bytes as sent (the Noise prologue).
pub(crate) async fn client<I: Io>(
    io: &mut I,
    mode: SecurityMode,
) -> Result<[u8; PREFACE_LEN], Error> {
    let preface = Preface::new(mode).to_bytes();
    io.write_all(&preface).await?;
    io.flush().await?;
    let mut answer = [0; PREFACE_LEN];
    read_exact(io, &mut answer).await?;
    let answer = PrefaceAnswer::parse(&answer)?.ok_or(Error::PeerClosed)?;
    if answer.status != PrefaceStatus::Accept || answer.mode != mode {
        return Err(Error::Refused {
            status: answer.status,
            version: answer.version,
            mode: answer.mode,
        });
    }
    Ok(preface)
}

/// Reads the client preface and answers it for a listener that offers `offered`.
///
/// Returns the preface bytes as received (the Noise prologue). When the
/// client asked for something else, the refusal is sent before the error is
/// returned.
pub(crate) async fn server<I: Io>(
    io: &mut I,
    offered: SecurityMode,
) -> Result<[u8; PREFACE_LEN], Error> {
    let bytes = read_preface(io, &[]).await?;
    let preface = Preface::parse(&bytes)?.ok_or(Error::PeerClosed)?;
    let answer = PrefaceAnswer::to(preface, offered);
    io.write_all(&answer.to_bytes()).await?;
    io.flush().await?;
    match answer.status {
        PrefaceStatus::Accept => Ok(bytes),
        _ => Err(Error::ModeMismatch {
            asked: preface.mode,
            offered,
        }),
    }
}

/// Reads a client preface and refuses it with `status` (for example
/// [`PrefaceStatus::Busy`] when a server is at its connection limit).
///
/// # Errors
///
/// I/O and preface errors; a refusal that was sent returns `Ok`. In TLS
/// mode the preface travels inside TLS, and a TLS ClientHello fails here as
/// a bad magic (at its first byte): a server closes such a connection
/// unanswered.
pub async fn refuse<I: Io>(
    io: &mut I,
    offered: SecurityMode,
    status: PrefaceStatus,
) -> Result<(), Error> {
    refuse_after(io, &[], offered, status).await?;
    Ok(())
}

/// [`refuse`] for a preface whose first bytes, `read`, were read already;
/// returns the mode the client asked for.
pub(crate) async fn refuse_after<I: Io>(
    io: &mut I,
    read: &[u8],
    offered: SecurityMode,
    status: PrefaceStatus,
) -> Result<SecurityMode, Error> {
    let bytes = read_preface(io, read).await?;
    let preface = Preface::parse(&bytes)?.ok_or(Error::PeerClosed)?;
    let answer = PrefaceAnswer {
        version: netproto_wire::PROTOCOL_VERSION,
        mode: offered,
        status,
    };
    io.write_all(&answer.to_bytes()).await?;
    io.shutdown().await?;
    Ok(preface.mode)
}

/// Reads eight bytes, of which `read` came already, failing as soon as they
/// cannot start a preface.
async fn read_preface<I: Io>(io: &mut I, read: &[u8]) -> Result<[u8; PREFACE_LEN], Error> {
    let mut bytes = [0; PREFACE_LEN];
    let mut filled = read.len().min(PREFACE_LEN);
    bytes
        .get_mut(..filled)
        .unwrap_or_default()
        .copy_from_slice(read.get(..filled).unwrap_or_default());
    Preface::parse(bytes.get(..filled).unwrap_or_default())?;
    while filled < PREFACE_LEN {
        let n = io.read(bytes.get_mut(filled..).unwrap_or_default()).await?;
        if n == 0 {
            return Err(Error::PeerClosed);
        }
        filled += n;
        // Fails early on bytes that cannot begin the magic (an HTTP request, say).
        Preface::parse(bytes.get(..filled).unwrap_or_default())?;
    }
    Ok(bytes)
}

async fn read_exact<I: Io>(io: &mut I, buf: &mut [u8]) -> Result<(), Error> {
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::PeerClosed),
        Err(e) => Err(e.into()),
    }
}
