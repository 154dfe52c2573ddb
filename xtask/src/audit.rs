//! `cargo xtask audit`: cargo-deny over the supply chain.

use std::path::Path;

use anyhow::{Context, bail};
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
        bail!("cargo-deny is not installed: `cargo install cargo-deny --locked` (about 3 minutes)");
    }
    cmd!(sh, "cargo deny --all-features check bans licenses sources")
        .run()
        .context("bans, licenses or sources check failed")?;

    // Advisories: the live database first, then an offline snapshot.
    if cmd!(sh, "cargo deny --all-features check advisories")
        .run()
        .is_ok()
    {
        return Ok(());
    }
    eprintln!("audit: the live advisory database could not be fetched or reported problems");
    let snapshot = sh.current_dir().join("../shared/advisory-db");
    if !snapshot.join("crates").is_dir() {
        eprintln!(
            "audit: NOT CHECKED: advisories (no live database, and no snapshot at ../shared/advisory-db)"
        );
        return Ok(());
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
    cmd!(
        sh,
        "cargo deny --offline --all-features --config {config} check advisories"
    )
    .run()?;
    Ok(())
}

fn prepare_snapshot(sh: &Shell, snapshot: &Path, db: &Path) -> anyhow::Result<()> {
    let repo = db.join(ADVISORY_DIR_NAME);
    if repo.join(".git").is_dir() {
        return Ok(());
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
