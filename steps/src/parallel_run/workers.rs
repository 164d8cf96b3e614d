//! Worker set-up: Rust entries in-process, Python entries through the harness, and
//! `entry_command` programs, each with its environment and `init` message.

use fs_err as fs;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use stepgraph_engine::{ErrorContext, StepContext, StepError};

use super::collect::Collector;
use super::config::{Entry, OutputAction};
use super::entry::{EntryContext, EntryFactory};
use super::step::ParallelRunStep;
use super::worker::{KillHandle, ProcessSpec, ProcessWorker, RustWorker, Worker};
use super::{harness, protocol, MAX_PROTOCOL_LINE};

/// The workers, the handles that kill the process ones, and the messages of remote ones.
pub(super) type Workers = (
    Vec<Box<dyn Worker>>,
    Vec<KillHandle>,
    super::remote::Notices,
);

/// One worker per `process_count_per_node × node_count`, ready for their first mini-batch.
pub(super) fn make_workers(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    tree: &crate::process::ProcessTree,
    output_dir: &Path,
    user_dir: &Path,
    side_inputs: &BTreeMap<String, PathBuf>,
    own_outputs: Option<&Collector>,
) -> Result<Workers, StepError> {
    let cfg = &step.config;
    let n = cfg.workers();
    // Each worker's output folder: the step's, or (an incremental summary_only step) its own.
    let output_of =
        |w: usize| own_outputs.map_or_else(|| output_dir.to_path_buf(), |c| c.worker_dir(w));
    let mut kill = Vec::new();
    let source_dir = source_copy(step, ctx)?;
    // The environment was built when the step was resolved; this finds it (under its lock).
    let built = match cfg.entry() {
        Entry::Rust { .. } => None,
        _ => cfg
            .python_environment()
            .ensure_built(&ctx.envs_dir())
            .context("environment")?,
    };
    let (argv, entry_script) = match cfg.entry() {
        Entry::Rust { factory, .. } => {
            let workers = rust_workers(n, factory, ctx, &output_of, side_inputs);
            return Ok((workers, kill, super::remote::Notices::none()));
        }
        Entry::Python { entry_script } => {
            if built.is_none() {
                cfg.python_environment()
                    .check_interpreter()
                    .context("environment")?;
            }
            let harness = harness::install(&ctx.work_dir.join(".harness"))?;
            (
                vec![
                    built.as_ref().map_or_else(
                        || OsString::from(cfg.environment()),
                        |b| b.python().into_os_string(),
                    ),
                    "-X".into(),
                    "faulthandler".into(),
                    harness.into_os_string(),
                ],
                source_dir.join(entry_script),
            )
        }
        Entry::Command { entry_command } => {
            let argv = command_argv(entry_command, &source_dir)?;
            (argv, PathBuf::new())
        }
    };
    let mut env = process_env(step, ctx, tree, output_dir);
    if let Some(b) = &built {
        b.set_vars(&mut env);
    }
    env.extend(shim_env(step, ctx, side_inputs)?);
    let tabular = ctx
        .inputs
        .values()
        .any(|i| matches!(i.kind, stepgraph_engine::InputKind::Tabular { .. }));
    let tabular_format = tabular.then(|| cfg.tabular_format().as_str().to_string());
    let mut specs: Vec<ProcessSpec> = Vec::with_capacity(n);
    let collect_rows = cfg.output_action() == OutputAction::AppendRow;
    for w in 0..n {
        let agent = format!("worker-{w}");
        let place = LogPlace::of(w, cfg.process_count_per_node());
        let mut env = env.clone();
        env.insert(
            "AZUREML_BI_OUTPUT_PATH".into(),
            output_of(w).into_os_string(),
        );
        env.insert("STEPGRAPH_WORKER_ID".into(), w.to_string().into());
        env.insert("STEPGRAPH_NODE_ID".into(), place.node.clone().into());
        env.insert(
            "STEPGRAPH_PROCESS_NAME".into(),
            place.process.clone().into(),
        );
        let log_path = place.stderr_log(user_dir);
        if let Some(parent) = log_path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let init = protocol::Init {
            protocol: protocol::PROTOCOL_VERSION,
            entry_script: protocol::WirePath(entry_script.clone()),
            source_directory: protocol::WirePath(source_dir.clone()),
            arguments: ctx.arguments.to_vec(),
            output_dir: protocol::WirePath(output_of(w)),
            working_dir: protocol::WirePath(source_dir.clone()),
            log_dir: protocol::WirePath(user_dir.to_path_buf()),
            agent_name: agent.clone(),
            side_inputs: side_inputs
                .iter()
                .map(|(k, v)| (k.clone(), protocol::WirePath(v.clone())))
                .collect(),
            max_line_bytes: MAX_PROTOCOL_LINE as u64,
            append_row_format: cfg.append_row_format(),
            collect_rows,
            tabular_format: tabular_format.clone(),
        };
        specs.push(ProcessSpec {
            argv: argv.clone(),
            cwd: source_dir.clone(),
            env,
            log_path,
            init,
            timeout: cfg.run_invocation_timeout(),
        });
    }
    // On a cluster (or local agents), the same set-ups go to the agents.
    if let Some(target) = super::remote::target(step) {
        return super::remote::start(&target, step, ctx, specs, output_dir, own_outputs.is_some());
    }
    let mut workers: Vec<Box<dyn Worker>> = Vec::with_capacity(n);
    for spec in specs {
        let worker = ProcessWorker::new(spec, ctx.cancel.clone());
        kill.push(worker.kill_handle());
        workers.push(Box::new(worker));
    }
    Ok((workers, kill, super::remote::Notices::none()))
}

/// Where a worker's logs go, as Azure lays them out: worker `w` is process `w mod
/// process_count_per_node` (`process000` …) of node `w / process_count_per_node` (`0` …; Azure
/// names a node by its address). Its stderr goes to
/// `logs/user/stderr/<node>/<process>.stderr.txt`; the Python harness writes what user code
/// prints to `logs/user/stdout/<node>/<process>.stdout.txt` and the `EntryScript` logger to
/// `logs/user/entry_script_log/<node>/<process>.log.txt`.
pub(super) struct LogPlace {
    /// The node's name.
    pub(super) node: String,
    /// The process's name on its node.
    pub(super) process: String,
}

impl LogPlace {
    /// The place of worker `w`.
    pub(super) fn of(w: usize, per_node: u32) -> Self {
        let per_node = (per_node as usize).max(1);
        LogPlace {
            node: (w / per_node).to_string(),
            process: format!("process{:03}", w % per_node),
        }
    }

    /// `<user_dir>/stderr/<node>/<process>.stderr.txt`.
    pub(super) fn stderr_log(&self, user_dir: &Path) -> PathBuf {
        user_dir
            .join("stderr")
            .join(&self.node)
            .join(format!("{}.stderr.txt", self.process))
    }
}

/// The folder the workers run in. Workers run in a copy of exactly the source folder's
/// snapshot (the files hashed into the fingerprint), as Azure runs an uploaded snapshot: the
/// entry script, `sys.path`, the working folder and relative programs all point into the
/// copy. Rust entries (and steps without a source folder) run in the work folder.
fn source_copy(step: &ParallelRunStep, ctx: &StepContext<'_>) -> Result<PathBuf, StepError> {
    let cfg = &step.config;
    let source_dir = match (cfg.source_directory(), cfg.entry()) {
        (Some(dir), Entry::Python { .. } | Entry::Command { .. }) => {
            let copy = ctx.work_dir.join("source");
            if copy.exists() {
                fs::remove_dir_all(&copy)?;
            }
            crate::process::copy_source(dir, &copy, ctx.store_dir()).map_err(|e| {
                StepError::with_source(format!("copying source_directory {}", dir.display()), e)
            })?;
            copy.canonicalize().unwrap_or(copy)
        }
        _ => ctx.work_dir.to_path_buf(),
    };
    Ok(source_dir)
}

/// `entry_command`, its program and script arguments found in the copy of the source folder.
fn command_argv(entry_command: &[String], source_dir: &Path) -> Result<Vec<OsString>, StepError> {
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
    Ok(argv)
}

/// The workers' environment: the step's (`process::step_env`), Python's settings,
/// Azure's output path and the pipeline parameters.
fn process_env(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    tree: &crate::process::ProcessTree,
    output_dir: &Path,
) -> BTreeMap<OsString, OsString> {
    let cfg = &step.config;
    let mut env = crate::process::step_env(
        cfg.env_passthrough(),
        cfg.environment_variables(),
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
    env
}

/// What the `azureml` shim reads (`crate::models`): the step's name, its metrics file, its
/// named inputs (main inputs by dataset name, side inputs) and its models, laid out read-only
/// in the work folder.
fn shim_env(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    side_inputs: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<OsString, OsString>, StepError> {
    let mut named = side_inputs.clone();
    for (i, source) in step.inputs.iter().enumerate() {
        if let Some(input) = ctx.inputs.get(&super::step::input_port(i)) {
            named
                .entry(source.name().to_string())
                .or_insert_with(|| input.path.clone());
        }
    }
    crate::models::environment(
        ctx.step,
        &ctx.metrics_file(),
        ctx.work_dir,
        ctx.models,
        &named,
    )
}

/// `n` instances of an in-process Rust entry.
fn rust_workers(
    n: usize,
    factory: &EntryFactory,
    ctx: &StepContext<'_>,
    output_of: &dyn Fn(usize) -> PathBuf,
    side_inputs: &BTreeMap<String, PathBuf>,
) -> Vec<Box<dyn Worker>> {
    (0..n)
        .map(|w| {
            let ectx = EntryContext {
                agent_name: format!("worker-{w}"),
                output_dir: output_of(w),
                working_dir: ctx.work_dir.to_path_buf(),
                side_inputs: side_inputs.clone(),
                arguments: ctx.arguments.to_vec(),
            };
            Box::new(RustWorker::new(factory.clone(), ectx)) as Box<dyn Worker>
        })
        .collect()
}
