//! `cargo xtask fuzz [TARGET...] [--time SECS]`: runs the cargo-fuzz targets of
//! `fuzz/` one after the other and prints each one's figures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

/// Seconds each fuzz target runs in the CI smoke run.
pub(crate) const SMOKE_SECS: u64 = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Asked for by hand: missing tools are an error.
    Required,
    /// Part of `ci`: skip with a clear message when nightly is missing.
    SmokeIfAvailable,
}

pub(crate) fn parse_args(args: &[String]) -> anyhow::Result<(Vec<String>, u64)> {
    let mut targets = Vec::new();
    let mut secs = SMOKE_SECS;
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
            name => targets.push(name.to_owned()),
        }
    }
    Ok((targets, secs))
}

/// What one target's run showed, from libFuzzer's output.
#[derive(Default)]
struct Figures {
    runs: Option<u64>,
    exec_per_sec: Option<u64>,
    cov: Option<u64>,
    features: Option<u64>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
    artifact: Option<String>,
}

impl Figures {
    fn observe(&mut self, line: &str) {
        // `#1234	NEW    cov: 567 ft: 890 corp: 12/345b ...` and the final `DONE` line.
        if line.starts_with('#') {
            if let Some(cov) = field(line, "cov:") {
                self.cov = Some(cov);
            }
            if let Some(ft) = field(line, "ft:") {
                self.features = Some(ft);
            }
        }
        if let Some(rest) = line.strip_prefix("stat::") {
            let mut parts = rest.splitn(2, ':');
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                return;
            };
            let value = value.trim().parse().ok();
            match name {
                "number_of_executed_units" => self.runs = value,
                "average_exec_per_sec" => self.exec_per_sec = value,
                "new_units_added" => self.new_units = value,
                "peak_rss_mb" => self.peak_rss_mb = value,
                _ => {}
            }
        }
        // `Done 1234 runs in 10 second(s)` when the final stats are missing.
        if let Some(rest) = line.strip_prefix("Done ")
            && self.runs.is_none()
        {
            self.runs = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        }
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_owned());
        }
    }
}

/// The number after `name` in a libFuzzer status line.
fn field(line: &str, name: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == name)?;
    words.next()?.parse().ok()
}

struct Outcome {
    target: String,
    ok: bool,
    secs: f64,
    figures: Figures,
    corpus_files: usize,
    corpus_bytes: u64,
}

/// Runs `targets` (all of them when empty) one after the other.
pub(crate) fn run(sh: &Shell, targets: &[String], secs: u64, mode: Mode) -> anyhow::Result<()> {
    if cmd!(sh, "cargo +nightly --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        let msg = "no nightly toolchain (`rustup toolchain install nightly`): fuzzing needs it";
        if mode == Mode::SmokeIfAvailable {
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
    let targets: Vec<String> = if targets.is_empty() {
        let _dir = sh.push_dir(&fuzz_dir);
        cmd!(sh, "cargo +nightly fuzz list")
            .read()?
            .lines()
            .map(str::to_owned)
            .collect()
    } else {
        targets.to_vec()
    };
    if targets.is_empty() {
        bail!("no fuzz targets found in fuzz/");
    }
    eprintln!(
        "fuzzing {} target(s) one after the other, {secs}s each: {}",
        targets.len(),
        targets.join(", ")
    );
    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(run_target(&fuzz_dir, t, secs)?);
    }
    print_summary(&outcomes, secs);
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("fuzz target(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs one target, echoing libFuzzer's output while reading its figures.
fn run_target(fuzz_dir: &Path, target: &str, secs: u64) -> anyhow::Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    eprintln!("\nfuzzing {target} for {secs}s");
    let start = Instant::now();
    let mut child = Command::new("cargo")
        .current_dir(fuzz_dir)
        // The fuzz workspace builds with its own flags into fuzz/target.
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .args([
            "--".to_owned(),
            format!("-max_total_time={secs}"),
            "-rss_limit_mb=2048".to_owned(),
            "-print_final_stats=1".to_owned(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo fuzz")?;
    let mut figures = Figures::default();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz output")?;
            eprintln!("{line}");
            figures.observe(&line);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let (corpus_files, corpus_bytes) = dir_size(&corpus)?;
    Ok(Outcome {
        target: target.to_owned(),
        ok: status.success(),
        secs: start.elapsed().as_secs_f64(),
        figures,
        corpus_files,
        corpus_bytes,
    })
}

fn dir_size(dir: &Path) -> anyhow::Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

fn print_summary(outcomes: &[Outcome], secs: u64) {
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    eprintln!("\nfuzz summary ({secs}s per target; wall time includes the build):");
    eprintln!(
        "{:<28} {:>6} {:>7} {:>12} {:>8} {:>6} {:>7} {:>9} {:>15} {:>7}",
        "target",
        "result",
        "wall s",
        "runs",
        "exec/s",
        "cov",
        "ft",
        "new units",
        "corpus",
        "rss MB"
    );
    for o in outcomes {
        let f = &o.figures;
        eprintln!(
            "{:<28} {:>6} {:>7.0} {:>12} {:>8} {:>6} {:>7} {:>9} {:>15} {:>7}",
            o.target,
            if o.ok { "ok" } else { "FAILED" },
            o.secs,
            show(f.runs),
            show(f.exec_per_sec),
            show(f.cov),
            show(f.features),
            show(f.new_units),
            format!("{} / {} KiB", o.corpus_files, o.corpus_bytes / 1024),
            show(f.peak_rss_mb),
        );
        if let Some(artifact) = &f.artifact {
            eprintln!("    crash input: {artifact}");
        }
    }
}
