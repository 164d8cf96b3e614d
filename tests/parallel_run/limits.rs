//! Failure limits (error_threshold, allowed_failed_count, allowed_failed_percent, partial
//! results), exactly at and one past.

use stepgraph_engine::{FileDataset, StepStatus};
use stepgraph_steps::OutputAction;

use crate::common::Workspace;
use crate::parallel_run::support::{
    counts, output, python, python_entry, ran, rec, run_with_report, script, step, sys_log, STEP,
};

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
        stepgraph_steps::ParallelRunConfigBuilder,
    ) -> stepgraph_steps::ParallelRunConfigBuilder,
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
    let r = ran(&run);
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
    let r = ran(&run);
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
    let r = ran(&run);
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
    let cfg = python_entry(ws.path(), "partial.py", PARTIAL)
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
    let r = ran(&run);
    assert_eq!(counts(r), (8, 3, 2, 0));
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
