//! Benchmarks of netproto; see `benches/` and `docs/PERFORMANCE.md`.

// Benchmark support: setup failures abort the run; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
