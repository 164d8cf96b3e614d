//! `ModuleDef`: what a step declares about itself when it is added to a graph. The engine builds
//! edges, fingerprints and run directories from it and knows nothing else about the step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::data::{InputPortBinding, OutputPortBinding, PipelineParameter};

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
}

/// Azure's `create_module_def(execution_type, input_bindings, output_bindings, param_defs,
/// create_sequencing_ports, allow_reuse, version, arguments)`: a `ModuleDef` with an empty
/// config, no code identity beyond `version`, and no environment variables.
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
    ModuleDef {
        execution_type: execution_type.into(),
        inputs: input_bindings,
        outputs: output_bindings,
        param_defs,
        create_sequencing_ports,
        allow_reuse,
        code: version.clone().map(CodeIdentity::Version),
        version,
        arguments,
        config: Value::Object(Default::default()),
        environment_variables: BTreeMap::new(),
        env_passthrough: Vec::new(),
        run_after: Vec::new(),
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
