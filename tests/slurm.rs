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

use crate::common::{jobs, Workspace};

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
