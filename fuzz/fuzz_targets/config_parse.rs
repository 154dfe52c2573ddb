//! Arbitrary text as a netproto configuration file.
//!
//! Parsing and validation never panic; a configuration that parses prints as
//! TOML (`netproto config`) and that TOML parses back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netproto_daemon::NetworkConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = NetworkConfig::from_toml_str(text) else {
        return;
    };
    let printed = config
        .to_toml()
        .expect("a valid configuration prints as TOML");
    let reparsed = NetworkConfig::from_toml_str(&printed)
        .unwrap_or_else(|e| panic!("printed configuration does not parse: {e}\n{printed}"));
    assert_eq!(
        config, reparsed,
        "round trip changed the configuration:\n{printed}"
    );
});
