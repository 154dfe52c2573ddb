//! Processes the tasks start and stop, and where cargo puts what it builds.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

/// A process running in the background, killed when dropped unless it has
/// already exited.
pub(crate) struct Background {
    name: String,
    child: Child,
}

impl Background {
    pub(crate) fn spawn(name: impl Into<String>, command: &mut Command) -> anyhow::Result<Self> {
        let name = name.into();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{name}`"))?;
        Ok(Self { name, child })
    }

    /// The process, to take its output pipes.
    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Fails if the process has already exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("`{}` exited early: {status}", self.name);
        }
        Ok(())
    }

    /// Asks the process to stop as ctrl-c would (Unix); elsewhere it stops
    /// by itself when its run time is over.
    pub(crate) fn interrupt(&self) -> anyhow::Result<()> {
        if cfg!(unix) {
            let pid = self.child.id().to_string();
            let status = Command::new("sh")
                .args(["-c", "kill -INT \"$1\"", "sh", &pid])
                .status()
                .context("cannot run `kill`")?;
            if !status.success() {
                bail!("`kill -INT` of `{}` failed: {status}", self.name);
            }
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit.
    pub(crate) fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("`{}` did not exit within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("killing `{}`", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether something accepts TCP connections at `addr` (the probe closes at
/// once).
pub(crate) fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Cargo's target directory (honouring `CARGO_TARGET_DIR` and
/// configuration), from `cargo metadata`.
pub(crate) fn target_directory(sh: &Shell) -> anyhow::Result<PathBuf> {
    let metadata = cmd!(sh, "cargo metadata --format-version 1 --no-deps --locked")
        .quiet()
        .read()?;
    json_string_field(&metadata, "target_directory")
        .map(PathBuf::from)
        .context("`cargo metadata` printed no target_directory")
}

/// The value of the first string field `name` in a JSON text, unescaped
/// (enough for the paths cargo prints and the fields of our logs; xtask
/// links no JSON parser).
pub(crate) fn json_string_field(json: &str, name: &str) -> Option<String> {
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
