//! stepgraph-engine: the pipeline graph, fingerprints, the content-addressed store and the
//! scheduler. It knows steps only through the [`Step`] trait and the [`ModuleDef`] they declare.
//!
//! - [`PipelineBuilder`] collects steps and validates the whole graph in one go;
//! - [`plan()`] computes every step's fingerprint and decides reuse without running anything;
//! - [`run()`] executes: independent steps concurrently, cache hits materialised, a failed
//!   step's descendants skipped;
//! - [`Runner`] is its Rust form: `Runner::new(&store).jobs(2).run(&pipeline)?`, the options
//!   of [`RunOptions`] and the event sink set by builder methods;
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

mod data;
mod error;
mod events;
mod fingerprint;
mod graph;
mod model;
mod module_def;
mod name;
mod pipeline;
mod plan;
pub mod relpath;
mod resolve;
mod run;
mod runner;
mod step;
mod store;

pub use data::{
    DataReference, DataSource, DatasetFile, FileDataset, InputPortBinding, InputRole, Model,
    OutputPortBinding, PipelineData, PipelineParameter, ResolvedModel, TabularDataset,
    TabularFormat,
};
pub use error::{
    BuildError, BuildErrors, EngineError, ErrorContext, FilesError, StepError, StoreError,
};
pub use events::{CollectSink, Event, EventSink, NullSink};
pub use fingerprint::{
    canonical_json, diff, merkle_hash, Component, ComponentChange, Fingerprint, NodeKey, Preimage,
};
pub use graph::{Edge, GraphBuilder, Node};
pub use model::{
    grouped, GraphSnapshot, SnapshotDataEdge, SnapshotEdge, SnapshotNode, SnapshotPort, StepCounts,
    StepStatus,
};
pub use module_def::{
    create_module_def, passthrough_digest, Argument, CodeIdentity, ComputedComponent, ModuleDef,
    ModuleDefBuilder, SharedComponent, SourceRules,
};
pub use name::{
    check_data_name, check_file_name, check_model_name, check_step_name, StepName, MAX_NAME_LEN,
};
pub use pipeline::{Pipeline, PipelineBuilder, StepGraph};
pub use plan::{plan, Decision, Plan, PlanOptions, PlannedStep, RunReason};
pub use resolve::{source_files, value_to_arg};
pub use run::{new_run_id, run, RunOptions, RunSummary};
pub use runner::Runner;
pub use step::{
    BuildContext, CancelFlag, Datastore, InputKind, PlanContext, ResolvedInput, Step, StepContext,
    UnitEstimate,
};
pub use store::envs::{is_env_hash, ENV_HASH_KEY};
pub use store::records::{
    CacheEntry, LatestRecord, ObjectRef, OutputManifest, RunRecord, RunStatus, StepRecord,
    SCHEMA_VERSION,
};
pub use store::{
    hash_file_uncached, is_store_dir, now_unix_ms, DroppedEntry, EntryUsage, GcOptions, GcReport,
    OpenOptions, ProgressLog, ProgressRecord, RemovedEntry, RunLayout, RunsReport, Store,
    StoreUsage, UnitRecord, UnitWriter, VerifyReport, METRICS_FILE, RUN_MARGIN, STORE_MARKER,
};
