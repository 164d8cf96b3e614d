//! End-to-end tests, built as one binary (faster to link, one place to look).

mod common;
mod crash_loop;
mod engine_command;
mod engine_e2e;
mod engine_plan;
mod engine_props;
mod engine_store;
mod engine_validation;
mod parallel_run_e2e;
mod parallel_run_resume;
mod parallel_run_rust;
mod parallel_run_smoke;
mod parallel_run_support;
mod parallel_run_tabular;
mod step_processes;
mod step_snapshot;
mod trust;
