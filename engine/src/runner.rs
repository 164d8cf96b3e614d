//! [`Runner`]: runs pipelines against one store, its options set by builder methods. It is
//! the Rust form of [`run()`](crate::run()), which stays as the function behind it.

use serde_json::Value;

use crate::error::EngineError;
use crate::events::{EventSink, NullSink};
use crate::pipeline::Pipeline;
use crate::run::{run, RunOptions, RunSummary};
use crate::step::CancelFlag;
use crate::store::Store;

/// Runs pipelines against `store`: `Runner::new(&store).jobs(2).run(&pipeline)?`.
///
/// Events go nowhere unless a [`sink`](Runner::sink) is given; the other options are those of
/// [`RunOptions`] (one method each, or all at once with [`options`](Runner::options)).
///
/// ```
/// use stepgraph_engine::{CollectSink, OpenOptions, Pipeline, Runner, StepStatus, Store};
/// # use stepgraph_engine::{create_module_def, BuildContext, BuildError, ModuleDef, OutputPortBinding,
/// #     PipelineData, Step, StepContext, StepCounts, StepError};
/// # struct Hello;
/// # impl Step for Hello {
/// #     fn name(&self) -> &str { "hello" }
/// #     fn create_module_def(&self, _: &BuildContext) -> Result<ModuleDef, BuildError> {
/// #         let out = OutputPortBinding::new("greeting", PipelineData::new("greeting"));
/// #         Ok(create_module_def("example/1", vec![], vec![out], vec![], true, true,
/// #             Some("v1".into()), vec![]))
/// #     }
/// #     fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
/// #         std::fs::write(ctx.outputs["greeting"].join("hello.txt"), "hello")?;
/// #         Ok(StepCounts::default())
/// #     }
/// # }
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), OpenOptions::default())?;
/// let pipeline = Pipeline::builder("demo").step(Hello).build()?;
/// let events = CollectSink::default();
/// let first = Runner::new(&store).jobs(2).sink(&events).run(&pipeline)?;
/// assert_eq!(first.steps[0].status, StepStatus::Ran);
/// let forced = Runner::new(&store).force("hello").run(&pipeline)?;
/// assert_eq!(forced.steps[0].status, StepStatus::Ran);
/// let second = Runner::new(&store).run(&pipeline)?;
/// assert_eq!(second.steps[0].status, StepStatus::Reused);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct Runner<'a> {
    store: &'a Store,
    options: RunOptions,
    sink: &'a dyn EventSink,
}

impl<'a> Runner<'a> {
    /// A runner for `store` with the default [`RunOptions`] (as many jobs as cores) and no
    /// event sink.
    pub fn new(store: &'a Store) -> Self {
        Runner {
            store,
            options: RunOptions::default(),
            sink: &NullSink,
        }
    }

    /// How many steps may execute at once (at least 1).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.options.jobs = jobs.max(1);
        self
    }

    /// Where the run's events go (progress, step started and finished, messages).
    pub fn sink(mut self, sink: &'a dyn EventSink) -> Self {
        self.sink = sink;
        self
    }

    /// All the options at once (replacing those set before).
    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Override pipeline parameter `name` for this run.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.options.plan.params.insert(name.into(), value.into());
        self
    }

    /// Run step `name` even when its output is cached.
    pub fn force(mut self, name: impl Into<String>) -> Self {
        self.options.plan.force.insert(name.into());
        self
    }

    /// Run every step, reusing nothing (Azure's `regenerate_outputs`).
    pub fn regenerate_outputs(mut self, on: bool) -> Self {
        self.options.plan.regenerate_outputs = on;
        self
    }

    /// Rehash inputs and cached objects instead of trusting the stat memo.
    pub fn verify(mut self, on: bool) -> Self {
        self.options.plan.verify = on;
        self
    }

    /// A flag that stops the run when set (as Ctrl-C does in the CLI).
    pub fn cancel(mut self, flag: CancelFlag) -> Self {
        self.options.cancel = flag;
        self
    }

    /// The options the run will use.
    pub fn run_options(&self) -> &RunOptions {
        &self.options
    }

    /// Run `pipeline`: plan, reuse what is cached, execute the rest.
    ///
    /// # Errors
    /// What [`run()`](crate::run()) returns: unknown forced steps or parameters, store errors,
    /// a cancelled run. A step that fails is not an error: its record says so.
    pub fn run(&self, pipeline: &Pipeline) -> Result<RunSummary, EngineError> {
        run(pipeline, self.store, &self.options, self.sink)
    }
}
