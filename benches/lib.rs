//! Benchmarks of the `ratelimit` workspace (criterion and custom harnesses); run with
//! `cargo bench -p ratelimit-benches`. See `BENCHMARKS.md` for the figures.
