//! Benchmarks of netproto; see `benches/` and `docs/PERFORMANCE.md`.
