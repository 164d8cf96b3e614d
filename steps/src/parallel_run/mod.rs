//! `ParallelRunStep`: Azure ML's step of the same name, run locally. Inputs are split into
//! deterministic mini-batches, processed by `process_count_per_node × node_count` workers
//! running an entry script (`init()` once per worker, `run(mini_batch)` per mini-batch), with
//! retries, timeouts, failure limits, gathered outputs and resume after a crash.
//!
//! The step is declared in `step.rs` (its Rust builder in `step_builder.rs`; checked at
//! build, with its config from `config.rs` and `size.rs`), runs in `execute.rs` (inputs cut
//! by `partition/`, with the datasets' `partition_format` values from `datasets.rs`; workers
//! set up in
//! `workers.rs` and driven by `dispatch.rs` over `worker.rs` and `protocol.rs`, rows gathered
//! by `gather.rs`, each process's `logs/sys/node/` log by `node_log.rs`) and reports in
//! `report.rs`.

mod collect;
mod config;
mod datasets;
mod dispatch;
mod entry;
mod execute;
mod gather;
mod harness;
mod incremental;
mod node_log;
pub mod partition;
mod protocol;
mod remote;
mod report;
mod results;
pub mod size;
mod step;
mod step_builder;
mod worker;
mod workers;
mod writes;

pub use config::{
    AppendRowFormat, ConfigError, Entry, Limit, OutputAction, ParallelRunConfig,
    ParallelRunConfigBuilder, TabularInput,
};
pub use dispatch::{COMMIT_INTERVAL, DONE_PREFIX};
pub use entry::{
    EntryContext, EntryError, EntryFactory, EntryScript, MiniBatch, MiniBatchData, Row,
};
pub(crate) use harness::install_azureml;
pub use remote::{run_agent, AgentError, AgentOptions};
pub use step::ParallelRunStep;
pub use step_builder::ParallelRunStepBuilder;

/// The longest line, in bytes without its newline, a worker may send or receive in the
/// worker protocol (64 MiB). A longer line fails the try with "worker protocol line over
/// 67108864 bytes"; the engine never buffers more than this of one line. The Python harness
/// also raises `csv.field_size_limit` to it.
pub const MAX_PROTOCOL_LINE: usize = 64 << 20;

/// What this step counts its work in (`StepCounts::unit`, progress events).
const UNIT: &str = "mini-batch";
