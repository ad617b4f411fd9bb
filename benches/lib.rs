//! Criterion benchmarks of the `ratelimit` workspace; run with
//! `cargo bench -p ratelimit-benches`. See `BENCHMARKS.md` for the figures.
