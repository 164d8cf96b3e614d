//! Compute targets end to end: a step's key is the same locally and on Slurm (a compute target
//! is a resource knob), and command steps run through `sbatch` on the local two-node cluster
//! (`.ci/slurm-up.sh`; these fail under `CI=true` without it, and skip elsewhere).

use std::collections::BTreeMap;
use std::error::Error;

use stepgraph_engine::{plan, run, CollectSink, Decision, Pipeline, PipelineData, PlanOptions};
use stepgraph_steps::{
    CommandStep, Compute, EntryError, EntryScript, MiniBatch, ParallelRunConfig, ParallelRunStep,
    Row,
};

use crate::common::{jobs, slurm_cluster, Workspace, SLURM_PARTITION};

type TestResult = Result<(), Box<dyn Error>>;

struct Echo;
impl EntryScript for Echo {
    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<Row>, EntryError> {
        Ok(vec![mini_batch.len().to_string()])
    }
}

/// A command step and a ParallelRunStep, both on `compute`.
fn pipeline(ws: &Workspace, compute: &Compute) -> Result<Pipeline, Box<dyn Error>> {
    ws.write("data/a.txt", "alpha");
    let docs = stepgraph_engine::FileDataset::from_files("docs", ws.path().join("data"));
    let config = ParallelRunConfig::builder()
        .rust_entry("echo-v1", || Box::new(Echo))
        .error_threshold(0)
        .build()?;
    let prs = ParallelRunStep::builder("count", config)
        .input(&docs)
        .output(PipelineData::new("counts"))
        .compute(compute)
        .build()?;
    let cmd = CommandStep::new(
        "copy",
        [
            "cp",
            "{inputs.counts}/parallel_run_step.txt",
            "{outputs.out}/n.txt",
        ],
    )
    .input("counts", PipelineData::new("counts"))
    .output("out", PipelineData::new("copied"))
    .compute(compute);
    Ok(Pipeline::builder("compute").step(prs).step(cmd).build()?)
}

fn keys(ws: &Workspace, compute: &Compute) -> Result<BTreeMap<String, String>, Box<dyn Error>> {
    let p = pipeline(ws, compute)?;
    let store = ws.store();
    let mut out = BTreeMap::new();
    for s in plan(&p, &store, &PlanOptions::default())?.steps {
        if let Some(fp) = s.fingerprint {
            out.insert(s.name, fp.key().to_string());
        }
    }
    Ok(out)
}

fn hpc() -> Compute {
    Compute::slurm("hpc")
        .partition("debug")
        .time("00:10:00")
        .cpus_per_task(1)
        .mem("100M")
        .extra_args(["--qos=normal"])
        .into()
}

#[test]
fn the_compute_target_is_not_in_the_key() -> TestResult {
    let ws = Workspace::new();
    let local = keys(&ws, &Compute::Local)?;
    assert!(local.contains_key("count"), "{local:?}");
    assert_eq!(keys(&ws, &hpc())?, local);
    Ok(())
}

#[test]
fn a_step_that_ran_locally_is_reused_on_slurm_and_back() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let local = pipeline(&ws, &Compute::Local)?;
    let s = run(&local, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(
        std::fs::read_to_string(s.output_dir("copy", "out").join("n.txt"))?,
        "1\n"
    );
    // Planned on Slurm (nothing is submitted: both steps are reused) and run there.
    let on_slurm = pipeline(&ws, &hpc())?;
    for p in [&on_slurm, &local] {
        for step in plan(p, &store, &PlanOptions::default())?.steps {
            assert!(
                matches!(step.decision, Decision::Reuse { .. }),
                "{}: {:?}",
                step.name,
                step.decision
            );
        }
    }
    let again = run(&on_slurm, &store, &jobs(1), &CollectSink::default())?;
    assert!(
        again
            .steps
            .iter()
            .all(|s| s.status == stepgraph_engine::StepStatus::Reused),
        "{:?}",
        again.steps
    );
    Ok(())
}

/// What the Slurm command steps run: prints to both streams, writes its node, job id, the
/// step's variable and its folder into its output, and exits with `$2`.
const JOB_SCRIPT: &str = r#"echo "out on $SLURMD_NODENAME"
echo "err on $SLURMD_NODENAME" >&2
printf '%s\n' "$SLURMD_NODENAME" "$SLURM_JOB_ID" "$GREETING" "$(pwd)" > "$1/seen.txt"
[ -n "$3" ] && sleep "$3"
exit "$2"
"#;

/// Pipeline `name` of a command step `job` on the local cluster running `JOB_SCRIPT` with exit
/// code `code` (after sleeping `sleep` seconds when not empty). Its Slurm job is named
/// `stepgraph.<name>.job`.
fn slurm_command(
    ws: &Workspace,
    name: &str,
    code: &str,
    sleep: &str,
) -> Result<Pipeline, Box<dyn Error>> {
    ws.write("src/job.sh", JOB_SCRIPT);
    let hpc = Compute::slurm("hpc")
        .partition(SLURM_PARTITION)
        .time("00:05:00")
        .mem("100M");
    let step = CommandStep::new("job", ["sh", "job.sh", "{outputs.out}", code, sleep])
        .source_directory(ws.path().join("src"))
        .output("out", PipelineData::new("seen"))
        .env("GREETING", "hello from the step")
        .compute(&hpc);
    Ok(Pipeline::builder(name).step(step).build()?)
}

/// The jobs (`id STATE`) `squeue` lists for step `job` of pipeline `name`.
fn queued_jobs(name: &str) -> Result<String, Box<dyn Error>> {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-n", &format!("stepgraph.{name}.job"), "-o", "%i %T"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_command_step_runs_through_sbatch_with_its_environment_and_logs() -> TestResult {
    if !slurm_cluster() {
        return Ok(());
    }
    let ws = Workspace::new();
    let store = ws.store();
    let s = run(
        &slurm_command(&ws, "slurm-ok", "0", "")?,
        &store,
        &jobs(1),
        &CollectSink::default(),
    )?;
    assert_eq!(
        s.status,
        stepgraph_engine::RunStatus::Succeeded,
        "{:?}",
        s.steps
    );
    let seen = std::fs::read_to_string(s.output_dir("job", "out").join("seen.txt"))?;
    let lines: Vec<&str> = seen.lines().collect();
    let [node, job, greeting, cwd] = lines.as_slice() else {
        panic!("seen.txt: {seen:?}");
    };
    assert!(["n1", "n2"].contains(node), "SLURMD_NODENAME: {seen:?}");
    assert!(job.parse::<u64>().is_ok(), "SLURM_JOB_ID: {seen:?}");
    assert_eq!(*greeting, "hello from the step");
    assert!(cwd.ends_with("job/work/source"), "{cwd}");
    // The logs are where a local run puts them, and the job is recorded beside them.
    let logs = s.run_dir.join("job/logs");
    assert_eq!(
        std::fs::read_to_string(logs.join("user/stdout.txt"))?,
        format!("out on {node}\n")
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("user/stderr.txt"))?,
        format!("err on {node}\n")
    );
    let record = std::fs::read_to_string(logs.join("sys/slurm.txt"))?;
    assert!(record.contains(&format!("job {job} submitted: sbatch --partition={SLURM_PARTITION} --time=00:05:00 --mem=100M --job-name=stepgraph.slurm-ok.job")), "{record}");
    assert!(
        record.contains(&format!(
            "job {job} ended: COMPLETED with exit code 0 on {node}"
        )),
        "{record}"
    );
    Ok(())
}

#[test]
fn a_failing_command_on_slurm_names_the_job_its_state_and_exit_code() -> TestResult {
    if !slurm_cluster() {
        return Ok(());
    }
    let ws = Workspace::new();
    let store = ws.store();
    let s = run(
        &slurm_command(&ws, "slurm-fails", "3", "")?,
        &store,
        &jobs(1),
        &CollectSink::default(),
    )?;
    let rec = s.step("job").ok_or("no record")?;
    assert_eq!(rec.status, stepgraph_engine::StepStatus::Failed);
    let error = rec.error.clone().unwrap_or_default();
    let record = std::fs::read_to_string(s.run_dir.join("job/logs/sys/slurm.txt"))?;
    let job = record
        .strip_prefix("job ")
        .and_then(|r| r.split_once(' '))
        .map(|(id, _)| id)
        .ok_or(format!("no job id in {record:?}"))?;
    let expected = format!(
        "command \"sh\" failed on compute \"hpc\": Slurm job {job} FAILED with exit code 3 on "
    );
    assert!(
        error.starts_with(&expected),
        "{error}\n  expected: {expected}"
    );
    assert!(
        error.ends_with(":\nerr on n1") || error.ends_with(":\nerr on n2"),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_cancelled_run_leaves_no_slurm_job() -> TestResult {
    if !slurm_cluster() {
        return Ok(());
    }
    let ws = Workspace::new();
    let store = ws.store();
    let p = slurm_command(&ws, "slurm-cancelled", "0", "60")?;
    let opts = jobs(1);
    let cancel = opts.cancel.clone();
    let watcher = std::thread::spawn(move || -> Result<(), String> {
        // Cancel once the job runs.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            if queued_jobs("slurm-cancelled")
                .map_err(|e| e.to_string())?
                .contains("RUNNING")
            {
                cancel.cancel();
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        cancel.cancel();
        Err("the job never ran".into())
    });
    let s = run(&p, &store, &opts, &CollectSink::default())?;
    watcher.join().map_err(|_| "watcher panicked")??;
    assert_eq!(
        s.status,
        stepgraph_engine::RunStatus::Cancelled,
        "{:?}",
        s.steps
    );
    let record = std::fs::read_to_string(s.run_dir.join("job/logs/sys/slurm.txt"))?;
    assert!(record.contains("cancelled (Ctrl-C): CANCELLED"), "{record}");
    assert_eq!(
        queued_jobs("slurm-cancelled")?,
        "",
        "squeue still lists the job"
    );
    Ok(())
}

#[test]
fn a_job_the_partition_can_never_start_fails_instead_of_waiting() -> TestResult {
    if !slurm_cluster() {
        return Ok(());
    }
    let ws = Workspace::new();
    let store = ws.store();
    // The test cluster's nodes have one CPU each: Slurm keeps the job pending (PartitionConfig).
    let big = Compute::slurm("big")
        .partition(SLURM_PARTITION)
        .cpus_per_task(4);
    let step = CommandStep::new("job", ["true"]).compute(&big);
    let p = Pipeline::builder("slurm-too-big").step(step).build()?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let rec = s.step("job").ok_or("no record")?;
    assert_eq!(rec.status, stepgraph_engine::StepStatus::Failed);
    let error = rec.error.clone().unwrap_or_default();
    assert!(
        error
            .contains("on compute \"big\" cannot start: it is pending with reason PartitionConfig")
            && error.ends_with("the job was cancelled"),
        "{error}"
    );
    assert_eq!(
        queued_jobs("slurm-too-big")?,
        "",
        "squeue still lists the job"
    );
    Ok(())
}
