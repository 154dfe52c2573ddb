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
    ("netproto-service", 4),
    ("netproto-daemon", 5),
    ("network-protocol", 6),
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

/// The transport's connection core: sans-IO code inside a runtime crate.
const CORE_DIR: &str = "crates/transport/src/proto";

/// What the connection core must not use: a runtime, sockets, threads, the
/// clock (time comes in as an argument), or the tokio-side modules around it.
/// The deterministic tests under its `tests/` may read the clock once, for an
/// origin.
const CORE_FORBIDDEN: &[(&str, bool)] = &[
    ("tokio", true),
    ("mio", true),
    ("std::net", true),
    ("std::thread", true),
    ("crate::connection", true),
    ("crate::establish", true),
    ("crate::sync", true),
    ("Instant::now", false),
    ("SystemTime", false),
];

/// The longest a source file under `crates/*/src` may be, in lines.
const MAX_FILE_LINES: usize = 600;

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
    check_core(&mut problems)?;
    check_file_sizes(&mut problems)?;
    if !problems.is_empty() {
        bail!("layering violations:\n  {}", problems.join("\n  "));
    }
    eprintln!("layering: {} crates checked, no violations", members.len());
    Ok(())
}

/// The connection core imports nothing that does I/O or keeps time.
fn check_core(problems: &mut Vec<String>) -> anyhow::Result<()> {
    let root = crate::project_root();
    let files = rust_files(&root.join(CORE_DIR))?;
    if files.is_empty() {
        problems.push(format!("{CORE_DIR} holds no Rust files"));
    }
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let relative = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let in_tests = relative.contains("/tests/");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (pattern, everywhere) in CORE_FORBIDDEN {
                if code.contains(pattern) && (*everywhere || !in_tests) {
                    problems.push(format!(
                        "{relative}:{}: the connection core uses {pattern}; it must stay sans-IO",
                        n + 1
                    ));
                }
            }
        }
    }
    Ok(())
}

/// No source file of a crate is longer than [`MAX_FILE_LINES`].
fn check_file_sizes(problems: &mut Vec<String>) -> anyhow::Result<()> {
    let root = crate::project_root();
    for entry in std::fs::read_dir(root.join("crates"))? {
        for file in rust_files(&entry?.path().join("src"))? {
            let lines = std::fs::read_to_string(&file)?.lines().count();
            if lines > MAX_FILE_LINES {
                let relative = file
                    .strip_prefix(&root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                problems.push(format!(
                    "{relative} has {lines} lines; split it (at most {MAX_FILE_LINES})"
                ));
            }
        }
    }
    Ok(())
}

/// Every `.rs` file under `dir`, recursively; none when it does not exist.
fn rust_files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
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
