//! `CommandStep`: runs one command (an argv list, never a shell string) once, the role of
//! Azure's `PythonScriptStep`.

use fs_err::File;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use stepgraph_engine::{
    value_to_arg, BuildContext, BuildError, CodeIdentity, DataSource, ErrorContext, Model,
    ModuleDef, Step, StepContext, StepCounts, StepError,
};

use crate::placeholders;
use crate::ports::{env_methods, port_methods, StepPorts};

/// Runs `command` once with `{inputs.NAME}`, `{outputs.NAME}` and `{params.NAME}` replaced by
/// the input path, output folder and parameter value. The working folder is a copy of
/// `source_directory` when set (its snapshot is part of the fingerprint), else a scratch folder.
/// Standard output and error go to `logs/user/stdout.txt` and `logs/user/stderr.txt`.
/// With a Slurm [`compute`](CommandStep::compute) target the command runs as a batch job
/// with the same environment (plus Slurm's `SLURM_*` variables), folder and log files.
/// The command gets a defined environment (see the README's "Step environment"): PATH, HOME,
/// USER, LANG, LC_*, TZ and TMPDIR from the caller, the names listed with
/// [`CommandStep::env_passthrough`], and the variables set with [`CommandStep::env`].
#[derive(Debug, Clone)]
pub struct CommandStep {
    name: String,
    command: Vec<String>,
    source_directory: Option<PathBuf>,
    ports: StepPorts,
    environment_variables: BTreeMap<String, String>,
    env_passthrough: Vec<String>,
    models: Vec<Model>,
    environment: Option<crate::environment::Environment>,
    /// The environment as loaded (its requirements file read) when the step was declared:
    /// what its key covers is what `execute` builds, even if the file changes meanwhile.
    loaded_environment: std::sync::OnceLock<crate::environment::Environment>,
    /// Where the command runs (not fingerprinted).
    compute: crate::Compute,
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
            ports: StepPorts::default(),
            environment_variables: BTreeMap::new(),
            env_passthrough: Vec::new(),
            models: Vec::new(),
            environment: None,
            loaded_environment: Default::default(),
            compute: crate::Compute::Local,
        }
    }

    /// Run the command on `compute` (Azure's `compute_target`): locally (the default) or as a
    /// Slurm job (`sbatch`, with the target's settings), with the same environment, working
    /// folder and log files. Not part of the fingerprint: a step that ran locally is reused
    /// on Slurm and back.
    pub fn compute(mut self, compute: impl Into<crate::Compute>) -> Self {
        self.compute = compute.into();
        self
    }

    /// Where the command runs.
    pub fn compute_target(&self) -> &crate::Compute {
        &self.compute
    }

    /// Run the command in a Python environment: with requirements, stepgraph builds it (once
    /// per content hash, into the store) and puts its `bin/` first on PATH (`python3` and
    /// its scripts), with `VIRTUAL_ENV` set. Its hash and freeze are the `environment`
    /// fingerprint component.
    pub fn environment(mut self, env: impl Into<crate::environment::Environment>) -> Self {
        self.environment = Some(env.into());
        self.loaded_environment = Default::default();
        self
    }

    /// Read model `model`: its content is an input of the step (fingerprint component
    /// `models.<name>`), laid out read-only under `AZUREML_MODEL_DIR`, and the `azureml` shim
    /// is put on the command's `PYTHONPATH` so that a Python script's
    /// `Model.get_model_path(name)` finds it.
    pub fn model(mut self, model: Model) -> Self {
        self.models.push(model);
        self
    }

    /// The folder holding the step's scripts; hashed into the fingerprint, used as working folder.
    pub fn source_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.source_directory = Some(dir.into());
        self
    }

    port_methods!();
    env_methods!(env, environment_variables, env_passthrough, "the command");

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
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(self.invalid("command", "must not contain NUL characters"));
        }
        let mut used_params = Vec::new();
        for arg in &self.command {
            for p in placeholders::find(arg) {
                let (what, known) = match p.namespace.as_str() {
                    "inputs" => ("input", self.ports.inputs.iter().any(|i| i.name == p.name)),
                    "outputs" => (
                        "output",
                        self.ports.outputs.iter().any(|o| o.name == p.name),
                    ),
                    _ => {
                        let param = self.ports.params.iter().find(|q| q.name == p.name);
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
        for (field, names) in [
            (
                "env_passthrough",
                self.env_passthrough.iter().collect::<Vec<_>>(),
            ),
            (
                "environment_variables",
                self.environment_variables.keys().collect(),
            ),
        ] {
            if let Some(bad) = names
                .into_iter()
                .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
            {
                return Err(self.invalid(field, format!("invalid variable name {bad:?}")));
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
        crate::models::check(&self.name, &self.models)?;
        self.compute
            .check()
            .map_err(|e| self.invalid(&format!("compute.{}", e.field), e.message))?;
        let mut params = self.ports.params.clone();
        for p in used_params {
            if !params.iter().any(|q| q.name == p.name) {
                params.push(p);
            }
        }
        let mut env_passthrough = self.env_passthrough.clone();
        env_passthrough.sort();
        env_passthrough.dedup();
        let mut def = ModuleDef::builder("command/1");
        let mut config = json!({ "command": self.command });
        if let Some(env) = &self.environment {
            let mut env = env.clone();
            env.load()
                .map_err(|e| self.invalid("environment", e.to_string()))?;
            config["environment"] = env.config_value();
            if let Some(c) = env.component() {
                def = def.computed(crate::environment::ENVIRONMENT_COMPONENT, c);
            }
            // Kept for `execute`; a step object is declared once per pipeline it is built into.
            let _ = self.loaded_environment.set(env);
        }
        Ok(self
            .ports
            .declare(def, params)
            .config(config)
            .code(
                self.source_directory
                    .clone()
                    .map(|dir| CodeIdentity::SourceDirectory {
                        dir,
                        rules: crate::process::source_rules(),
                    }),
            )
            .environment_variables(self.environment_variables.clone())
            .env_passthrough(env_passthrough)
            .models(self.models.clone())
            .compute(self.compute.declared())
            .build())
    }

    fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
        let input_paths = self.input_paths(ctx)?;
        // Paths are passed as their exact bytes, never converted lossily.
        let argv: Vec<OsString> = self
            .command
            .iter()
            .map(|a| {
                substitute_os(a, |ns, name| match ns {
                    "inputs" => input_paths.get(name).map(|p| p.clone().into_os_string()),
                    "outputs" => ctx.outputs.get(name).map(|p| p.clone().into_os_string()),
                    _ => ctx.params.get(name).map(|v| value_to_arg(v).into()),
                })
            })
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(StepError::new("the command is empty"));
        };
        let user_logs = ctx.log_dir.join("user");
        fs_err::create_dir_all(&user_logs)?;
        let stdout_path = user_logs.join("stdout.txt");
        let stderr_path = user_logs.join("stderr.txt");
        let stdout = File::create(&stdout_path)?;
        let stderr = File::create(&stderr_path)?;
        // The command runs in a copy of its source folder, as Azure runs a snapshot: what it
        // writes there never reaches the user's folder or the hashed snapshot.
        let cwd = match &self.source_directory {
            Some(dir) => {
                let copy = ctx.work_dir.join("source");
                crate::process::copy_source(dir, &copy, ctx.store_dir()).map_err(|e| {
                    StepError::with_source(format!("copying source_directory {}", dir.display()), e)
                })?;
                copy
            }
            None => ctx.work_dir.to_path_buf(),
        };
        // The environment was built when the step was resolved; this finds it.
        let built = match &self.environment {
            Some(env) => {
                let env = match self.loaded_environment.get() {
                    Some(loaded) => loaded.clone(),
                    None => {
                        let mut env = env.clone();
                        env.load().context("environment")?;
                        env
                    }
                };
                env.ensure_built(&ctx.envs_dir()).context("environment")?
            }
            None => None,
        };
        // Marks the command's processes; dropping it kills whatever the command left behind.
        let tree = crate::process::ProcessTree::new();
        let mut env = crate::process::step_env(
            &self.env_passthrough,
            &self.environment_variables,
            tree.token(),
        );
        if let Some(b) = &built {
            b.set_vars(&mut env);
        }
        env.extend(self.shim_env(ctx, &input_paths, env.get(OsStr::new("PYTHONPATH")))?);
        if let crate::Compute::Slurm(compute) = &self.compute {
            // The same command line, environment, folder and log files, as a batch job.
            env.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
            for (k, v) in ctx.params {
                env.insert(format!("AML_PARAMETER_{k}").into(), value_to_arg(v).into());
            }
            drop((stdout, stderr));
            let job = crate::slurm_command::BatchCommand {
                argv: &argv,
                cwd: &cwd,
                env: &env,
                stdout: &stdout_path,
                stderr: &stderr_path,
            };
            let result = crate::slurm_command::run(compute, ctx, &job);
            drop(tree);
            return result.map(|()| StepCounts::default());
        }
        let mut cmd = Command::new(program);
        cmd.args(args)
            .process_group(0)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(stdout.into_file())
            .stderr(stderr.into_file())
            .env_clear()
            .envs(env)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for (k, v) in ctx.params {
            cmd.env(format!("AML_PARAMETER_{k}"), value_to_arg(v));
        }
        let mut child =
            crate::process::spawn(&mut cmd).with_context(|| format!("cannot start {program:?}"))?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if !ctx.cancel.is_cancelled() => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => {
                    crate::process::kill_tree(&mut child);
                    let _ = child.wait();
                    crate::process::reaped(&child);
                    return Err(match other {
                        Err(e) => StepError::with_source(format!("waiting for {program:?}"), e),
                        _ => StepError::new("cancelled"),
                    });
                }
            }
        };
        crate::process::reaped(&child);
        drop(tree);
        if !status.success() {
            let tail = crate::process::file_excerpt(&stderr_path);
            let what = match status.code() {
                Some(c) => format!("exit code {c}"),
                None => "a signal".to_string(),
            };
            return Err(StepError::new(format!(
                "command {program:?} failed with {what}{}",
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

impl CommandStep {
    /// What the `azureml` shim reads (`crate::models`), and for a step that declares models the
    /// shim itself, written into the work folder and put first on `PYTHONPATH` (before
    /// `pythonpath`, the one the step's environment gives).
    fn shim_env(
        &self,
        ctx: &StepContext<'_>,
        input_paths: &BTreeMap<String, PathBuf>,
        pythonpath: Option<&OsString>,
    ) -> Result<BTreeMap<OsString, OsString>, StepError> {
        let mut env = crate::models::environment(
            ctx.step,
            &ctx.metrics_file(),
            ctx.work_dir,
            ctx.models,
            input_paths,
        )?;
        if !self.models.is_empty() {
            let shim = ctx.work_dir.join(".azureml-shim");
            crate::parallel_run::install_azureml(&shim).context("writing the azureml shim")?;
            let mut path = shim.into_os_string();
            if let Some(rest) = pythonpath.filter(|p| !p.is_empty()) {
                path.push(":");
                path.push(rest);
            }
            env.insert("PYTHONPATH".into(), path);
        }
        Ok(env)
    }

    /// The path each `{inputs.NAME}` stands for. A file (or tabular) dataset whose path is a
    /// folder becomes a folder in the step's work folder holding exactly the dataset's listed
    /// files (symbolic links to them, relative layout and exact byte names kept): what the
    /// command sees is what is hashed into its key, never the files a `pattern` (or a store
    /// inside the folder) leaves out. Upstream data (already exactly its output) and data
    /// references are passed as they are.
    fn input_paths(&self, ctx: &StepContext<'_>) -> Result<BTreeMap<String, PathBuf>, StepError> {
        let mut paths = BTreeMap::new();
        for (name, input) in ctx.inputs {
            let is_dataset = self.ports.inputs.iter().any(|b| {
                b.name == *name && matches!(b.source, DataSource::Files(_) | DataSource::Tabular(_))
            });
            if !is_dataset || !input.path.is_dir() {
                paths.insert(name.clone(), input.path.clone());
                continue;
            }
            let view = ctx.work_dir.join("inputs").join(name);
            link_listed_files(&input.path, input.files(), &view).map_err(|e| {
                StepError::with_source(
                    format!("preparing input {name} ({})", input.path.display()),
                    e,
                )
            })?;
            paths.insert(name.clone(), view);
        }
        Ok(paths)
    }
}

/// Fill `view` (made afresh) with a symbolic link to each of `files`, listed under `root`, at
/// its relative path.
fn link_listed_files(
    root: &Path,
    files: &[stepgraph_engine::DatasetFile],
    view: &Path,
) -> Result<(), StepError> {
    if view.symlink_metadata().is_ok() {
        fs_err::remove_dir_all(view)?;
    }
    fs_err::create_dir_all(view)?;
    for f in files {
        let relative = match f.path.strip_prefix(root) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
            _ => stepgraph_engine::relpath::decode(&f.relative)
                .map_err(|e| StepError::with_source("", e))?,
        };
        let target = std::path::absolute(&f.path)
            .map_err(|e| StepError::with_source(format!("locating {}", f.path.display()), e))?;
        let link = view.join(&relative);
        if let Some(parent) = link.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(())
}

/// [`placeholders::substitute`] producing an `OsString`, so replacement values (paths) keep
/// their exact bytes.
fn substitute_os(s: &str, mut f: impl FnMut(&str, &str) -> Option<OsString>) -> OsString {
    // Each replaced placeholder becomes a NUL-delimited index (a NUL can never be part of an
    // argument), then the pieces are joined with the values.
    let mut values: Vec<OsString> = Vec::new();
    let marked = placeholders::substitute(s, |ns, name| {
        let v = f(ns, name)?;
        values.push(v);
        Some(format!("\0{}\0", values.len() - 1))
    });
    let mut out = OsString::new();
    for (i, piece) in marked.split('\0').enumerate() {
        if i % 2 == 1 {
            if let Some(v) = piece.parse::<usize>().ok().and_then(|n| values.get(n)) {
                out.push(v);
                continue;
            }
        }
        out.push(piece);
    }
    out
}
