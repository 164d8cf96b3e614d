//! The step's declaration: [`ParallelRunStep`], its checks at build and the `ModuleDef` it
//! registers (ports, fingerprinted config, code identity).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use stepgraph_engine::{
    Argument, BuildContext, BuildError, CodeIdentity, DataSource, InputPortBinding, Model,
    ModuleDef, OutputPortBinding, PipelineData, Step, StepContext, StepCounts, StepError,
};

use super::config::{self, Entry, OutputAction, ParallelRunConfig};

/// Version of this step type's behaviour; part of every ParallelRunStep fingerprint.
const FORMAT_VERSION: u32 = 1;

/// Azure's `ParallelRunStep`.
///
/// Two ways to make one, giving the same step: [`ParallelRunStep::builder`], the Rust form,
/// and [`ParallelRunStep::new`], Azure's constructor with its seven positional arguments (for
/// pipelines ported from Azure). Either way the main inputs are ports `input`, `input_1`, …
/// (in order), side inputs are ports named after their data, and the output is port `output`.
///
/// ```
/// use stepgraph_engine::{FileDataset, PipelineData};
/// use stepgraph_steps::{EntryError, EntryScript, MiniBatch, ParallelRunConfig, ParallelRunStep, Row};
///
/// struct Count;
/// impl EntryScript for Count {
///     fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<Row>, EntryError> {
///         Ok(vec![mini_batch.len().to_string()])
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let texts = FileDataset::from_files("texts", dir.path());
/// let counts = PipelineData::new("counts");
/// let config = ParallelRunConfig::builder()
///     .rust_entry("count-v1", || Box::new(Count))
///     .error_threshold(0)
///     .build()?;
/// let step = ParallelRunStep::builder("count", config.clone())
///     .input(&texts)
///     .output(&counts)
///     .build()?;
/// // Azure's form of the same step.
/// let azure = ParallelRunStep::new("count", config, vec![texts.into()], Some(counts), vec![], vec![], true);
/// assert_eq!(format!("{step:?}"), format!("{azure:?}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ParallelRunStep {
    pub(super) name: String,
    pub(super) config: ParallelRunConfig,
    pub(super) inputs: Vec<DataSource>,
    pub(super) output: Option<PipelineData>,
    pub(super) side_inputs: Vec<DataSource>,
    pub(super) arguments: Vec<Argument>,
    pub(super) allow_reuse: bool,
    pub(super) run_after: Vec<String>,
    pub(super) models: Vec<Model>,
    /// Where the step runs (not fingerprinted).
    pub(super) compute: crate::Compute,
}

impl ParallelRunStep {
    /// Azure's constructor, the Azure-parity form: `ParallelRunStep(name,
    /// parallel_run_config, inputs, output, side_inputs, arguments, allow_reuse)`, positional
    /// as in Azure's SDK. [`ParallelRunStep::builder`] is the Rust form of the same step.
    pub fn new(
        name: impl Into<String>,
        parallel_run_config: ParallelRunConfig,
        inputs: Vec<DataSource>,
        output: Option<PipelineData>,
        side_inputs: Vec<DataSource>,
        arguments: Vec<Argument>,
        allow_reuse: bool,
    ) -> Self {
        ParallelRunStep {
            name: name.into(),
            config: parallel_run_config,
            inputs,
            output,
            side_inputs,
            arguments,
            allow_reuse,
            run_after: Vec::new(),
            models: Vec::new(),
            compute: crate::Compute::Local,
        }
    }

    /// Run on `compute` (Azure's `compute_target`): locally (the default) or on a Slurm
    /// cluster, `node_count` nodes of it. Not part of the fingerprint: a step that ran locally
    /// is reused on Slurm and back.
    pub fn compute(mut self, compute: impl Into<crate::Compute>) -> Self {
        self.compute = compute.into();
        self
    }

    /// Where the step runs.
    pub fn compute_target(&self) -> &crate::Compute {
        &self.compute
    }

    /// Read model `model` (Azure's `Model.get_model_path(name)` in the entry script): its
    /// content is an input of the step (fingerprint component `models.<name>`), laid out
    /// read-only under `AZUREML_MODEL_DIR` for the workers.
    pub fn model(mut self, model: Model) -> Self {
        self.models.push(model);
        self
    }

    /// Run after step `name`, without a data dependency.
    pub fn run_after(mut self, name: impl Into<String>) -> Self {
        self.run_after.push(name.into());
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ParallelRunConfig {
        &self.config
    }

    fn invalid(&self, field: &str, message: impl Into<String>) -> BuildError {
        BuildError::InvalidConfig {
            step: self.name.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(super) fn output_port(&self) -> Option<&str> {
        self.output.as_ref().map(|_| "output")
    }

    /// The main inputs: at least one, all files or all tabular of one format. True when
    /// tabular.
    fn check_inputs(&self) -> Result<bool, BuildError> {
        if self.inputs.is_empty() {
            return Err(self.invalid("inputs", "at least one input dataset is required"));
        }
        let tabular = matches!(self.inputs[0], DataSource::Tabular(_));
        if self
            .inputs
            .iter()
            .any(|i| matches!(i, DataSource::Tabular(_)) != tabular)
        {
            let kinds: Vec<&str> = self.inputs.iter().map(DataSource::kind).collect();
            return Err(self.invalid(
                "inputs",
                format!(
                    "all inputs must be of one dataset type (file or tabular), got {}",
                    kinds.join(", ")
                ),
            ));
        }
        if tabular {
            let mut formats = self.inputs.iter().filter_map(|i| match i {
                DataSource::Tabular(t) => Some(t.format),
                _ => None,
            });
            let first = formats.next();
            if formats.any(|f| Some(f) != first) {
                return Err(self.invalid(
                    "inputs",
                    "tabular inputs must share one format (csv or jsonl)",
                ));
            }
        }
        Ok(tabular)
    }

    /// Each main input's parsed `partition_format` (`None` without one).
    pub(super) fn partition_formats(
        &self,
    ) -> Result<Vec<Option<super::partition::PartitionFormat>>, BuildError> {
        super::datasets::partition_formats(&self.inputs)
            .map_err(|e| self.invalid("partition_format", e.to_string()))
    }

    /// The source folder exists, and so does a Python entry script in it. Returns the folder.
    fn check_entry_files(&self) -> Result<Option<PathBuf>, BuildError> {
        let cfg = &self.config;
        let source_directory = cfg.source_directory().map(Path::to_path_buf);
        if let Some(d) = &source_directory {
            if !d.is_dir() {
                return Err(self.invalid(
                    "source_directory",
                    format!("{} is not a folder", d.display()),
                ));
            }
        }
        match cfg.entry() {
            Entry::Python { entry_script } => {
                let dir = source_directory
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("."));
                if !dir.join(entry_script).is_file() {
                    return Err(self.invalid(
                        "entry_script",
                        format!("{} not found", dir.join(entry_script).display()),
                    ));
                }
            }
            Entry::Command { .. } | Entry::Rust { .. } => {}
        }
        Ok(source_directory)
    }
}

/// Port names: `input`, `input_1`, ... for inputs (Azure names them after the datasets; ports
/// must be unique, names need not be).
pub(super) fn input_port(i: usize) -> String {
    if i == 0 {
        "input".to_string()
    } else {
        format!("input_{i}")
    }
}

impl Step for ParallelRunStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn create_module_def(&self, _context: &BuildContext) -> Result<ModuleDef, BuildError> {
        let cfg = &self.config;
        let tabular = self.check_inputs()?;
        if let Err(e) = cfg.batch_size(tabular) {
            return Err(self.invalid("mini_batch_size", e.to_string()));
        }
        let formats = self.partition_formats()?;
        if let Some(keys) = cfg.partition_keys() {
            super::datasets::check_partition_keys(&self.inputs, &formats, keys, tabular)
                .map_err(|e| self.invalid("partition_keys", e.to_string()))?;
        }
        if self.output.is_none() && cfg.output_action() == OutputAction::AppendRow {
            return Err(self.invalid("output", "is required unless output_action is summary_only"));
        }
        let arg_forms: Vec<String> = self
            .arguments
            .iter()
            .map(|a| match a {
                Argument::Literal(s) => s.clone(),
                Argument::Param(p) => format!("{{params.{}}}", p.name),
                Argument::Input(p) => format!("{{inputs.{p}}}"),
                Argument::Output(p) => format!("{{outputs.{p}}}"),
            })
            .collect();
        config::check_arguments(&arg_forms).map_err(|e| self.invalid(&e.field, e.message))?;
        let source_directory = self.check_entry_files()?;
        crate::models::check(&self.name, &self.models)?;
        self.compute
            .check()
            .map_err(|e| self.invalid(&format!("compute.{}", e.field), e.message))?;
        let mut inputs: Vec<InputPortBinding> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, s)| InputPortBinding::new(input_port(i), s.clone()))
            .collect();
        for (i, s) in self.side_inputs.iter().enumerate() {
            let name = match s.name() {
                n if !n.is_empty() => n.to_string(),
                _ => format!("side_input_{i}"),
            };
            inputs.push(InputPortBinding::side(name, s.clone()));
        }
        let outputs = self
            .output
            .iter()
            .map(|d| OutputPortBinding::new("output", d.clone()))
            .collect();
        let code = match (&source_directory, cfg.entry()) {
            (_, Entry::Rust { version, .. }) => Some(CodeIdentity::Version(version.clone())),
            (Some(d), _) => Some(CodeIdentity::SourceDirectory {
                dir: d.clone(),
                rules: crate::process::source_rules(),
            }),
            (None, _) => None,
        };
        let mut config = cfg.fingerprint_config();
        if let Value::Object(m) = &mut config {
            m.insert("format_version".into(), json!(FORMAT_VERSION));
            // What the step sees of its datasets beyond their files (present only when set,
            // so keys of steps without them do not change).
            if let Some(d) = super::datasets::fingerprint(&self.inputs) {
                m.insert("datasets".into(), d);
            }
        }
        let mut def = ModuleDef::builder("parallel_run/1");
        if let (Entry::Python { .. } | Entry::Command { .. }, Some(env)) =
            (cfg.entry(), cfg.python_environment().component())
        {
            def = def.computed(crate::environment::ENVIRONMENT_COMPONENT, env);
        }
        Ok(def
            .inputs(inputs)
            .outputs(outputs)
            .allow_reuse(self.allow_reuse)
            .arguments(self.arguments.clone())
            .config(config)
            .code(code)
            .environment_variables(cfg.environment_variables().clone())
            .env_passthrough(cfg.env_passthrough().to_vec())
            .run_after(self.run_after.clone())
            .models(self.models.clone())
            .compute(self.compute.declared())
            .build())
    }

    fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
        super::execute::execute(self, ctx)
    }
}
