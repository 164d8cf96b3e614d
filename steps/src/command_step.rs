//! `CommandStep`: runs one command (an argv list, never a shell string) once, the role of
//! Azure's `PythonScriptStep`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use stepgraph_engine::{
    value_to_arg, BuildContext, BuildError, CodeIdentity, DataSource, InputPortBinding, ModuleDef,
    OutputPortBinding, PipelineData, PipelineParameter, Step, StepContext, StepCounts, StepError,
};

use crate::placeholders;

/// Runs `command` once with `{inputs.NAME}`, `{outputs.NAME}` and `{params.NAME}` replaced by
/// the input path, output folder and parameter value. The working folder is a copy of
/// `source_directory` when set (its snapshot is part of the fingerprint), else a scratch folder.
/// Standard output and error go to `logs/user/stdout.txt` and `logs/user/stderr.txt`.
#[derive(Debug, Clone)]
pub struct CommandStep {
    name: String,
    command: Vec<String>,
    source_directory: Option<PathBuf>,
    inputs: Vec<InputPortBinding>,
    outputs: Vec<OutputPortBinding>,
    params: Vec<PipelineParameter>,
    environment_variables: BTreeMap<String, String>,
    allow_reuse: bool,
    run_after: Vec<String>,
}

impl CommandStep {
    /// A step `name` running `command` (program first).
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        command: impl IntoIterator<Item = S>,
    ) -> Self {
        CommandStep {
            name: name.into(),
            command: command.into_iter().map(Into::into).collect(),
            source_directory: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Vec::new(),
            environment_variables: BTreeMap::new(),
            allow_reuse: true,
            run_after: Vec::new(),
        }
    }

    /// The folder holding the step's scripts; hashed into the fingerprint, used as working folder.
    pub fn source_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.source_directory = Some(dir.into());
        self
    }

    /// Read `source` on input `port` (`{inputs.port}` in the command).
    pub fn input(mut self, port: impl Into<String>, source: impl Into<DataSource>) -> Self {
        self.inputs.push(InputPortBinding::new(port, source));
        self
    }

    /// Produce `data` on output `port` (`{outputs.port}` in the command is its folder).
    pub fn output(mut self, port: impl Into<String>, data: PipelineData) -> Self {
        self.outputs.push(OutputPortBinding::new(port, data));
        self
    }

    /// Declare pipeline parameter `p` (`{params.name}` in the command).
    pub fn param(mut self, p: PipelineParameter) -> Self {
        self.params.push(p);
        self
    }

    /// Set an environment variable for the command (part of the fingerprint).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment_variables.insert(key.into(), value.into());
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

    fn invalid(&self, field: &str, message: impl Into<String>) -> BuildError {
        BuildError::InvalidConfig {
            step: self.name.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Step for CommandStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn create_module_def(&self, _context: &BuildContext) -> Result<ModuleDef, BuildError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(self.invalid("command", "must name a program"));
        }
        let mut used_params = Vec::new();
        for arg in &self.command {
            for p in placeholders::find(arg) {
                let (what, known) = match p.namespace.as_str() {
                    "inputs" => ("input", self.inputs.iter().any(|i| i.name == p.name)),
                    "outputs" => ("output", self.outputs.iter().any(|o| o.name == p.name)),
                    _ => {
                        let param = self.params.iter().find(|q| q.name == p.name);
                        if let Some(q) = param {
                            used_params.push(q.clone());
                        }
                        ("parameter", param.is_some())
                    }
                };
                if !known {
                    return Err(BuildError::UnknownReference {
                        step: self.name.clone(),
                        field: "command".into(),
                        what: what.into(),
                        name: p.name,
                    });
                }
            }
        }
        if let Some(dir) = &self.source_directory {
            if !dir.is_dir() {
                return Err(self.invalid(
                    "source_directory",
                    format!("{} is not a folder", dir.display()),
                ));
            }
        }
        let mut params = self.params.clone();
        for p in used_params {
            if !params.iter().any(|q| q.name == p.name) {
                params.push(p);
            }
        }
        Ok(ModuleDef {
            execution_type: "command/1".into(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            param_defs: params,
            create_sequencing_ports: true,
            allow_reuse: self.allow_reuse,
            version: None,
            arguments: Vec::new(),
            config: json!({ "command": self.command }),
            code: self
                .source_directory
                .clone()
                .map(CodeIdentity::SourceDirectory),
            environment_variables: self.environment_variables.clone(),
            run_after: self.run_after.clone(),
        })
    }

    fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
        let argv: Vec<String> = self
            .command
            .iter()
            .map(|a| {
                placeholders::substitute(a, |ns, name| match ns {
                    "inputs" => ctx.inputs.get(name).map(|i| i.path.display().to_string()),
                    "outputs" => ctx.outputs.get(name).map(|p| p.display().to_string()),
                    _ => ctx.params.get(name).map(value_to_arg),
                })
            })
            .collect();
        let user_logs = ctx.log_dir.join("user");
        std::fs::create_dir_all(&user_logs)?;
        let stdout_path = user_logs.join("stdout.txt");
        let stderr_path = user_logs.join("stderr.txt");
        let stdout = File::create(&stdout_path)?;
        let stderr = File::create(&stderr_path)?;
        // The command runs in a copy of its source folder, as Azure runs a snapshot: what it
        // writes there never reaches the user's folder or the hashed snapshot.
        let cwd = match &self.source_directory {
            Some(dir) => {
                let copy = ctx.work_dir.join("source");
                crate::process::copy_source(dir, &copy, ctx.store.root()).map_err(|e| {
                    StepError::new(format!("copying source_directory {}: {e}", dir.display()))
                })?;
                copy
            }
            None => ctx.work_dir.to_path_buf(),
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .process_group(0)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(&self.environment_variables);
        for (k, v) in ctx.params {
            cmd.env(format!("AML_PARAMETER_{k}"), value_to_arg(v));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| StepError::new(format!("cannot start {:?}: {e}", argv[0])))?;
        let status = loop {
            match child.try_wait()? {
                Some(status) => break status,
                None if ctx.cancel.is_cancelled() => {
                    crate::process::kill_tree(&mut child);
                    let _ = child.wait();
                    return Err(StepError::new("cancelled"));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if !status.success() {
            let tail = tail_of(&stderr_path, 4096);
            let what = match status.code() {
                Some(c) => format!("exit code {c}"),
                None => "a signal".to_string(),
            };
            return Err(StepError::new(format!(
                "command {:?} failed with {what}{}",
                argv[0],
                if tail.trim().is_empty() {
                    String::new()
                } else {
                    format!(":\n{}", tail.trim_end())
                }
            )));
        }
        Ok(StepCounts::default())
    }
}

/// The last `max` bytes of a file, as text.
fn tail_of(path: &std::path::Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
