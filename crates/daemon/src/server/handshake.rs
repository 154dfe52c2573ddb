//! The handshake threads: a runtime of their own, at a lower priority.

use crate::Result;

/// The threads that accept connections and run their prefaces, security
/// handshakes and first headers: a tokio runtime of its own whose threads
/// run at a lower scheduling priority (Linux), so that the work a stranger
/// can make the server do (a flood of connections, the public-key work of
/// handshakes) waits while established connections are served, instead of
/// queueing in front of their requests. Its blocking threads decompress
/// large bodies, at the same priority, one per core at most: more would
/// only take turns on the cores, and crowd the serving threads while they
/// do.
pub(super) struct HandshakeRuntime(Option<tokio::runtime::Runtime>);

impl HandshakeRuntime {
    /// `threads` threads, or none (handshakes on the serving threads) for 0.
    pub(super) fn start(threads: usize) -> Result<Option<Self>> {
        if threads == 0 {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(
                std::thread::available_parallelism().map_or(threads, |n| n.get().max(threads)),
            )
            .thread_name("netproto-handshake")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|error| {
                crate::Error::Io(std::io::Error::other(format!(
                    "cannot start the handshake threads: {error}"
                )))
            })?;
        Ok(Some(Self(Some(runtime))))
    }

    pub(super) fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|runtime| runtime.handle().clone())
    }
}

impl Drop for HandshakeRuntime {
    fn drop(&mut self) {
        // A runtime dropped inside another one would block; handshakes still
        // running are abandoned (their sockets close with them).
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10) on Linux; does
/// nothing elsewhere, or when the system refuses.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(tid), HANDSHAKE_NICE) {
            tracing::debug!(%error, "cannot lower the handshake thread's priority");
        }
    }
}

/// The nice value of handshake threads: a tenth of the CPU share of a
/// serving thread when both want the same core.
#[cfg(target_os = "linux")]
const HANDSHAKE_NICE: i32 = 10;
