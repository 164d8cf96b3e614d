//! ParallelRunStep end to end: build-time validation, failure kinds and retries, failure
//! limits, hung and noisy workers, deterministic gathering, reuse, summary_only outputs, side
//! inputs, command entries, row formats and progress events.

use std::path::Path;

use stepgraph_engine::{
    Argument, BuildError, BuildErrors, DataReference, Event, FileDataset, Pipeline, PipelineData,
    StepStatus, TabularDataset,
};
use stepgraph_steps::{AppendRowFormat, OutputAction, ParallelRunConfig, ParallelRunStep};

use crate::common::Workspace;
use crate::parallel_run_support::{
    doc_name, docs, job_result, messages, output, output_file, python, rec, run_one,
    run_with_report, script, step, sys_log, user_logs, TestResult, STEP,
};

// ----- 1. validation when the pipeline is built -----

/// The fields named by the `InvalidConfig` errors of building a pipeline of `step` alone.
fn invalid_fields(step: ParallelRunStep) -> Vec<String> {
    match Pipeline::builder("validation").step(step).build() {
        Ok(_) => Vec::new(),
        Err(BuildErrors(errors)) => errors
            .into_iter()
            .map(|e| match e {
                BuildError::InvalidConfig { step, field, .. } => format!("{step}.{field}"),
                other => format!("other: {other}"),
            })
            .collect(),
    }
}

fn ok_config(root: &Path) -> ParallelRunConfig {
    script(
        root,
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    python(root, "ok.py")
        .error_threshold(0)
        .build()
        .expect("valid config")
}

fn prs(
    cfg: ParallelRunConfig,
    inputs: Vec<stepgraph_engine::DataSource>,
    output: Option<PipelineData>,
    args: &[&str],
) -> ParallelRunStep {
    ParallelRunStep::new(
        STEP,
        cfg,
        inputs,
        output,
        vec![],
        args.iter().map(|a| Argument::from(*a)).collect(),
        true,
    )
}

#[test]
fn valid_step_builds_without_errors() {
    let ws = Workspace::new();
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let cfg = ok_config(ws.path());
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &["--x", "1"])),
        Vec::<String>::new()
    );
}

#[test]
fn step_without_inputs_is_refused_naming_inputs() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let out = Some(PipelineData::new("scores"));
    assert_eq!(invalid_fields(prs(cfg, vec![], out, &[])), ["score.inputs"]);
}

#[test]
fn file_and_tabular_inputs_together_are_refused_naming_inputs() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let table = TabularDataset::from_delimited_files("table", vec![ws.path().join("table.csv")]);
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into(), table.into()], out, &[])),
        ["score.inputs"]
    );
}

#[test]
fn append_row_without_output_is_refused_naming_output() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], None, &[])),
        ["score.output"]
    );
}

#[test]
fn summary_only_without_output_builds() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "ok.py")
        .error_threshold(0)
        .output_action(OutputAction::SummaryOnly)
        .build()
        .expect("valid config");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], None, &[])),
        Vec::<String>::new()
    );
}

#[test]
fn mini_batch_size_with_a_unit_on_a_file_dataset_is_refused_naming_mini_batch_size() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "ok.py")
        .error_threshold(0)
        .mini_batch_size("5KB")
        .build()
        .expect("the unit is valid for tabular inputs");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &[])),
        ["score.mini_batch_size"]
    );
}

#[test]
fn partition_keys_on_a_file_dataset_are_refused_naming_partition_keys() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "ok.py")
        .error_threshold(0)
        .partition_keys(["region"])
        .build()
        .expect("valid for tabular inputs");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &[])),
        ["score.partition_keys"]
    );
}

#[test]
fn positional_first_argument_is_refused_naming_arguments() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &["0.5", "--x"])),
        ["score.arguments"]
    );
}

#[test]
fn reserved_output_argument_is_refused_naming_arguments() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(
            cfg,
            vec![files.into()],
            out,
            &["--x", "1", "--output", "o"]
        )),
        ["score.arguments"]
    );
}

#[test]
fn missing_entry_script_is_refused_naming_entry_script() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "missing.py")
        .error_threshold(0)
        .build()
        .expect("existence is checked when the step is built");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &[])),
        ["score.entry_script"]
    );
}

// ----- 2. failure kinds: each fails the try, which is retried -----

const FAILING: &str = r#"import argparse, os, signal, time

def init():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--mode", required=True)
    p.add_argument("--markers", required=True)
    p.add_argument("--always", default="no")
    args, _ = p.parse_known_args()

def fail(name):
    if args.mode == "raise":
        raise ValueError("bad file " + name[:-4])
    if args.mode == "exit":
        os._exit(3)
    if args.mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if args.mode == "timeout":
        time.sleep(30)

def run(mini_batch):
    out = []
    for path in mini_batch:
        name = os.path.basename(path)
        if name == "doc-07.txt":
            marker = os.path.join(args.markers, "tried-" + name)
            first = not os.path.exists(marker)
            open(marker, "a").close()
            if first or args.always == "yes":
                fail(name)
        out.append(name + " ok")
    return out
"#;

/// 10 documents, one per mini-batch, 2 workers, 2 tries; doc-07 fails in `mode` on its first
/// try (or on every try with `always`).
fn run_failing(
    ws: &Workspace,
    mode: &str,
    always: bool,
    error_threshold: i64,
) -> (stepgraph_engine::RunSummary, stepgraph_engine::CollectSink) {
    let data = docs(ws.path(), 10);
    script(ws.path(), "fail.py", FAILING);
    let markers = ws.path().join("markers");
    std::fs::create_dir_all(&markers).expect("markers folder");
    let timeout = if mode == "timeout" { 1 } else { 60 };
    let cfg = python(ws.path(), "fail.py")
        .mini_batch_size("1")
        .error_threshold(error_threshold)
        .process_count_per_node(2)
        .run_max_try(2)
        .run_invocation_timeout(timeout);
    let markers = markers.display().to_string();
    let always = if always { "yes" } else { "no" };
    let args = ["--mode", mode, "--markers", &markers, "--always", always];
    let store = ws.store();
    run_with_report(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &args),
    )
}

fn all_ok_rows(n: usize, except: &[usize]) -> String {
    (1..=n)
        .filter(|i| !except.contains(i))
        .map(|i| format!("{} ok\n", doc_name(i)))
        .collect()
}

/// doc-07 (mini-batch 6) fails once in `mode`; the retry succeeds and nothing is lost.
fn check_retry_succeeds(mode: &str, failure_text: &str) {
    let ws = Workspace::new();
    let (run, sink) = run_failing(&ws, mode, false, 0);
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(output(&run), all_ok_rows(10, &[]));
    assert_eq!(
        (r.counts.items, r.counts.failed_items, r.counts.failed_units),
        (10, 0, 0)
    );
    let sys = sys_log(&run);
    assert!(sys.contains("mini-batch 6 try 1 on worker-"), "{sys}");
    assert!(sys.contains(failure_text), "{sys}");
    assert!(!sys.contains("mini-batch 6 try 2"), "{sys}");
    assert!(
        messages(&sink).contains(&"mini-batch 6 failed (try 1 of 2), retrying".to_string()),
        "{:?}",
        messages(&sink)
    );
    let job = job_result(&run);
    assert!(job.contains("status: succeeded\n"), "{job}");
    assert!(
        job.contains("mini-batches: 10 total, 0 failed, 0 resumed from an earlier run\n"),
        "{job}"
    );
    assert_eq!(run.step("report").map(|s| s.status), Some(StepStatus::Ran));
}

/// doc-07 fails in `mode` on both tries: its mini-batch is counted failed (no limit here).
fn check_always_failing_is_counted(mode: &str, failure_text: &str) {
    let ws = Workspace::new();
    let (run, _) = run_failing(&ws, mode, true, -1);
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(output(&run), all_ok_rows(10, &[7]));
    assert_eq!(
        (
            r.counts.items,
            r.counts.failed_items,
            r.counts.units,
            r.counts.failed_units
        ),
        (10, 1, 10, 1)
    );
    let sys = sys_log(&run);
    assert!(sys.contains("mini-batch 6 try 2 on worker-"), "{sys}");
    let job = job_result(&run);
    assert!(job.contains("mini-batches: 10 total, 1 failed"), "{job}");
    assert!(job.contains("items: 10 processed, 1 failed"), "{job}");
    assert!(
        job.contains("- mini-batch 6 (doc-07.txt), 2 tries:"),
        "{job}"
    );
    assert!(job.contains(failure_text), "{job}");
}

#[test]
fn run_raising_fails_the_try_and_the_retry_succeeds() {
    check_retry_succeeds("raise", "ValueError: bad file doc-07");
}

#[test]
fn run_raising_on_every_try_fails_the_step_with_the_python_traceback() {
    let ws = Workspace::new();
    let (run, _) = run_failing(&ws, "raise", true, 0);
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("1 failed items exceed error_threshold 0"),
        "{error}"
    );
    assert!(
        error.contains("mini-batch 6 (doc-07.txt) failed after 2 tries"),
        "{error}"
    );
    assert!(
        error.contains("Traceback (most recent call last)"),
        "{error}"
    );
    assert!(error.contains("ValueError: bad file doc-07"), "{error}");
    let job = job_result(&run);
    assert!(
        job.contains("status: failed: 1 failed items exceed error_threshold 0"),
        "{job}"
    );
    assert!(job.contains("ValueError: bad file doc-07"), "{job}");
    assert_eq!(
        run.step("report").map(|s| s.status),
        Some(StepStatus::Skipped)
    );
}

#[test]
fn worker_exit_fails_the_try_and_the_retry_succeeds() {
    check_retry_succeeds("exit", "worker exited with code 3");
}

#[test]
fn worker_exit_on_every_try_counts_the_mini_batch_failed() {
    check_always_failing_is_counted("exit", "worker exited with code 3");
}

#[test]
fn worker_segfault_fails_the_try_and_the_retry_succeeds() {
    check_retry_succeeds("segv", "worker killed by signal 11");
}

#[test]
fn worker_segfault_on_every_try_counts_the_mini_batch_failed() {
    check_always_failing_is_counted("segv", "worker killed by signal 11");
}

#[test]
fn run_timeout_fails_the_try_and_the_retry_succeeds() {
    check_retry_succeeds("timeout", "run_invocation_timeout (1 s)");
}

#[test]
fn run_timeout_on_every_try_counts_the_mini_batch_failed() {
    check_always_failing_is_counted("timeout", "run_invocation_timeout (1 s)");
}

// ----- 3. failure limits, exactly at and one past -----

const BAD_RAISES: &str = r#"import os

def run(mini_batch):
    for path in mini_batch:
        if os.path.basename(path).startswith("bad-"):
            raise ValueError("bad input " + os.path.basename(path))
    return [os.path.basename(p) for p in mini_batch]
"#;

/// 8 files (`bad-1..bad-N` and `ok-*`), one per mini-batch; each bad one raises on every try.
fn run_bad(
    ws: &Workspace,
    bad: usize,
    limits: impl FnOnce(
        stepgraph_steps::parallel_run::ParallelRunConfigBuilder,
    ) -> stepgraph_steps::parallel_run::ParallelRunConfigBuilder,
) -> (stepgraph_engine::RunSummary, stepgraph_engine::CollectSink) {
    let data = ws.path().join("data");
    for i in 1..=8 {
        let name = if i <= bad {
            format!("bad-{i}.txt")
        } else {
            format!("ok-{i}.txt")
        };
        ws.write(&format!("data/{name}"), "x\n");
    }
    script(ws.path(), "bad.py", BAD_RAISES);
    let cfg = limits(
        python(ws.path(), "bad.py")
            .mini_batch_size("1")
            .process_count_per_node(2)
            .run_max_try(2),
    );
    let store = ws.store();
    run_with_report(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    )
}

fn assert_failed_naming(run: &stepgraph_engine::RunSummary, limit_text: &str) {
    let r = rec(run);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains(limit_text), "{error}");
    assert_eq!(
        run.step("report").map(|s| s.status),
        Some(StepStatus::Skipped)
    );
}

#[test]
fn error_threshold_equal_to_the_failed_items_succeeds() {
    let ws = Workspace::new();
    let (run, _) = run_bad(&ws, 3, |c| c.error_threshold(3));
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(r.counts.failed_items, 3);
    assert_eq!(r.counts.failed_units, 3);
    assert_eq!(
        output(&run),
        "ok-4.txt\nok-5.txt\nok-6.txt\nok-7.txt\nok-8.txt\n"
    );
    assert_eq!(run.step("report").map(|s| s.status), Some(StepStatus::Ran));
}

#[test]
fn error_threshold_one_below_the_failed_items_fails_the_step() {
    let ws = Workspace::new();
    let (run, _) = run_bad(&ws, 3, |c| c.error_threshold(2));
    assert_failed_naming(&run, "3 failed items exceed error_threshold 2");
}

#[test]
fn allowed_failed_count_equal_to_the_failed_mini_batches_succeeds() {
    let ws = Workspace::new();
    let (run, _) = run_bad(&ws, 3, |c| c.error_threshold(-1).allowed_failed_count(3));
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(r.counts.failed_units, 3);
}

#[test]
fn allowed_failed_count_one_below_the_failed_mini_batches_fails_the_step() {
    let ws = Workspace::new();
    let (run, _) = run_bad(&ws, 3, |c| c.error_threshold(-1).allowed_failed_count(2));
    assert_failed_naming(&run, "3 failed mini-batches exceed allowed_failed_count 2");
}

#[test]
fn allowed_failed_percent_exactly_reached_succeeds() {
    let ws = Workspace::new();
    // 2 of 8 mini-batches = 25 %.
    let (run, _) = run_bad(&ws, 2, |c| {
        c.error_threshold(-1).allowed_failed_percent(25.0)
    });
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(r.counts.failed_units, 2);
    assert_eq!(r.counts.units, 8);
}

#[test]
fn allowed_failed_percent_passed_by_one_mini_batch_fails_the_step() {
    let ws = Workspace::new();
    // 3 of 8 mini-batches = 37.5 %.
    let (run, _) = run_bad(&ws, 3, |c| {
        c.error_threshold(-1).allowed_failed_percent(25.0)
    });
    assert_failed_naming(
        &run,
        "3 of 8 mini-batches failed (37.5%), over allowed_failed_percent 25",
    );
}

const PARTIAL: &str = r#"import os

def run(mini_batch):
    # One element per successful item: files whose content is "skip" are left out.
    return [os.path.basename(p) for p in mini_batch if open(p).read().strip() != "skip"]
"#;

/// 8 files in 2 mini-batches of 4; f-02, f-03 (mini-batch 0) and f-07 (mini-batch 1) are not
/// returned: 3 failed items, no failed mini-batch.
fn run_partial(
    ws: &Workspace,
    action: OutputAction,
    error_threshold: i64,
) -> (stepgraph_engine::RunSummary, stepgraph_engine::CollectSink) {
    for i in 1..=8 {
        let text = if [2, 3, 7].contains(&i) {
            "skip"
        } else {
            "keep"
        };
        ws.write(&format!("data/f-{i:02}.txt"), text);
    }
    script(ws.path(), "partial.py", PARTIAL);
    let cfg = python(ws.path(), "partial.py")
        .mini_batch_size("4")
        .process_count_per_node(2)
        .run_max_try(2)
        .output_action(action)
        .error_threshold(error_threshold);
    let store = ws.store();
    let data = FileDataset::from_files("docs", ws.path().join("data"));
    run_with_report(&store, step(cfg, data, &[]))
}

fn check_partial_at_limit(action: OutputAction) -> (Workspace, stepgraph_engine::RunSummary) {
    let ws = Workspace::new();
    let (run, _) = run_partial(&ws, action, 3);
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(
        (
            r.counts.items,
            r.counts.failed_items,
            r.counts.units,
            r.counts.failed_units
        ),
        (8, 3, 2, 0)
    );
    let sys = sys_log(&run);
    assert!(
        sys.contains("mini-batch 0: run() returned 2 of 4 items; 2 counted as failed"),
        "{sys}"
    );
    assert!(
        sys.contains("mini-batch 1: run() returned 3 of 4 items; 1 counted as failed"),
        "{sys}"
    );
    assert_eq!(run.step("report").map(|s| s.status), Some(StepStatus::Ran));
    (ws, run)
}

#[test]
fn partial_append_row_results_count_missing_items_as_failed() {
    let (_ws, run) = check_partial_at_limit(OutputAction::AppendRow);
    assert_eq!(
        output(&run),
        "f-01.txt\nf-04.txt\nf-05.txt\nf-06.txt\nf-08.txt\n"
    );
}

#[test]
fn partial_summary_only_results_count_missing_items_as_failed() {
    let (_ws, run) = check_partial_at_limit(OutputAction::SummaryOnly);
    assert!(!run
        .output_dir(STEP, "output")
        .join("parallel_run_step.txt")
        .exists());
}

#[test]
fn partial_append_row_results_past_error_threshold_fail_the_step() {
    let ws = Workspace::new();
    let (run, _) = run_partial(&ws, OutputAction::AppendRow, 2);
    assert_failed_naming(&run, "3 failed items exceed error_threshold 2");
}

#[test]
fn partial_summary_only_results_past_error_threshold_fail_the_step() {
    let ws = Workspace::new();
    let (run, _) = run_partial(&ws, OutputAction::SummaryOnly, 2);
    assert_failed_naming(&run, "3 failed items exceed error_threshold 2");
}

// ----- 4. a hung worker is killed and replaced -----

#[test]
fn hung_worker_is_killed_and_replaced() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 6);
    let marker = ws.path().join("hung-once");
    script(
        ws.path(),
        "hang.py",
        r#"import os, sys, time

def run(mini_batch):
    try:
        os.close(os.open(sys.argv[2], os.O_CREAT | os.O_EXCL))
        time.sleep(30)  # the first call anywhere hangs
    except FileExistsError:
        pass
    return [os.path.basename(p) + " ok" for p in mini_batch]
"#,
    );
    let cfg = python(ws.path(), "hang.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2)
        .run_invocation_timeout(1)
        .run_max_try(2);
    let marker = marker.display().to_string();
    let store = ws.store();
    let (run, _) = run_one(
        &store,
        step(
            cfg,
            FileDataset::from_files("docs", data),
            &["--marker", &marker],
        ),
    );
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(output(&run), all_ok_rows(6, &[]));
    assert_eq!((r.counts.failed_items, r.counts.failed_units), (0, 0));
    let sys = sys_log(&run);
    assert!(
        sys.contains("run() did not return within run_invocation_timeout (1 s); the worker was killed and replaced"),
        "{sys}"
    );
}

// ----- 5. what a worker prints does not reach the protocol -----

#[test]
fn worker_printing_to_stdout_does_not_corrupt_results() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 7);
    script(
        ws.path(),
        "noisy.py",
        r#"import os, sys

def init():
    print("init says hello")
    os.write(1, b'{"type":"ready"}\n')

def run(mini_batch):
    print('{"type":"result","index":0,"count":999,"rows":["forged"]}')
    os.write(1, b"raw fd-1 write without newline")
    sys.stdout.write("not json at all\n")
    sys.stdout.flush()
    return [os.path.basename(p) + " ok" for p in mini_batch]
"#,
    );
    let cfg = python(ws.path(), "noisy.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2);
    let store = ws.store();
    let (run, _) = run_one(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(output(&run), all_ok_rows(7, &[]));
    assert_eq!((r.counts.items, r.counts.failed_items), (7, 0));
    let logs = user_logs(&run);
    for text in [
        "init says hello",
        "\"rows\":[\"forged\"]",
        "raw fd-1 write without newline",
        "not json at all",
    ] {
        assert!(logs.contains(text), "{text} missing from {logs}");
    }
}

// ----- 6. gathered rows do not depend on parallelism -----

#[test]
fn append_row_output_is_byte_identical_with_1_2_and_4_workers() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 24);
    script(
        ws.path(),
        "jitter.py",
        r#"import os, random, time

def run(mini_batch):
    time.sleep(random.random() * 0.03)
    return [os.path.basename(p) + " " + str(len(open(p).read())) for p in mini_batch]
"#,
    );
    let expected: String = (1..=24)
        .map(|i| format!("{} {}\n", doc_name(i), format!("doc {i}\n").len()))
        .collect();
    for workers in [1, 2, 4] {
        let store = stepgraph_engine::Store::open(
            ws.path().join(format!("store-{workers}")),
            stepgraph_engine::OpenOptions::default(),
        )
        .expect("open store");
        let cfg = python(ws.path(), "jitter.py")
            .mini_batch_size("3")
            .error_threshold(0)
            .process_count_per_node(workers);
        let (run, _) = run_one(
            &store,
            step(cfg, FileDataset::from_files("docs", data.clone()), &[]),
        );
        assert_eq!(rec(&run).status, StepStatus::Ran, "{:?}", rec(&run).error);
        assert_eq!(output(&run), expected, "{workers} workers");
    }
}

// ----- 8. reuse -----

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
    let n_calls = || crate::parallel_run_support::lines(&calls).len();

    let (first, _) = run_one(&store, make(2, "a"));
    assert_eq!(
        rec(&first).status,
        StepStatus::Ran,
        "{:?}",
        rec(&first).error
    );
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
    assert_eq!(
        rec(&edited).status,
        StepStatus::Ran,
        "{:?}",
        rec(&edited).error
    );
    assert_eq!(n_calls(), 6);

    // An argument changes: rerun.
    let (new_arg, _) = run_one(&store, make(2, "b"));
    assert_eq!(
        rec(&new_arg).status,
        StepStatus::Ran,
        "{:?}",
        rec(&new_arg).error
    );
    assert_eq!(n_calls(), 9);

    // And that new state is reused in turn, whatever the parallelism.
    let (reused, _) = run_one(&store, make(1, "b"));
    assert_eq!(rec(&reused).status, StepStatus::Reused);
    assert_eq!(n_calls(), 9);
    Ok(())
}

// ----- 10. summary_only -----

#[test]
fn summary_only_files_written_to_output_dir_reach_the_downstream_step() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 5);
    script(
        ws.path(),
        "summary.py",
        r#"import os
from azureml_user.parallel_run import EntryScript

def init():
    global out
    out = EntryScript().output_dir
    if out != os.environ["AZUREML_BI_OUTPUT_PATH"]:
        raise RuntimeError("output_dir %r != AZUREML_BI_OUTPUT_PATH %r" % (out, os.environ["AZUREML_BI_OUTPUT_PATH"]))

def run(mini_batch):
    done = []
    for p in mini_batch:
        name = os.path.basename(p)
        with open(os.path.join(out, name + ".upper"), "w") as f:
            f.write(open(p).read().upper())
        done.append(name)
    return done
"#,
    );
    let cfg = python(ws.path(), "summary.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2)
        .output_action(OutputAction::SummaryOnly);
    let store = ws.store();
    let (run, _) = run_with_report(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!((r.counts.items, r.counts.failed_items), (5, 0));
    let mut names: Vec<String> = std::fs::read_dir(run.output_dir(STEP, "output"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let expected: Vec<String> = (1..=5).map(|i| format!("{}.upper", doc_name(i))).collect();
    assert_eq!(names, expected, "no parallel_run_step.txt in summary_only");
    for i in 1..=5 {
        assert_eq!(
            output_file(&run, &format!("{}.upper", doc_name(i))),
            format!("DOC {i}\n")
        );
        let copied = std::fs::read_to_string(
            run.output_dir("report", "report")
                .join(format!("{}.upper", doc_name(i))),
        )?;
        assert_eq!(copied, format!("DOC {i}\n"));
    }
    Ok(())
}

// ----- 11. side inputs -----

#[test]
fn side_inputs_reach_the_script_and_are_never_partitioned() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 4);
    ws.write("side/lookup.txt", "prefix-X\n");
    ws.write("labels/a.lbl", "");
    ws.write("labels/b.lbl", "");
    let calls = ws.path().join("calls.txt");
    script(
        ws.path(),
        "side.py",
        r#"import os
from azureml_user.parallel_run import EntryScript

def init():
    global lookup, labels
    es = EntryScript()
    side = es.side_inputs
    if side != es.config["side_inputs"]:
        raise RuntimeError("side_inputs differ from the init config")
    lookup = open(side["lookup"]).read().strip()
    labels = ",".join(sorted(os.listdir(side["labels"])))

def run(mini_batch):
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write(" ".join(os.path.basename(p) for p in mini_batch) + "\n")
    return ["%s %s %s" % (lookup, os.path.basename(p), labels) for p in mini_batch]
"#,
    );
    let cfg = python(ws.path(), "side.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2)
        .environment_variable("CALLS_LOG", calls.display().to_string())
        .build()?;
    let prs = ParallelRunStep::new(
        STEP,
        cfg,
        vec![FileDataset::from_files("docs", data).into()],
        Some(PipelineData::new("scores")),
        vec![
            DataReference::new("lookup", ws.path().join("side/lookup.txt")).into(),
            FileDataset::from_files("labels", ws.path().join("labels")).into(),
        ],
        vec![],
        true,
    );
    let store = ws.store();
    let (run, _) = run_one(&store, prs);
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    let expected: String = (1..=4)
        .map(|i| format!("prefix-X {} a.lbl,b.lbl\n", doc_name(i)))
        .collect();
    assert_eq!(output(&run), expected);
    assert_eq!((r.counts.items, r.counts.units), (4, 2));
    let mut seen = crate::parallel_run_support::lines(&calls);
    seen.sort();
    assert_eq!(seen, ["doc-01.txt doc-02.txt", "doc-03.txt doc-04.txt"]);
    Ok(())
}

// ----- 12. entry_command: a worker without the harness -----

const RAW_WORKER: &str = r#"import json, os, sys

def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

while True:
    line = sys.stdin.readline()
    if not line:
        break
    if not line.strip():
        continue
    m = json.loads(line)
    if m["type"] == "init":
        send({"type": "ready"})
    elif m["type"] == "run":
        rows = [os.path.basename(f) + " " + open(f).read().strip() for f in m["files"]]
        send({"type": "result", "index": m["index"], "count": len(rows), "rows": rows})
    elif m["type"] == "shutdown":
        send({"type": "bye"})
        break
"#;

fn check_entry_command(argv: &[&str]) {
    let ws = Workspace::new();
    let data = docs(ws.path(), 5);
    script(ws.path(), "worker.py", RAW_WORKER);
    let cfg = ParallelRunConfig::builder()
        .source_directory(ws.path().join("scripts"))
        .entry_command(argv.iter().copied())
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2);
    let store = ws.store();
    let (run, _) = run_one(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    let expected: String = (1..=5)
        .map(|i| format!("{} doc {i}\n", doc_name(i)))
        .collect();
    assert_eq!(output(&run), expected);
    assert_eq!((r.counts.items, r.counts.units), (5, 3));
}

#[test]
fn entry_command_speaking_the_protocol_directly_works_end_to_end() {
    check_entry_command(&["python3", "worker.py"]);
}

#[test]
fn entry_command_with_an_absolute_script_path_works_end_to_end() {
    // The script path is resolved by the test, not by the step.
    let ws = Workspace::new();
    let dir = script(ws.path(), "worker.py", RAW_WORKER);
    let abs = dir.join("worker.py").display().to_string();
    check_entry_command(&["python3", &abs]);
}

// ----- 14. append_row formats -----

const DICT_ROWS: &str = r#"import os

def run(mini_batch):
    return [{"name": os.path.basename(p), "size": len(open(p).read()), "note": "a,b"}
            for p in mini_batch]
"#;

fn run_format(format: AppendRowFormat) -> String {
    let ws = Workspace::new();
    let data = docs(ws.path(), 5);
    script(ws.path(), "dicts.py", DICT_ROWS);
    let cfg = python(ws.path(), "dicts.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2)
        .append_row_format(format);
    let store = ws.store();
    let (run, _) = run_one(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    assert_eq!(rec(&run).status, StepStatus::Ran, "{:?}", rec(&run).error);
    output(&run)
}

#[test]
fn append_row_format_csv_writes_the_header_once() {
    let expected: String = std::iter::once("name,size,note\n".to_string())
        .chain((1..=5).map(|i| format!("{},6,\"a,b\"\n", doc_name(i))))
        .collect();
    assert_eq!(run_format(AppendRowFormat::Csv), expected);
}

#[test]
fn append_row_format_jsonl_writes_one_object_per_line() {
    let expected: String = (1..=5)
        .map(|i| {
            format!(
                "{{\"name\": \"{}\", \"size\": 6, \"note\": \"a,b\"}}\n",
                doc_name(i)
            )
        })
        .collect();
    assert_eq!(run_format(AppendRowFormat::JsonLines), expected);
}

// ----- 15. progress events -----

#[test]
fn progress_events_end_with_every_mini_batch_done() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 9);
    script(
        ws.path(),
        "ok.py",
        "import os\n\ndef run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch]\n",
    );
    let cfg = python(ws.path(), "ok.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2);
    let store = ws.store();
    let (run, sink) = run_one(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    assert_eq!(rec(&run).status, StepStatus::Ran, "{:?}", rec(&run).error);
    let progress: Vec<(u64, u64, u64)> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Progress {
                step,
                done,
                total,
                items,
                ..
            } if step == STEP => Some((done, total, items)),
            _ => None,
        })
        .collect();
    assert_eq!(progress.first(), Some(&(0, 5, 0)));
    assert_eq!(progress.last(), Some(&(5, 5, 9)));
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "done never goes down: {progress:?}"
    );
}

// ----- init failures, parameters, the user logger -----

#[test]
fn init_raising_fails_the_step_with_the_init_traceback() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 4);
    script(
        ws.path(),
        "broken.py",
        "def init():\n    raise RuntimeError(\"model file missing\")\n\ndef run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "broken.py")
        .mini_batch_size("1")
        .error_threshold(-1)
        .process_count_per_node(1)
        .run_max_try(2);
    let store = ws.store();
    let (run, _) = run_with_report(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("init() failed on worker-0 2 times"),
        "{error}"
    );
    assert!(
        error.contains("RuntimeError: model file missing"),
        "{error}"
    );
    assert_eq!(
        run.step("report").map(|s| s.status),
        Some(StepStatus::Skipped)
    );
}

#[test]
fn pipeline_parameter_reaches_sys_argv_and_aml_parameter_and_an_override_reruns() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 3);
    script(
        ws.path(),
        "param.py",
        r#"import argparse, os

def init():
    global tag
    p = argparse.ArgumentParser()
    p.add_argument("--tag")
    tag = p.parse_args().tag

def run(mini_batch):
    return ["%s %s %s" % (os.path.basename(p), tag, os.environ["AML_PARAMETER_tag"]) for p in mini_batch]
"#,
    );
    let tag = stepgraph_engine::PipelineParameter::new("tag", "alpha");
    let cfg = python(ws.path(), "param.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2)
        .build()
        .expect("valid config");
    let prs = ParallelRunStep::new(
        STEP,
        cfg,
        vec![FileDataset::from_files("docs", data).into()],
        Some(PipelineData::new("scores")),
        vec![],
        vec![Argument::from("--tag"), Argument::from(tag)],
        true,
    );
    let pipeline = Pipeline::builder("params")
        .step(prs)
        .build()
        .expect("pipeline builds");
    let store = ws.store();
    let (first, _) = crate::parallel_run_support::run_pipeline(&store, &pipeline);
    assert_eq!(
        rec(&first).status,
        StepStatus::Ran,
        "{:?}",
        rec(&first).error
    );
    let rows = |t: &str| -> String {
        (1..=3)
            .map(|i| format!("{} {t} {t}\n", doc_name(i)))
            .collect()
    };
    assert_eq!(output(&first), rows("alpha"));

    let mut opts = stepgraph_engine::RunOptions::default();
    opts.plan
        .params
        .insert("tag".into(), serde_json::json!("beta"));
    let sink = stepgraph_engine::CollectSink::default();
    let second = stepgraph_engine::run(&pipeline, &store, &opts, &sink).expect("run starts");
    assert_eq!(
        rec(&second).status,
        StepStatus::Ran,
        "{:?}",
        rec(&second).error
    );
    assert_eq!(output(&second), rows("beta"));
}

#[test]
fn entry_script_logger_writes_to_the_user_log_folder() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 2);
    script(
        ws.path(),
        "logging_entry.py",
        r#"import os
from entry_script import EntryScript

def init():
    EntryScript().logger.info("init of %s", EntryScript().agent_name)

def run(mini_batch):
    logger = EntryScript().logger
    for p in mini_batch:
        logger.warning("scoring %s", os.path.basename(p))
    return mini_batch
"#,
    );
    let cfg = python(ws.path(), "logging_entry.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(1);
    let store = ws.store();
    let (run, _) = run_one(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    assert_eq!(rec(&run).status, StepStatus::Ran, "{:?}", rec(&run).error);
    let log = crate::parallel_run_support::log_file(&run, "user/worker-0.log");
    assert!(log.contains("|INFO|worker-0|init of worker-0"), "{log}");
    assert!(
        log.contains("|WARNING|worker-0|scoring doc-01.txt"),
        "{log}"
    );
    assert!(
        log.contains("|WARNING|worker-0|scoring doc-02.txt"),
        "{log}"
    );
}

// ----- steps sharing a key -----

#[test]
fn identical_steps_running_at_once_each_gather_their_own_output() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 40);
    script(
        ws.path(),
        "twin.py",
        "import os, time\n\ndef run(mini_batch):\n    time.sleep(0.02)\n    return [os.path.basename(p) for p in mini_batch]\n",
    );
    // Same definition, so the same key; only the names differ.
    let twin = |name: &str, out: &str| {
        let cfg = python(ws.path(), "twin.py")
            .mini_batch_size("2")
            .error_threshold(0)
            .process_count_per_node(2)
            .build()
            .expect("valid config");
        ParallelRunStep::new(
            name,
            cfg,
            vec![FileDataset::from_files("docs", data.clone()).into()],
            Some(PipelineData::new(out)),
            vec![],
            vec![],
            true,
        )
    };
    let pipeline = Pipeline::builder("twins")
        .step(twin("twin-a", "out-a"))
        .step(twin("twin-b", "out-b"))
        .build()
        .expect("pipeline builds");
    let store = ws.store();
    let (run, _) = crate::parallel_run_support::run_pipeline(&store, &pipeline);
    let expected: String = (1..=40).map(|i| format!("{}\n", doc_name(i))).collect();
    for name in ["twin-a", "twin-b"] {
        let r = run.step(name).expect("step record");
        assert!(
            matches!(r.status, StepStatus::Ran | StepStatus::Reused),
            "{name}: {:?} {:?}",
            r.status,
            r.error
        );
        let out =
            std::fs::read_to_string(run.output_dir(name, "output").join("parallel_run_step.txt"))
                .expect("gathered file");
        assert_eq!(out, expected, "{name}");
    }
}

#[test]
fn forced_rerun_after_success_runs_every_mini_batch_again() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 6);
    let calls = ws.path().join("calls.txt");
    script(ws.path(), "count.py", COUNTING);
    let cfg = python(ws.path(), "count.py")
        .mini_batch_size("2")
        .error_threshold(0)
        .process_count_per_node(2)
        .environment_variable("CALLS_LOG", calls.display().to_string());
    let pipeline = Pipeline::builder("forced")
        .step(step(cfg, FileDataset::from_files("docs", data), &[]))
        .build()
        .expect("pipeline builds");
    let store = ws.store();
    let (first, _) = crate::parallel_run_support::run_pipeline(&store, &pipeline);
    assert_eq!(
        rec(&first).status,
        StepStatus::Ran,
        "{:?}",
        rec(&first).error
    );
    let mut opts = stepgraph_engine::RunOptions::default();
    opts.plan.force.insert(STEP.to_string());
    let sink = stepgraph_engine::CollectSink::default();
    let forced = stepgraph_engine::run(&pipeline, &store, &opts, &sink).expect("run starts");
    let r = rec(&forced);
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    assert_eq!(r.counts.resumed_units, 0);
    assert_eq!(crate::parallel_run_support::lines(&calls).len(), 6);
    assert_eq!(output(&forced), output(&first));
}
