//! Reuse: an unchanged rerun is reused, only result changes rerun the step; a forced rerun
//! runs every mini-batch again.

use stepgraph_engine::{FileDataset, Pipeline, StepStatus};

use crate::common::Workspace;
use crate::parallel_run::support::{
    docs, output, python, python_entry, ran, rec, run_one, script, step, TestResult, UsualSetUp,
    STEP,
};

const COUNTING: &str = r#"import os

def run(mini_batch):
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write(os.path.basename(mini_batch[0]) + "\n")
    return [os.path.basename(p) for p in mini_batch]
"#;

#[test]
fn unchanged_rerun_is_reused_and_only_result_changes_rerun_the_step() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 6);
    let calls = ws.path().join("calls.txt");
    let scripts = script(ws.path(), "count.py", COUNTING);
    let store = ws.store();
    let make = |workers: u32, tag: &str| {
        let cfg = python(ws.path(), "count.py")
            .mini_batch_size("2")
            .error_threshold(0)
            .process_count_per_node(workers)
            .environment_variable("CALLS_LOG", calls.display().to_string());
        step(
            cfg,
            FileDataset::from_files("docs", data.clone()),
            &["--tag", tag],
        )
    };
    let n_calls = || crate::parallel_run::support::lines(&calls).len();

    let (first, _) = run_one(&store, make(2, "a"));
    ran(&first);
    assert_eq!(n_calls(), 3);

    let (again, sink) = run_one(&store, make(2, "a"));
    assert_eq!(rec(&again).status, StepStatus::Reused);
    assert_eq!(n_calls(), 3, "a reused step calls no run()");
    assert_eq!(sink.step_events(), vec![("reused", STEP.to_string())]);
    assert_eq!(output(&again), output(&first));
    assert_eq!(rec(&again).counts, rec(&first).counts);
    assert_eq!(
        rec(&again).reused_from.as_deref(),
        Some(first.run_id.as_str())
    );

    // Only a resource knob changes: still reused.
    let (more_workers, _) = run_one(&store, make(3, "a"));
    assert_eq!(rec(&more_workers).status, StepStatus::Reused);
    assert_eq!(n_calls(), 3);

    // A file of the source directory changes: rerun.
    std::fs::write(scripts.join("count.py"), format!("{COUNTING}# edited\n"))?;
    let (edited, _) = run_one(&store, make(2, "a"));
    ran(&edited);
    assert_eq!(n_calls(), 6);

    // An argument changes: rerun.
    let (new_arg, _) = run_one(&store, make(2, "b"));
    ran(&new_arg);
    assert_eq!(n_calls(), 9);

    // And that new state is reused in turn, whatever the parallelism.
    let (reused, _) = run_one(&store, make(1, "b"));
    assert_eq!(rec(&reused).status, StepStatus::Reused);
    assert_eq!(n_calls(), 9);
    Ok(())
}

#[test]
fn forced_rerun_after_success_runs_every_mini_batch_again() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 6);
    let calls = ws.path().join("calls.txt");
    let cfg = python_entry(ws.path(), "count.py", COUNTING)
        .usual("2")
        .environment_variable("CALLS_LOG", calls.display().to_string());
    let pipeline = Pipeline::builder("forced")
        .step(step(cfg, FileDataset::from_files("docs", data), &[]))
        .build()
        .expect("pipeline builds");
    let store = ws.store();
    let (first, _) = crate::parallel_run::support::run_pipeline(&store, &pipeline);
    ran(&first);
    let mut opts = stepgraph_engine::RunOptions::default();
    opts.plan.force.insert(STEP.to_string());
    let sink = stepgraph_engine::CollectSink::default();
    let forced = stepgraph_engine::run(&pipeline, &store, &opts, &sink).expect("run starts");
    let r = ran(&forced);
    assert_eq!(r.counts.resumed_units, 0);
    assert_eq!(crate::parallel_run::support::lines(&calls).len(), 6);
    assert_eq!(output(&forced), output(&first));
}
