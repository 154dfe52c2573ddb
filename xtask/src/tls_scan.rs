//! `cargo xtask tls-scan`: what a TLS scanner sees of `netproto serve --mode
//! tls`, with a fresh self-signed certificate, on loopback.
//!
//! Stock scanners (sslscan, testssl.sh) cannot offer a chosen ALPN
//! protocol, and the server refuses every ClientHello without `netproto/1`,
//! so the scan has two parts:
//!
//! 1. sslscan as it is: every protocol version must show as refused (the
//!    ALPN requirement holds for all of them, SSLv2 and SSLv3 included,
//!    which cannot carry ALPN at all);
//! 2. the enumeration a scanner would do, with OpenSSL's `s_client` offering
//!    `netproto/1`: each protocol version from TLS 1.0 up, then each cipher
//!    suite OpenSSL knows, one at a time.
//!
//! It fails on an accepted TLS 1.0 or 1.1, an accepted suite that is not
//! AEAD (CBC, RC4, NULL) or has no ephemeral key exchange, a handshake with
//! `netproto/1` that does not select it, or a handshake without it that is
//! not refused with the alert `no_application_protocol`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::packages;
use crate::process::{Background, json_string_field, target_directory};

/// How long the server has to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one `s_client` handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol of netproto over TLS.
const ALPN: &str = "netproto/1";

pub(crate) fn run(sh: &Shell) -> anyhow::Result<()> {
    let missing = packages::ensure(&[("openssl", "openssl"), ("sslscan", "sslscan")]);
    if missing.iter().any(|m| m.starts_with("openssl")) {
        bail!("tls-scan needs the openssl command: {missing:?}");
    }
    cmd!(sh, "cargo build --locked -p netproto-daemon --bin netproto").run()?;
    let target = target_directory(sh)?;
    let netproto = target
        .join("debug")
        .join(format!("netproto{}", std::env::consts::EXE_SUFFIX));
    let dir = target.join("tls-scan");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let (mut server, addr) = start_server(&netproto, &dir)?;
    eprintln!("tls-scan: netproto serve --mode tls on {addr}");

    let mut failures = Vec::new();
    if missing.is_empty() {
        stock_scan(addr, &mut failures)?;
    } else {
        eprintln!("tls-scan: sslscan part skipped: {missing:?}");
    }
    alpn_checks(addr, &mut failures)?;
    enumerate(addr, &mut failures)?;

    server.check_running()?;
    server.interrupt()?;
    server.wait(Duration::from_secs(30))?;
    if !failures.is_empty() {
        bail!("tls-scan failed:\n  {}", failures.join("\n  "));
    }
    eprintln!("tls-scan: passed");
    Ok(())
}

/// Starts `netproto serve --mode tls` on a free loopback port with a new
/// certificate in `dir`, and returns it with the address it listens on.
fn start_server(netproto: &Path, dir: &Path) -> anyhow::Result<(Background, SocketAddr)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new(netproto)
        .arg("certgen")
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("netproto certgen failed: {status}");
    }
    let config = dir.join("netproto.toml");
    std::fs::write(
        &config,
        format!(
            "[security]\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )?;
    let mut server = Background::spawn(
        "netproto serve --mode tls",
        Command::new(netproto)
            .args([
                "serve",
                "--mode",
                "tls",
                "--address",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&config)
            .env("NETPROTO__LOGGING__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let stderr = server.child_mut().stderr.take().context("no stderr pipe")?;
    let (found, listening) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("\"listening\"")
                && let Some(address) = json_string_field(&line, "address")
            {
                let _ = found.send(address);
            }
        }
    });
    let address = listening
        .recv_timeout(READY_TIMEOUT)
        .context("the server did not say where it listens")?;
    let addr = address
        .parse()
        .with_context(|| format!("listening address {address:?}"))?;
    Ok((server, addr))
}

/// sslscan, which offers no ALPN: every version must be refused.
fn stock_scan(addr: SocketAddr, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let output = Command::new("sslscan")
        .args(["--no-colour", "--sni-name=localhost"])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .output()
        .context("running sslscan")?;
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("tls-scan: sslscan (no ALPN offered):");
    for version in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"] {
        let line = text
            .lines()
            .find(|line| line.starts_with(version))
            .unwrap_or_default();
        eprintln!("  {line}");
        if !line.contains("disabled") {
            failures.push(format!(
                "sslscan without ALPN: {version} is not refused: {line:?}"
            ));
        }
    }
    Ok(())
}

/// The ALPN requirement: selected when offered, refused with the alert when
/// not offered or offered without `netproto/1`.
fn alpn_checks(addr: SocketAddr, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let offered = s_client(addr, &["-alpn", ALPN])?;
    eprintln!(
        "tls-scan: offering {ALPN}: {} {} ALPN {}",
        offered.protocol, offered.cipher, offered.alpn
    );
    if !offered.established || offered.alpn != ALPN {
        failures.push(format!(
            "offering {ALPN}: not established with it ({offered:?})"
        ));
    }
    for alpn in [None, Some("h2,http/1.1")] {
        let args: Vec<&str> = alpn.map(|a| vec!["-alpn", a]).unwrap_or_default();
        let refused = s_client(addr, &args)?;
        let alert = refused.text.contains("no application protocol");
        eprintln!(
            "tls-scan: offering {}: {}",
            alpn.unwrap_or("no ALPN"),
            if alert {
                "refused with no_application_protocol"
            } else {
                "NOT refused with the alert"
            }
        );
        if refused.established || !alert {
            failures.push(format!(
                "offering {alpn:?}: not refused with no_application_protocol"
            ));
        }
    }
    Ok(())
}

/// Each protocol version, then each cipher suite, offering `netproto/1`.
fn enumerate(addr: SocketAddr, failures: &mut Vec<String>) -> anyhow::Result<()> {
    for (flag, name, allowed) in [
        ("-tls1", "TLS 1.0", false),
        ("-tls1_1", "TLS 1.1", false),
        ("-tls1_2", "TLS 1.2", true),
        ("-tls1_3", "TLS 1.3", true),
    ] {
        let mut args = vec!["-alpn", ALPN, flag];
        if flag != "-tls1_3" {
            // OpenSSL 3 does not even offer the old versions at its default
            // security level.
            args.extend(["-cipher", "ALL:@SECLEVEL=0"]);
        }
        let outcome = s_client(addr, &args)?;
        eprintln!(
            "tls-scan: {name}: {}",
            if outcome.established {
                "accepted"
            } else {
                "refused"
            }
        );
        if outcome.established != allowed {
            failures.push(format!(
                "{name} {}",
                if allowed { "is refused" } else { "is accepted" }
            ));
        }
    }
    let list = Command::new("openssl")
        .args(["ciphers", "-v", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"])
        .output()
        .context("running openssl ciphers")?;
    let list = String::from_utf8_lossy(&list.stdout);
    let mut accepted = Vec::new();
    let mut tried = 0;
    for line in list.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(&suite), Some(&version)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        let aead = fields.contains(&"Mac=AEAD");
        let tls13 = version == "TLSv1.3";
        let args = if tls13 {
            vec!["-alpn", ALPN, "-tls1_3", "-ciphersuites", suite]
        } else {
            vec!["-alpn", ALPN, "-tls1_2", "-cipher"]
        };
        let cipher_arg = format!("{suite}:@SECLEVEL=0");
        let mut args = args;
        if !tls13 {
            args.push(&cipher_arg);
        }
        tried += 1;
        let outcome = s_client(addr, &args)?;
        if !outcome.established {
            continue;
        }
        let ephemeral = tls13 || suite.starts_with("ECDHE-") || suite.starts_with("DHE-");
        eprintln!(
            "tls-scan: accepted {} {suite} (AEAD: {aead}, ephemeral key exchange: {ephemeral})",
            outcome.protocol
        );
        if !aead {
            failures.push(format!(
                "accepted a suite that is not AEAD (CBC or worse): {suite}"
            ));
        }
        if !ephemeral {
            failures.push(format!("accepted a suite without forward secrecy: {suite}"));
        }
        accepted.push(suite.to_owned());
    }
    eprintln!(
        "tls-scan: {} of {tried} suites OpenSSL knows were accepted",
        accepted.len()
    );
    if accepted.is_empty() {
        failures.push("no cipher suite was accepted at all".to_owned());
    }
    Ok(())
}

/// What one `openssl s_client` handshake showed.
#[derive(Debug)]
struct Outcome {
    established: bool,
    protocol: String,
    cipher: String,
    alpn: String,
    /// Everything it printed.
    text: String,
}

/// One handshake with `openssl s_client` and `args`, closed at once.
fn s_client(addr: SocketAddr, args: &[&str]) -> anyhow::Result<Outcome> {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl s_client")?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("openssl s_client {args:?} did not finish within {HANDSHAKE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
    let (protocol, cipher) = text
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("New, ")?;
            let (protocol, cipher) = rest.split_once(", Cipher is ")?;
            Some((protocol.to_owned(), cipher.trim().to_owned()))
        })
        .unwrap_or_default();
    let alpn = text
        .lines()
        .find_map(|line| line.strip_prefix("ALPN protocol: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let established = output.status.success() && !cipher.is_empty() && cipher != "(NONE)";
    Ok(Outcome {
        established,
        protocol,
        cipher,
        alpn,
        text,
    })
}
