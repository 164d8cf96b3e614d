//! Resume after a crash: a child process (this test binary, re-executed to run
//! [`resume_child_entry`]) runs a ParallelRunStep and is killed with SIGKILL once some
//! mini-batches were committed; a second run in this process resumes from them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use stepgraph_engine::{
    FileDataset, NullSink, OpenOptions, Pipeline, RunOptions, StepStatus, Store,
};

use crate::parallel_run::support::{
    docs, kill_after_calls, lines, output, python, ran, rec, run_pipeline, script, step,
    TestResult, UsualSetUp,
};

/// Set (to the workspace folder) only in the child process.
const RESUME_ENV: &str = "STEPGRAPH_TEST_RESUME_DIR";

const FILES: usize = 60;
const MINI_BATCHES: u64 = 30;

/// Every run() call appends `<working_dir> <first file>` to `$CALLS_LOG`; the working dir
/// names the run, so calls of the killed child's orphaned workers are told apart.
const SLOW: &str = r#"import os, time
from azureml_user.parallel_run import EntryScript

def run(mini_batch):
    time.sleep(0.1)
    names = [os.path.basename(p) for p in mini_batch]
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write("%s %s\n" % (EntryScript().working_dir, names[0]))
    return ["%s %s" % (n, open(p).read().strip()) for n, p in zip(names, mini_batch)]
"#;

fn fixture(root: &Path) {
    docs(root, FILES);
    script(root, "slow.py", SLOW);
}

fn pipeline(root: &Path, calls: &Path) -> Pipeline {
    let cfg = python(root, "slow.py")
        .usual("2")
        .environment_variable("CALLS_LOG", calls.display().to_string());
    Pipeline::builder("resume")
        .step(step(
            cfg,
            FileDataset::from_files("docs", root.join("data")),
            &[],
        ))
        .build()
        .expect("pipeline builds")
}

/// The child's side: a no-op unless [`RESUME_ENV`] is set.
#[test]
fn resume_child_entry() {
    let Some(dir) = std::env::var_os(RESUME_ENV) else {
        return;
    };
    let root = PathBuf::from(dir);
    let store = Store::open(root.join("store"), OpenOptions::default()).expect("open store");
    let p = pipeline(&root, &root.join("calls.txt"));
    let _ = stepgraph_engine::run(&p, &store, &RunOptions::default(), &NullSink);
}

/// This module's path as libtest names it (without the crate name).
fn child_test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::resume_child_entry")
}

#[test]
fn killed_run_resumes_from_committed_mini_batches() -> TestResult {
    let ws = crate::common::Workspace::new();
    let root = ws.path();
    fixture(root);
    let calls = root.join("calls.txt");
    // The uninterrupted reference run, in another store, overlaps the child's run.
    let reference = {
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            let other = Store::open(root.join("other-store"), OpenOptions::default())
                .expect("open the reference store");
            let (run, _) = run_pipeline(&other, &pipeline(&root, &root.join("other-calls.txt")));
            let out = output(&run);
            (rec(&run).clone(), out)
        })
    };
    let child_log = std::fs::File::create(root.join("child.txt"))?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            &child_test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RESUME_ENV, root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(child_log)
        .spawn()?;
    kill_after_calls(
        &mut child,
        &calls,
        8,
        Duration::from_secs(30),
        Some(&root.join("child.txt")),
    )?;

    // Second run, in this process, on the same store.
    let store = Store::open(root.join("store"), OpenOptions::default())?;
    let (run, sink) = run_pipeline(&store, &pipeline(root, &calls));
    let r = ran(&run);
    let resumed = r.counts.resumed_units;
    assert!(resumed > 0, "{:?}", r.counts);
    let second_calls = lines(&calls)
        .iter()
        .filter(|l| l.contains(&run.run_id))
        .count() as u64;
    assert!(second_calls < MINI_BATCHES, "{second_calls} calls");
    assert_eq!(
        second_calls + resumed,
        MINI_BATCHES,
        "each mini-batch not resumed is run exactly once"
    );
    assert_eq!(
        (r.counts.items, r.counts.units, r.counts.failed_items),
        (FILES as u64, MINI_BATCHES, 0)
    );

    println!("{resumed} mini-batches resumed, {second_calls} run again");
    let resuming = format!(
        "resuming: {resumed} of {MINI_BATCHES} mini-batches were committed by an earlier run"
    );
    assert!(
        crate::parallel_run::support::messages(&sink).contains(&resuming),
        "{:?}",
        crate::parallel_run::support::messages(&sink)
    );

    // The same bytes as an uninterrupted run in another store.
    let (reference, reference_output) = reference.join().map_err(|_| "reference run panicked")?;
    assert_eq!(reference.status, StepStatus::Ran, "{:?}", reference.error);
    assert_eq!(reference.counts.resumed_units, 0);
    assert_eq!(
        lines(&root.join("other-calls.txt")).len() as u64,
        MINI_BATCHES
    );
    let expected: String = (1..=FILES)
        .map(|i| format!("{} doc {i}\n", crate::parallel_run::support::doc_name(i)))
        .collect();
    assert_eq!(reference_output, expected);
    assert_eq!(output(&run), reference_output);
    Ok(())
}
