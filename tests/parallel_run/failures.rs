//! Failure kinds (a raise, a worker exit, a segfault, a timeout, a failing init): each fails
//! the try, which is retried.

use stepgraph_engine::{FileDataset, StepStatus};

use crate::common::Workspace;
use crate::parallel_run::support::{
    all_ok_rows, counts, docs, job_result, messages, output, python, python_entry, ran, rec,
    run_with_report, script, step, sys_log,
};

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

/// doc-07 (mini-batch 6) fails once in `mode`; the retry succeeds and nothing is lost.
fn check_retry_succeeds(mode: &str, failure_text: &str) {
    let ws = Workspace::new();
    let (run, sink) = run_failing(&ws, mode, false, 0);
    let r = ran(&run);
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
    let r = ran(&run);
    assert_eq!(output(&run), all_ok_rows(10, &[7]));
    assert_eq!(counts(r), (10, 1, 10, 1));
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

#[test]
fn init_raising_fails_the_step_with_the_init_traceback() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 4);
    let cfg = python_entry(
        ws.path(),
        "broken.py",
        "def init():\n    raise RuntimeError(\"model file missing\")\n\ndef run(mini_batch):\n    return mini_batch\n",
    )
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
