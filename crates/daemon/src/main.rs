//! The `netproto` command: serve, call, bench, keygen, certgen, config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use netproto_crypto::{Keypair, PublicKey};
use netproto_daemon::{Client, NetworkConfig, SecurityMode, Server, ServerHandle, init_logging};
use netproto_dispatch::Dispatcher;
use netproto_wire::Message;

mod bench;

/// A secure, fast protocol core: server, client and tools.
#[derive(Parser, Debug)]
#[command(name = "netproto", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a server (with no configuration: Noise on 127.0.0.1:9000, ECHO and PING handlers).
    Serve(ServeArgs),
    /// Send one request and print the reply.
    Call(CallArgs),
    /// Load-test a server: throughput and a latency histogram.
    Bench(bench::BenchArgs),
    /// Write a new Noise key file (mode 0600) and print its public key.
    Keygen {
        /// Where to write the key; refuses to overwrite.
        #[arg(long, default_value = "netproto.key")]
        out: PathBuf,
    },
    /// Write a self-signed TLS certificate and key for development.
    Certgen {
        /// Certificate file (PEM).
        #[arg(long, default_value = "netproto-cert.pem")]
        cert: PathBuf,
        /// Private key file (PEM, mode 0600).
        #[arg(long, default_value = "netproto-key.pem")]
        key: PathBuf,
        /// Names the certificate is valid for.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
    },
    /// Print the effective configuration (defaults, file, environment).
    Config(ConfigArgs),
}

/// Options every command that reads the configuration takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConfigArgs {
    /// A TOML configuration file; `NETPROTO__*` environment variables override it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Security mode: noise, tls or plain.
    #[arg(long)]
    mode: Option<SecurityMode>,
}

impl ConfigArgs {
    pub(crate) fn load(&self) -> anyhow::Result<NetworkConfig> {
        let mut config = NetworkConfig::load(self.config.as_deref(), None)
            .context("loading the configuration")?;
        if let Some(mode) = self.mode {
            config.security.mode = mode;
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen here instead of `server.address` (`host:port` or `unix:/path`).
    #[arg(long)]
    address: Option<String>,
    /// Use a fresh Noise key for this run only, instead of the persistent
    /// default key file.
    #[arg(long)]
    ephemeral_key: bool,
    /// Serve Prometheus metrics at `http://ADDRESS/metrics`, and health
    /// checks at `/healthz` and `/readyz`, e.g. `127.0.0.1:9100` (instead
    /// of `server.metrics_address`).
    #[arg(long, value_name = "ADDRESS")]
    metrics: Option<String>,
}

/// Options of the commands that talk to a server.
#[derive(Args, Debug, Clone)]
pub(crate) struct TargetArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The server (`host:port` or `unix:/path`) instead of `client.address`.
    #[arg(long)]
    address: Option<String>,
    /// The server's Noise public key (hex), pinned.
    #[arg(long)]
    server_key: Option<PublicKey>,
}

impl TargetArgs {
    /// The configuration, with the server's address and key from the
    /// command line.
    pub(crate) fn load(&self) -> anyhow::Result<NetworkConfig> {
        let mut config = self.config.load()?;
        if let Some(address) = &self.address {
            config.client.address.clone_from(address);
        }
        if let Some(key) = self.server_key {
            // The flag overrides the pin of the file, wherever it is.
            config.client.server_key = Some(key);
            config.security.server_key = None;
        }
        Ok(config)
    }
}

#[derive(Args, Debug)]
struct CallArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Message type; ECHO and PING are built in, others are sent as custom messages.
    #[arg(long = "type", default_value = "ECHO")]
    msg_type: String,
    /// Message text (for ECHO) or payload (for custom types).
    #[arg(default_value = "hello")]
    message: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("netproto: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("netproto: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Call(args) => call(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Keygen { out } => {
            let keypair = Keypair::generate(&mut rand::rngs::OsRng);
            keypair
                .write_key_file(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            print(&format!(
                "wrote {}\npublic key: {}",
                out.display(),
                keypair.public()
            ));
            Ok(())
        }
        Command::Certgen { cert, key, names } => {
            let generated = netproto_transport::tls::write_self_signed(&names, &cert, &key)?;
            print(&format!(
                "wrote {} and {} for {}\nspki sha-256 pin: {}",
                cert.display(),
                key.display(),
                names.join(", "),
                hex::encode(generated.spki_sha256())
            ));
            Ok(())
        }
        Command::Config(args) => {
            let config = args.load()?;
            print(config.to_toml()?.trim_end());
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout)] // printing results is the CLI's job
fn print(text: &str) {
    println!("{text}");
}

fn init_logs(config: &NetworkConfig) -> anyhow::Result<()> {
    init_logging(Some(&config.logging.level), Some(config.logging.format))?;
    Ok(())
}

/// The CLI's default way to authenticate a Noise server that is not pinned:
/// trust on first use, as SSH does (remember the key, refuse a change).
pub(crate) fn default_trust(config: &mut NetworkConfig) {
    if config.security.mode == SecurityMode::Noise
        && config.client.server_key.is_none()
        && config.security.server_key.is_none()
        && config.security.known_hosts.is_none()
        && let Some(home) = std::env::var_os("HOME")
    {
        config.security.known_hosts = Some(PathBuf::from(home).join(".netproto/known_hosts"));
    }
}

/// Every connection is a file descriptor, and the soft limit is often 1,024,
/// far below the default `max_connections`: raise it to the hard limit.
fn raise_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + 64 => tracing::warn!(
            limit,
            max_connections,
            "the open file limit is below max_connections: connections past it will fail"
        ),
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

/// The persistent server key used when no key file is configured: created
/// on first use, as SSH host keys are, so that clients can remember it.
fn default_server_key() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set: pass a key file")?;
    let dir = PathBuf::from(home).join(".netproto");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("server.key");
    if !path.exists() {
        Keypair::generate(&mut rand::rngs::OsRng)
            .write_key_file(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(file = %path.display(), "generated the server's key");
    }
    Ok(path)
}

/// The signals that stop `netproto serve`: SIGTERM (what systemd, Docker
/// and Kubernetes send) and SIGINT (Ctrl-C); Ctrl-C alone off Unix.
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Catches the signals from now on: they no longer end the process.
    fn catch() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal; returns its name.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    /// Waits for the next signal; returns its name.
    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "ctrl-c"
    }
}

/// On the first stop signal, drains and shuts the server down; a second
/// one ends the drain delay early.
async fn stop_on_signals(mut signals: StopSignals, handle: ServerHandle, drain_delay: Duration) {
    let signal = signals.next().await;
    tracing::info!(
        signal,
        ?drain_delay,
        "draining, then shutting down (a second signal skips the drain delay)"
    );
    let shutdown = handle.shutdown(None);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            signal = signals.next() => {
                tracing::info!(signal, "ending the drain delay now");
                handle.end_drain();
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before anything else, so that a stop signal is never fatal.
    let signals = StopSignals::catch().context("catching SIGTERM and SIGINT")?;
    let mut config = args.config.load()?;
    init_logs(&config)?;
    raise_file_limit(config.server.max_connections);
    if let Some(address) = args.address {
        config.server.address = address;
    }
    if let Some(address) = args.metrics {
        config.server.metrics_address = Some(address);
    }
    if config.security.mode == SecurityMode::Noise
        && config.security.key_file.is_none()
        && !args.ephemeral_key
    {
        config.security.key_file = Some(default_server_key()?);
    }
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    dispatcher.register("PING", |_| Ok(Message::Pong));
    let server = Server::bind(config.clone(), dispatcher).await?;
    let handle = server.handle();
    if let Some(key) = server.public_key() {
        tracing::info!(
            public_key = %key,
            "clients can pin this key: netproto call --address {} --server-key {key}",
            server.local_addr()
        );
    }
    if config.security.mode == SecurityMode::Plain {
        tracing::warn!("plain mode: no encryption and no authentication");
    }
    let stopping = tokio::spawn(stop_on_signals(signals, handle, config.server.drain_delay));
    server.run().await?;
    stopping.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn call(args: CallArgs) -> anyhow::Result<()> {
    let mut config = args.target.load()?;
    if std::env::var_os("RUST_LOG").is_some() {
        init_logs(&config)?;
    } else {
        init_logging(Some("warn"), None)?;
    }
    default_trust(&mut config);
    config.client.max_reconnect_attempts = config.client.max_reconnect_attempts.min(3);
    let message = match args.msg_type.as_str() {
        "ECHO" => Message::Echo(args.message),
        "PING" => Message::Ping,
        other => Message::custom(other, args.message.into_bytes())?,
    };
    let client = Client::connect(config).await?;
    let started = std::time::Instant::now();
    let reply = client.request(&message).await?;
    let took = started.elapsed();
    client.close().await?;
    let shown = match &reply {
        Message::Echo(text) => format!("ECHO {text}"),
        Message::Custom { msg_type, data } => {
            format!("{msg_type} {}", String::from_utf8_lossy(data))
        }
        other => other.message_type().to_owned(),
    };
    print(&format!("{shown}    ({:.2} ms)", took.as_secs_f64() * 1e3));
    Ok(())
}
