//! `FnStep`: a Rust closure with a declared version string.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use stepgraph_engine::{
    create_module_def, BuildContext, BuildError, DataSource, InputPortBinding, ModuleDef,
    OutputPortBinding, PipelineData, PipelineParameter, Step, StepContext, StepCounts, StepError,
};

/// What a [`FnStep`] closure sees: input paths, output folders, parameters.
pub struct FnContext<'a> {
    ctx: &'a StepContext<'a>,
}

impl<'a> FnContext<'a> {
    /// The path of input `port` (a folder for upstream data).
    ///
    /// # Errors
    /// When the step has no such input.
    pub fn input(&self, port: &str) -> Result<&'a Path, StepError> {
        self.ctx
            .inputs
            .get(port)
            .map(|i| i.path.as_path())
            .ok_or_else(|| StepError::new(format!("no input port {port:?}")))
    }

    /// The files of input `port`, sorted by relative path.
    ///
    /// # Errors
    /// When the step has no such input.
    pub fn input_files(&self, port: &str) -> Result<Vec<PathBuf>, StepError> {
        self.ctx
            .inputs
            .get(port)
            .map(|i| i.files().iter().map(|f| f.path.clone()).collect())
            .ok_or_else(|| StepError::new(format!("no input port {port:?}")))
    }

    /// The folder to write output `port` into.
    ///
    /// # Errors
    /// When the step has no such output.
    pub fn output(&self, port: &str) -> Result<&'a Path, StepError> {
        self.ctx
            .outputs
            .get(port)
            .map(PathBuf::as_path)
            .ok_or_else(|| StepError::new(format!("no output port {port:?}")))
    }

    /// The value of pipeline parameter `name`.
    pub fn param(&self, name: &str) -> Option<&'a Value> {
        self.ctx.params.get(name)
    }

    /// The engine's context (run id, log folder, events).
    pub fn step_context(&self) -> &'a StepContext<'a> {
        self.ctx
    }
}

type StepFn = dyn Fn(&FnContext<'_>) -> Result<(), StepError> + Send + Sync;

/// A step whose body is a Rust closure. Its code identity is the declared `version`: change
/// the version when you change the closure, or the cache will reuse old outputs.
#[derive(Clone)]
pub struct FnStep {
    name: String,
    version: String,
    inputs: Vec<InputPortBinding>,
    outputs: Vec<OutputPortBinding>,
    params: Vec<PipelineParameter>,
    allow_reuse: bool,
    run_after: Vec<String>,
    body: Arc<StepFn>,
}

impl FnStep {
    /// A step `name` running `body`, identified in the cache by `version`.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        body: impl Fn(&FnContext<'_>) -> Result<(), StepError> + Send + Sync + 'static,
    ) -> Self {
        FnStep {
            name: name.into(),
            version: version.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Vec::new(),
            allow_reuse: true,
            run_after: Vec::new(),
            body: Arc::new(body),
        }
    }

    /// Read `source` on input port `port`.
    pub fn input(mut self, port: impl Into<String>, source: impl Into<DataSource>) -> Self {
        self.inputs.push(InputPortBinding::new(port, source));
        self
    }

    /// Produce `data` on output port `port`.
    pub fn output(mut self, port: impl Into<String>, data: PipelineData) -> Self {
        self.outputs.push(OutputPortBinding::new(port, data));
        self
    }

    /// Read pipeline parameter `p` (it becomes part of the fingerprint).
    pub fn param(mut self, p: PipelineParameter) -> Self {
        self.params.push(p);
        self
    }

    /// Reuse cached outputs when nothing changed (default true).
    pub fn allow_reuse(mut self, allow: bool) -> Self {
        self.allow_reuse = allow;
        self
    }

    /// Run after step `name`, without a data dependency.
    pub fn run_after(mut self, name: impl Into<String>) -> Self {
        self.run_after.push(name.into());
        self
    }
}

impl Step for FnStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn create_module_def(&self, _context: &BuildContext) -> Result<ModuleDef, BuildError> {
        let mut def = create_module_def(
            "fn/1",
            self.inputs.clone(),
            self.outputs.clone(),
            self.params.clone(),
            true,
            self.allow_reuse,
            Some(self.version.clone()),
            Vec::new(),
        );
        def.run_after = self.run_after.clone();
        Ok(def)
    }

    fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
        (self.body)(&FnContext { ctx })?;
        Ok(StepCounts::default())
    }
}
