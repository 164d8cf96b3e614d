//! `ParallelRunStep`: Azure ML's step of the same name, run locally. Inputs are split into
//! deterministic mini-batches, processed by `process_count_per_node × node_count` workers
//! running an entry script (`init()` once per worker, `run(mini_batch)` per mini-batch), with
//! retries, timeouts, failure limits, gathered outputs and resume after a crash.

pub mod config;
mod dispatch;
pub mod entry;
mod gather;
mod harness;
pub mod partition;
mod worker;
mod writes;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use stepgraph_engine::{
    Argument, BuildContext, BuildError, CodeIdentity, DataSource, InputKind, InputPortBinding,
    ModuleDef, OutputPortBinding, PipelineData, Step, StepContext, StepCounts, StepError,
};

pub use config::{
    AppendRowFormat, ConfigError, Entry, OutputAction, ParallelRunConfig, ParallelRunConfigBuilder,
};
pub use dispatch::COMMIT_INTERVAL;
pub use entry::{
    EntryContext, EntryError, EntryFactory, EntryScript, MiniBatch, MiniBatchData, Row,
};
use partition::{MiniBatchSize, MiniBatchSpec, TabularSource};
use worker::{KillHandle, ProcessSpec, ProcessWorker, RustWorker, Worker};

/// The longest line, in bytes without its newline, a worker may send or receive in the
/// worker protocol (64 MiB). A longer line fails the try with "worker protocol line over
/// 67108864 bytes"; the engine never buffers more than this of one line. The Python harness
/// also raises `csv.field_size_limit` to it.
pub const MAX_PROTOCOL_LINE: usize = 64 << 20;

/// Version of this step type's behaviour; part of every ParallelRunStep fingerprint.
const FORMAT_VERSION: u32 = 1;

/// What this step counts its work in (`StepCounts::unit`, progress events).
const UNIT: &str = "mini-batch";

/// Azure's `ParallelRunStep`.
#[derive(Debug, Clone)]
pub struct ParallelRunStep {
    name: String,
    config: ParallelRunConfig,
    inputs: Vec<DataSource>,
    output: Option<PipelineData>,
    side_inputs: Vec<DataSource>,
    arguments: Vec<Argument>,
    allow_reuse: bool,
    run_after: Vec<String>,
}

impl ParallelRunStep {
    /// Azure's constructor: `ParallelRunStep(name, parallel_run_config, inputs, output,
    /// side_inputs, arguments, allow_reuse)`.
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
        }
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

    fn output_port(&self) -> Option<&str> {
        self.output.as_ref().map(|_| "output")
    }
}

/// Port names: `input`, `input_1`, ... for inputs (Azure names them after the datasets; ports
/// must be unique, names need not be).
fn input_port(i: usize) -> String {
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
        if let Some(s) = &cfg.mini_batch_size {
            let parsed = if tabular {
                MiniBatchSize::parse_bytes(s)
            } else {
                MiniBatchSize::parse_count(s)
            };
            if let Err(e) = parsed {
                return Err(self.invalid("mini_batch_size", e.to_string()));
            }
        }
        if cfg.partition_keys.is_some() && !tabular {
            return Err(self.invalid("partition_keys", "only works with tabular inputs"));
        }
        if self.output.is_none() && cfg.output_action == OutputAction::AppendRow {
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
        let source_directory = match (&cfg.source_directory, &cfg.entry) {
            (Some(d), _) => {
                if !d.is_dir() {
                    return Err(self.invalid(
                        "source_directory",
                        format!("{} is not a folder", d.display()),
                    ));
                }
                Some(d.clone())
            }
            (None, _) => None,
        };
        match &cfg.entry {
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
        let code = match (&source_directory, &cfg.entry) {
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
        }
        Ok(ModuleDef::builder("parallel_run/1")
            .inputs(inputs)
            .outputs(outputs)
            .allow_reuse(self.allow_reuse)
            .arguments(self.arguments.clone())
            .config(config)
            .code(code)
            .environment_variables(cfg.environment_variables.clone())
            .env_passthrough(cfg.env_passthrough.clone())
            .run_after(self.run_after.clone())
            .build())
    }

    fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
        execute(self, ctx)
    }
}

/// Mini-batches of the step's main inputs, in deterministic order.
fn partition_inputs(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
) -> Result<Vec<MiniBatchSpec>, StepError> {
    let cfg = &step.config;
    let mut files = Vec::new();
    let mut sources = Vec::new();
    for i in 0..step.inputs.len() {
        let port = input_port(i);
        let Some(input) = ctx.inputs.get(&port) else {
            return Err(StepError::new(format!("input {port:?} was not resolved")));
        };
        match &input.kind {
            InputKind::Files(fs) => files.extend(fs.iter().map(|f| f.path.clone())),
            InputKind::Tabular { format, files: fs } => {
                let format = *format;
                sources.extend(
                    fs.iter()
                        .map(|f| TabularSource::new(f.path.clone(), format)),
                );
            }
        }
    }
    let err = |e: partition::PartitionError| StepError::new(format!("partitioning inputs: {e}"));
    if !sources.is_empty() {
        if let Some(keys) = &cfg.partition_keys {
            return partition::partition_by_keys(&sources, keys).map_err(err);
        }
        let bytes = MiniBatchSize::parse_bytes(cfg.mini_batch_size.as_deref().unwrap_or("1MB"))
            .map_err(err)?;
        return partition::partition_tabular(&sources, bytes).map_err(err);
    }
    let n =
        MiniBatchSize::parse_count(cfg.mini_batch_size.as_deref().unwrap_or("10")).map_err(err)?;
    Ok(partition::partition_files(&files, n))
}

fn execute(step: &ParallelRunStep, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
    let cfg = &step.config;
    let specs = partition_inputs(step, ctx)?;
    let sys_dir = ctx.log_dir.join("sys");
    let user_dir = ctx.log_dir.join("user");
    fs::create_dir_all(&sys_dir)?;
    fs::create_dir_all(&user_dir)?;
    let mut sys_log = BufWriter::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(sys_dir.join("events.txt"))?,
    );
    // Progress and staging belong to this step AND key (`StepContext::resume_log`).
    // Outputs written by entries go to a staging folder that survives a crash, so a resumed
    // run keeps the files of mini-batches committed before it.
    let staging = ctx.staging_dir();
    let output_dir = staging.join("output");
    if !ctx.resume {
        // --force / allow_reuse off / regenerate_outputs: recompute everything.
        ctx.clear_resume()?;
    }
    let mut log = ctx.resume_log()?;
    let committed = log.committed()?;
    if committed.is_empty() {
        // Nothing to resume: files left in staging by an earlier attempt must not leak in.
        match fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::create_dir_all(&output_dir)?;
    let resumed: BTreeMap<u64, Value> = committed
        .iter()
        .filter(|(i, _)| (**i as usize) < specs.len())
        .map(|(i, r)| (*i, r.meta.clone()))
        .collect();
    if !resumed.is_empty() {
        let msg = format!(
            "resuming: {} of {} mini-batches were committed by an earlier run",
            resumed.len(),
            specs.len()
        );
        let _ = writeln!(sys_log, "{msg}");
        ctx.message("info", msg);
    }
    let pending: Vec<u64> = (0..specs.len() as u64)
        .filter(|i| !resumed.contains_key(i))
        .collect();
    let _ = writeln!(
        sys_log,
        "{} mini-batches ({} pending), {} workers",
        specs.len(),
        pending.len(),
        cfg.workers()
    );

    let side_inputs: BTreeMap<String, PathBuf> = ctx
        .inputs
        .values()
        .filter(|i| i.role == stepgraph_engine::InputRole::Side)
        .map(|i| (i.port.clone(), i.path.clone()))
        .collect();
    // append_row output is gathered in order while mini-batches finish.
    let mut gatherer = None;
    if cfg.output_action == OutputAction::AppendRow && step.output.is_some() {
        let path = output_dir.join(&cfg.append_row_file_name);
        let mut g = gather::Gatherer::create(&path, cfg.append_row_format)?;
        for (i, rec) in &committed {
            if (*i as usize) < specs.len() {
                g.add(*i, gather::Piece::Committed(rec.clone()), &log)
                    .map_err(StepError::new)?;
            }
        }
        gatherer = Some(g);
    }
    // summary_only: notice files that several mini-batches write (rows duplicated on a redo).
    let watch = (cfg.output_action == OutputAction::SummaryOnly).then(|| {
        writes::WriteWatch::new(
            &output_dir,
            &staging.join("output-listing.bin"),
            !resumed.is_empty(),
        )
    });
    // Marks every process of this execution; dropping it kills whatever they left behind.
    let tree = crate::process::ProcessTree::new();
    let (workers, kill) = make_workers(step, ctx, &tree, &output_dir, &user_dir, &side_inputs)?;
    let outcome = dispatch::dispatch(
        ctx,
        cfg,
        &specs,
        pending,
        &resumed,
        workers,
        kill,
        &mut log,
        gatherer.as_mut(),
        watch.as_ref(),
        &mut sys_log,
    );
    // The workers have stopped (normally, on error or on abort): kill what they left behind.
    drop(tree);
    let outcome = outcome.map_err(StepError::new)?;
    let warnings = watch.map(|w| w.warnings()).unwrap_or_default();
    for w in &warnings {
        let _ = writeln!(sys_log, "{w}");
        ctx.message("warn", w.clone());
    }
    let _ = sys_log.flush();

    write_job_result(step, ctx, &outcome, specs.len(), &warnings)?;
    if let Some(reason) = &outcome.abort {
        let mut msg = format!("ParallelRunStep {:?} stopped: {reason}", step.name);
        for (i, f) in outcome.failed.iter().take(3).enumerate() {
            let head = format!(
                "\nmini-batch {} ({}) failed after {} tries:\n",
                f.index, f.items, f.tries
            );
            let full = indent(f.error.trim_end());
            // Each error is a bounded excerpt already; past the first, a long one shows only
            // its first line, so the message (kept in the db and events) stays small.
            let error = if i == 0 || msg.len() + full.len() <= STEP_ERROR_BYTES {
                full
            } else {
                indent(f.error.lines().next().unwrap_or_default())
            };
            msg.push_str(&head);
            msg.push_str(&error);
        }
        msg.push_str(&format!(
            "\n(see {})",
            ctx.log_dir.join("job_result.txt").display()
        ));
        return Err(StepError::new(msg));
    }

    if let Some(g) = gatherer {
        g.finish(specs.len() as u64).map_err(StepError::new)?;
    }
    // Forget the progress records first, then move the staged files out: a crash in between
    // costs a full rerun, never a resume that skips mini-batches whose files were moved.
    log.clear()?;
    let final_out = step.output_port().and_then(|p| ctx.outputs.get(p));
    if let Some(final_out) = final_out {
        move_contents(&output_dir, final_out)?;
    }
    let _ = ctx.clear_resume();
    Ok(outcome.counts)
}

/// Failed mini-batches whose whole (bounded) error job_result.txt shows; later ones show
/// only the first line.
const FULL_ERRORS_IN_JOB_RESULT: usize = 5;

/// Past the first failed mini-batch, errors are shown whole in a step's error message only
/// while it stays under this size.
const STEP_ERROR_BYTES: usize = 16 * 1024;

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Move every entry of `from` into `to` (same file system: renames).
fn move_contents(from: &Path, to: &Path) -> Result<(), StepError> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if fs::rename(e.path(), &dest).is_err() {
            // Across devices: copy files (folders are rare here; copy them file by file).
            crate::process::copy_tree(&e.path(), &dest, &|_| true)?;
        }
    }
    Ok(())
}

type Workers = (Vec<Box<dyn Worker>>, Vec<KillHandle>);

fn make_workers(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    tree: &crate::process::ProcessTree,
    output_dir: &Path,
    user_dir: &Path,
    side_inputs: &BTreeMap<String, PathBuf>,
) -> Result<Workers, StepError> {
    let cfg = &step.config;
    let n = cfg.workers();
    let mut workers: Vec<Box<dyn Worker>> = Vec::with_capacity(n);
    let mut kill = Vec::new();
    // Workers run in a copy of exactly the source folder's snapshot (the files hashed into the
    // fingerprint), as Azure runs an uploaded snapshot: the entry script, `sys.path`, the
    // working folder and relative programs all point into the copy.
    let source_dir = match (&cfg.source_directory, &cfg.entry) {
        (Some(dir), Entry::Python { .. } | Entry::Command { .. }) => {
            let copy = ctx.work_dir.join("source");
            if copy.exists() {
                fs::remove_dir_all(&copy)?;
            }
            crate::process::copy_source(dir, &copy, ctx.store_dir()).map_err(|e| {
                StepError::new(format!("copying source_directory {}: {e}", dir.display()))
            })?;
            copy.canonicalize().unwrap_or(copy)
        }
        _ => ctx.work_dir.to_path_buf(),
    };
    let (argv, entry_script) = match &cfg.entry {
        Entry::Rust { factory, .. } => {
            for w in 0..n {
                let ectx = EntryContext {
                    agent_name: format!("worker-{w}"),
                    output_dir: output_dir.to_path_buf(),
                    working_dir: ctx.work_dir.to_path_buf(),
                    side_inputs: side_inputs.clone(),
                    arguments: ctx.arguments.to_vec(),
                };
                workers.push(Box::new(RustWorker::new(factory.clone(), ectx)));
            }
            return Ok((workers, kill));
        }
        Entry::Python { entry_script } => {
            let harness = harness::install(&ctx.work_dir.join(".harness"))?;
            (
                vec![
                    OsString::from(&cfg.environment),
                    "-X".into(),
                    "faulthandler".into(),
                    harness.into_os_string(),
                ],
                worker::path_value(&source_dir.join(entry_script)),
            )
        }
        Entry::Command { entry_command } => {
            let mut argv: Vec<OsString> = entry_command.iter().map(OsString::from).collect();
            let Some(program) = entry_command.first() else {
                return Err(StepError::new("entry_command must name a program"));
            };
            let local = source_dir.join(program);
            // A program in the source folder (`worker.sh`, `./worker`) runs from there.
            let relative = program.starts_with("./") || program.starts_with("../");
            if relative || (!program.contains('/') && local.is_file()) {
                argv[0] = local.into_os_string();
            }
            // A script handed to an interpreter (`["python3", "worker.py"]`) is found in the
            // copy of the source folder, too.
            for (arg, given) in argv.iter_mut().zip(entry_command).skip(1) {
                let local = source_dir.join(given);
                if !given.starts_with('-') && Path::new(given).is_relative() && local.is_file() {
                    *arg = local.into_os_string();
                }
            }
            (argv, Value::String(String::new()))
        }
    };
    let mut env = crate::process::step_env(
        &cfg.env_passthrough,
        &cfg.environment_variables,
        tree.token(),
    );
    let mut set = |k: &str, v: OsString| {
        env.insert(OsString::from(k), v);
    };
    set("PYTHONDONTWRITEBYTECODE", "1".into());
    set("PYTHONUNBUFFERED", "1".into());
    set("AZUREML_BI_OUTPUT_PATH", output_dir.as_os_str().to_owned());
    for (k, v) in ctx.params {
        set(
            &format!("AML_PARAMETER_{k}"),
            stepgraph_engine::value_to_arg(v).into(),
        );
    }
    let collect_rows = cfg.output_action == OutputAction::AppendRow;
    for w in 0..n {
        let agent = format!("worker-{w}");
        let mut env = env.clone();
        env.insert("STEPGRAPH_WORKER_ID".into(), w.to_string().into());
        let init = json!({
            "type": "init",
            "protocol": 1,
            "entry_script": entry_script,
            "source_directory": worker::path_value(&source_dir),
            "arguments": ctx.arguments,
            "output_dir": worker::path_value(output_dir),
            "working_dir": worker::path_value(&source_dir),
            "log_dir": worker::path_value(user_dir),
            "agent_name": agent,
            "side_inputs": side_inputs.iter().map(|(k, v)| (k.clone(), worker::path_value(v))).collect::<BTreeMap<_, _>>(),
            "max_line_bytes": MAX_PROTOCOL_LINE,
            "append_row_format": cfg.append_row_format.as_str(),
            "collect_rows": collect_rows,
        });
        let worker = ProcessWorker::new(
            ProcessSpec {
                argv: argv.clone(),
                cwd: source_dir.clone(),
                env,
                log_path: user_dir.join(format!("{agent}.txt")),
                init,
                timeout: Duration::from_secs(cfg.run_invocation_timeout),
            },
            ctx.cancel.clone(),
        );
        kill.push(worker.kill_handle());
        workers.push(Box::new(worker));
    }
    Ok((workers, kill))
}

fn write_job_result(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    outcome: &dispatch::Outcome,
    total: usize,
    warnings: &[String],
) -> Result<(), StepError> {
    let cfg = &step.config;
    let c = &outcome.counts;
    let limit = |v: Option<i64>| match v {
        None | Some(-1) => "no limit".to_string(),
        Some(n) => n.to_string(),
    };
    let mut text = String::new();
    text.push_str(&format!("step: {}\nrun: {}\n", step.name, ctx.run_id));
    text.push_str(&format!(
        "status: {}\n",
        match &outcome.abort {
            None => "succeeded".to_string(),
            Some(r) => format!("failed: {r}"),
        }
    ));
    text.push_str(&format!(
        "mini-batches: {total} total, {} failed, {} resumed from an earlier run\n",
        c.failed_units, c.resumed_units
    ));
    text.push_str(&format!(
        "items: {} processed, {} failed\n",
        c.items, c.failed_items
    ));
    text.push_str(&format!(
        "limits: error_threshold {}, allowed_failed_count {}, allowed_failed_percent {}\n",
        limit(Some(cfg.error_threshold)),
        limit(cfg.allowed_failed_count),
        cfg.allowed_failed_percent
            .map(|p| p.to_string())
            .unwrap_or_else(|| "no limit".into())
    ));
    for w in warnings {
        text.push_str(w);
        text.push('\n');
    }
    if !outcome.failed.is_empty() {
        text.push_str("failed mini-batches:\n");
        for (i, f) in outcome.failed.iter().enumerate() {
            // Every error is a bounded excerpt; past the first ones, only their first line.
            let error = if i < FULL_ERRORS_IN_JOB_RESULT {
                indent(f.error.trim_end())
            } else {
                indent(f.error.lines().next().unwrap_or_default())
            };
            text.push_str(&format!(
                "- mini-batch {} ({}), {} tries:\n{error}\n",
                f.index, f.items, f.tries,
            ));
        }
    }
    fs::write(ctx.log_dir.join("job_result.txt"), text)?;
    Ok(())
}
