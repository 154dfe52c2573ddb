//! TLS from the first byte, seen from outside: Python's `ssl` module
//! (OpenSSL), written from `docs/PROTOCOL.md` alone, connects straight to
//! `netproto serve --mode tls`, offers the ALPN `netproto/1`, exchanges the
//! preface inside TLS and gets an echo; without that ALPN it is refused with
//! the `no_application_protocol` alert.
//!
//! Needs `python3` (`cargo xtask ci` installs it where it can); without it
//! the test says so and checks nothing.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{ServerProcess, Settings};

/// A peer from the spec: TLS with the given ALPN offer (none when empty),
/// the preface in TLS mode inside it, then one ECHO request in a data frame.
/// Exits 0 after a correct echo, 3 when the TLS handshake is refused
/// (printing OpenSSL's reason), and fails with a traceback otherwise.
const PEER: &str = r#"
import socket, ssl, struct, sys

host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
offer = [name for name in sys.argv[4].split(",") if name]

def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"stream ended after {len(data)} of {n} bytes")
        data += chunk
    return data

context = ssl.create_default_context(cafile=ca)
context.minimum_version = ssl.TLSVersion.TLSv1_2
if offer:
    context.set_alpn_protocols(offer)
raw = socket.create_connection((host, port), timeout=10)
try:
    tls = context.wrap_socket(raw, server_hostname="localhost")
except ssl.SSLError as error:
    print("refused:", error.reason, error)
    sys.exit(3)
assert tls.selected_alpn_protocol() == "netproto/1", tls.selected_alpn_protocol()

# Preface: magic, version 1, mode 2 (TLS), reserved; the answer accepts it.
tls.sendall(b"NETP\x01\x02\x00\x00")
answer = recv_exact(tls, 8)
assert answer == b"NETP\x01\x02\x00\x00", answer.hex()

# A data frame (kind 1, no flags) holding the envelope: request id 1 as a
# varint, the type name "ECHO" as a length-prefixed string, the payload.
body = bytes([1, 4]) + b"ECHO" + b"hello from python"
tls.sendall(struct.pack(">IBB", len(body), 1, 0) + body)
length, kind, flags = struct.unpack(">IBB", recv_exact(tls, 6))
reply = recv_exact(tls, length)
assert (kind, flags) == (1, 0), (kind, flags)
assert reply == body, reply
print("echoed", tls.version())
"#;

/// Runs the peer against `server`, offering `alpn` (comma-separated).
fn python_peer(server: &ServerProcess, ca: &Path, alpn: &str) -> Output {
    Command::new("python3")
        .args(["-c", PEER])
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .arg(ca)
        .arg(alpn)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn python3_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn python_ssl_reaches_the_server_only_with_the_netproto_alpn() {
    if !python3_available() {
        println!("SKIPPED: python3 is not installed; `cargo xtask ci` installs it as root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("netproto-tls-first-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new(env!("CARGO_BIN_EXE_netproto"))
        .arg("certgen")
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "certgen failed: {status}");
    let toml_path = |path: &Path| format!("{:?}", path.display().to_string());
    let settings = Settings::default()
        .set("security", "tls_cert", &toml_path(&cert))
        .set("security", "tls_key", &toml_path(&key));
    let server = ServerProcess::start("tls", &settings);

    let output = python_peer(&server, &cert, "netproto/1");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("echoed"),
        "with the ALPN: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("with netproto/1 offered: {}", stdout.trim());

    for offer in ["", "h2,http/1.1"] {
        let output = python_peer(&server, &cert, offer);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(3),
            "offering {offer:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout
                .to_lowercase()
                .replace('_', " ")
                .contains("no application protocol"),
            "offering {offer:?}: {stdout}"
        );
        println!("offering {offer:?}: {}", stdout.trim());
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
