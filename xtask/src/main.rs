//! Project automation for netproto: `cargo xtask <task>`.
//!
//! Tasks: `ci`, `stress`, `fuzz [TARGET...] [--time SECS]`, `bench [FILTER]`,
//! `audit`, `layering`, `examples`, `tls-scan`. Run `cargo xtask help` for details.

// Build tool: a failure stops the task with a message; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

mod audit;
mod examples;
mod fuzz;
mod layering;
mod packages;
mod process;
mod tls_scan;

const HELP: &str = "\
usage: cargo xtask <task>

tasks:
  ci                         everything CI checks: fmt, clippy, tests, supply chain, stress, docs, layering, fuzz smoke
  stress                     the attack and scale suites, optimised: each attack case three times, its
                             latency criterion judged on the median (needs Linux)
  fuzz [TARGET...] [--time S]
                             run the named fuzz targets (or all) one after the other
                             for S seconds each (default 10), then print each one's figures
  bench [FILTER]             run the criterion benchmarks, optionally filtered
  audit                      cargo-deny (installed when missing): advisories, bans, licenses, sources
  layering                   check that crates depend only on lower layers
  examples                   run the facade's README examples against a live server
  packages                   install the system programs some tests use (haproxy, python3, openssl,
                             sslscan) with apt, as root; the tests skip, saying so, without them
  tls-scan                   scan `netproto serve --mode tls` (sslscan, and openssl s_client offering
                             the ALPN netproto/1): fails on TLS < 1.2, CBC or non-forward-secret
                             suites, or a missing ALPN (installs openssl and sslscan with apt as root)
";

fn main() -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "ci" => ci(&sh),
        "stress" => stress(&sh),
        "fuzz" => {
            let (targets, secs) = fuzz::parse_args(&rest)?;
            fuzz::run(&sh, &targets, secs, fuzz::Mode::Required)
        }
        "bench" => bench(&sh, rest.first().map(String::as_str)),
        "audit" => audit::run(&sh),
        "layering" => layering::check(&sh),
        "examples" => examples::run(&sh),
        "tls-scan" => tls_scan::run(&sh),
        "packages" => {
            system_packages();
            Ok(())
        }
        "" | "help" | "-h" | "--help" => {
            eprint!("{HELP}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n{HELP}"),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs one named step, printing its name and how long it took.
fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    eprintln!("\n==> {name}");
    let start = Instant::now();
    let result = f().with_context(|| format!("step `{name}` failed"));
    eprintln!("<== {name}: {:.1}s", start.elapsed().as_secs_f64());
    result
}

fn ci(sh: &Shell) -> anyhow::Result<()> {
    let start = Instant::now();
    step("fmt", || Ok(cmd!(sh, "cargo fmt --all --check").run()?))?;
    step("clippy", || {
        Ok(cmd!(
            sh,
            "cargo clippy --workspace --all-targets --locked --features netproto-daemon/stress -- -D warnings"
        )
        .run()?)
    })?;
    step("no_std build of netproto-wire", || {
        Ok(cmd!(
            sh,
            "cargo build -p netproto-wire --no-default-features --locked"
        )
        .run()?)
    })?;
    step("netproto-transport without certificate generation", || {
        Ok(cmd!(
            sh,
            "cargo check -p netproto-transport --no-default-features --all-targets --locked"
        )
        .run()?)
    })?;
    step("system packages the tests use", || {
        system_packages();
        Ok(())
    })?;
    step("tests", || {
        Ok(cmd!(sh, "cargo test --workspace --locked").run()?)
    })?;
    step("supply chain (cargo xtask audit)", || audit::run(sh))?;
    step("stress (cargo xtask stress)", || stress(sh))?;
    step("examples against a live server", || examples::run(sh))?;
    step("tls scan (cargo xtask tls-scan)", || tls_scan::run(sh))?;
    // Unoptimised, on the tests' artifacts: that the benches compile and
    // link is what CI checks (`cargo xtask bench` runs them optimised).
    // Building them in the bench profile rebuilt every crate for it, which
    // cost about 190 s of a cold run.
    step("benches compile", || {
        Ok(cmd!(sh, "cargo build -p netproto-benches --benches --locked").run()?)
    })?;
    step("docs", || {
        let _flags = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        Ok(cmd!(sh, "cargo doc --workspace --no-deps --locked").run()?)
    })?;
    step("layering", || layering::check(sh))?;
    step("fuzz smoke", || {
        fuzz::run(sh, &[], fuzz::SMOKE_SECS, fuzz::Mode::SmokeIfAvailable)
    })?;
    eprintln!(
        "\nci: all steps passed in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs the system programs the tests use where it can (see
/// [`packages::ensure`]); what is still missing is reported, and the tests
/// that need it say that they skip.
fn system_packages() {
    let missing = packages::ensure(&[
        ("haproxy", "haproxy"),
        ("python3", "python3"),
        ("openssl", "openssl"),
        ("sslscan", "sslscan"),
    ]);
    for program in &missing {
        eprintln!("packages: missing {program}");
    }
}

/// The attack and scale suites (the daemon's `stress` feature), optimised,
/// one case at a time: they measure latency and memory on a shared machine.
fn stress(sh: &Shell) -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        eprintln!("stress: skipped: the suites read /proc and use 127.x.y.z sources (Linux only)");
        return Ok(());
    }
    cmd!(
        sh,
        "cargo test --release --locked -p netproto-daemon --features stress --test attacks --test scale -- --test-threads 1 --nocapture"
    )
    .run()?;
    Ok(())
}

fn bench(sh: &Shell, filter: Option<&str>) -> anyhow::Result<()> {
    let filter: Vec<&str> = filter.into_iter().collect();
    cmd!(sh, "cargo bench -p netproto-benches -- {filter...}").run()?;
    Ok(())
}
