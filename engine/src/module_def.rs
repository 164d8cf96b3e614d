//! `ModuleDef`: what a step declares about itself when it is added to a graph. The engine builds
//! edges, fingerprints and run directories from it and knows nothing else about the step.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::data::{InputPortBinding, Model, OutputPortBinding, PipelineParameter};

/// One command-line argument of a step, before resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum Argument {
    /// A literal string.
    Literal(String),
    /// The value of a pipeline parameter.
    Param(PipelineParameter),
    /// The path of an input port.
    Input(String),
    /// The path of an output port.
    Output(String),
}

impl From<&str> for Argument {
    fn from(s: &str) -> Self {
        Argument::Literal(s.to_string())
    }
}
impl From<String> for Argument {
    fn from(s: String) -> Self {
        Argument::Literal(s)
    }
}
impl From<PipelineParameter> for Argument {
    fn from(p: PipelineParameter) -> Self {
        Argument::Param(p)
    }
}

/// Which files of a source folder are not code. The step that owns the folder says: the engine
/// knows no language's conventions (a Python step skips `__pycache__`, an Azure step honours
/// `.amlignore`). Stores inside the folder are always skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceRules {
    /// Names of gitignore-style files honoured in every folder (`.gitignore`, `.amlignore`).
    pub ignore_files: Vec<String>,
    /// Globs on a file or folder *name* (`__pycache__`, `*.pyc`) that are never code.
    pub skip: Vec<String>,
}

/// What identifies a step's code in its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeIdentity {
    /// A folder whose snapshot (sorted relative paths and contents, less what `rules` leave
    /// out) is hashed.
    SourceDirectory {
        /// The folder.
        dir: PathBuf,
        /// What in it is not code.
        rules: SourceRules,
    },
    /// A declared version string (Rust closures and in-process entries).
    Version(String),
}

/// Everything the engine needs to know about a step.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleDef {
    /// The step type and its format version, e.g. `parallel_run/1`.
    pub execution_type: String,
    /// Input ports and what they read.
    pub inputs: Vec<InputPortBinding>,
    /// Output ports and the data they produce.
    pub outputs: Vec<OutputPortBinding>,
    /// Pipeline parameters the step reads (besides those in `arguments`).
    pub param_defs: Vec<PipelineParameter>,
    /// Whether the step may be ordered with `run_after` (Azure's sequencing ports). On by default.
    pub create_sequencing_ports: bool,
    /// Reuse a cached output when the fingerprint matches.
    pub allow_reuse: bool,
    /// A version string that is part of the fingerprint.
    pub version: Option<String>,
    /// Command-line arguments.
    pub arguments: Vec<Argument>,
    /// Settings that can change results, as JSON; hashed canonically (sorted keys).
    /// Pure resource knobs (worker counts, logging) must be left out.
    pub config: Value,
    /// The step's code.
    pub code: Option<CodeIdentity>,
    /// Environment variables the step's processes get (part of the fingerprint).
    pub environment_variables: BTreeMap<String, String>,
    /// Names of the caller's environment variables passed through to the step's processes
    /// (`env_passthrough`). Their values are part of the fingerprint as a hash
    /// ([`passthrough_digest`]), never in clear.
    pub env_passthrough: Vec<String>,
    /// Steps that must finish before this one, without a data dependency.
    pub run_after: Vec<String>,
    /// Models the step reads: each is hashed into the fingerprint (`models.<name>`) and laid
    /// out read-only for the step (see [`Model`]).
    pub models: Vec<Model>,
    /// Fingerprint components the step computes when the node is resolved (e.g. a Python
    /// environment built into the store: `environment`), by component name.
    pub computed: BTreeMap<String, SharedComponent>,
    /// Where the step runs, as the step describes it (e.g. `{"type": "slurm", ...}`); `None`
    /// for this machine. A resource knob: never part of the fingerprint.
    pub compute: Option<Value>,
}

/// A fingerprint component a step computes itself when its node is resolved, from things
/// outside the graph (a Python environment built into the store's `envs/`).
pub trait ComputedComponent: Send + Sync + fmt::Debug {
    /// The component's value. `envs_dir` is the store's folder of environments (`envs/`,
    /// created by the component when it builds one); `build` is false while
    /// planning (`plan`, `status`, `explain`: stay cheap, build nothing) and true when the
    /// step is about to run (build what the value needs). A value that names a folder of
    /// `envs/` as `{"env_hash": "<hex>"}` keeps it from `cache gc` while an entry holds it.
    ///
    /// # Errors
    /// Any error, boxed (a `String` or `&str` converts with `?` or `.into()`); the engine
    /// wraps it in [`EngineError::Component`](crate::EngineError::Component), which names the
    /// step and the component and keeps it as its source.
    fn compute(
        &self,
        envs_dir: &Path,
        build: bool,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync + 'static>>;
}

/// A shared [`ComputedComponent`] (compared by identity).
#[derive(Debug, Clone)]
pub struct SharedComponent(pub Arc<dyn ComputedComponent>);

impl PartialEq for SharedComponent {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Azure's `create_module_def(execution_type, input_bindings, output_bindings, param_defs,
/// create_sequencing_ports, allow_reuse, version, arguments)`, kept with Azure's positional
/// shape for steps ported from it: a `ModuleDef` with an empty config, no code identity beyond
/// `version`, and no environment variables. [`ModuleDef::builder`] is the Rust form.
#[allow(clippy::too_many_arguments)]
pub fn create_module_def(
    execution_type: impl Into<String>,
    input_bindings: Vec<InputPortBinding>,
    output_bindings: Vec<OutputPortBinding>,
    param_defs: Vec<PipelineParameter>,
    create_sequencing_ports: bool,
    allow_reuse: bool,
    version: Option<String>,
    arguments: Vec<Argument>,
) -> ModuleDef {
    let mut b = ModuleDef::builder(execution_type)
        .inputs(input_bindings)
        .outputs(output_bindings)
        .param_defs(param_defs)
        .sequencing_ports(create_sequencing_ports)
        .allow_reuse(allow_reuse)
        .arguments(arguments);
    if let Some(v) = version {
        b = b.version(v);
    }
    b.build()
}

impl ModuleDef {
    /// A builder for a step of type `execution_type` (e.g. `parallel_run/1`): no ports, reuse
    /// allowed, sequencing ports on, an empty config, no code identity.
    pub fn builder(execution_type: impl Into<String>) -> ModuleDefBuilder {
        ModuleDefBuilder(ModuleDef {
            execution_type: execution_type.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            param_defs: Vec::new(),
            create_sequencing_ports: true,
            allow_reuse: true,
            version: None,
            arguments: Vec::new(),
            config: Value::Object(Default::default()),
            code: None,
            environment_variables: BTreeMap::new(),
            env_passthrough: Vec::new(),
            run_after: Vec::new(),
            models: Vec::new(),
            computed: BTreeMap::new(),
            compute: None,
        })
    }
}

/// Builds a [`ModuleDef`] field by field ([`ModuleDef::builder`]).
#[derive(Debug, Clone)]
#[must_use]
pub struct ModuleDefBuilder(ModuleDef);

impl ModuleDefBuilder {
    /// The input port bindings.
    pub fn inputs(mut self, inputs: Vec<InputPortBinding>) -> Self {
        self.0.inputs = inputs;
        self
    }

    /// The output port bindings.
    pub fn outputs(mut self, outputs: Vec<OutputPortBinding>) -> Self {
        self.0.outputs = outputs;
        self
    }

    /// Pipeline parameters the step reads besides those in its arguments.
    pub fn param_defs(mut self, params: Vec<PipelineParameter>) -> Self {
        self.0.param_defs = params;
        self
    }

    /// Whether the step has Azure's sequencing ports (may take part in `run_after`).
    pub fn sequencing_ports(mut self, on: bool) -> Self {
        self.0.create_sequencing_ports = on;
        self
    }

    /// Whether a cached output may be reused.
    pub fn allow_reuse(mut self, allow: bool) -> Self {
        self.0.allow_reuse = allow;
        self
    }

    /// A declared version; without other code identity it is the code's identity.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        let v = version.into();
        if self.0.code.is_none() {
            self.0.code = Some(CodeIdentity::Version(v.clone()));
        }
        self.0.version = Some(v);
        self
    }

    /// The command-line arguments.
    pub fn arguments(mut self, arguments: Vec<Argument>) -> Self {
        self.0.arguments = arguments;
        self
    }

    /// Settings that can change results (resource knobs left out).
    pub fn config(mut self, config: Value) -> Self {
        self.0.config = config;
        self
    }

    /// What identifies the step's code.
    pub fn code(mut self, code: Option<CodeIdentity>) -> Self {
        self.0.code = code;
        self
    }

    /// Environment variables of the step's processes.
    pub fn environment_variables(mut self, vars: BTreeMap<String, String>) -> Self {
        self.0.environment_variables = vars;
        self
    }

    /// Names of the caller's variables passed through to the step's processes.
    pub fn env_passthrough(mut self, names: Vec<String>) -> Self {
        self.0.env_passthrough = names;
        self
    }

    /// Steps that must finish first.
    pub fn run_after(mut self, steps: Vec<String>) -> Self {
        self.0.run_after = steps;
        self
    }

    /// The models the step reads.
    pub fn models(mut self, models: Vec<Model>) -> Self {
        self.0.models = models;
        self
    }

    /// A fingerprint component the step computes when its node is resolved.
    pub fn computed(mut self, name: impl Into<String>, c: Arc<dyn ComputedComponent>) -> Self {
        self.0.computed.insert(name.into(), SharedComponent(c));
        self
    }

    /// Where the step runs (see [`ModuleDef::compute`]); not fingerprinted.
    pub fn compute(mut self, compute: Option<Value>) -> Self {
        self.0.compute = compute;
        self
    }

    /// The finished declaration.
    pub fn build(self) -> ModuleDef {
        self.0
    }
}

/// What the fingerprint's `env` component records for a pass-through variable `name`: a short
/// BLAKE3 hash of the caller's current value (`passthrough blake3:<16 hex>`), or
/// `passthrough (unset)`. A changed value reruns the step; the value itself (often a secret)
/// never reaches the store.
pub fn passthrough_digest(name: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    match std::env::var_os(name) {
        Some(v) => format!(
            "passthrough blake3:{}",
            &blake3::hash(v.as_bytes()).to_hex()[..16]
        ),
        None => "passthrough (unset)".to_string(),
    }
}

impl ModuleDef {
    /// Every pipeline parameter the step reads: `param_defs` and those used in `arguments`.
    pub fn parameters(&self) -> Vec<&PipelineParameter> {
        let mut out: Vec<&PipelineParameter> = self.param_defs.iter().collect();
        for a in &self.arguments {
            if let Argument::Param(p) = a {
                if !out.iter().any(|q| q.name == p.name) {
                    out.push(p);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_azure_positional_form_is_the_builder_s_shorthand() {
        let positional = create_module_def(
            "x/1",
            vec![],
            vec![],
            vec![],
            false,
            false,
            Some("v2".into()),
            vec![],
        );
        let built = ModuleDef::builder("x/1")
            .sequencing_ports(false)
            .allow_reuse(false)
            .version("v2")
            .build();
        assert_eq!(positional, built);
        assert_eq!(built.code, Some(CodeIdentity::Version("v2".into())));
        let defaults = ModuleDef::builder("x/1").build();
        assert!(
            defaults.allow_reuse && defaults.create_sequencing_ports && defaults.code.is_none()
        );
    }

    #[test]
    fn passthrough_digest_hashes_the_value_and_never_shows_it() {
        assert_eq!(
            passthrough_digest("STEPGRAPH_SURELY_NOT_SET_9F2"),
            "passthrough (unset)"
        );
        let path = std::env::var("PATH").unwrap_or_default();
        let d = passthrough_digest("PATH");
        assert!(d.starts_with("passthrough blake3:"), "{d}");
        assert_eq!(d.len(), "passthrough blake3:".len() + 16);
        assert!(path.is_empty() || !d.contains(&path));
    }
}
