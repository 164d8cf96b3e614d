//! End-to-end tests, built as one binary (faster to link, one place to look).

mod common;
mod engine_e2e;
mod parallel_run_smoke;
