use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn env(vars: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// The error's text with its source's, as `netproto` prints it.
fn full_text(error: &Error) -> String {
    let source = std::error::Error::source(error).map(ToString::to_string);
    format!("{error}: {}", source.unwrap_or_default())
}

#[test]
fn peers_parse_with_and_without_a_pinned_key() {
    let key = "11".repeat(32);
    let spec = format!("{key}@db.example:9000");
    let peer: PeerAddress = spec.parse().unwrap();
    assert_eq!(peer.key.unwrap().to_string(), key);
    assert_eq!(peer.address, "db.example:9000");
    assert_eq!(peer.to_string(), spec, "printed back as written");
    for plain in ["[::1]:9000", "unix:/tmp/s"] {
        let peer: PeerAddress = plain.parse().unwrap();
        assert_eq!((peer.key, peer.address.as_str()), (None, plain));
    }
    for bad in [
        "",
        "host",
        ":9000",
        "host:0",
        "host:http",
        "unix:",
        "zz@host:1",
    ] {
        assert!(bad.parse::<PeerAddress>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn cluster_section_is_validated() {
    let c = ClusterConfig {
        peers: vec![
            "127.0.0.1:9000".parse().unwrap(),
            "127.0.0.1:9001".parse().unwrap(),
        ],
        ..ClusterConfig::default()
    };
    c.validate().unwrap();
    type Spoil = fn(&mut ClusterConfig);
    let cases: [(Spoil, &str); 9] = [
        (|c| c.probe_period = Duration::ZERO, "probe_period"),
        (
            |c| c.probe_period = Duration::from_millis(5),
            "probe_period must be at least",
        ),
        (
            |c| c.probe_timeout = c.probe_period,
            "probe_timeout must be less",
        ),
        (
            |c| c.suspect_timeout = Duration::from_millis(10),
            "suspect_timeout must be at least",
        ),
        (|c| c.indirect_probes = 0, "indirect_probes"),
        (|c| c.indirect_probes = 17, "indirect_probes"),
        (|c| c.bind = "nowhere".into(), "cluster.bind"),
        (
            |c| c.advertise = Some("10.0.0.1:0".into()),
            "cluster.advertise",
        ),
        (
            |c| {
                c.peers.push(
                    format!("{}@127.0.0.1:9000", "22".repeat(32))
                        .parse()
                        .unwrap(),
                )
            },
            "twice",
        ),
    ];
    for (spoil, expected) in cases {
        let mut bad = c.clone();
        spoil(&mut bad);
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn the_cluster_section_reads_from_the_environment() {
    let key = "ab".repeat(32);
    let peers = format!("127.0.0.1:1,{key}@127.0.0.1:2");
    let config = NetworkConfig::load(
        None,
        env(&[
            ("NETPROTO__CLUSTER__PEERS", &peers),
            ("NETPROTO__CLUSTER__PROBE_PERIOD", "250ms"),
            ("NETPROTO__CLUSTER__PROBE_TIMEOUT", "100ms"),
            ("NETPROTO__CLUSTER__SUSPECT_TIMEOUT", "2s"),
        ]),
    )
    .unwrap();
    let addresses: Vec<&str> = config
        .cluster
        .peers
        .iter()
        .map(|p| p.address.as_str())
        .collect();
    assert_eq!(addresses, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(config.cluster.peers[0].key, None);
    assert_eq!(config.cluster.peers[1].key.unwrap().to_string(), key);
    assert_eq!(config.cluster.probe_period, Duration::from_millis(250));
    assert_eq!(config.cluster.suspect_timeout, Duration::from_secs(2));
    assert_eq!(config.cluster.probe_timeout, Duration::from_millis(100));
    assert_eq!(config.cluster.indirect_probes, 3);
    let error =
        NetworkConfig::load(None, env(&[("NETPROTO__CLUSTER__PEERS", "nowhere")])).unwrap_err();
    assert!(full_text(&error).contains("is not host:port"), "{error}");
    // Each list's bad entry is reported under its own key.
    for (variable, key) in [
        ("NETPROTO__CLUSTER__PEERS", "cluster.peers"),
        ("NETPROTO__BALANCER__ENDPOINTS", "balancer.endpoints"),
    ] {
        let error =
            NetworkConfig::load(None, env(&[(variable, "127.0.0.1:1,nowhere")])).unwrap_err();
        let text = full_text(&error);
        assert!(text.contains(key) && text.contains("\"nowhere\""), "{text}");
        let other = if key == "cluster.peers" {
            "balancer.endpoints"
        } else {
            "cluster.peers"
        };
        assert!(!text.contains(other), "{text}");
    }
}

#[test]
fn names_are_typed_when_loaded_and_unknown_names_list_the_allowed_ones() {
    let config = NetworkConfig::from_toml_str(
        "[security]\nmode = \"plain\"\nnoise_cipher = \"aesgcm\"\nnoise_backend = \"rustcrypto\"\n\
         [transport]\ncompression = \"zstd\"\n[logging]\nformat = \"json\"\n",
    )
    .unwrap();
    assert_eq!(config.security.mode, SecurityMode::Plain);
    assert_eq!(config.security.noise_cipher, NoiseCipher::AesGcm);
    assert_eq!(config.security.noise_backend, NoiseBackend::RustCrypto);
    assert_eq!(config.transport.compression, Compression::Zstd);
    assert_eq!(config.logging.format, crate::LogFormat::Json);
    let empty = NetworkConfig::from_toml_str("[transport]\ncompression = \"\"\n").unwrap();
    assert_eq!(empty.transport.compression, Compression::None);
    for (text, allowed) in [
        (
            "[security]\nmode = \"rot13\"",
            "expected one of `noise`, `tls`, `plain`",
        ),
        (
            "[transport]\ncompression = \"gzip\"",
            "expected one of `none`, `lz4`, `zstd`",
        ),
        (
            "[security]\nnoise_cipher = \"rc4\"",
            "`chachapoly` or `aesgcm`",
        ),
        (
            "[security]\nnoise_backend = \"openssl\"",
            "`ring` or `rustcrypto`",
        ),
        ("[logging]\nformat = \"xml\"", "`human` or `json`"),
    ] {
        let error = NetworkConfig::from_toml_str(text).unwrap_err();
        assert!(
            full_text(&error).contains(allowed),
            "{text}: {}",
            full_text(&error)
        );
    }
    let error = "rot13".parse::<SecurityMode>().unwrap_err().to_string();
    assert!(
        error.contains("security mode") && error.contains("`plain`"),
        "{error}"
    );
    assert_eq!("tls".parse::<SecurityMode>().unwrap(), SecurityMode::Tls);
    assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
}

#[test]
fn keys_and_pins_are_read_when_loaded_and_printed_as_hex() {
    let (key, pin) = ("0f".repeat(32), "a1".repeat(32));
    let text = format!(
        "[security]\nserver_key = \" {key} \"\nallowed_peers = [\"{key}\"]\ntls_pins = [\"{pin}\"]\n"
    );
    let config = NetworkConfig::from_toml_str(&text).unwrap();
    assert_eq!(config.security.server_key.unwrap().to_string(), key);
    assert_eq!(config.security.allowed_peers.len(), 1);
    assert_eq!(config.security.tls_pins, [[0xa1; 32]]);
    let printed = config.to_toml().unwrap();
    assert!(
        printed.contains(&format!("server_key = \"{key}\"")),
        "{printed}"
    );
    assert!(printed.contains(&pin), "{printed}");
    assert!(printed.contains("mode = \"noise\""), "{printed}");
    assert_eq!(NetworkConfig::from_toml_str(&printed).unwrap(), config);
    for (text, expected) in [
        ("[security]\nserver_key = \"abc\"", "is not a public key"),
        (
            "[security]\nallowed_peers = [\"zz\"]",
            "is not a public key",
        ),
        ("[security]\ntls_pins = [\"abcd\"]", "is not a pin"),
    ] {
        let error = NetworkConfig::from_toml_str(text).unwrap_err();
        assert!(
            full_text(&error).contains(expected),
            "{text}: {}",
            full_text(&error)
        );
    }
    let env_key = NetworkConfig::load(
        None,
        env(&[
            ("NETPROTO__SECURITY__SERVER_KEY", &key),
            ("NETPROTO__SECURITY__TLS_PINS", &format!("{pin},{pin}")),
        ]),
    )
    .unwrap();
    assert_eq!(env_key.security.server_key, config.security.server_key);
    assert_eq!(env_key.security.tls_pins.len(), 2);
}

#[test]
fn the_pin_may_sit_under_client_or_security_but_not_differ() {
    let (a, b) = ("0f".repeat(32), "a1".repeat(32));
    let under_client =
        NetworkConfig::from_toml_str(&format!("[client]\nserver_key = \"{a}\"\n")).unwrap();
    assert_eq!(under_client.client.server_key.unwrap().to_string(), a);
    assert_eq!(
        under_client.pinned_server_key().unwrap(),
        under_client.client.server_key
    );
    let under_security =
        NetworkConfig::from_toml_str(&format!("[security]\nserver_key = \"{a}\"\n")).unwrap();
    assert_eq!(
        under_security.pinned_server_key().unwrap(),
        under_client.client.server_key
    );
    let same = format!("[client]\nserver_key = \"{a}\"\n[security]\nserver_key = \"{a}\"\n");
    assert!(NetworkConfig::from_toml_str(&same).is_ok());
    let different = format!("[client]\nserver_key = \"{a}\"\n[security]\nserver_key = \"{b}\"\n");
    let error = NetworkConfig::from_toml_str(&different).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "invalid configuration: client.server_key ({a}) and security.server_key ({b}) pin different keys: set one of them"
        )
    );
    let from_env = NetworkConfig::load(None, env(&[("NETPROTO__CLIENT__SERVER_KEY", &a)])).unwrap();
    assert_eq!(from_env.client.server_key, under_client.client.server_key);
    assert_eq!(NetworkConfig::default().pinned_server_key().unwrap(), None);
}

#[test]
fn connection_settings_are_checked_by_the_transport_and_named_by_section() {
    let mut config = NetworkConfig::default();
    config.server.backpressure_limit = 5;
    config.client.backpressure_limit = 6;
    let server = config.server.connection_config(&config.transport).unwrap();
    let client = config.client.connection_config(&config.transport).unwrap();
    assert_eq!(
        (server.backpressure_limit, client.backpressure_limit),
        (5, 6)
    );
    assert_eq!(
        server.heartbeat_interval,
        Some(config.server.heartbeat_interval)
    );
    assert_eq!(
        client.heartbeat_interval,
        Some(config.client.heartbeat_interval)
    );
    assert_eq!(server.idle_timeout, Some(config.transport.idle_timeout));
    type Spoil = fn(&mut NetworkConfig);
    let cases: [(Spoil, &str); 5] = [
        (
            |c| c.server.backpressure_limit = 0,
            "server.backpressure_limit must be 1 to 1048576 frames, not 0",
        ),
        (
            |c| c.client.heartbeat_interval = Duration::ZERO,
            "client.heartbeat_interval must be between 1 ms and one day, not 0ns",
        ),
        (
            |c| c.transport.max_frame_len = 10,
            "transport.max_frame_len must be at least 64, not 10",
        ),
        (
            |c| c.transport.heartbeat_misses = 0,
            "transport.heartbeat_misses must be 1 to 1000, not 0",
        ),
        (
            |c| c.transport.inbound_limit = 0,
            "transport.inbound_limit must be 1 to 1048576 frames, not 0",
        ),
    ];
    for (spoil, expected) in cases {
        let mut bad = NetworkConfig::default();
        spoil(&mut bad);
        let error = bad.validate().unwrap_err().to_string();
        assert_eq!(error, format!("invalid configuration: {expected}"));
    }
}

#[test]
fn drain_delay_defaults_to_zero_and_is_at_most_a_day() {
    assert_eq!(NetworkConfig::default().server.drain_delay, Duration::ZERO);
    NetworkConfig::default().validate().unwrap();
    let config = NetworkConfig::from_toml_str("[server]\ndrain_delay = \"1500ms\"\n").unwrap();
    assert_eq!(config.server.drain_delay, Duration::from_millis(1500));
    config.validate().unwrap();
    let from_env =
        NetworkConfig::load(None, env(&[("NETPROTO__SERVER__DRAIN_DELAY", "5s")])).unwrap();
    assert_eq!(from_env.server.drain_delay, Duration::from_secs(5));
    let mut long = NetworkConfig::default();
    long.server.drain_delay = Duration::from_secs(24 * 60 * 60 + 1);
    let error = long.validate().unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid configuration: server.drain_delay must be at most one day"
    );
}

#[test]
fn trusted_proxies_read_addresses_and_prefixes() {
    let read = |text: &str| text.parse::<TrustedProxy>();
    let host = read(" 10.0.0.7 ").unwrap();
    assert_eq!(host.to_string(), "10.0.0.7", "a single address prints bare");
    assert!(host.contains("10.0.0.7".parse().unwrap()));
    assert!(!host.contains("10.0.0.8".parse().unwrap()));
    let v4 = read("10.1.0.0/16").unwrap();
    assert_eq!(v4.to_string(), "10.1.0.0/16");
    assert!(v4.contains("10.1.255.3".parse().unwrap()));
    assert!(!v4.contains("10.2.0.1".parse().unwrap()));
    // As a dual-stack listener reports an IPv4 peer.
    assert!(v4.contains("::ffff:10.1.2.3".parse().unwrap()));
    let v6 = read("fd00:1::/64").unwrap();
    assert!(v6.contains("fd00:1::9".parse().unwrap()));
    assert!(!v6.contains("fd00:2::9".parse().unwrap()));
    assert!(!v6.contains("10.1.2.3".parse().unwrap()));
    assert_eq!(read("::1").unwrap().to_string(), "::1");
    for (bad, why) in [
        ("", "is not an IP address"),
        ("lb.example", "is not an IP address"),
        ("10.0.0.0/33", "is not an address prefix"),
        ("10.0.0.0/", "is not an address prefix"),
        ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
    ] {
        let error = read(bad).unwrap_err().to_string();
        assert!(
            error.contains(why) && error.contains("server.trusted_proxies"),
            "{bad:?}: {error}"
        );
    }
}

#[test]
fn the_proxy_settings_load_from_a_file_and_the_environment() {
    let config = NetworkConfig::from_toml_str(
        "[server]\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.7\", \"fd00::/64\"]\n\
         proxy_timeout = \"500ms\"\nproxy_header_max = 536\n",
    )
    .unwrap();
    assert!(config.server.proxy_protocol);
    let trusted: Vec<String> = config
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(trusted, ["10.0.0.7", "fd00::/64"]);
    assert_eq!(config.server.proxy_timeout, Duration::from_millis(500));
    assert_eq!(config.server.proxy_header_max, 536);
    let printed = config.to_toml().unwrap();
    assert_eq!(NetworkConfig::from_toml_str(&printed).unwrap(), config);
    let env_config = NetworkConfig::load(
        None,
        env(&[
            ("NETPROTO__SERVER__PROXY_PROTOCOL", "true"),
            ("NETPROTO__SERVER__TRUSTED_PROXIES", "10.0.0.7,fd00::/64"),
            ("NETPROTO__SERVER__PROXY_TIMEOUT", "500ms"),
            ("NETPROTO__SERVER__PROXY_HEADER_MAX", "536"),
        ]),
    )
    .unwrap();
    assert_eq!(env_config.server, config.server);
    let error =
        NetworkConfig::from_toml_str("[server]\ntrusted_proxies = [\"10.0.0.1/8\"]").unwrap_err();
    assert!(full_text(&error).contains("did you mean"), "{error}");
    // Off by default, and nothing else changes.
    let default = ServerConfig::default();
    assert!(!default.proxy_protocol && default.trusted_proxies.is_empty());
}

#[test]
fn the_proxy_protocol_without_trusted_proxies_is_refused() {
    let mut config = NetworkConfig::default();
    config.server.proxy_protocol = true;
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("server.proxy_protocol is on but server.trusted_proxies is empty"),
        "{error}"
    );
    // A Unix socket's peers are all trusted: no list needed.
    config.server.address = "unix:/run/netproto.sock".into();
    config.validate().unwrap();
    config.server.address = "127.0.0.1:0".into();
    config.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    config.validate().unwrap();
    type Spoil = fn(&mut ServerConfig);
    let cases: [(Spoil, &str); 3] = [
        (
            |s| s.proxy_header_max = 231,
            "server.proxy_header_max must be 232 to 65551 bytes, not 231",
        ),
        (
            |s| s.proxy_header_max = 65_552,
            "server.proxy_header_max must be 232 to 65551 bytes, not 65552",
        ),
        (
            |s| s.proxy_timeout = Duration::ZERO,
            "server.proxy_timeout must not be 0",
        ),
    ];
    for (spoil, expected) in cases {
        let mut bad = config.clone();
        spoil(&mut bad.server);
        let error = bad.validate().unwrap_err().to_string();
        assert_eq!(error, format!("invalid configuration: {expected}"));
    }
}

#[test]
fn allowed_members_read_as_keys_from_a_file_and_the_environment_and_need_noise() {
    let (a, b) = ("11".repeat(32), "22".repeat(32));
    let config = NetworkConfig::from_toml_str(&format!(
        "[cluster]\nallowed_members = [\"{a}\", \"{b}\"]\n"
    ))
    .unwrap();
    let keys: Vec<String> = config
        .cluster
        .allowed_members
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, [a.clone(), b.clone()]);
    config.validate().unwrap();
    let from_env = NetworkConfig::load(
        None,
        env(&[("NETPROTO__CLUSTER__ALLOWED_MEMBERS", &format!("{a},{b}"))]),
    )
    .unwrap();
    assert_eq!(from_env.cluster, config.cluster);
    assert!(NetworkConfig::from_toml_str("[cluster]\nallowed_members = [\"zz\"]").is_err());
    let mut tls = config;
    tls.security.mode = SecurityMode::Tls;
    let error = tls.validate().unwrap_err().to_string();
    assert!(
        error.contains("cluster.allowed_members needs security.mode = \"noise\""),
        "{error}"
    );
}
