//! stepgraph: a local DAG pipeline engine with content-addressed reuse and an Azure-style
//! `ParallelRunStep`. This facade re-exports the engine, the step types and the CLI entry.
//!
//! ```
//! use stepgraph::engine::{NullSink, OpenOptions, Pipeline, PipelineData, RunOptions, StepStatus, Store};
//! use stepgraph::steps::FnStep;
//!
//! let dir = tempfile::tempdir()?;
//! let hello = FnStep::new("hello", "v1", |ctx| {
//!     std::fs::write(ctx.output("out")?.join("hello.txt"), "hello")?;
//!     Ok(())
//! })
//! .output("out", PipelineData::new("greeting"));
//! let pipeline = Pipeline::builder("demo").step(hello).build()?;
//! let store = Store::open(dir.path(), OpenOptions::default())?;
//! let run = stepgraph::engine::run(&pipeline, &store, &RunOptions::default(), &NullSink)?;
//! assert_eq!(run.steps[0].status, StepStatus::Ran);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub use stepgraph_cli as cli;
pub use stepgraph_engine as engine;
pub use stepgraph_steps as steps;

/// The README's Rust example, compiled and run by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
