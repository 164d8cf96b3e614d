//! ParallelRunStep end to end, one module per concern. Every pipeline here names its
//! ParallelRunStep `score` (see `support`).

// Fixtures shared by these modules: data folders, entry scripts, running and inspecting.
pub(crate) mod support;

// Tests for a first whole run of a Python entry script, and its reuse.
mod smoke;

// Tests for the configurations refused when the pipeline is built.
mod validation;

// Tests for the ways a try fails (raise, exit, segfault, timeout, init) and the retries.
mod failures;

// Tests for the failure limits, exactly at and one past each.
mod limits;

// Tests for hung workers and workers that print to stdout.
mod workers;

// Tests for how rows and files are gathered into the output.
mod gather;

// Tests for reuse and forced reruns of a ParallelRunStep.
mod reuse;

// Tests for what an entry sees (side inputs, parameters, its logger) and entry_command.
mod entries;

// Tests for the progress events.
mod progress;

// Tests for TabularDatasets: CSV cut by bytes, JSON Lines, partition_keys.
mod tabular;

// Tests for in-process Rust entries.
mod rust;

// Tests for resuming a killed run from its committed mini-batches.
mod resume;

// Tests for datasets as Azure builds them: partition_format on files and tables,
// partition_keys on files, mini_batch_context.dataset, patterns leaving stray files out.
mod datasets;

// Tests for incremental steps: content-defined mini-batches memoised one by one, reruns that
// run only changed mini-batches and gather a from-scratch run's output.
mod incremental;
