//! The `network-protocol` examples (the original README's programs), run
//! against each other: `tcp_server` with `client` on 127.0.0.1:9000,
//! `tls_server` with `tls_client` on 127.0.0.1:9443, then `custom_handlers`;
//! then `netproto-daemon`'s `typed_kv`, `quickstart` (the README's quick
//! start) and `failover`, and `netproto-service`'s `otel_stdout` (feature
//! `otel`).
//!
//! Servers run in the background with `NETPROTO_EXAMPLE_RUN_FOR` as a safety
//! net; once their client is done they are stopped with SIGINT (their ctrl-c
//! path, a graceful shutdown) on Unix, and must exit successfully. Every
//! background process is killed on every way out of this module.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::process::{Background, accepts, target_directory};

/// The package whose examples run.
const PACKAGE: &str = "network-protocol";

/// How long a server example runs at most (its `NETPROTO_EXAMPLE_RUN_FOR`).
/// On Unix it is stopped earlier, as soon as its client is done.
const RUN_FOR: Duration = Duration::from_secs(20);

/// How long a server has to start accepting connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a process has to exit once it should (a client after its
/// exchange, a server after SIGINT or its run time).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run(sh: &Shell) -> anyhow::Result<()> {
    cmd!(sh, "cargo build -p {PACKAGE} --examples --locked").run()?;
    let target = target_directory(sh)?;
    let examples = target.join("debug").join("examples");
    let root = sh.current_dir();

    let tcp: SocketAddr = ([127, 0, 0, 1], 9000).into();
    server_and_client(&root, &examples, "tcp_server", "client", tcp, &[])?;

    // Fresh development certificates, shared by the TLS server and client;
    // the server generates them before it listens.
    let cert_dir = target.join("netproto-example-certs");
    if cert_dir.exists() {
        std::fs::remove_dir_all(&cert_dir)
            .with_context(|| format!("cannot remove {}", cert_dir.display()))?;
    }
    let env = [("NETPROTO_EXAMPLE_CERT_DIR", cert_dir.as_os_str())];
    let tls: SocketAddr = ([127, 0, 0, 1], 9443).into();
    server_and_client(&root, &examples, "tls_server", "tls_client", tls, &env)?;

    run_checked(
        &root,
        &examples,
        "custom_handlers",
        &[
            "Ping -> Pong",
            "-> DATA_PROCESS [1, 0, 1]",
            "-> DATA_PROCESS [0, 0, 1]",
        ],
    )?;

    // The typed key-value service and the README's quick start (each a
    // server and its client in one process over Noise on an ephemeral
    // loopback port); they check their own results.
    cmd!(
        sh,
        "cargo build -p netproto-daemon --example typed_kv --example quickstart --example failover --locked"
    )
    .run()?;
    run_checked(
        &root,
        &examples,
        "typed_kv",
        &["typed_kv: all checks passed"],
    )?;
    run_checked(
        &root,
        &examples,
        "quickstart",
        &["quickstart: all checks passed"],
    )?;
    // Three daemons behind the balancer, one killed under load and
    // restarted: no idempotent request fails, every failure is explained.
    run_checked(
        &root,
        &examples,
        "failover",
        &["failover: all checks passed"],
    )?;
    cmd!(
        sh,
        "cargo build -p netproto-service --features otel --example otel_stdout --locked"
    )
    .run()?;
    run_checked(
        &root,
        &examples,
        "otel_stdout",
        &["otel_stdout: the server span is in the client's trace"],
    )?;
    Ok(())
}

/// Runs example `name` to its end; it must succeed and print every line of
/// `expected`.
fn run_checked(root: &Path, examples: &Path, name: &str, expected: &[&str]) -> anyhow::Result<()> {
    eprintln!("examples: {name}");
    let output = Command::new(executable(examples, name))
        .current_dir(root)
        .output()
        .with_context(|| format!("cannot run example `{name}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stdout}");
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("example `{name}` failed: {}", output.status);
    }
    for expected in expected {
        if !stdout.contains(expected) {
            bail!("example `{name}` did not print `{expected}`");
        }
    }
    Ok(())
}

/// Runs `server` in the background, `client` against it once `addr`
/// accepts connections, then stops the server; both must succeed.
fn server_and_client(
    root: &Path,
    examples: &Path,
    server: &'static str,
    client: &'static str,
    addr: SocketAddr,
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<()> {
    if accepts(addr) {
        bail!("{addr} already accepts connections: stop whatever listens there first");
    }
    eprintln!("examples: {server} + {client} on {addr}");
    let run_for = format!("{}s", RUN_FOR.as_secs());
    let mut server_process = Background::spawn(
        server,
        Command::new(executable(examples, server))
            .current_dir(root)
            .env("NETPROTO_EXAMPLE_RUN_FOR", &run_for)
            .envs(env.iter().copied()),
    )?;

    let deadline = Instant::now() + READY_TIMEOUT;
    while !accepts(addr) {
        server_process.check_running()?;
        if Instant::now() >= deadline {
            bail!(
                "example `{server}` did not accept connections on {addr} within {READY_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut client_process = Background::spawn(
        client,
        Command::new(executable(examples, client))
            .current_dir(root)
            .envs(env.iter().copied()),
    )?;
    let client_status = client_process.wait(EXIT_TIMEOUT)?;
    if !client_status.success() {
        bail!("example `{client}` failed: {client_status}");
    }

    server_process
        .check_running()
        .with_context(|| format!("example `{server}` stopped before it was asked to"))?;
    server_process.interrupt()?;
    let server_status = server_process.wait(RUN_FOR + EXIT_TIMEOUT)?;
    if !server_status.success() {
        bail!("example `{server}` failed: {server_status}");
    }
    Ok(())
}

fn executable(examples: &Path, name: &str) -> PathBuf {
    examples.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}
