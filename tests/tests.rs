//! End-to-end tests, built as one binary (faster to link, one place to look).

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

// Helpers shared by every module: workspaces, counters, event lists.
mod common;

// Tests for Azure scoring scripts reading declared models and logging metrics (azureml shim).
mod azure_models;

// Tests for a run killed with SIGKILL (the real `stepgraph` binary) and resumed, in a loop.
mod crash_loop;

// Tests for step environments: built once per content hash into envs/, fingerprinted, gc'd;
// tabular inputs need pandas unless tabular_format is records.
mod environments;

// Tests for CommandStep: an argv (no shell) running a script from a hashed source directory.
mod engine_command;

// Tests for whole engine runs: reuse, reruns, early cutoff, forcing, failures, run records.
mod engine_e2e;

// Tests for planning (--dry-run, status, explain) and the stability of keys and order.
mod engine_plan;

// Property tests: every step of a random DAG runs once, after its parents; build never panics.
mod engine_props;

// Tests for the store: one user at a time, and damaged objects are never served.
mod engine_store;

// Tests for whole-graph validation when a pipeline is built: every error, all at once.
mod engine_validation;

// Tests for ParallelRunStep end to end (see its own module list).
mod parallel_run;

// Tests for compute targets: keys equal locally and on Slurm; steps run through sbatch on the
// local two-node cluster (`.ci/slurm-up.sh`).
mod slurm;

// Tests for step processes: bounded output, non-UTF-8 paths, orphans killed, escaped errors.
mod step_processes;

// Tests that a step sees exactly what is hashed into its key (source snapshots, file inputs).
mod step_snapshot;

// Tests for what the cache may never do: write outside, confuse names, launder damaged bytes.
mod trust;
