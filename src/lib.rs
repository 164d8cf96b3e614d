//! stepgraph: a local DAG pipeline engine with content-addressed reuse and an Azure-style
//! `ParallelRunStep`. This facade re-exports the engine ([`engine`]), the step types
//! ([`steps`]) and the CLI entry ([`cli`], feature `cli`); [`prelude`] holds what a pipeline
//! author needs.
//!
//! A pipeline of an `FnStep` (identified by its closure's text, [`fn_step!`](prelude::fn_step))
//! and a `ParallelRunStep` running an in-process Rust entry, run twice: the second run reuses
//! both steps.
//!
//! ```
//! use stepgraph::prelude::*;
//!
//! struct CountWords;
//! impl EntryScript for CountWords {
//!     fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<Row>, EntryError> {
//!         let MiniBatchData::Files(files) = &mini_batch.data else { return Err("expected files".into()) };
//!         let mut rows = Vec::with_capacity(files.len());
//!         for f in files {
//!             let words = std::fs::read_to_string(f)?.split_whitespace().count();
//!             let name = f.file_name().unwrap_or_default().to_string_lossy();
//!             rows.push(format!("{name} {words}"));
//!         }
//!         Ok(rows)
//!     }
//! }
//!
//! # let dir = tempfile::tempdir()?;
//! # let data = dir.path().join("data/reviews");
//! # std::fs::create_dir_all(&data)?;
//! # std::fs::write(data.join("a.txt"), "Good Food")?;
//! # std::fs::write(data.join("b.txt"), "too salty for me")?;
//! # std::fs::write(data.join("notes.md"), "not a review")?;
//! let reviews = FileDataset::from_files("reviews", &data).with_pattern("*.txt");
//! let texts = PipelineData::new("texts");
//! let counts = PipelineData::new("counts");
//!
//! let normalise = fn_step!("normalise", |ctx| {
//!     let out = ctx.output("texts")?;
//!     for f in ctx.input_files("reviews")? {
//!         let text = std::fs::read_to_string(&f)?.to_lowercase();
//!         std::fs::write(out.join(f.file_name().unwrap_or_default()), text)?;
//!     }
//!     Ok(())
//! })
//!     .input("reviews", &reviews)
//!     .output("texts", &texts);
//!
//! let config = ParallelRunConfig::builder()
//!     .rust_entry("count-words-v1", || Box::new(CountWords))
//!     .mini_batch_size("8")
//!     .error_threshold(0)
//!     .build()?;
//! let count = ParallelRunStep::builder("count-words", config)
//!     .input(&texts)
//!     .output(&counts)
//!     .allow_reuse(true)
//!     .build()?;
//!
//! let pipeline = Pipeline::builder("word-count").step(normalise).step(count).build()?;
//! let store = Store::open(dir.path().join(".stepgraph"), OpenOptions::default())?;
//! let summary = Runner::new(&store).jobs(2).run(&pipeline)?; // summary.steps[i].status
//! assert!(summary.steps.iter().all(|s| s.status == StepStatus::Ran));
//! let rows = std::fs::read_to_string(summary.output_dir("count-words", "output").join("parallel_run_step.txt"))?;
//! assert_eq!(rows, "a.txt 2\nb.txt 4\n");
//!
//! // Nothing changed: both steps are reused.
//! let again = Runner::new(&store).jobs(2).run(&pipeline)?;
//! assert!(again.steps.iter().all(|s| s.status == StepStatus::Reused));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A pipeline is checked whole when it is built; its problems are displayed one per line:
//!
//! ```
//! use stepgraph::prelude::*;
//!
//! let texts = PipelineData::new("texts");
//! let load = FnStep::new("load", "v1", |_| Ok(())).input("texts", &texts);
//! let again = FnStep::new("load", "v2", |_| Ok(()));
//! let report = FnStep::new("report", "v1", |_| Ok(())).run_after("clean");
//! let errors = Pipeline::builder("demo").step(load).step(again).step(report).build().unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "step \"load\": duplicate step name\n\
//!      step \"load\": input \"texts\" reads \"texts\", which no step produces\n\
//!      step \"report\": run_after names unknown step \"clean\"",
//! );
//! ```
//!
//! A [`ParallelRunConfig`](prelude::ParallelRunConfig) exists only as its builder's checked
//! result: its fields are private, so it cannot be written as a struct literal that skips the
//! checks.
//!
//! ```compile_fail,E0451
//! use stepgraph::prelude::*;
//!
//! let config = ParallelRunConfig {
//!     error_threshold: Limit::AtMost(0),
//!     process_count_per_node: 0,
//! };
//! ```
#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub use stepgraph_cli as cli;
pub use stepgraph_engine as engine;
pub use stepgraph_steps as steps;

/// What a pipeline author needs: `use stepgraph::prelude::*;`.
///
/// - data: [`PipelineData`](prelude::PipelineData), [`FileDataset`](prelude::FileDataset),
///   [`TabularDataset`](prelude::TabularDataset), [`DataReference`](prelude::DataReference),
///   [`PipelineParameter`](prelude::PipelineParameter);
/// - steps: [`FnStep`](prelude::FnStep) and [`fn_step!`](prelude::fn_step),
///   [`CommandStep`](prelude::CommandStep), [`ParallelRunStep`](prelude::ParallelRunStep) with
///   its [`ParallelRunConfig`](prelude::ParallelRunConfig) and an [`EntryScript`](prelude::EntryScript);
/// - running: [`Pipeline`](prelude::Pipeline), [`Store`](prelude::Store),
///   [`Runner`](prelude::Runner), [`RunSummary`](prelude::RunSummary),
///   [`StepStatus`](prelude::StepStatus), event sinks.
pub mod prelude {
    pub use stepgraph_engine::{
        Argument, BuildError, BuildErrors, CollectSink, DataReference, EngineError, Event,
        EventSink, FileDataset, NullSink, OpenOptions, Pipeline, PipelineData, PipelineParameter,
        RunOptions, RunSummary, Runner, StepError, StepStatus, Store, StoreError, TabularDataset,
        TabularFormat,
    };
    pub use stepgraph_steps::{
        fn_step, AppendRowFormat, CommandStep, Compute, ConfigError, EntryContext, EntryError,
        EntryScript, Environment, FnContext, FnStep, Limit, MiniBatch, MiniBatchData, OutputAction,
        ParallelRunConfig, ParallelRunStep, Row, TabularInput,
    };
}

/// The README's Rust example, compiled and run by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
