//! stepgraph-engine: the pipeline graph, fingerprints, the content-addressed store and the
//! scheduler. It knows steps only through the [`Step`] trait and the [`ModuleDef`] they declare.
//!
//! - [`PipelineBuilder`] collects steps and validates the whole graph in one go;
//! - [`plan()`] computes every step's fingerprint and decides reuse without running anything;
//! - [`run()`] executes: independent steps concurrently, cache hits materialised, a failed
//!   step's descendants skipped;
//! - [`Store`] keeps objects (the truth) and a sled index (cache, runs, memo, progress).
//!
//! ```
//! use std::collections::BTreeMap;
//! use stepgraph_engine::{
//!     create_module_def, BuildContext, BuildError, ModuleDef, OpenOptions, Pipeline,
//!     RunOptions, Step, StepContext, StepCounts, StepError, Store, NullSink,
//!     OutputPortBinding, PipelineData, StepStatus,
//! };
//!
//! struct Hello;
//! impl Step for Hello {
//!     fn name(&self) -> &str { "hello" }
//!     fn create_module_def(&self, _: &BuildContext) -> Result<ModuleDef, BuildError> {
//!         let out = OutputPortBinding::new("greeting", PipelineData::new("greeting"));
//!         Ok(create_module_def("example/1", vec![], vec![out], vec![], true, true,
//!             Some("v1".into()), vec![]))
//!     }
//!     fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
//!         std::fs::write(ctx.outputs["greeting"].join("hello.txt"), "hello")?;
//!         Ok(StepCounts::default())
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), OpenOptions::default())?;
//! let pipeline = Pipeline::builder("demo").step(Hello).build()?;
//! let first = stepgraph_engine::run(&pipeline, &store, &RunOptions::default(), &NullSink)?;
//! assert_eq!(first.steps[0].status, StepStatus::Ran);
//! let second = stepgraph_engine::run(&pipeline, &store, &RunOptions::default(), &NullSink)?;
//! assert_eq!(second.steps[0].status, StepStatus::Reused);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// A library never prints: it returns errors and emits events; the CLI decides what to show.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod data;
pub mod error;
pub mod events;
pub mod fingerprint;
mod graph;
pub mod model;
pub mod module_def;
pub mod name;
pub mod pipeline;
pub mod plan;
pub mod relpath;
mod resolve;
mod run;
pub mod step;
pub mod store;

pub use data::{
    DataReference, DataSource, DatasetFile, FileDataset, InputPortBinding, InputRole,
    OutputPortBinding, PipelineData, PipelineParameter, TabularDataset, TabularFormat,
};
pub use error::{
    BuildError, BuildErrors, EngineError, ErrorContext, FilesError, StepError, StoreError,
};
pub use events::{CollectSink, Event, EventSink, NullSink};
pub use fingerprint::{diff, Component, ComponentChange, Fingerprint, NodeKey, Preimage};
pub use graph::{Edge, GraphBuilder, Node};
pub use model::{GraphSnapshot, StepCounts, StepStatus};
pub use module_def::{
    create_module_def, Argument, CodeIdentity, ModuleDef, ModuleDefBuilder, SourceRules,
};
pub use name::StepName;
pub use pipeline::{Pipeline, PipelineBuilder, StepGraph};
pub use plan::{plan, Decision, Plan, PlanOptions, PlannedStep, RunReason};
pub use resolve::{source_files, value_to_arg};
pub use run::{new_run_id, run, RunOptions, RunSummary};
pub use step::{BuildContext, CancelFlag, Datastore, InputKind, ResolvedInput, Step, StepContext};
pub use store::records::{CacheEntry, RunRecord, RunStatus, StepRecord};
pub use store::{OpenOptions, ProgressLog, ProgressRecord, Store};
