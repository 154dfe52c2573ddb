use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Builder, Command, Protocol, Type, Version};
use tokio::io::AsyncWriteExt;

use super::*;

/// What follows the header on the wire (a plain-mode netproto preface):
/// it must stay unread.
const NEXT: &[u8] = b"NETP\x01\x00\x00\x00";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn policy(trusted: &[&str], max: usize) -> ProxyPolicy {
    ProxyPolicy {
        trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        timeout: Duration::from_secs(2),
        max,
    }
}

fn v2(command: Command, source: &str, destination: &str) -> Builder {
    Builder::with_addresses(
        Version::Two | command,
        Protocol::Stream,
        (addr(source), addr(destination)),
    )
}

/// Reads a header from `bytes` followed by [`NEXT`]; the result and what
/// was left unread.
async fn read(bytes: &[u8], max: usize) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
    let wire = [bytes, NEXT].concat();
    let mut rest = wire.as_slice();
    let result = policy(&["127.0.0.1"], max).read(&mut rest).await;
    (result, rest.to_vec())
}

#[tokio::test]
async fn v1_headers_carry_the_client_and_leave_what_follows_unread() {
    for (header, client) in [
        (
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 9000\r\n"[..],
            "192.0.2.1:40000",
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 40001 9000\r\n",
            "[2001:db8::1]:40001",
        ),
        (
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ),
    ] {
        let (result, rest) = read(header, 4096).await;
        assert_eq!(result, Ok(Some(addr(client))));
        assert_eq!(rest, NEXT);
    }
    let (result, rest) = read(b"PROXY UNKNOWN\r\n", 4096).await;
    assert_eq!((result, rest.as_slice()), (Ok(None), NEXT));
    let (result, rest) = read(b"PROXY UNKNOWN whatever 1 2\r\n", 4096).await;
    assert_eq!((result, rest.as_slice()), (Ok(None), NEXT));
}

#[tokio::test]
async fn v2_headers_carry_the_client_and_leave_what_follows_unread() {
    let with_tlvs = v2(Command::Proxy, "192.0.2.1:40000", "198.51.100.2:9000")
        .write_tlv(Type::Authority, b"netproto.example")
        .unwrap()
        .write_tlv(Type::UniqueId, &[7; 128])
        .unwrap()
        .build()
        .unwrap();
    let ipv6 = v2(Command::Proxy, "[2001:db8::1]:40001", "[2001:db8::2]:9000")
        .build()
        .unwrap();
    for (header, client) in [
        (with_tlvs, Some(addr("192.0.2.1:40000"))),
        (ipv6, Some(addr("[2001:db8::1]:40001"))),
        // A health check: the socket's address stands.
        (
            v2(Command::Local, "0.0.0.0:0", "0.0.0.0:0")
                .build()
                .unwrap(),
            None,
        ),
        (
            Builder::new(Version::Two | Command::Proxy, 0x00)
                .build()
                .unwrap(),
            None,
        ),
    ] {
        let (result, rest) = read(&header, 4096).await;
        assert_eq!(result, Ok(client), "{header:?}");
        assert_eq!(rest, NEXT);
    }
}

#[tokio::test]
async fn a_connection_without_a_header_is_refused_at_once() {
    // A netproto preface, an HTTP request, a TLS ClientHello's start.
    let preface = netproto_wire::Preface::new(netproto_wire::SecurityMode::Noise).to_bytes();
    for start in [
        &preface[..],
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01",
    ] {
        let mut rest = start;
        let result = policy(&["127.0.0.1"], 4096).read(&mut rest).await;
        assert_eq!(result, Err(HeaderError::Missing), "{start:?}");
    }
    // The v2 signature's start, then something else.
    let (result, _) = read(b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c", 4096).await;
    assert_eq!(result, Err(HeaderError::Missing));
}

#[tokio::test]
async fn malformed_headers_are_refused() {
    let mut bad_version = v2(Command::Proxy, "192.0.2.1:1", "192.0.2.2:2")
        .build()
        .unwrap();
    bad_version[12] = 0x31;
    let mut short_addresses = v2(Command::Proxy, "192.0.2.1:1", "192.0.2.2:2")
        .build()
        .unwrap();
    short_addresses[15] = 4;
    short_addresses.truncate(20);
    for header in [
        &b"PROXY TCP4 192.0.2.300 192.0.2.2 1 2\r\n"[..],
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
        b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",
        b"PROXY TCP4 192.0.2.1\r192.0.2.2 1 2\r\n",
        b"PROXY UNKNOWN\r\r\n",
        &bad_version,
        &short_addresses,
    ] {
        let (result, _) = read(header, 4096).await;
        assert_eq!(result, Err(HeaderError::Malformed), "{header:?}");
    }
}

#[tokio::test]
async fn headers_past_their_bounds_are_refused_before_they_are_read() {
    // A v1 line without its CRLF: refused at 107 bytes, not read on.
    let long = [&b"PROXY TCP4 "[..], &[b'1'; 300]].concat();
    let (result, rest) = read(&long, 4096).await;
    assert_eq!(result, Err(HeaderError::TooLarge));
    assert!(
        rest.len() > 300 - V1_MAX,
        "{} bytes read",
        long.len() + NEXT.len() - rest.len()
    );
    // A v2 header declaring more than the bound: refused on its fixed part.
    let big = v2(Command::Proxy, "192.0.2.1:1", "192.0.2.2:2")
        .write_tlv(Type::NoOp, &[0; 1000])
        .unwrap()
        .build()
        .unwrap();
    let (result, rest) = read(&big, 536).await;
    assert_eq!(result, Err(HeaderError::TooLarge));
    assert_eq!(rest.len(), big.len() - V2_FIXED + NEXT.len());
    let (result, _) = read(&big, 4096).await;
    assert_eq!(
        result,
        Ok(Some(addr("192.0.2.1:1"))),
        "within a larger bound"
    );
}

#[tokio::test]
async fn a_header_cut_short_is_refused_as_closed() {
    let whole = v2(Command::Proxy, "192.0.2.1:1", "192.0.2.2:2")
        .build()
        .unwrap();
    for cut in [&b"PRO"[..], b"PROXY TCP4 192.0", &whole[..20]] {
        let mut rest = cut;
        let result = policy(&["127.0.0.1"], 4096).read(&mut rest).await;
        assert_eq!(result, Err(HeaderError::Closed), "{cut:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_header_dribbled_past_the_timeout_is_refused() {
    let (mut ours, mut theirs) = tokio::io::duplex(64);
    let dribble = tokio::spawn(async move {
        for byte in b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n" {
            if theirs.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let result = policy(&["127.0.0.1"], 4096).read(&mut ours).await;
    assert_eq!(result, Err(HeaderError::Timeout));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    drop(ours);
    dribble.await.unwrap();
}

#[test]
fn only_trusted_sources_and_unix_peers_must_send_a_header() {
    let policy = policy(&["10.0.0.0/8", "fd00::/64"], 4096);
    assert!(policy.trusts(Some(addr("10.1.2.3:5000"))));
    assert!(policy.trusts(Some(addr("[::ffff:10.1.2.3]:5000"))));
    assert!(policy.trusts(Some(addr("[fd00::9]:5000"))));
    assert!(!policy.trusts(Some(addr("127.0.0.1:5000"))));
    assert!(!policy.trusts(Some(addr("[fd00:1::9]:5000"))));
    assert!(policy.trusts(None), "a Unix socket's peer");
    let mut config = ServerConfig::default();
    assert!(ProxyPolicy::new(&config).is_none(), "off by default");
    config.proxy_protocol = true;
    config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let from_config = ProxyPolicy::new(&config).unwrap();
    assert_eq!(from_config.max, config.proxy_header_max);
    assert_eq!(from_config.timeout, config.proxy_timeout);
}

#[test]
fn every_reason_is_registered() {
    for error in [
        HeaderError::Missing,
        HeaderError::Malformed,
        HeaderError::TooLarge,
        HeaderError::Timeout,
        HeaderError::Closed,
        HeaderError::Io,
    ] {
        assert!(
            crate::metrics::PROXY_HEADER_REASONS.contains(&error.reason()),
            "{error}"
        );
    }
}
