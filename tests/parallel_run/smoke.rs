//! A first end-to-end run of a Python entry script through ParallelRunStep.

use std::path::Path;

use stepgraph_engine::{
    Argument, CollectSink, FileDataset, OpenOptions, Pipeline, PipelineData, RunOptions,
    StepStatus, Store,
};
use stepgraph_steps::{ParallelRunConfig, ParallelRunStep};

use crate::common::read_output;

fn fixture(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    std::fs::create_dir_all(dir.join("scripts")).expect("scripts dir");
    for i in 1..=23 {
        std::fs::write(
            dir.join(format!("data/doc-{i:02}.txt")),
            format!("doc {i}\n"),
        )
        .expect("write doc");
    }
    std::fs::write(
        dir.join("scripts/score.py"),
        r#"import argparse, os
from azureml_user.parallel_run import EntryScript

def init():
    global threshold, logger
    p = argparse.ArgumentParser()
    p.add_argument("--threshold", type=float, default=0.0)
    args, _ = p.parse_known_args()
    threshold = args.threshold
    logger = EntryScript().logger
    logger.info("init with threshold %s", threshold)
    print("this print must not break the protocol")

def run(mini_batch):
    return [f"{os.path.basename(p)} {len(open(p).read())} {threshold}" for p in mini_batch]
"#,
    )
    .expect("write script");
}

#[test]
fn python_entry_gathers_rows_in_order_and_is_reused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    fixture(dir.path());
    let cfg = ParallelRunConfig::builder()
        .source_directory(dir.path().join("scripts"))
        .entry_script("score.py")
        .mini_batch_size("5")
        .error_threshold(0)
        .process_count_per_node(2)
        .build()?;
    let step = ParallelRunStep::new(
        "score-docs",
        cfg,
        vec![FileDataset::from_files("docs", dir.path().join("data")).into()],
        Some(PipelineData::new("scores")),
        vec![],
        vec![Argument::from("--threshold"), Argument::from("0.5")],
        true,
    );
    let pipeline = Pipeline::builder("smoke").step(step).build()?;
    let store = Store::open(dir.path().join(".stepgraph"), OpenOptions::default())?;
    let sink = CollectSink::default();
    let run = stepgraph_engine::run(&pipeline, &store, &RunOptions::default(), &sink)?;
    let rec = run.step("score-docs").ok_or("no step")?;
    assert_eq!(rec.status, StepStatus::Ran, "{:?}", rec.error);
    let out = read_output(&run, "score-docs", "output", "parallel_run_step.txt")?;
    let expected: String = (1..=23)
        .map(|i| format!("doc-{i:02}.txt {} 0.5\n", format!("doc {i}\n").len()))
        .collect();
    assert_eq!(out, expected);
    assert_eq!(rec.counts.items, 23);
    assert_eq!(rec.counts.units, 5);
    // What the script prints is where Azure keeps it: logs/user/stdout/<node>/<process>.
    let log0 = std::fs::read_to_string(
        run.run_dir
            .join("score-docs/logs/user/stdout/0/process000.stdout.txt"),
    )?;
    assert!(
        log0.contains("this print must not break the protocol"),
        "{log0}"
    );
    let again = stepgraph_engine::run(&pipeline, &store, &RunOptions::default(), &sink)?;
    assert_eq!(
        again.step("score-docs").map(|s| s.status),
        Some(StepStatus::Reused)
    );
    Ok(())
}
