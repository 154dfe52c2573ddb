//! `cargo xtask audit`: cargo-deny over the supply chain.

use std::path::Path;

use anyhow::Context;
use xshell::{Shell, cmd};

/// The live advisory database cargo-deny fetches by default.
const ADVISORY_DIR_NAME: &str = "advisory-db-3157b0e258782691";

pub(crate) fn run(sh: &Shell) -> anyhow::Result<()> {
    if cmd!(sh, "cargo deny --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        eprintln!("audit: cargo-deny is missing: installing it from crates.io (about 3 minutes)");
        cmd!(sh, "cargo install cargo-deny --locked")
            .run()
            .context("cannot install cargo-deny")?;
    }
    // The workspace, then the fuzz workspace with its own lock file. Each
    // run allows the one lint that only fits the other graph (the libFuzzer
    // license exception, the proptest duplicate skip).
    cmd!(
        sh,
        "cargo deny --all-features check -A license-exception-not-encountered bans licenses sources"
    )
    .run()
    .context("bans, licenses or sources check failed")?;
    cmd!(
        sh,
        "cargo deny --manifest-path fuzz/Cargo.toml --all-features --config deny.toml check -A unmatched-skip bans licenses sources"
    )
    .run()
    .context("fuzz workspace: bans, licenses or sources check failed")?;
    let advisories = advisories(sh)?;
    eprintln!(
        "audit: bans, licenses and sources ok (workspace and fuzz/); advisories: {advisories}"
    );
    Ok(())
}

/// Checks advisories against the live RustSec database, or the offline
/// snapshot when the live one cannot be fetched; says which.
fn advisories(sh: &Shell) -> anyhow::Result<String> {
    // Fetching apart from checking, so that problems found in the live
    // database fail the audit instead of falling back to an older snapshot.
    if cmd!(sh, "cargo deny fetch db").run().is_ok() {
        check_advisories(sh, None).context("advisories found in the live RustSec database")?;
        return Ok("checked against the live RustSec database".into());
    }
    eprintln!("audit: the live RustSec database cannot be fetched");
    let snapshot = sh.current_dir().join("../shared/advisory-db");
    if !snapshot.join("crates").is_dir() {
        return Ok(
            "NOT CHECKED (no live database, and no snapshot at ../shared/advisory-db)".into(),
        );
    }
    let db = sh.current_dir().join("target/advisory-snapshot");
    prepare_snapshot(sh, &snapshot, &db)?;
    let date = sh
        .read_file(snapshot.join("SNAPSHOT.txt"))
        .ok()
        .and_then(|text| {
            // The snapshot's date is the parenthesised YYYY-MM-DD in the text.
            text.split(['(', ')'])
                .find(|part| {
                    part.len() == 10
                        && part.bytes().enumerate().all(|(i, b)| {
                            if i == 4 || i == 7 {
                                b == b'-'
                            } else {
                                b.is_ascii_digit()
                            }
                        })
                })
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown date".into());
    eprintln!(
        "audit: checking advisories against the OFFLINE snapshot of {date}; newer advisories are not seen"
    );
    let config = db.join("deny-offline.toml");
    let mut text = sh.read_file("deny.toml")?;
    text = text.replace(
        "[advisories]",
        &format!("[advisories]\ndb-path = \"{}\"", db.display()),
    );
    sh.write_file(&config, text)?;
    check_advisories(sh, Some(&config))
        .with_context(|| format!("advisories found in the offline snapshot of {date}"))?;
    Ok(format!(
        "checked against the OFFLINE snapshot of {date} only: advisories published since are NOT checked"
    ))
}

/// `cargo deny check advisories` over the workspace and fuzz/, offline
/// with `config` when given.
fn check_advisories(sh: &Shell, config: Option<&Path>) -> anyhow::Result<()> {
    let offline = config.map(|_| "--offline");
    let config = config.unwrap_or_else(|| Path::new("deny.toml"));
    cmd!(
        sh,
        "cargo deny {offline...} --all-features --config {config} check advisories"
    )
    .run()?;
    cmd!(
        sh,
        "cargo deny {offline...} --manifest-path fuzz/Cargo.toml --all-features --config {config} check advisories"
    )
    .run()?;
    Ok(())
}

fn prepare_snapshot(sh: &Shell, snapshot: &Path, db: &Path) -> anyhow::Result<()> {
    let repo = db.join(ADVISORY_DIR_NAME);
    let stamp = |dir: &Path| sh.read_file(dir.join("SNAPSHOT.txt")).ok();
    if repo.join(".git").is_dir() && stamp(&repo) == stamp(snapshot) {
        return Ok(());
    }
    // Missing or from an older snapshot: copy it afresh.
    if repo.exists() {
        sh.remove_path(&repo)?;
    }
    sh.create_dir(&repo)?;
    cmd!(sh, "cp -r {snapshot}/. {repo}").run()?;
    let _dir = sh.push_dir(&repo);
    cmd!(sh, "git init -q").run()?;
    cmd!(sh, "git add -A").run()?;
    cmd!(
        sh,
        "git -c user.name=xtask -c user.email=xtask@localhost commit -q -m snapshot"
    )
    .run()?;
    Ok(())
}
