//! Fixtures shared by the ParallelRunStep end-to-end tests: data folders, entry scripts, and
//! short ways to build, run and inspect a one-step (or two-step) pipeline.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use stepgraph_engine::{
    Argument, CollectSink, DataSource, Event, Pipeline, PipelineData, RunOptions, RunSummary,
    StepRecord, StepStatus, Store,
};
use stepgraph_engine::{FileDataset, TabularDataset};
use stepgraph_steps::ParallelRunConfigBuilder;
use stepgraph_steps::{FnStep, ParallelRunStep};

use crate::common::Workspace;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Name of the ParallelRunStep in every fixture pipeline.
pub(crate) const STEP: &str = "score";

/// Write `data/doc-01.txt` .. `data/doc-NN.txt` ("doc i\n") and return the folder.
pub(crate) fn docs(root: &Path, n: usize) -> PathBuf {
    let dir = root.join("data");
    std::fs::create_dir_all(&dir).expect("create data folder");
    for i in 1..=n {
        std::fs::write(dir.join(doc_name(i)), format!("doc {i}\n")).expect("write doc");
    }
    dir
}

/// The rows `doc-NN.txt ok` for 1..=n but `except`, as an entry returning `<name> ok` gathers
/// them.
pub(crate) fn all_ok_rows(n: usize, except: &[usize]) -> String {
    (1..=n)
        .filter(|i| !except.contains(i))
        .map(|i| format!("{} ok\n", doc_name(i)))
        .collect()
}

/// `doc-07.txt` for 7.
pub(crate) fn doc_name(i: usize) -> String {
    format!("doc-{i:02}.txt")
}

/// Write `scripts/<name>` and return the scripts folder.
pub(crate) fn script(root: &Path, name: &str, text: &str) -> PathBuf {
    let dir = root.join("scripts");
    std::fs::create_dir_all(&dir).expect("create scripts folder");
    std::fs::write(dir.join(name), text).expect("write script");
    dir
}

/// A config builder for a Python entry `scripts/<name>` under `root`.
pub(crate) fn python(root: &Path, name: &str) -> ParallelRunConfigBuilder {
    stepgraph_steps::ParallelRunConfig::builder()
        .source_directory(root.join("scripts"))
        .entry_script(name)
}

/// Write `scripts/<name>` under `root` with `text` and start a config builder for it, as
/// [`python`] does.
pub(crate) fn python_entry(root: &Path, name: &str, text: &str) -> ParallelRunConfigBuilder {
    script(root, name, text);
    python(root, name)
}

/// The config set-up most tests share.
pub(crate) trait UsualSetUp {
    /// Mini-batches of `size`, no failed item allowed, two workers.
    fn usual(self, size: &str) -> Self;

    /// Tabular mini-batches as DataFrames when pandas is importable (Azure's form, always in
    /// CI), else as lists of dicts (`tabular_format` records), for scripts that take both; the
    /// test output then says the DataFrame form was skipped.
    fn rows_as_available(self) -> Self;
}

impl UsualSetUp for ParallelRunConfigBuilder {
    fn usual(self, size: &str) -> Self {
        self.mini_batch_size(size)
            .error_threshold(0)
            .process_count_per_node(2)
    }

    fn rows_as_available(self) -> Self {
        if pandas_or_skip("tabular inputs as DataFrames (the tests used lists of dicts)") {
            self
        } else {
            self.tabular_format(stepgraph_steps::TabularInput::Records)
        }
    }
}

/// The ParallelRunStep `score` reading `input`, writing `scores`.
pub(crate) fn step(
    cfg: ParallelRunConfigBuilder,
    input: impl Into<DataSource>,
    args: &[&str],
) -> ParallelRunStep {
    ParallelRunStep::new(
        STEP,
        cfg.build().expect("valid config"),
        vec![input.into()],
        Some(PipelineData::new("scores")),
        vec![],
        args.iter().map(|a| Argument::from(*a)).collect(),
        true,
    )
}

/// A downstream FnStep `report` copying every file of `scores` into its output `report`.
pub(crate) fn report_step() -> FnStep {
    FnStep::new("report", "v1", |ctx| {
        let out = ctx.output("report")?;
        for f in ctx.input_files("scores")? {
            let name = f.file_name().unwrap_or_default().to_owned();
            std::fs::copy(&f, out.join(name))?;
        }
        Ok(())
    })
    .input("scores", PipelineData::new("scores"))
    .output("report", PipelineData::new("report"))
}

/// Build a pipeline of `step` alone and run it.
pub(crate) fn run_one(store: &Store, step: ParallelRunStep) -> (RunSummary, CollectSink) {
    let pipeline = Pipeline::builder("prs-e2e")
        .step(step)
        .build()
        .expect("pipeline builds");
    run_pipeline(store, &pipeline)
}

/// Open `ws`'s store and run `step` alone in it.
pub(crate) fn run_in(ws: &Workspace, step: ParallelRunStep) -> (RunSummary, CollectSink) {
    run_one(&ws.store(), step)
}

/// Run, in `ws`'s store, the step of `cfg` over the file dataset `docs` at `data`, without
/// arguments.
pub(crate) fn run_docs(
    ws: &Workspace,
    cfg: ParallelRunConfigBuilder,
    data: PathBuf,
) -> (RunSummary, CollectSink) {
    run_in(ws, step(cfg, FileDataset::from_files("docs", data), &[]))
}

/// Run, in `ws`'s store, the step of `cfg` over the CSV files `files` (tabular dataset
/// `name`), without arguments.
pub(crate) fn run_csv(
    ws: &Workspace,
    cfg: ParallelRunConfigBuilder,
    name: &str,
    files: Vec<PathBuf>,
) -> (RunSummary, CollectSink) {
    run_in(
        ws,
        step(cfg, TabularDataset::from_delimited_files(name, files), &[]),
    )
}

/// Build a pipeline of `step` followed by [`report_step`] and run it.
pub(crate) fn run_with_report(store: &Store, step: ParallelRunStep) -> (RunSummary, CollectSink) {
    let pipeline = Pipeline::builder("prs-e2e")
        .step(step)
        .step(report_step())
        .build()
        .expect("pipeline builds");
    run_pipeline(store, &pipeline)
}

/// Run `pipeline`, collecting events.
pub(crate) fn run_pipeline(store: &Store, pipeline: &Pipeline) -> (RunSummary, CollectSink) {
    let sink = CollectSink::default();
    let summary =
        stepgraph_engine::run(pipeline, store, &RunOptions::default(), &sink).expect("run starts");
    (summary, sink)
}

/// The record of the ParallelRunStep.
pub(crate) fn rec(run: &RunSummary) -> &StepRecord {
    run.step(STEP).expect("step record")
}

/// The record of the ParallelRunStep, asserted to have run (its error shown when not).
#[track_caller]
pub(crate) fn ran(run: &RunSummary) -> &StepRecord {
    let r = rec(run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    r
}

/// The step's `(items, failed items, mini-batches, failed mini-batches)`.
pub(crate) fn counts(r: &StepRecord) -> (u64, u64, u64, u64) {
    let c = &r.counts;
    (c.items, c.failed_items, c.units, c.failed_units)
}

/// The gathered append_row file (default name).
pub(crate) fn output(run: &RunSummary) -> String {
    output_file(run, "parallel_run_step.txt")
}

/// A file of the step's output folder.
pub(crate) fn output_file(run: &RunSummary, name: &str) -> String {
    let p = run.output_dir(STEP, "output").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `logs/sys/events.txt` of the step.
pub(crate) fn sys_log(run: &RunSummary) -> String {
    log_file(run, "sys/events.txt")
}

/// `logs/job_result.txt` of the step.
pub(crate) fn job_result(run: &RunSummary) -> String {
    log_file(run, "job_result.txt")
}

/// A file below the step's `logs/` folder.
pub(crate) fn log_file(run: &RunSummary, rel: &str) -> String {
    let p = run.run_dir.join(STEP).join("logs").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file below the step's `logs/user/` (Azure's layout: `stdout/`, `stderr/`,
/// `entry_script_log/`, each `<node>/<process>.*`), concatenated in path order.
pub(crate) fn user_logs(run: &RunSummary) -> String {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let dir = run.run_dir.join(STEP).join("logs").join("user");
    let mut names: Vec<PathBuf> = Vec::new();
    files(&dir, &mut names);
    names.sort();
    names
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// The step's `Event::Message` texts.
pub(crate) fn messages(sink: &CollectSink) -> Vec<String> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { step, text, .. } if step == STEP => Some(text),
            _ => None,
        })
        .collect()
}

/// Lines of a calls log written by an entry script (empty when it does not exist).
pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// True when the system python3 can import pandas (CI installs it; dev machines may not).
pub(crate) fn has_pandas() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import pandas"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether pandas is importable, for the DataFrame checks of `group`. When it is not: in CI
/// (`CI=true`, which installs pandas) the test fails; elsewhere one line per group in the test
/// output says the group's DataFrame checks were skipped.
pub(crate) fn pandas_or_skip(group: &str) -> bool {
    if has_pandas() {
        return true;
    }
    assert!(
        !crate::common::in_ci(),
        "pandas must be importable by python3 in CI ({group})"
    );
    crate::common::skipped(
        group,
        "pandas is not importable by python3 (pip install pandas)",
    );
    false
}

/// Python helper turning a tabular mini-batch (DataFrame or list of dicts) into a list of
/// dicts; entry scripts include it so they work with and without pandas.
pub(crate) const PY_ROWS: &str = r#"
def rows_of(mini_batch):
    if hasattr(mini_batch, "to_dict"):
        return mini_batch.to_dict("records")
    return list(mini_batch)
"#;

/// SIGKILL `child` (a run of a ParallelRunStep) once its entry logged `n` run() calls in
/// `calls` and a commit (every 250 ms) could cover them, before it finishes. An error when it
/// ends first (with the text of `log`, if given) or makes no progress `within`.
pub(crate) fn kill_after_calls(
    child: &mut std::process::Child,
    calls: &Path,
    n: usize,
    within: std::time::Duration,
    log: Option<&Path>,
) -> TestResult {
    let started = std::time::Instant::now();
    while lines(calls).len() < n {
        if let Some(status) = child.try_wait()? {
            let text = log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default();
            return Err(format!("child ended before {n} run() calls ({status}):\n{text}").into());
        }
        if started.elapsed() > within {
            child.kill()?;
            child.wait()?;
            return Err(format!("child made no progress in {within:?}").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Long enough for a commit to cover those calls, too short to finish.
    std::thread::sleep(std::time::Duration::from_millis(500));
    if let Some(status) = child.try_wait()? {
        return Err(format!("child finished ({status}) before it could be killed").into());
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    Ok(())
}
