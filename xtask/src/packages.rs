//! The system programs some steps need, installed with apt where that is
//! possible (Debian, as root) and missing.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `apt-get update` has run in this process.
static UPDATED: AtomicBool = AtomicBool::new(false);

/// Whether `program` is on the `PATH` (it starts at all, whatever its
/// answer to `--version`).
pub(crate) fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Makes each `(program, Debian package)` available: installs the packages
/// of the missing ones with apt when running as root on a system with
/// apt-get. Returns the programs still missing, with why, for the caller to
/// skip with a clear message (or fail, where the step is required).
pub(crate) fn ensure(needs: &[(&str, &str)]) -> Vec<String> {
    let missing: Vec<&(&str, &str)> = needs
        .iter()
        .filter(|(program, _)| !available(program))
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    let why = if !is_root() {
        format!("not root: install the Debian packages {packages:?} (apt-get install -y)")
    } else if !available("apt-get") {
        format!("no apt-get: install {packages:?} with the system's package manager")
    } else {
        eprintln!("installing {packages:?} with apt-get");
        let updated = UPDATED.swap(true, Ordering::Relaxed) || run("apt-get", &["update", "-qq"]);
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&packages);
        if updated && run("apt-get", &args) {
            String::new()
        } else {
            format!("apt-get could not install {packages:?}")
        }
    };
    missing
        .iter()
        .filter(|(program, _)| !available(program))
        .map(|(program, _)| format!("{program}: {why}"))
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
