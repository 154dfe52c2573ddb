//! `cargo xtask layering`: the architecture invariants of docs/ARCHITECTURE.md.

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

/// Every library crate of the workspace and its layer. A crate may depend only
/// on crates of a strictly lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("netproto-wire", 0),
    ("netproto-compress", 1),
    ("netproto-crypto", 1),
    ("netproto-transport", 2),
    ("netproto-dispatch", 3),
    ("netproto-daemon", 4),
    ("network-protocol", 5),
];

/// Workspace members that are tools, not layers.
const TOOLS: &[&str] = &["xtask", "netproto-benches"];

/// Layers at or below this one are sans-IO and must stay runtime-free.
const SANS_IO_MAX_LAYER: u8 = 1;

/// Crates a sans-IO crate must never pull in, directly or transitively.
const RUNTIME_DEPS: &[&str] = &["tokio", "mio", "socket2", "tracing-subscriber"];

/// The only crates `netproto-wire` may pull in without its `std` feature.
const WIRE_NO_STD_ALLOWED: &[&str] = &[
    "netproto-wire",
    "bytes",
    "postcard",
    "cobs",
    "serde",
    "serde_core",
    "serde_derive",
    "proc-macro2",
    "quote",
    "syn",
    "unicode-ident",
    "thiserror",
    "thiserror-impl",
];

/// `cargo tree` output format: the package name and version only.
const FORMAT: &str = "{p}";

pub(crate) fn check(sh: &Shell) -> anyhow::Result<()> {
    let fmt = FORMAT;
    let members = workspace_members(sh)?;
    let mut problems = Vec::new();
    for name in &members {
        if TOOLS.contains(&name.as_str()) {
            continue;
        }
        let Some(layer) = layer_of(name) else {
            problems.push(format!(
                "{name} has no layer: add it to LAYERS in xtask/src/layering.rs"
            ));
            continue;
        };
        let direct = cmd!(
            sh,
            "cargo tree -p {name} -e normal,build --all-features --target all --depth 1 --prefix none --format {fmt}"
        )
        .read()?;
        for dep in direct.lines().skip(1).filter_map(crate_name) {
            if let Some(dep_layer) = layer_of(dep)
                && dep_layer >= layer
            {
                problems.push(format!(
                    "{name} (layer {layer}) depends on {dep} (layer {dep_layer}): only lower layers are allowed"
                ));
            }
        }
        if layer <= SANS_IO_MAX_LAYER {
            let tree = cmd!(
                sh,
                "cargo tree -p {name} -e normal,build --all-features --target all --prefix none --format {fmt}"
            )
            .read()?;
            for dep in tree.lines().filter_map(crate_name) {
                if RUNTIME_DEPS.contains(&dep) {
                    problems.push(format!(
                        "{name} depends on {dep}; sans-IO crates must stay runtime-free"
                    ));
                }
            }
        }
    }
    let wire = cmd!(
        sh,
        "cargo tree -p netproto-wire --no-default-features -e normal,build --target all --prefix none --format {fmt}"
    )
    .read()?;
    for dep in wire.lines().filter_map(crate_name) {
        if !WIRE_NO_STD_ALLOWED.contains(&dep) {
            problems.push(format!(
                "netproto-wire without std pulls in {dep}, which is not on its no_std allow-list"
            ));
        }
    }
    if !problems.is_empty() {
        bail!("layering violations:\n  {}", problems.join("\n  "));
    }
    eprintln!("layering: {} crates checked, no violations", members.len());
    Ok(())
}

fn layer_of(name: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// The package name at the start of a `cargo tree` line like `bytes v1.10.1`.
fn crate_name(line: &str) -> Option<&str> {
    line.split_whitespace().next().filter(|s| !s.is_empty())
}

/// Package names of the workspace members.
fn workspace_members(sh: &Shell) -> anyhow::Result<Vec<String>> {
    // `cargo tree --workspace --depth 0` prints one line per member.
    let fmt = FORMAT;
    let out = cmd!(
        sh,
        "cargo tree --workspace -e normal --depth 0 --prefix none --format {fmt}"
    )
    .read()
    .context("listing workspace members")?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(crate_name)
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
