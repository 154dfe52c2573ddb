//! The `network-protocol` examples (the original README's programs), run
//! against each other: `tcp_server` with `client` on 127.0.0.1:9000,
//! `tls_server` with `tls_client` on 127.0.0.1:9443, then `custom_handlers`.
//!
//! Servers run in the background with `NETPROTO_EXAMPLE_RUN_FOR` as a safety
//! net; once their client is done they are stopped with SIGINT (their ctrl-c
//! path, a graceful shutdown) on Unix, and must exit successfully. Every
//! background process is killed on every way out of this module.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

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

/// A process running in the background, killed when dropped unless it has
/// already exited.
struct Background {
    name: &'static str,
    child: Child,
}

impl Background {
    fn spawn(name: &'static str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("cannot start example `{name}`"))?;
        Ok(Self { name, child })
    }

    /// Fails if the process has already exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("example `{}` exited early: {status}", self.name);
        }
        Ok(())
    }

    /// Asks the process to stop as ctrl-c would (Unix); elsewhere it stops
    /// by itself when its run time is over.
    fn interrupt(&self) -> anyhow::Result<()> {
        if cfg!(unix) {
            let pid = self.child.id().to_string();
            let status = Command::new("sh")
                .args(["-c", "kill -INT \"$1\"", "sh", &pid])
                .status()
                .context("cannot run `kill`")?;
            if !status.success() {
                bail!("`kill -INT` of example `{}` failed: {status}", self.name);
            }
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit.
    fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("example `{}` did not exit within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("examples: killing `{}`", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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

    let output = Command::new(executable(&examples, "custom_handlers"))
        .current_dir(&root)
        .output()
        .context("cannot run example `custom_handlers`")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stdout}");
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("example `custom_handlers` failed: {}", output.status);
    }
    for expected in [
        "Ping -> Pong",
        "-> DATA_PROCESS [1, 0, 1]",
        "-> DATA_PROCESS [0, 0, 1]",
    ] {
        if !stdout.contains(expected) {
            bail!("example `custom_handlers` did not print `{expected}`");
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

/// Whether something accepts TCP connections at `addr` (the probe closes at
/// once).
fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn executable(examples: &Path, name: &str) -> PathBuf {
    examples.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Cargo's target directory (honouring `CARGO_TARGET_DIR` and
/// configuration), from `cargo metadata`.
fn target_directory(sh: &Shell) -> anyhow::Result<PathBuf> {
    let metadata = cmd!(sh, "cargo metadata --format-version 1 --no-deps --locked")
        .quiet()
        .read()?;
    json_string_field(&metadata, "target_directory")
        .map(PathBuf::from)
        .context("`cargo metadata` printed no target_directory")
}

/// The value of the first string field `name` in a JSON text, unescaped
/// (enough for the paths cargo prints; xtask links no JSON parser).
fn json_string_field(json: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":");
    let rest = json[json.find(&key)? + key.len()..].trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut value = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json_string_field;

    #[test]
    fn json_string_field_unescapes() {
        let json = r#"{"packages":[],"target_directory":"C:\\work\\target","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some(r"C:\work\target")
        );
        assert_eq!(json_string_field(json, "missing"), None);
    }
}
