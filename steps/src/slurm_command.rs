//! A [`CommandStep`](crate::CommandStep) on a Slurm target: its command runs as one batch job
//! (`sbatch`), with the environment, working folder and log files a local run would have.
//!
//! - The batch script (`logs/sys/slurm_job.sh`) `exec`s the command line; `sbatch` runs with
//!   exactly the step's environment, which the job inherits (`--export=ALL`), so the command
//!   sees it plus Slurm's own `SLURM_*` and `SLURMD_NODENAME` variables.
//! - `--chdir` is the step's working folder; `--output` and `--error` are the step's
//!   `logs/user/stdout.txt` and `stderr.txt` (the run folder is on the shared file system).
//! - The step watches the job (`scontrol show job`: state, pending reason, exit code), fails
//!   early when it is pending for a reason that never clears (`PartitionConfig`, …), and
//!   cancels it (`scancel`) on Ctrl-C or when the step ends early; `logs/sys/slurm.txt`
//!   records the job id, its `sbatch` options, its pending reasons and how it ended.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use stepgraph_engine::{StepContext, StepError};

use crate::slurm::{batch_script, JobId, JobInfo, JobState, Slurm, SlurmError};
use crate::SlurmCompute;

/// How many state queries in a row may fail (a busy controller) before the step gives up.
const MAX_QUERY_ERRORS: u32 = 10;

/// Longest pause between two state queries.
const MAX_POLL: Duration = Duration::from_secs(2);

/// The command's files and surroundings, as the local run would have them.
pub(crate) struct BatchCommand<'a> {
    /// The command line, program first, placeholders replaced.
    pub(crate) argv: &'a [OsString],
    /// Its working folder.
    pub(crate) cwd: &'a Path,
    /// Its whole environment.
    pub(crate) env: &'a BTreeMap<OsString, OsString>,
    /// Where its standard output goes.
    pub(crate) stdout: &'a Path,
    /// Where its standard error goes.
    pub(crate) stderr: &'a Path,
}

/// Cancels the job when dropped while armed: the step ended before the job did (an error,
/// a panic, Ctrl-C).
struct CancelOnDrop<'a> {
    slurm: &'a Slurm,
    job: JobId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.slurm.cancel(self.job);
        }
    }
}

/// `logs/sys/slurm.txt`: one line per event of the job, best effort.
struct JobLog(std::path::PathBuf);

impl JobLog {
    fn line(&self, text: &str) {
        let f = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0);
        if let Ok(mut f) = f {
            let _ = writeln!(f, "{text}");
        }
    }
}

/// Run `command` as a batch job on `compute` and wait for it; Ok when the job COMPLETED with
/// exit code 0.
///
/// # Errors
/// A [`StepError`] naming the target, the job id, its final state and exit code (with the
/// tail of its stderr), or why it could not be submitted or watched; "cancelled" on Ctrl-C.
pub(crate) fn run(
    compute: &SlurmCompute,
    ctx: &StepContext<'_>,
    command: &BatchCommand<'_>,
) -> Result<(), StepError> {
    let on = format!("compute {:?}", compute.name);
    let slurm = Slurm::find().map_err(|e| StepError::with_source(on.clone(), e))?;
    let sys = ctx.log_dir.join("sys");
    fs_err::create_dir_all(&sys)?;
    let script = sys.join("slurm_job.sh");
    let comment = format!(
        "stepgraph: step {:?} of pipeline {:?}, run {}, on {on}",
        ctx.step, ctx.pipeline, ctx.run_id
    );
    fs_err::write(&script, batch_script(command.argv, &comment))?;
    let log = JobLog(sys.join("slurm.txt"));
    let mut args: Vec<OsString> = compute
        .sbatch_args()
        .into_iter()
        .map(OsString::from)
        .collect();
    args.push(format!("--job-name={}", job_name(ctx.pipeline, ctx.step)).into());
    args.push("--export=ALL".into());
    args.push(option("--chdir=", &absolute(command.cwd)?));
    args.push(option(
        "--output=",
        &slurm_file_name(&absolute(command.stdout)?),
    ));
    args.push(option(
        "--error=",
        &slurm_file_name(&absolute(command.stderr)?),
    ));
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let job = slurm
        .submit(&script, &args, Some(command.env))
        .map_err(|e| StepError::with_source(format!("submitting the job to {on}"), e))?;
    log.line(&format!("job {job} submitted: sbatch {}", shown.join(" ")));
    let mut guard = CancelOnDrop {
        slurm: &slurm,
        job,
        armed: true,
    };
    let info = match watch(&slurm, job, ctx, &log) {
        Ok(info) => info,
        Err(Watch::Cancelled) => {
            let _ = slurm.cancel(job);
            guard.armed = false;
            let ended = settle(&slurm, job);
            log.line(&format!("job {job} cancelled (Ctrl-C): {ended}"));
            return Err(StepError::new(format!(
                "cancelled (Slurm job {job} cancelled with scancel)"
            )));
        }
        Err(Watch::Hopeless(reason)) => {
            let _ = slurm.cancel(job);
            guard.armed = false;
            log.line(&format!("job {job} cannot start ({reason}): cancelled"));
            return Err(StepError::new(format!(
                "Slurm job {job} on {on} cannot start: it is pending with reason {reason} \
                 (the request exceeds what the partition, account or QOS allows: check the \
                 target's partition, time, cpus_per_task and mem); the job was cancelled"
            )));
        }
        Err(Watch::Lost(e)) => {
            log.line(&format!("job {job}: cannot follow it: {e}; cancelling it"));
            return Err(StepError::with_source(
                format!("following Slurm job {job} on {on} (it was cancelled)"),
                e,
            ));
        }
    };
    guard.armed = false;
    let ended = describe(&info);
    log.line(&format!("job {job} ended: {ended}"));
    if info.state == JobState::Completed && info.exit_code.unwrap_or(0) == 0 {
        return Ok(());
    }
    let program = command
        .argv
        .first()
        .map(|p| format!("{p:?}"))
        .unwrap_or_default();
    let tail = crate::process::file_excerpt(command.stderr);
    Err(StepError::new(format!(
        "command {program} failed on {on}: Slurm job {job} {ended}{}",
        if tail.trim().is_empty() {
            String::new()
        } else {
            format!(":\n{}", tail.trim_end())
        }
    )))
}

/// Why watching stopped before the job ended.
enum Watch {
    /// Ctrl-C.
    Cancelled,
    /// The job's state could not be had.
    Lost(SlurmError),
    /// The job waits for a reason that never clears (`HOPELESS`).
    Hopeless(String),
}

/// Pending reasons that never clear by themselves: the request exceeds what the partition,
/// account or QOS allows. A job pending for one of them is cancelled and the step fails.
pub(crate) const HOPELESS: &[&str] = &[
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "DependencyNeverSatisfied",
];

/// Wait until job `job` ends (or the run is cancelled); what `scontrol` says of it then.
/// Each new pending reason is recorded in `log`.
fn watch(slurm: &Slurm, job: JobId, ctx: &StepContext<'_>, log: &JobLog) -> Result<JobInfo, Watch> {
    let mut pause = Duration::from_millis(100);
    let mut errors = 0;
    let mut last_reason: Option<String> = None;
    loop {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if ctx.cancel.is_cancelled() {
                return Err(Watch::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pause = (pause + Duration::from_millis(100)).min(MAX_POLL);
        match slurm.job(job) {
            Ok(info) if info.state.is_finished() => return Ok(info),
            Ok(info) => {
                errors = 0;
                if info.state == JobState::Pending && info.reason != last_reason {
                    last_reason = info.reason.clone();
                    if let Some(r) = &info.reason {
                        log.line(&format!("job {job} pending: {r}"));
                        if HOPELESS.contains(&r.as_str()) {
                            return Err(Watch::Hopeless(r.clone()));
                        }
                    }
                }
            }
            Err(e) => {
                errors += 1;
                if errors >= MAX_QUERY_ERRORS || matches!(e, SlurmError::UnknownJob { .. }) {
                    return Err(Watch::Lost(e));
                }
            }
        }
    }
}

/// After `scancel`: wait (a few seconds at most) for the job to end, and say how it did.
fn settle(slurm: &Slurm, job: JobId) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match slurm.state(job) {
            Ok(s) if s.is_finished() => {
                return slurm
                    .job(job)
                    .map(|i| describe(&i))
                    .unwrap_or_else(|_| s.to_string())
            }
            Err(_) => return "ended".into(),
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    "still ending".into()
}

/// `FAILED with exit code 3 on n1 (NonZeroExitCode)`.
fn describe(info: &JobInfo) -> String {
    let mut out = info.state.to_string();
    match (info.exit_code, info.signal) {
        (_, Some(sig)) => out.push_str(&format!(" (killed by signal {sig})")),
        // A cancelled job's exit code 0 says nothing.
        (Some(0), None) if info.state != JobState::Completed => {}
        (Some(code), None) => out.push_str(&format!(" with exit code {code}")),
        (None, None) => {}
    }
    if !info.nodes.is_empty() {
        out.push_str(&format!(" on {}", info.nodes));
    }
    if let Some(r) = info.reason.as_ref().filter(|r| *r != "NonZeroExitCode") {
        out.push_str(&format!(" (reason: {r})"));
    }
    out
}

/// The job's name in `squeue`: `stepgraph.<pipeline>.<step>` (Slurm's limit, in characters).
fn job_name(pipeline: &str, step: &str) -> String {
    let name: String = format!("stepgraph.{pipeline}.{step}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.chars().take(200).collect()
}

/// `prefix` followed by `path`'s exact bytes.
fn option(prefix: &str, path: &Path) -> OsString {
    let mut o = OsString::from(prefix);
    o.push(path.as_os_str());
    o
}

fn absolute(p: &Path) -> Result<std::path::PathBuf, StepError> {
    std::path::absolute(p)
        .map_err(|e| StepError::with_source(format!("locating {}", p.display()), e))
}

/// `path` for `--output`/`--error`, whose `%` starts a replacement (`%j`, the job id):
/// every `%` doubled stands for itself.
fn slurm_file_name(path: &Path) -> std::path::PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        bytes.push(b);
        if b == b'%' {
            bytes.push(b'%');
        }
    }
    OsString::from_vec(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_signs_in_log_paths_stand_for_themselves() {
        assert_eq!(
            slurm_file_name(Path::new("/runs/100%/stdout.txt")),
            Path::new("/runs/100%%/stdout.txt")
        );
    }

    #[test]
    fn job_names_are_plain() {
        assert_eq!(job_name("my pipe", "step-1"), "stepgraph.my_pipe.step-1");
    }

    #[test]
    fn how_a_job_ended_in_words() {
        let mut info = JobInfo {
            id: JobId(7),
            state: JobState::Failed,
            exit_code: Some(3),
            signal: None,
            nodes: "n1".into(),
            reason: Some("NonZeroExitCode".into()),
        };
        assert_eq!(describe(&info), "FAILED with exit code 3 on n1");
        info.state = JobState::Cancelled;
        info.exit_code = Some(0);
        info.reason = None;
        assert_eq!(describe(&info), "CANCELLED on n1");
        info.state = JobState::Timeout;
        info.reason = Some("TimeLimit".into());
        info.exit_code = Some(0);
        info.signal = Some(15);
        assert_eq!(
            describe(&info),
            "TIMEOUT (killed by signal 15) on n1 (reason: TimeLimit)"
        );
    }
}
