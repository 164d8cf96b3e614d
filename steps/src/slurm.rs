//! A small typed wrapper over Slurm's client commands: submit a batch script (`sbatch
//! --parsable`), ask a job's state (`squeue`, then `scontrol show job` once it left the queue),
//! cancel it (`scancel`), list the partitions (`sinfo`). Every command runs with a time limit;
//! every error names the command and what it printed on stderr.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stepgraph_engine::Pipeline;

use crate::Compute;

/// The client commands a step on Slurm needs on PATH: submitting, launching tasks, watching
/// jobs (checked by `stepgraph validate`).
pub const SLURM_TOOLS: &[&str] = &["sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol"];

/// How long one Slurm command may take before it counts as not answering (`sbatch` retries
/// a busy controller for a while by itself).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a Slurm command did not give what was asked. Each message names the command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlurmError {
    /// A client command is not on PATH.
    #[error("{command} not found on PATH: Slurm's client commands (sbatch, srun, squeue, scancel, sinfo, scontrol) are needed to run steps on Slurm")]
    NotFound {
        /// The command.
        command: String,
    },
    /// The command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status, in words.
        status: String,
        /// What it printed on stderr (an excerpt).
        stderr: String,
    },
    /// The command did not finish in time (the controller does not answer).
    #[error("`{command}` did not answer within {} s (is slurmctld running?)", .timeout.as_secs())]
    TimedOut {
        /// The command line.
        command: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The command printed something else than what was asked of it.
    #[error("`{command}` printed {output:?}, expected {expected}")]
    Unexpected {
        /// The command line.
        command: String,
        /// What it printed (an excerpt).
        output: String,
        /// What was expected.
        expected: String,
    },
    /// Neither `squeue` nor `scontrol` knows the job (it ended longer ago than the cluster
    /// keeps finished jobs, `MinJobAge`).
    #[error("Slurm job {job} is unknown to squeue and scontrol (it ended more than MinJobAge ago, or never existed)")]
    UnknownJob {
        /// The job.
        job: JobId,
    },
}

/// A Slurm job id (what `sbatch --parsable` prints, before any `;cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A job's state, as Slurm names it (`squeue -o %T`, `scontrol`'s `JobState`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for resources.
    Pending,
    /// Nodes are being set up.
    Configuring,
    /// Running.
    Running,
    /// Ending (some processes still being cleaned up).
    Completing,
    /// Ended with exit code 0.
    Completed,
    /// Ended with a non-zero exit code or another failure.
    Failed,
    /// Cancelled (`scancel`, or by an administrator).
    Cancelled,
    /// Reached its time limit.
    Timeout,
    /// One of its nodes failed.
    NodeFail,
    /// Ran out of memory.
    OutOfMemory,
    /// Preempted by another job.
    Preempted,
    /// Could not boot its nodes.
    BootFail,
    /// Missed its deadline.
    Deadline,
    /// Suspended.
    Suspended,
    /// Requeued (it will be pending again).
    Requeued,
    /// A state this wrapper does not name (Slurm's word for it).
    Other(String),
}

impl JobState {
    /// The state from Slurm's word (`RUNNING`, `CANCELLED`, `CANCELLED+`, `NODE_FAIL`, …).
    pub fn parse(word: &str) -> JobState {
        let w = word.trim().trim_end_matches('+');
        match w {
            "PENDING" | "PD" => JobState::Pending,
            "CONFIGURING" | "CF" => JobState::Configuring,
            "RUNNING" | "R" => JobState::Running,
            "COMPLETING" | "CG" => JobState::Completing,
            "COMPLETED" | "CD" => JobState::Completed,
            "FAILED" | "F" => JobState::Failed,
            "CANCELLED" | "CA" => JobState::Cancelled,
            "TIMEOUT" | "TO" => JobState::Timeout,
            "NODE_FAIL" | "NF" => JobState::NodeFail,
            "OUT_OF_MEMORY" | "OOM" => JobState::OutOfMemory,
            "PREEMPTED" | "PR" => JobState::Preempted,
            "BOOT_FAIL" | "BF" => JobState::BootFail,
            "DEADLINE" | "DL" => JobState::Deadline,
            "SUSPENDED" | "S" => JobState::Suspended,
            "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RQ" => JobState::Requeued,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Whether the job has ended (it will not run again by itself).
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            JobState::Completed
                | JobState::Failed
                | JobState::Cancelled
                | JobState::Timeout
                | JobState::NodeFail
                | JobState::OutOfMemory
                | JobState::Preempted
                | JobState::BootFail
                | JobState::Deadline
        ) || matches!(self, JobState::Other(w) if w == "REVOKED" || w == "SPECIAL_EXIT")
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self {
            JobState::Pending => "PENDING",
            JobState::Configuring => "CONFIGURING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::Preempted => "PREEMPTED",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::Suspended => "SUSPENDED",
            JobState::Requeued => "REQUEUED",
            JobState::Other(w) => w,
        };
        f.write_str(word)
    }
}

/// What `scontrol show job` tells of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// The batch script's exit code (`ExitCode=code:signal`), once it ended.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`ExitCode=code:signal`), when one did.
    pub signal: Option<i32>,
    /// The nodes it ran on (`NodeList`, Slurm's compressed form, e.g. `n[1-2]`).
    pub nodes: String,
    /// Why it is in its state (`Reason`), when Slurm says.
    pub reason: Option<String>,
}

/// A partition `sinfo` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its name (without `sinfo`'s `*`).
    pub name: String,
    /// Whether it is the cluster's default partition (`sinfo` marks it with `*`).
    pub default: bool,
}

/// Slurm's client commands, found on PATH. Each method runs one command with a time limit
/// and returns what it printed, typed.
#[derive(Debug, Clone)]
pub struct Slurm {
    sbatch: PathBuf,
    srun: PathBuf,
    squeue: PathBuf,
    scancel: PathBuf,
    sinfo: PathBuf,
    scontrol: PathBuf,
}

impl Slurm {
    /// Find `sbatch`, `srun`, `squeue`, `scancel`, `sinfo` and `scontrol` on PATH.
    ///
    /// # Errors
    /// [`SlurmError::NotFound`] naming the first one missing.
    pub fn find() -> Result<Slurm, SlurmError> {
        let find = |name: &str| {
            find_on_path(name).ok_or_else(|| SlurmError::NotFound {
                command: name.to_string(),
            })
        };
        Ok(Slurm {
            sbatch: find("sbatch")?,
            srun: find("srun")?,
            squeue: find("squeue")?,
            scancel: find("scancel")?,
            sinfo: find("sinfo")?,
            scontrol: find("scontrol")?,
        })
    }

    /// The path of `srun` (to run a command in each task of a job).
    pub fn srun(&self) -> &Path {
        &self.srun
    }

    /// The path of `sbatch`.
    pub fn sbatch(&self) -> &Path {
        &self.sbatch
    }

    /// Submit batch script `script` with `args` (sbatch options, given before the script) and
    /// return the job's id at once (`sbatch --parsable`). With `env`, `sbatch` runs with
    /// exactly that environment (plus the caller's `SLURM_CONF`), which the job inherits
    /// (sbatch's default `--export=ALL`): the batch script then sees it and Slurm's own
    /// `SLURM_*` variables.
    ///
    /// # Errors
    /// A [`SlurmError`] naming `sbatch` and what it printed (a refused option, an unknown
    /// partition, an unsatisfiable request…).
    pub fn submit(
        &self,
        script: &Path,
        args: &[OsString],
        env: Option<&BTreeMap<OsString, OsString>>,
    ) -> Result<JobId, SlurmError> {
        let mut all: Vec<OsString> = vec!["--parsable".into()];
        all.extend(args.iter().cloned());
        all.push(script.as_os_str().to_owned());
        let out = run(&self.sbatch, &all, env)?;
        let printed = String::from_utf8_lossy(&out).trim().to_string();
        // `123` or `123;cluster`; sbatch may print warnings on lines before it.
        let id = printed
            .lines()
            .last()
            .and_then(|l| l.split(';').next())
            .and_then(|id| id.trim().parse::<u64>().ok());
        id.map(JobId).ok_or_else(|| SlurmError::Unexpected {
            command: command_line(&self.sbatch, &all),
            output: crate::process::excerpt(printed.as_bytes()),
            expected: "a job id".into(),
        })
    }

    /// Cancel job `job` (`scancel`); a job that already ended is no error.
    ///
    /// # Errors
    /// A [`SlurmError`] naming `scancel`.
    pub fn cancel(&self, job: JobId) -> Result<(), SlurmError> {
        run(&self.scancel, &[job.to_string().into()], None).map(|_| ())
    }

    /// Job `job`'s state: `squeue` while it is queued or running, `scontrol show job` once it
    /// left the queue.
    ///
    /// # Errors
    /// [`SlurmError::UnknownJob`] when neither knows it, or a command's error.
    pub fn state(&self, job: JobId) -> Result<JobState, SlurmError> {
        let args: Vec<OsString> = vec![
            "-h".into(),
            "-j".into(),
            job.to_string().into(),
            "-o".into(),
            "%T".into(),
        ];
        // squeue fails for a job it no longer lists ("Invalid job id"), or prints nothing.
        if let Ok(out) = run(&self.squeue, &args, None) {
            if let Some(word) = String::from_utf8_lossy(&out)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
            {
                return Ok(JobState::parse(word));
            }
        }
        Ok(self.job(job)?.state)
    }

    /// What `scontrol show job` tells of job `job`: state, exit code, nodes, reason.
    ///
    /// # Errors
    /// [`SlurmError::UnknownJob`] when `scontrol` no longer knows it, or its error.
    pub fn job(&self, job: JobId) -> Result<JobInfo, SlurmError> {
        let args: Vec<OsString> = vec![
            "show".into(),
            "job".into(),
            "-o".into(),
            job.to_string().into(),
        ];
        let out = match run(&self.scontrol, &args, None) {
            Ok(out) => out,
            Err(SlurmError::Failed { stderr, .. }) if stderr.contains("Invalid job id") => {
                return Err(SlurmError::UnknownJob { job })
            }
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&out);
        parse_job(job, &text).ok_or_else(|| SlurmError::Unexpected {
            command: command_line(&self.scontrol, &args),
            output: crate::process::excerpt(text.as_bytes()),
            expected: "a line with JobState=".into(),
        })
    }

    /// The partitions `sinfo` lists, in its order.
    ///
    /// # Errors
    /// A [`SlurmError`] naming `sinfo` (a controller that does not answer, typically).
    pub fn partitions(&self) -> Result<Vec<Partition>, SlurmError> {
        let out = run(&self.sinfo, &["-h".into(), "-o".into(), "%P".into()], None)?;
        let mut parts: Vec<Partition> = Vec::new();
        for line in String::from_utf8_lossy(&out).lines() {
            let word = line.trim();
            if word.is_empty() {
                continue;
            }
            let name = word.trim_end_matches('*').to_string();
            if !parts.iter().any(|p| p.name == name) {
                parts.push(Partition {
                    name,
                    default: word.ends_with('*'),
                });
            }
        }
        Ok(parts)
    }
}

/// `name` on PATH: the first executable file of that name in a PATH folder.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| {
            fs_err::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A batch script that runs `argv` (program first) in place of the shell (`exec`), each
/// argument quoted for `/bin/sh` byte for byte (non-UTF-8 bytes kept); `comment` lines (each
/// prefixed with `# `) describe it. The job's environment, working folder and output files
/// are `sbatch`'s options ([`Slurm::submit`]).
pub fn batch_script(argv: &[OsString], comment: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut script = b"#!/bin/sh\n".to_vec();
    for line in comment.lines() {
        script.extend_from_slice(b"# ");
        script.extend_from_slice(crate::process::escape_controls(line).as_bytes());
        script.push(b'\n');
    }
    script.extend_from_slice(b"exec");
    for a in argv {
        script.extend_from_slice(b" '");
        for &b in a.as_bytes() {
            if b == b'\'' {
                script.extend_from_slice(b"'\\''");
            } else {
                script.push(b);
            }
        }
        script.push(b'\'');
    }
    script.push(b'\n');
    script
}

/// `scontrol show job -o`'s line as a [`JobInfo`] (`None` without a `JobState`).
fn parse_job(id: JobId, text: &str) -> Option<JobInfo> {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for token in text.split_whitespace() {
        if let Some((k, v)) = token.split_once('=') {
            fields.entry(k).or_insert(v);
        }
    }
    let state = JobState::parse(fields.get("JobState")?);
    let (exit_code, signal) = match fields.get("ExitCode").and_then(|e| e.split_once(':')) {
        Some((code, sig)) if state.is_finished() => (
            code.parse().ok(),
            sig.parse().ok().filter(|s: &i32| *s != 0),
        ),
        _ => (None, None),
    };
    let nodes = fields
        .get("NodeList")
        .filter(|n| **n != "(null)")
        .unwrap_or(&"")
        .to_string();
    let reason = fields
        .get("Reason")
        .filter(|r| **r != "None")
        .map(|r| r.to_string());
    Some(JobInfo {
        id,
        state,
        exit_code,
        signal,
        nodes,
        reason,
    })
}

/// `program args…` as one line, for messages.
fn command_line(program: &Path, args: &[OsString]) -> String {
    let name = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy();
    let mut line = name.into_owned();
    for a in args {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line
}

/// Run `program args…` (with exactly `env`, plus the caller's `SLURM_CONF`, when given) and
/// return its stdout; a failure, a time-out or a spawn error names the command.
fn run(
    program: &Path,
    args: &[OsString],
    env: Option<&BTreeMap<OsString, OsString>>,
) -> Result<Vec<u8>, SlurmError> {
    let line = || command_line(program, args);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(env) = env {
        cmd.env_clear().envs(env);
        if let Some(conf) = std::env::var_os("SLURM_CONF") {
            if !env.contains_key(OsStr::new("SLURM_CONF")) {
                cmd.env("SLURM_CONF", conf);
            }
        }
    }
    let mut child = cmd.spawn().map_err(|source| SlurmError::Spawn {
        command: line(),
        source,
    })?;
    // Read both pipes while waiting, so a chatty command never blocks on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(16 << 20).read_to_end(&mut buf);
            }
            buf
        })
    })
    .collect();
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < COMMAND_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SlurmError::TimedOut {
                    command: line(),
                    timeout: COMMAND_TIMEOUT,
                });
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SlurmError::Spawn {
                    command: line(),
                    source,
                });
            }
        }
    };
    let mut outputs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    let stdout = outputs.next().unwrap_or_default();
    let stderr = outputs.next().unwrap_or_default();
    if !status.success() {
        let status = match status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_string(),
        };
        return Err(SlurmError::Failed {
            command: line(),
            status,
            stderr: crate::process::excerpt(String::from_utf8_lossy(&stderr).trim().as_bytes()),
        });
    }
    Ok(stdout)
}

/// What `stepgraph validate` finds wrong with the Slurm targets of `pipeline`'s steps: for
/// each target in use, the client commands missing from PATH ([`SLURM_TOOLS`]) and a
/// partition `sinfo` does not list (or no default partition when none is set). One sentence
/// per problem, naming the steps and the target; empty when every step runs locally.
pub fn slurm_problems(pipeline: &Pipeline) -> Vec<String> {
    // Target name -> (its settings, the steps using it).
    let mut used: BTreeMap<String, (crate::SlurmCompute, Vec<String>)> = BTreeMap::new();
    for &idx in pipeline.topological_order() {
        let node = pipeline.node(idx);
        if let Compute::Slurm(s) = Compute::from_declared(node.module_def.compute.as_ref()) {
            used.entry(s.name.clone())
                .or_insert_with(|| (s, Vec::new()))
                .1
                .push(node.name.clone());
        }
    }
    if used.is_empty() {
        return Vec::new();
    }
    let steps_of = |steps: &[String]| {
        let quoted: Vec<String> = steps.iter().map(|s| format!("{s:?}")).collect();
        match quoted.as_slice() {
            [one] => format!("step {one}"),
            _ => format!("steps {}", quoted.join(", ")),
        }
    };
    let all_steps: Vec<String> = pipeline
        .topological_order()
        .iter()
        .map(|&i| pipeline.node(i).name.clone())
        .filter(|n| used.values().any(|(_, steps)| steps.contains(n)))
        .collect();
    // `step "a" runs` / `steps "a", "b" run`.
    let run = if all_steps.len() == 1 { "runs" } else { "run" };
    let missing: Vec<&str> = SLURM_TOOLS
        .iter()
        .copied()
        .filter(|t| find_on_path(t).is_none())
        .collect();
    if !missing.is_empty() {
        return vec![format!(
            "{} {run} on Slurm, but {} not found on PATH (install Slurm's client commands, e.g. Debian's slurm-client, or run the steps locally)",
            steps_of(&all_steps),
            match missing.as_slice() {
                [one] => format!("{one} is"),
                more => format!("{} are", more.join(", ")),
            }
        )];
    }
    let partitions = match Slurm::find().and_then(|s| s.partitions()) {
        Ok(p) => p,
        Err(e) => {
            return vec![format!(
                "{} {run} on Slurm, but its partitions cannot be listed: {e}",
                steps_of(&all_steps)
            )]
        }
    };
    let listed = || {
        let names: Vec<String> = partitions
            .iter()
            .map(|p| {
                if p.default {
                    format!("{} (default)", p.name)
                } else {
                    p.name.clone()
                }
            })
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let mut problems = Vec::new();
    for (name, (compute, steps)) in &used {
        match &compute.partition {
            Some(p) if !partitions.iter().any(|q| &q.name == p) => problems.push(format!(
                "compute {name:?} (used by {}): partition {p:?} is not known to sinfo (partitions: {})",
                steps_of(steps),
                listed()
            )),
            None if !partitions.iter().any(|q| q.default) => problems.push(format!(
                "compute {name:?} (used by {}): sets no partition and the cluster has no default partition (partitions: {}); set \"partition\"",
                steps_of(steps),
                listed()
            )),
            _ => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_slurm_s_words() {
        for (word, state) in [
            ("RUNNING", JobState::Running),
            ("PD", JobState::Pending),
            ("CANCELLED+", JobState::Cancelled),
            ("NODE_FAIL", JobState::NodeFail),
            ("OUT_OF_MEMORY", JobState::OutOfMemory),
            ("COMPLETED\n", JobState::Completed),
        ] {
            assert_eq!(JobState::parse(word), state, "{word}");
        }
        assert_eq!(
            JobState::parse("RESIZING"),
            JobState::Other("RESIZING".into())
        );
        assert_eq!(JobState::NodeFail.to_string(), "NODE_FAIL");
        assert!(JobState::Timeout.is_finished());
        assert!(!JobState::Completing.is_finished());
        assert!(!JobState::Requeued.is_finished());
    }

    #[test]
    fn a_job_line_from_scontrol() {
        let line = "JobId=4 JobName=k.sh UserId=root(0) JobState=FAILED Reason=NonZeroExitCode \
                    Dependency=(null) ExitCode=3:0 RunTime=00:00:00 NodeList=n1 BatchHost=n1 \
                    Command=/tmp/a b/k.sh WorkDir=/tmp/sl";
        assert_eq!(
            parse_job(JobId(4), line),
            Some(JobInfo {
                id: JobId(4),
                state: JobState::Failed,
                exit_code: Some(3),
                signal: None,
                nodes: "n1".into(),
                reason: Some("NonZeroExitCode".into()),
            })
        );
        let running = "JobId=5 JobState=RUNNING Reason=None ExitCode=0:0 NodeList=n[1-2]";
        let info = parse_job(JobId(5), running).unwrap();
        assert_eq!(
            (info.exit_code, info.reason, info.nodes.as_str()),
            (None, None, "n[1-2]")
        );
        let killed = "JobId=6 JobState=CANCELLED Reason=None ExitCode=0:15 NodeList=(null)";
        let info = parse_job(JobId(6), killed).unwrap();
        assert_eq!(
            (info.exit_code, info.signal, info.nodes.as_str()),
            (Some(0), Some(15), "")
        );
        assert_eq!(parse_job(JobId(7), "slurm_load_jobs error"), None);
    }

    #[test]
    fn batch_scripts_quote_every_byte() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::ffi::OsStringExt;
        let argv: Vec<OsString> = vec![
            "printf".into(),
            "%s|".into(),
            "it's $HOME `x` \\ \"q\"\n2".into(),
            OsString::from_vec(b"caf\xe9".to_vec()),
            "".into(),
        ];
        let script = batch_script(&argv, "step \"s\"\nrun r\x1b");
        assert!(script.starts_with(b"#!/bin/sh\n# step \"s\"\n# run r\\x1b\nexec 'printf'"));
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("job.sh");
        fs_err::write(&path, &script)?;
        let out = Command::new("/bin/sh").arg(&path).output()?;
        let expected = b"it's $HOME `x` \\ \"q\"\n2|caf\xe9||".to_vec();
        assert_eq!(out.stdout, expected);
        Ok(())
    }

    #[test]
    fn a_missing_command_is_named() {
        let e = run(
            Path::new("/nonexistent/sbatch"),
            &["--version".into()],
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("cannot run sbatch --version: "),
            "{e}"
        );
        let e = run(
            Path::new("/bin/sh"),
            &["-c".into(), "echo oops >&2; exit 3".into()],
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sh -c echo oops >&2; exit 3` failed (exit code 3): oops"
        );
    }
}
