//! Project automation for netproto: `cargo xtask <task>`.
//!
//! Tasks: `ci`, `fuzz [TARGET] [--time SECS]`, `bench [FILTER]`, `audit`,
//! `layering`. Run `cargo xtask help` for details.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

mod audit;
mod examples;
mod layering;

const HELP: &str = "\
usage: cargo xtask <task>

tasks:
  ci                         everything CI checks: fmt, clippy, tests, docs, layering, fuzz smoke
  fuzz [TARGET] [--time S]   run one fuzz target (or all) for S seconds each (default 10)
  bench [FILTER]             run the criterion benchmarks, optionally filtered
  audit                      cargo-deny: advisories, bans, licenses, sources
  layering                   check that crates depend only on lower layers
  examples                   run the facade's README examples against a live server
";

/// Seconds each fuzz target runs in the CI smoke run.
const FUZZ_SMOKE_SECS: u64 = 10;

fn main() -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "ci" => ci(&sh),
        "fuzz" => {
            let (target, secs) = parse_fuzz_args(&rest)?;
            fuzz(&sh, target.as_deref(), secs, FuzzMode::Required)
        }
        "bench" => bench(&sh, rest.first().map(String::as_str)),
        "audit" => audit::run(&sh),
        "layering" => layering::check(&sh),
        "examples" => examples::run(&sh),
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
            "cargo clippy --workspace --all-targets --locked -- -D warnings"
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
    step("tests", || {
        Ok(cmd!(sh, "cargo test --workspace --locked").run()?)
    })?;
    step("examples against a live server", || examples::run(sh))?;
    step("benches compile", || {
        Ok(cmd!(sh, "cargo bench -p netproto-benches --no-run --locked").run()?)
    })?;
    step("docs", || {
        let _flags = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        Ok(cmd!(sh, "cargo doc --workspace --no-deps --locked").run()?)
    })?;
    step("layering", || layering::check(sh))?;
    step("fuzz smoke", || {
        fuzz(sh, None, FUZZ_SMOKE_SECS, FuzzMode::SmokeIfAvailable)
    })?;
    eprintln!(
        "\nci: all steps passed in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn parse_fuzz_args(args: &[String]) -> anyhow::Result<(Option<String>, u64)> {
    let mut target = None;
    let mut secs = FUZZ_SMOKE_SECS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--time" => {
                let value = it.next().context("--time needs a number of seconds")?;
                secs = value
                    .parse()
                    .with_context(|| format!("--time: `{value}` is not a number of seconds"))?;
            }
            flag if flag.starts_with('-') => bail!("unknown flag `{flag}`"),
            name => target = Some(name.to_owned()),
        }
    }
    Ok((target, secs))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FuzzMode {
    /// Asked for by hand: missing tools are an error.
    Required,
    /// Part of `ci`: skip with a clear message when nightly is missing.
    SmokeIfAvailable,
}

fn fuzz(sh: &Shell, target: Option<&str>, secs: u64, mode: FuzzMode) -> anyhow::Result<()> {
    if cmd!(sh, "cargo +nightly --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        let msg = "no nightly toolchain (`rustup toolchain install nightly`): fuzzing needs it";
        if mode == FuzzMode::SmokeIfAvailable {
            eprintln!("skipping fuzz smoke run: {msg}");
            return Ok(());
        }
        bail!(msg);
    }
    if cmd!(sh, "cargo +nightly fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        // The brief asks CI to install cargo-fuzz itself when nightly is present.
        eprintln!("cargo-fuzz is missing: installing it from crates.io");
        cmd!(sh, "cargo install cargo-fuzz --locked").run()?;
    }
    let fuzz_dir = sh.current_dir().join("fuzz");
    let targets: Vec<String> = match target {
        Some(t) => vec![t.to_owned()],
        None => {
            let _dir = sh.push_dir(&fuzz_dir);
            cmd!(sh, "cargo +nightly fuzz list")
                .read()?
                .lines()
                .map(str::to_owned)
                .collect()
        }
    };
    if targets.is_empty() {
        bail!("no fuzz targets found in fuzz/");
    }
    let _dir = sh.push_dir(&fuzz_dir);
    let time = format!("-max_total_time={secs}");
    for t in &targets {
        let corpus = format!("corpus/{t}");
        sh.create_dir(&corpus)?;
        eprintln!("fuzzing {t} for {secs}s");
        cmd!(
            sh,
            "cargo +nightly fuzz run {t} {corpus} -- {time} -rss_limit_mb=2048"
        )
        .run()?;
    }
    Ok(())
}

fn bench(sh: &Shell, filter: Option<&str>) -> anyhow::Result<()> {
    let filter: Vec<&str> = filter.into_iter().collect();
    cmd!(sh, "cargo bench -p netproto-benches -- {filter...}").run()?;
    Ok(())
}
