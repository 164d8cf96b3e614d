//! stepgraph-steps: the step types.
//!
//! - [`FnStep`]: a Rust closure, identified by a declared version or by its text
//!   ([`fn_step!`]);
//! - [`ParallelRunStep`]: Azure ML's step of the same name (its config
//!   [`ParallelRunConfig`], its entries [`EntryScript`]; [`partition`] and [`size`] for how
//!   inputs are cut into mini-batches);
//! - [`load_spec`]: the JSON pipeline spec;
//! - [`CommandStep`]: one command (argv list) with `{inputs.X}` / `{outputs.X}` /
//!   `{params.X}` placeholders, its source folder hashed into the fingerprint;
//! - [`Compute`]: where a step runs, locally or on Slurm ([`Compute::slurm`]); [`Slurm`]
//!   wraps Slurm's client commands.
//!
//! ```
//! use stepgraph_engine::{FileDataset, OpenOptions, Pipeline, PipelineData, Runner, Store};
//! use stepgraph_steps::FnStep;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir_all(dir.path().join("docs"))?;
//! std::fs::write(dir.path().join("docs/a.txt"), "alpha")?;
//! let count = FnStep::new("count-docs", "v1", |ctx| {
//!     let n = ctx.input_files("docs")?.len();
//!     std::fs::write(ctx.output("count")?.join("n.txt"), n.to_string())?;
//!     Ok(())
//! })
//! .input("docs", FileDataset::from_files("docs", dir.path().join("docs")))
//! .output("count", PipelineData::new("count"));
//! let pipeline = Pipeline::builder("demo").step(count).build()?;
//! let store = Store::open(dir.path().join(".stepgraph"), OpenOptions::default())?;
//! let summary = Runner::new(&store).run(&pipeline)?;
//! assert_eq!(std::fs::read_to_string(summary.output_dir("count-docs", "count").join("n.txt"))?, "1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// A library never prints: it returns errors and emits events; the CLI decides what to show.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod command_step;
mod compute;
mod environment;
mod fn_step;
mod models;
mod parallel_run;
mod placeholders;
mod ports;
mod process;
mod slurm;
mod slurm_command;
mod spec;

pub use command_step::CommandStep;
pub use compute::{Compute, ComputeError, SlurmCompute};
pub use environment::{Environment, EnvironmentError};
pub use fn_step::{FnContext, FnStep};
pub use parallel_run::{
    partition, run_agent, size, AgentError, AgentOptions, AppendRowFormat, ConfigError, Entry,
    EntryContext, EntryError, EntryFactory, EntryScript, Limit, MiniBatch, MiniBatchData,
    OutputAction, ParallelRunConfig, ParallelRunConfigBuilder, ParallelRunStep,
    ParallelRunStepBuilder, Row, TabularInput, COMMIT_INTERVAL, DONE_PREFIX, MAX_PROTOCOL_LINE,
};
pub use slurm::{
    batch_script, find_on_path, slurm_problems, JobId, JobInfo, JobState, Partition, Slurm,
    SlurmError, SLURM_TOOLS,
};
pub use spec::{load_spec, parse_spec, SpecError, MAX_SPEC_BYTES};
