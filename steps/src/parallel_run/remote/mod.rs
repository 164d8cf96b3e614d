//! A ParallelRunStep spread over several nodes: the coordinator stays in `stepgraph run` (the
//! only writer of the store) and one agent per node (`stepgraph agent`, started by one Slurm
//! job) runs `process_count_per_node` workers there.
//!
//! - `wire.rs`: frames (size-limited before allocation) and the messages;
//! - `auth.rs`: the run's token (0600 in the step's run folder) and the challenge-response;
//! - `coordinator.rs`: the listener, node slots, links and the dispatcher's
//!   [`RemoteWorker`](coordinator::RemoteWorker)s; losses, requeues and resubmission;
//! - `launch.rs`: the Slurm job (`sbatch` / `srun`) or local agent processes;
//! - `agent.rs`: the agent.

mod agent;
mod auth;
mod coordinator;
mod launch;
mod wire;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver};
use stepgraph_engine::{StepContext, StepError};

pub use agent::{run_agent, AgentError, AgentOptions};

use super::protocol::WirePath;
use super::step::ParallelRunStep;
use super::worker::{ProcessSpec, Worker};
use launch::{AgentCommand, Launcher, LocalLauncher, SlurmLauncher};
use wire::{NeededPath, WireProcess};

/// How long either side waits for each handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Either side sends a ping this often when it has nothing else to say.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// A connection silent this long is lost.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The variable that runs a step's agents as local processes instead of a Slurm job.
pub(crate) const LOCAL_AGENTS_VAR: &str = "STEPGRAPH_LOCAL_AGENTS";

/// The variable naming the program the agents run (`<it> agent --connect …`) when the running
/// program has no `agent` subcommand (one that runs pipelines through the library without
/// `stepgraph_cli::main_with`); default: the running program itself.
pub(crate) const AGENT_BIN_VAR: &str = "STEPGRAPH_AGENT_BIN";

/// The variable giving the address the coordinator listens on (`HOST` or `HOST:PORT`).
pub(crate) const BIND_VAR: &str = "STEPGRAPH_BIND";

/// Where a step's workers run when not in this process.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// One Slurm job.
    Slurm(crate::SlurmCompute),
    /// Agent processes on this machine (`STEPGRAPH_LOCAL_AGENTS=1`).
    Local,
}

/// Where `step`'s workers run when not in this process: on Slurm when its compute target is a
/// Slurm one (whatever its `node_count`: with 1, one agent on one node, the same path), as
/// local agent processes when [`LOCAL_AGENTS_VAR`] is `1` and it has several nodes.
/// Rust entries always run in this process (they are code of this program, not a file on
/// the shared file system).
pub(crate) fn target(step: &ParallelRunStep) -> Option<Target> {
    if matches!(step.config.entry(), super::config::Entry::Rust { .. }) {
        return None;
    }
    if let Some(slurm) = step.compute.as_slurm() {
        return Some(Target::Slurm(slurm.clone()));
    }
    let local = std::env::var(LOCAL_AGENTS_VAR).is_ok_and(|v| v == "1");
    (local && step.config.node_count() > 1).then_some(Target::Local)
}

/// Now, in Unix milliseconds.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// This machine's name (as `hostname` says it).
pub(crate) fn host_name() -> String {
    fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The node an agent runs on: `SLURMD_NODENAME`, else the host's name.
fn node_name() -> String {
    std::env::var("SLURMD_NODENAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(host_name)
}

/// A node name fit to be a folder name in the logs.
fn safe_node_name(name: &str) -> String {
    let s: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "node".to_string(),
        t => t.to_string(),
    }
}

/// Progress messages from the agents' side (nodes ready, lost, the job queued), relayed to the
/// run's events while the mini-batches run.
pub(crate) struct Notices(Option<Receiver<String>>);

impl Notices {
    /// No messages (local workers).
    pub(crate) fn none() -> Self {
        Notices(None)
    }

    /// Run `f`, relaying messages to `ctx`'s events meanwhile.
    pub(crate) fn relay<T>(self, ctx: &StepContext<'_>, f: impl FnOnce() -> T) -> T {
        let Some(rx) = self.0 else {
            return f();
        };
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        std::thread::scope(|s| {
            s.spawn(|| loop {
                crossbeam_channel::select! {
                    recv(rx) -> m => match m {
                        Ok(text) => ctx.message("info", text),
                        Err(_) => break,
                    },
                    recv(stop_rx) -> _ => break,
                }
            });
            let out = f();
            drop(stop_tx);
            out
        })
    }
}

/// Where to listen, the host agents connect to, and the port (0: ephemeral), from the bind
/// address given (`HOST`, `HOST:PORT`, `[V6]:PORT`) or the defaults.
fn bind_plan(given: Option<&str>, target: &Target) -> Result<(String, String, u16), StepError> {
    Ok(match given {
        Some(b) => {
            let (host, port) = match b.rsplit_once(':') {
                // `[V6]` alone: a host without a port.
                _ if b.starts_with('[') && b.ends_with(']') => {
                    (b.trim_matches(['[', ']']).to_string(), 0)
                }
                Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                    let port = p.parse::<u16>().map_err(|_| {
                        StepError::new(format!("bind address {b:?}: the port is not a number"))
                    })?;
                    (h.trim_matches(['[', ']']).to_string(), port)
                }
                _ => (b.to_string(), 0),
            };
            (host.clone(), host, port)
        }
        None => match target {
            Target::Local => ("127.0.0.1".to_string(), "127.0.0.1".to_string(), 0),
            Target::Slurm(_) => ("0.0.0.0".to_string(), host_name(), 0),
        },
    })
}

/// The listener and the address agents connect to. `STEPGRAPH_BIND`, else the compute
/// target's `bind` (`HOST` or `HOST:PORT`): listen there, agents connect there. Neither: listen
/// on every interface and agents connect to this host's name (local agents: 127.0.0.1 only).
/// The port is ephemeral unless one is given.
fn listen(target: &Target) -> Result<(TcpListener, String), StepError> {
    let from_compute = match target {
        Target::Slurm(c) => c.bind.clone(),
        Target::Local => None,
    };
    let given = std::env::var(BIND_VAR)
        .ok()
        .or(from_compute)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let (bind, advertised, port) = bind_plan(given.as_deref(), target)?;
    let listener = TcpListener::bind((bind.as_str(), port)).map_err(|e| {
        StepError::with_source(
            format!(
                "cannot listen for the step's agents on {bind}:{port} (set {BIND_VAR} or the \
                 compute target's bind to an address the nodes reach)"
            ),
            e,
        )
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| StepError::with_source("listener address", e))?
        .port();
    let shown = if advertised.contains(':') {
        format!("[{advertised}]")
    } else {
        advertised
    };
    Ok((listener, format!("{shown}:{port}")))
}

/// Which paths the agents must see: what the workers run, where, what they read and write.
fn needs(
    step: &ParallelRunStep,
    specs: &[ProcessSpec],
    ctx: &StepContext<'_>,
    output_dir: &Path,
) -> Vec<NeededPath> {
    let mut out: Vec<NeededPath> = Vec::new();
    let mut add = |what: String, path: &Path| {
        if path.is_absolute() && !out.iter().any(|n| n.path.0 == path) {
            out.push(NeededPath {
                what,
                path: WirePath(path.to_path_buf()),
            });
        }
    };
    if let Some(s) = specs.first() {
        for (i, a) in s.argv.iter().enumerate() {
            let p = Path::new(a);
            if p.is_absolute() && p.exists() {
                let what = if i == 0 {
                    "worker program (the environment's interpreter or entry_command)".to_string()
                } else {
                    format!("worker file {}", p.display())
                };
                add(what, p);
            }
        }
        add("source snapshot".into(), &s.cwd);
        let script = &s.init.entry_script.0;
        if !script.as_os_str().is_empty() {
            add("entry script".into(), script);
        }
        if let Some(m) = s.env.get(std::ffi::OsStr::new("AZUREML_MODEL_DIR")) {
            add("models folder".into(), Path::new(m));
        }
    }
    // Main inputs by their dataset's name, then side inputs by port.
    for (i, source) in step.inputs.iter().enumerate() {
        if let Some(input) = ctx.inputs.get(&super::step::input_port(i)) {
            add(format!("input {:?}", source.name()), &input.path);
        }
    }
    for input in ctx.inputs.values() {
        add(format!("input {:?}", input.port), &input.path);
    }
    add("output folder".into(), output_dir);
    add("log folder".into(), ctx.log_dir);
    out
}

/// Start the agents of a step (its `node_count` nodes × `process_count_per_node` processes,
/// whose set-ups are `specs`, in worker order) and return the dispatcher's workers.
pub(crate) fn start(
    target: &Target,
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    specs: Vec<ProcessSpec>,
    output_dir: &Path,
    pinned: bool,
) -> Result<super::workers::Workers, StepError> {
    let cfg = &step.config;
    let per_node = (cfg.process_count_per_node() as usize).max(1);
    let node_count = specs.len().div_ceil(per_node).max(1);
    let needs = needs(step, &specs, ctx, output_dir);
    let processes = specs
        .iter()
        .enumerate()
        .map(|(w, s)| WireProcess {
            worker: w,
            argv: s.argv.iter().map(|a| WirePath(PathBuf::from(a))).collect(),
            cwd: WirePath(s.cwd.clone()),
            env: wire::env_to_wire(&s.env),
            init: s.init.clone(),
            timeout_ms: u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
        })
        .collect();
    let token_file = ctx.work_dir.join("agent.token");
    fs_err::create_dir_all(ctx.work_dir)?;
    let token = auth::Token::create(&token_file)
        .map_err(|e| StepError::with_source("writing the agents' token", e))?;
    let (listener, addr) = listen(target)?;
    let exe = match std::env::var_os(AGENT_BIN_VAR) {
        Some(bin) => PathBuf::from(bin),
        None => std::env::current_exe().map_err(|e| {
            StepError::with_source("finding the stepgraph binary for the agents", e)
        })?,
    };
    let launcher: Box<dyn Launcher> = match target {
        Target::Slurm(settings) => Box::new(SlurmLauncher::new(settings.clone())),
        Target::Local => Box::new(LocalLauncher::new()),
    };
    let (tx, rx) = unbounded();
    let workers = coordinator::start(coordinator::Start {
        plan: coordinator::Plan {
            processes,
            per_node,
            node_count,
            log_dir: ctx.log_dir.to_path_buf(),
            needs,
            pinned,
        },
        token,
        cancel: ctx.cancel.clone(),
        listener,
        cmd: AgentCommand {
            exe,
            addr: addr.clone(),
            token_file,
            nodes: node_count,
            log_dir: ctx.log_dir.to_path_buf(),
            work_dir: ctx.work_dir.to_path_buf(),
            step: ctx.step.to_string(),
        },
        launcher,
        notices: tx,
    })
    .map_err(|e| StepError::new(format!("cannot start the step's agents: {e}")))?;
    let workers = workers
        .into_iter()
        .map(|w| Box::new(w) as Box<dyn Worker>)
        .collect();
    Ok((workers, Vec::new(), Notices(Some(rx))))
}

/// What job ran a step's workers (the first line of `logs/sys/compute.txt`), for
/// `job_result.txt`.
pub(crate) fn compute_line(log_dir: &Path) -> Option<String> {
    let text = fs_err::read_to_string(log_dir.join("sys").join("compute.txt")).ok()?;
    text.lines().next().map(str::to_string)
}

#[cfg(test)]
mod tests;
