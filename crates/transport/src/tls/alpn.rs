//! The application protocol both sides name in the TLS handshake, and the
//! server's answer to a client that names another or none.

use rustls::server::ClientHello;

/// The ALPN protocol name of netproto version 1 over TLS (RFC 7301): the
/// client offers it, the server selects it and refuses a ClientHello without
/// it.
pub const ALPN: &[u8] = b"netproto/1";

/// The first byte of a TLS handshake record (a ClientHello): what a TLS
/// listener reads first, where other modes read the preface magic.
pub(crate) const HANDSHAKE_RECORD: u8 = 0x16;

/// A fatal `no_application_protocol` alert (120) in a plaintext TLS record:
/// content type alert (21), legacy version 3.3, length 2, level fatal (2).
/// Alerts sent before the server's first handshake message are not
/// encrypted, in TLS 1.2 and 1.3 alike.
pub(super) const NO_APPLICATION_PROTOCOL_ALERT: [u8; 7] =
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x78];

/// Whether the client offers [`ALPN`].
///
/// rustls answers an offer without our name with the alert itself, but
/// carries on when the client offers no protocol at all (as OpenSSL and Go
/// do): a server that requires ALPN checks the ClientHello first.
pub(super) fn offers_netproto(hello: &ClientHello<'_>) -> bool {
    hello
        .alpn()
        .is_some_and(|mut offered| offered.any(|name| name == ALPN))
}
