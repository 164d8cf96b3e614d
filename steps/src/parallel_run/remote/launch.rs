//! Starting the agents: one Slurm job (`sbatch --nodes=N --ntasks-per-node=1` running
//! `srun <stepgraph> agent …`), or, with `STEPGRAPH_LOCAL_AGENTS=1`, agent processes on this
//! machine (the same code path without a cluster: for trying things out and for tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::ffi::OsString;

use crate::{JobId, JobState as SlurmState, Slurm, SlurmCompute, SlurmError};

/// The agent command line the job runs on each node.
#[derive(Debug, Clone)]
pub(crate) struct AgentCommand {
    /// The stepgraph binary (the running one: `std::env::current_exe()`).
    pub(crate) exe: PathBuf,
    /// The coordinator's `HOST:PORT`.
    pub(crate) addr: String,
    /// The run's token file.
    pub(crate) token_file: PathBuf,
    /// How many agents (nodes).
    pub(crate) nodes: usize,
    /// The step's `logs/` folder (the job's own output goes to `logs/sys/`).
    pub(crate) log_dir: PathBuf,
    /// The step's work folder (the batch script is written there).
    pub(crate) work_dir: PathBuf,
    /// The step's name (the job's name).
    pub(crate) step: String,
}

/// Where a submitted job is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobState {
    /// Waiting in the queue (the reason).
    Queued(String),
    /// Running.
    Running,
    /// Over (its final state), or no longer known to the scheduler.
    Ended(String),
    /// Pending for a reason that never clears by itself (its state and reason): it asks for
    /// more than the partition, account or QOS allows.
    Hopeless(String),
}

/// Starts and stops the job of a step's agents.
pub(crate) trait Launcher: Send {
    /// Submit a job running `cmd.nodes` agents; returns its name (`Slurm job 123`).
    fn submit(&mut self, cmd: &AgentCommand) -> Result<String, String>;
    /// The submitted job's state.
    fn state(&mut self) -> JobState;
    /// Cancel the submitted job (nothing when there is none).
    fn cancel(&mut self);
}

/// A job submitted with `sbatch` (through [`Slurm`], which bounds each command's time).
pub(crate) struct SlurmLauncher {
    settings: SlurmCompute,
    slurm: Option<Slurm>,
    job: Option<JobId>,
}

impl SlurmLauncher {
    pub(crate) fn new(settings: SlurmCompute) -> Self {
        SlurmLauncher {
            settings,
            slurm: None,
            job: None,
        }
    }

    /// The `sbatch` options (`--parsable` is [`Slurm::submit`]'s).
    fn sbatch_args(&self, cmd: &AgentCommand) -> Vec<String> {
        // The compute target's settings (partition, account, time, cpus, mem, extra_args)
        // first, stepgraph's own last: sbatch takes an option's last value, so extra_args
        // cannot change the job's shape or where its output goes.
        let mut args = self.settings.sbatch_args();
        args.extend([
            format!("--job-name=stepgraph-{}", cmd.step),
            format!("--nodes={}", cmd.nodes),
            "--ntasks-per-node=1".to_string(),
            format!(
                "--output={}",
                cmd.log_dir.join("sys").join("slurm-%j.out").display()
            ),
        ]);
        args
    }
}

/// The batch script: one agent per node, through `srun`.
fn batch_script(cmd: &AgentCommand, srun: &Path) -> Vec<u8> {
    let argv: Vec<OsString> = vec![
        srun.into(),
        "--ntasks-per-node=1".into(),
        cmd.exe.clone().into(),
        "agent".into(),
        "--connect".into(),
        cmd.addr.clone().into(),
        "--token-file".into(),
        cmd.token_file.clone().into(),
    ];
    crate::batch_script(
        &argv,
        &format!("stepgraph: one agent per node for step {}", cmd.step),
    )
}

impl Launcher for SlurmLauncher {
    fn submit(&mut self, cmd: &AgentCommand) -> Result<String, String> {
        let slurm = match &self.slurm {
            Some(s) => s.clone(),
            None => Slurm::find().map_err(|e| e.to_string())?,
        };
        let script = cmd.work_dir.join("agents.sbatch");
        fs_err::write(&script, batch_script(cmd, slurm.srun())).map_err(|e| e.to_string())?;
        let args: Vec<OsString> = self.sbatch_args(cmd).into_iter().map(Into::into).collect();
        let id = slurm
            .submit(&script, &args, None)
            .map_err(|e| e.to_string())?;
        self.slurm = Some(slurm);
        self.job = Some(id);
        Ok(format!("Slurm job {id}"))
    }

    fn state(&mut self) -> JobState {
        let (Some(slurm), Some(id)) = (&self.slurm, self.job) else {
            return JobState::Ended("not submitted".into());
        };
        match slurm.state(id) {
            Ok(s) if s.is_finished() => {
                let why = slurm.job(id).ok().and_then(|j| j.reason);
                JobState::Ended(match why {
                    Some(r) if r != "None" => format!("{s}: {r}"),
                    _ => s.to_string(),
                })
            }
            Ok(SlurmState::Running | SlurmState::Completing) => JobState::Running,
            Ok(s) => {
                let why = slurm.job(id).ok().and_then(|j| j.reason);
                match why {
                    Some(r) if crate::slurm_command::HOPELESS.contains(&r.as_str()) => {
                        JobState::Hopeless(format!("{s}: {r}"))
                    }
                    Some(r) => JobState::Queued(format!("{s}: {r}")),
                    None => JobState::Queued(s.to_string()),
                }
            }
            Err(SlurmError::UnknownJob { .. }) => {
                JobState::Ended("no longer known to Slurm".into())
            }
            // squeue or scontrol did not answer: say so, never give the job up for it.
            Err(e) => JobState::Queued(format!("state unknown: {e}")),
        }
    }

    fn cancel(&mut self) {
        if let (Some(slurm), Some(id)) = (&self.slurm, self.job.take()) {
            let _ = slurm.cancel(id);
        }
    }
}

impl Drop for SlurmLauncher {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Agents as processes of this machine.
pub(crate) struct LocalLauncher {
    children: Vec<Child>,
    round: usize,
}

impl LocalLauncher {
    pub(crate) fn new() -> Self {
        LocalLauncher {
            children: Vec::new(),
            round: 0,
        }
    }
}

impl Launcher for LocalLauncher {
    fn submit(&mut self, cmd: &AgentCommand) -> Result<String, String> {
        self.cancel();
        self.round += 1;
        for i in 0..cmd.nodes {
            let node = format!("local-{i}");
            let log = cmd.log_dir.join("sys").join(format!("agent-{node}.out"));
            let out = open_append(&log).map_err(|e| e.to_string())?;
            let err = open_append(&log).map_err(|e| e.to_string())?;
            let mut c = Command::new(&cmd.exe);
            c.arg("agent")
                .arg("--connect")
                .arg(&cmd.addr)
                .arg("--token-file")
                .arg(&cmd.token_file)
                .arg("--node")
                .arg(&node);
            {
                use std::os::unix::process::CommandExt;
                c.process_group(0);
            }
            c.stdin(Stdio::null()).stdout(out).stderr(err);
            let child = crate::process::spawn(&mut c)
                .map_err(|e| format!("cannot start {}: {e}", cmd.exe.display()))?;
            self.children.push(child);
        }
        Ok(format!("local agents (round {})", self.round))
    }

    fn state(&mut self) -> JobState {
        let mut running = 0;
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running > 0 {
            JobState::Running
        } else {
            JobState::Ended("every agent process exited".into())
        }
    }

    fn cancel(&mut self) {
        for mut c in self.children.drain(..) {
            if matches!(c.try_wait(), Ok(None)) {
                crate::process::kill_tree(&mut c);
            }
            if c.wait().is_ok() {
                crate::process::reaped(&c);
            }
        }
    }
}

impl Drop for LocalLauncher {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// `path` opened for appending, as a child's output.
fn open_append(path: &Path) -> std::io::Result<Stdio> {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let f = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Stdio::from(f.into_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> AgentCommand {
        AgentCommand {
            exe: "/opt/it's/stepgraph".into(),
            addr: "vm:4242".into(),
            token_file: "/runs/r/s/work/agent.token".into(),
            nodes: 2,
            log_dir: "/runs/r/s/logs".into(),
            work_dir: "/runs/r/s/work".into(),
            step: "score".into(),
        }
    }

    #[test]
    fn the_batch_script_runs_one_agent_per_node_through_srun() {
        let script = batch_script(&cmd(), Path::new("/usr/bin/srun"));
        let script = String::from_utf8_lossy(&script);
        assert!(
            script.contains(
                "exec '/usr/bin/srun' '--ntasks-per-node=1' '/opt/it'\\''s/stepgraph' 'agent' '--connect' 'vm:4242' '--token-file' '/runs/r/s/work/agent.token'"
            ),
            "{script}"
        );
    }

    #[test]
    fn sbatch_gets_the_nodes_and_the_compute_settings() {
        let l = SlurmLauncher::new(
            crate::Compute::slurm("hpc")
                .partition("debug")
                .time("01:00:00")
                .cpus_per_task(2)
                .mem("4G")
                .extra_args(["--exclusive"]),
        );
        assert_eq!(
            l.sbatch_args(&cmd()),
            // The settings first, stepgraph's own options last (sbatch keeps the last).
            [
                "--partition=debug",
                "--time=01:00:00",
                "--cpus-per-task=2",
                "--mem=4G",
                "--exclusive",
                "--job-name=stepgraph-score",
                "--nodes=2",
                "--ntasks-per-node=1",
                "--output=/runs/r/s/logs/sys/slurm-%j.out"
            ]
        );
    }
}
