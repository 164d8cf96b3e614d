//! stepgraph-steps: the step types.
//!
//! - [`FnStep`]: a Rust closure with a declared version;
//! - [`ParallelRunStep`]: Azure ML's step of the same name (see [`parallel_run`]);
//! - [`load_spec`]: the JSON pipeline spec;
//! - [`CommandStep`]: one command (argv list) with `{inputs.X}` / `{outputs.X}` /
//!   `{params.X}` placeholders, its source folder hashed into the fingerprint.
//!
//! ```
//! use stepgraph_engine::{FileDataset, NullSink, OpenOptions, Pipeline, PipelineData, RunOptions, Store};
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
//! let summary = stepgraph_engine::run(&pipeline, &store, &RunOptions::default(), &NullSink)?;
//! assert_eq!(std::fs::read_to_string(summary.output_dir("count-docs", "count").join("n.txt"))?, "1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// A library never prints: it returns errors and emits events; the CLI decides what to show.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod command_step;
pub mod environment;
mod fn_step;
pub mod parallel_run;
pub mod placeholders;
mod process;
pub mod spec;

pub use command_step::CommandStep;
pub use environment::{Environment, EnvironmentError};
pub use fn_step::{FnContext, FnStep};
pub use parallel_run::{
    AppendRowFormat, Entry, EntryContext, EntryError, EntryScript, MiniBatch, MiniBatchData,
    OutputAction, ParallelRunConfig, ParallelRunStep, TabularInput,
};
pub use spec::{load_spec, parse_spec, SpecError};
