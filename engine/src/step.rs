//! The `Step` trait every step type implements, and the context a step executes in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::data::{DatasetFile, InputRole, ResolvedModel, TabularFormat};
use crate::error::{BuildError, StepError, StoreError};
use crate::events::{Event, EventSink};
use crate::fingerprint::Fingerprint;
use crate::graph::GraphBuilder;
use crate::model::StepCounts;
use crate::module_def::ModuleDef;
use crate::store::records::ObjectRef;
use crate::store::{ProgressLog, Store, UnitRecord, UnitWriter};

/// What a step builder knows about the pipeline it is added to.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// The pipeline's name.
    pub pipeline: String,
}

/// Where step outputs land by default (Azure's default datastore). Here: a run folder.
#[derive(Debug, Clone, Default)]
pub struct Datastore {
    /// Datastore name (`workspaceblobstore` on Azure; informational here).
    pub name: String,
}

/// A step type. The engine knows steps only through this trait and the [`ModuleDef`] they
/// declare; it never names a concrete step type.
pub trait Step: Send + Sync {
    /// The step's name (checked against Azure's rule when the pipeline is built).
    fn name(&self) -> &str;

    /// Declare ports, parameters, arguments, config and code identity.
    ///
    /// # Errors
    /// [`BuildError::InvalidConfig`] naming the field when the step's configuration is invalid.
    fn create_module_def(&self, context: &BuildContext) -> Result<ModuleDef, BuildError>;

    /// Add this step's node to the graph (Azure's `create_node(graph, default_datastore,
    /// context)`). The default calls [`Step::create_module_def`] and adds one node.
    ///
    /// # Errors
    /// Whatever [`Step::create_module_def`] returns.
    fn create_node(
        &self,
        graph: &mut GraphBuilder<'_, dyn Step>,
        default_datastore: &Datastore,
        context: &BuildContext,
    ) -> Result<(), BuildError> {
        let _ = default_datastore;
        let def = self.create_module_def(context)?;
        graph.add_node(def);
        Ok(())
    }

    /// Run the step: read `ctx.inputs`, write into `ctx.outputs`.
    ///
    /// # Errors
    /// A [`StepError`] whose message is shown to the user.
    fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError>;

    /// For a step that memoises units of its work (an incremental ParallelRunStep's
    /// mini-batches): how many of its units a run over these inputs would reuse, for
    /// `explain` and `run --dry-run`. The default (most steps) says nothing.
    ///
    /// # Errors
    /// The inputs cannot be read.
    fn estimate_units(&self, ctx: &PlanContext<'_>) -> Result<Option<UnitEstimate>, StepError> {
        let _ = ctx;
        Ok(None)
    }
}

/// What a step sees when asked how much of its work a run would reuse
/// ([`Step::estimate_units`]).
pub struct PlanContext<'a> {
    /// Step name.
    pub step: &'a str,
    /// Input port -> resolved input.
    pub inputs: &'a BTreeMap<String, ResolvedInput>,
    /// The step's fingerprint for this run.
    pub fingerprint: &'a Fingerprint,
    pub(crate) store: &'a Store,
}

impl PlanContext<'_> {
    /// Whether the store's unit memo holds unit `key` (with its objects).
    ///
    /// # Errors
    /// Db errors.
    pub fn has_unit(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.store.unit_get(key)?.is_some())
    }
}

/// How many of a step's units a run would reuse from the unit memo.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitEstimate {
    /// What one unit is called, singular (`"mini-batch"`).
    pub unit: String,
    /// Units in all.
    pub total: u64,
    /// Units the memo already holds.
    pub reused: u64,
}

/// A shared flag set on Ctrl-C; long-running steps poll it.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask every step to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What an input port resolved to for this run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedInput {
    /// Port name.
    pub port: String,
    /// Main or side input.
    pub role: InputRole,
    /// The folder or file to read (for upstream data, its materialised folder).
    pub path: PathBuf,
    /// The files and how to read them.
    pub kind: InputKind,
}

/// How an input is to be read.
#[derive(Debug, Clone, PartialEq)]
pub enum InputKind {
    /// Files (a file dataset, an upstream output folder, or a data reference), sorted.
    Files(Vec<DatasetFile>),
    /// Rows of tabular files, in order.
    Tabular {
        /// File format.
        format: TabularFormat,
        /// The files.
        files: Vec<DatasetFile>,
    },
}

impl ResolvedInput {
    /// The files of the input, in order.
    pub fn files(&self) -> &[DatasetFile] {
        match &self.kind {
            InputKind::Files(f) => f,
            InputKind::Tabular { files, .. } => files,
        }
    }
}

/// Everything a step sees while it executes.
pub struct StepContext<'a> {
    /// Step name.
    pub step: &'a str,
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The step's node key for this run (keys its resume progress).
    pub key: &'a str,
    /// Run id.
    pub run_id: &'a str,
    /// Input port -> resolved input.
    pub inputs: &'a BTreeMap<String, ResolvedInput>,
    /// Model name -> the declared model's files (hashed into the key as `models.<name>`).
    pub models: &'a BTreeMap<String, ResolvedModel>,
    /// Output port -> empty folder to write into.
    pub outputs: &'a BTreeMap<String, PathBuf>,
    /// The values, for this run, of the pipeline parameters the step declares or uses in its
    /// arguments: exactly those in its fingerprint (`params.<name>`).
    pub params: &'a BTreeMap<String, Value>,
    /// Resolved command-line arguments.
    pub arguments: &'a [String],
    /// Environment variables declared by the step.
    pub environment_variables: &'a BTreeMap<String, String>,
    /// A scratch folder of the step's own.
    pub work_dir: &'a Path,
    /// The step's log folder (`logs/`; `logs/user`, `logs/sys` below it).
    pub log_dir: &'a Path,
    /// The store, reached only through the handles below (resume progress, staging).
    pub(crate) store: &'a Store,
    /// Events out.
    pub events: &'a dyn EventSink,
    /// Set when the run is cancelled.
    pub cancel: &'a CancelFlag,
    /// Whether the step may resume from progress an interrupted run left (false when the run
    /// must recompute it: `--force`, allow_reuse off, regenerate_outputs).
    pub resume: bool,
    /// The step's fingerprint for this run (its components, from which `key` is made): a
    /// step that memoises units keys them by the components they depend on.
    pub fingerprint: &'a Fingerprint,
    /// The unit memo records the step's output was gathered from ([`StepContext::record_units`]).
    pub(crate) units: &'a std::sync::Mutex<Vec<String>>,
}

impl<'a> StepContext<'a> {
    /// The id of this step's resume progress: its key *and* its name, because two steps of
    /// one pipeline with the same definition share a key and may run at the same time.
    fn progress_id(&self) -> String {
        format!("{}.{}", self.key, self.step)
    }

    /// This step's resume log (`progress/<key>.<step>.bin`): results committed by an earlier,
    /// interrupted run with the same key, and where to commit new ones.
    ///
    /// # Errors
    /// I/O errors opening the data file.
    pub fn resume_log(&self) -> Result<ProgressLog<'a>, StoreError> {
        self.store.progress_log(&self.progress_id())
    }

    /// Forget this step's resume progress: its log and its staging folder.
    ///
    /// # Errors
    /// Db or I/O errors.
    pub fn clear_resume(&self) -> Result<(), StoreError> {
        self.store.clear_progress(&self.progress_id())
    }

    /// A folder of this step's own that survives a crash and is removed with its resume
    /// progress (`progress/<key>.<step>.d`). Not created here.
    pub fn staging_dir(&self) -> PathBuf {
        self.store.staging_dir(&self.progress_id())
    }

    /// The memoised unit `key` (an incremental step's mini-batch), when the store has it and
    /// its objects ([`Store::unit_get`]).
    ///
    /// # Errors
    /// Db errors.
    pub fn unit_get(&self, key: &str) -> Result<Option<UnitRecord>, StoreError> {
        self.store.unit_get(key)
    }

    /// A writer of unit records into the store's unit memo.
    pub fn unit_writer(&self) -> UnitWriter<'a> {
        self.store.unit_writer()
    }

    /// The bytes of a stored object (a unit's result), checked against its hash.
    ///
    /// # Errors
    /// A missing or damaged object, I/O errors.
    pub fn read_object(&self, obj: &ObjectRef) -> Result<Vec<u8>, StoreError> {
        self.store.read_object(obj)
    }

    /// Put a copy of a stored object at `dest` (a new file of the step's own, never a link
    /// to the read-only object), after checking its size.
    ///
    /// # Errors
    /// A missing object, I/O errors.
    pub fn copy_object(&self, obj: &ObjectRef, dest: &Path) -> Result<(), StoreError> {
        self.store.copy_object(obj, dest)
    }

    /// Say which unit records this execution's output was gathered from: the cache entry
    /// names them, so `cache gc` keeps them as long as it keeps the entry.
    pub fn record_units(&self, keys: Vec<String>) {
        if let Ok(mut u) = self.units.lock() {
            *u = keys;
        }
    }

    /// The store's folder. A step that copies or lists folders leaves it out (a store is
    /// never an input).
    pub fn store_dir(&self) -> &'a Path {
        self.store.root()
    }

    /// The step's metrics file in its run folder (`runs/<id>/<step>/metrics.jsonl`), where
    /// the `azureml` shim's `Run.log` writes and `stepgraph runs show` reads.
    pub fn metrics_file(&self) -> PathBuf {
        self.store.run_layout(self.run_id).metrics_file(self.step)
    }

    /// The store's folder of built environments (`envs/`), shared by every step and kept by
    /// `cache gc` while an entry names an environment in it.
    pub fn envs_dir(&self) -> PathBuf {
        crate::store::envs::envs_dir(self.store.root())
    }

    /// Emit a message event for this step.
    pub fn message(&self, level: &str, text: impl Into<String>) {
        self.events.emit(&Event::Message {
            step: self.step.to_string(),
            level: level.to_string(),
            text: text.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::NullSink;
    use crate::store::OpenOptions;

    #[test]
    fn a_step_reaches_its_own_resume_progress_and_staging_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s"), OpenOptions::default()).unwrap();
        let empty_inputs = BTreeMap::new();
        let empty_outputs = BTreeMap::new();
        let empty_params = BTreeMap::new();
        let empty_env = BTreeMap::new();
        let cancel = CancelFlag::new();
        let ctx = StepContext {
            step: "count",
            pipeline: "p",
            key: "k1",
            run_id: "r1",
            inputs: &empty_inputs,
            models: &BTreeMap::new(),
            outputs: &empty_outputs,
            params: &empty_params,
            arguments: &[],
            environment_variables: &empty_env,
            work_dir: dir.path(),
            log_dir: dir.path(),
            store: &store,
            events: &NullSink,
            cancel: &cancel,
            resume: true,
            fingerprint: &Fingerprint::default(),
            units: &std::sync::Mutex::new(Vec::new()),
        };
        assert_eq!(ctx.store_dir(), store.root());
        let staging = ctx.staging_dir();
        assert_eq!(staging, store.root().join("progress").join("k1.count.d"));
        let mut log = ctx.resume_log().unwrap();
        log.append(0, serde_json::json!({"items": 1}), b"row")
            .unwrap();
        log.commit().unwrap();
        drop(log);
        assert_eq!(ctx.resume_log().unwrap().committed().unwrap().len(), 1);
        fs_err::create_dir_all(staging.join("output")).unwrap();
        ctx.clear_resume().unwrap();
        assert!(!staging.exists());
        assert!(ctx.resume_log().unwrap().committed().unwrap().is_empty());
    }
}
