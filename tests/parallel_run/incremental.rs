//! Incremental ParallelRunSteps (`incremental: true`): content-defined mini-batches, each
//! memoised under its own key, so a rerun over changed inputs runs only the mini-batches
//! whose content changed, and gathers an output byte-identical to a from-scratch run.

use std::path::{Path, PathBuf};

use stepgraph_engine::{FileDataset, OpenOptions, Store, TabularDataset};

use crate::common::Workspace;
use crate::parallel_run::support::{
    doc_name, docs, kill_after_calls, lines, output, python_entry, ran, run_one, step, TestResult,
    UsualSetUp, PY_ROWS,
};

/// Each file's `<name> <content>`; every call logged to `$CALLS_LOG`; a file whose content
/// says `bad` is left out of the results (a failed item).
const SCORE: &str = r#"import os
def init():
    pass

def run(mini_batch):
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write("%d\n" % len(mini_batch))
    out = []
    for p in mini_batch:
        text = open(p).read().strip()
        if "bad" not in text:
            out.append("%s %s" % (os.path.basename(p), text))
    return out
"#;

fn files_config(root: &Path) -> stepgraph_steps::ParallelRunConfigBuilder {
    python_entry(root, "score.py", SCORE)
        .usual("8")
        .error_threshold(-1)
        .incremental(true)
        .environment_variable("CALLS_LOG", root.join("calls.txt").display().to_string())
}

/// Run the step over `data` in the store at `store`; (output, record).
fn run_files(
    root: &Path,
    store: &Path,
    data: &Path,
) -> Result<(String, stepgraph_engine::StepRecord), Box<dyn std::error::Error>> {
    let store = Store::open(store, OpenOptions::default())?;
    let s = step(
        files_config(root),
        FileDataset::from_files("docs", data.to_path_buf()),
        &[],
    );
    let (run, _) = run_one(&store, s);
    let r = ran(&run).clone();
    Ok((output(&run), r))
}

fn calls(root: &Path) -> usize {
    lines(&root.join("calls.txt")).len()
}

#[test]
fn a_rerun_after_adding_modifying_and_deleting_files_runs_only_their_mini_batches() -> TestResult {
    let ws = Workspace::new();
    let root = ws.path();
    let data = docs(root, 99);
    let store = root.join("store");
    let (first, r1) = run_files(root, &store, &data)?;
    assert_eq!(r1.counts.reused_units, 0);
    assert_eq!(calls(root) as u64, r1.counts.units);

    // 1 new file, 2 modified (one now failing), 1 deleted.
    std::fs::write(data.join("doc-50a.txt"), "doc 50a\n")?;
    std::fs::write(data.join(doc_name(10)), "doc ten, edited\n")?;
    std::fs::write(data.join(doc_name(70)), "bad doc\n")?;
    std::fs::remove_file(data.join(doc_name(33)))?;
    let before = calls(root);
    let (second, r2) = run_files(root, &store, &data)?;
    let ran_now = (calls(root) - before) as u64;
    assert_eq!(
        ran_now + r2.counts.reused_units,
        r2.counts.units,
        "{:?}",
        r2.counts
    );
    assert!(
        ran_now <= 8,
        "{ran_now} mini-batches ran for 4 edits: {:?}",
        r2.counts
    );
    assert!(r2.counts.reused_units >= r2.counts.units - 8);
    assert_ne!(first, second);

    // The same inputs from scratch, in another store: byte for byte the same output and the
    // same failure counts (reused mini-batches bring their recorded failures).
    let (fresh, r3) = run_files(root, &root.join("fresh-store"), &data)?;
    assert_eq!(second, fresh);
    assert!(!second.contains("doc-33.txt") && second.contains("doc-50a.txt doc 50a"));
    assert_eq!(r2.counts.failed_items, 1);
    assert_eq!(
        (r2.counts.items, r2.counts.failed_items, r2.counts.units),
        (r3.counts.items, r3.counts.failed_items, r3.counts.units)
    );

    // No change: the step itself is reused whole.
    let store_h = Store::open(&store, OpenOptions::default())?;
    let s = step(
        files_config(root),
        FileDataset::from_files("docs", data.clone()),
        &[],
    );
    let (run, _) = run_one(&store_h, s);
    assert_eq!(
        run.step("score").map(|r| r.status),
        Some(stepgraph_engine::StepStatus::Reused)
    );
    Ok(())
}

const ROWS: &str = r#"import os
def run(mini_batch):
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write("x\n")
    return ["%s=%s" % (r["id"], r["value"]) for r in rows_of(mini_batch)]
"#;

fn csv_text(rows: std::ops::Range<usize>) -> String {
    rows.map(|i| format!("{i},value {i} {}\n", "z".repeat(i % 23)))
        .collect()
}

fn run_rows(
    root: &Path,
    store: &Path,
    files: &[PathBuf],
    keys: Option<&[&str]>,
) -> Result<(String, stepgraph_engine::StepRecord), Box<dyn std::error::Error>> {
    let store = Store::open(store, OpenOptions::default())?;
    let cfg = python_entry(root, "rows.py", &format!("{PY_ROWS}{ROWS}"))
        .error_threshold(0)
        .process_count_per_node(2)
        .rows_as_available()
        .incremental(true)
        .environment_variable("CALLS_LOG", root.join("calls.txt").display().to_string());
    // partition_keys make one mini-batch per key (no size).
    let cfg = match keys {
        Some(k) => cfg.partition_keys(k.iter().copied()),
        None => cfg.mini_batch_size("2KB"),
    };
    let s = step(
        cfg,
        TabularDataset::from_delimited_files("table", files.to_vec()),
        &[],
    );
    let (run, _) = run_one(&store, s);
    let r = ran(&run).clone();
    Ok((output(&run), r))
}

#[test]
fn rows_appended_to_a_csv_rerun_only_the_last_mini_batches() -> TestResult {
    let ws = Workspace::new();
    let root = ws.path();
    let csv = root.join("table.csv");
    std::fs::write(&csv, format!("id,value\n{}", csv_text(0..3000)))?;
    let store = root.join("store");
    let (_, r1) = run_rows(root, &store, std::slice::from_ref(&csv), None)?;
    assert!(r1.counts.units > 20, "{:?}", r1.counts);
    // Append 1% rows, and insert one row in the middle.
    let mut text = format!("id,value\n{}", csv_text(0..1500));
    text.push_str("99999,inserted\n");
    text.push_str(&csv_text(1500..3030));
    std::fs::write(&csv, text)?;
    let before = calls(root);
    let (second, r2) = run_rows(root, &store, std::slice::from_ref(&csv), None)?;
    let ran_now = (calls(root) - before) as u64;
    assert_eq!(ran_now + r2.counts.reused_units, r2.counts.units);
    assert!(
        ran_now <= 8,
        "{ran_now} of {} mini-batches ran",
        r2.counts.units
    );
    let (fresh, _) = run_rows(root, &root.join("fresh-store"), &[csv], None)?;
    assert_eq!(second, fresh);
    assert!(second.contains("99999=inserted") && second.contains("3029=value 3029"));
    Ok(())
}

#[test]
fn with_partition_keys_only_the_changed_keys_rerun() -> TestResult {
    let ws = Workspace::new();
    let root = ws.path();
    let csv = root.join("table.csv");
    let render = |extra: &str| {
        let mut t = "id,value,shop\n".to_string();
        for i in 0..200 {
            t.push_str(&format!("{i},v{i},shop{}\n", i % 10));
        }
        t.push_str(extra);
        t
    };
    std::fs::write(&csv, render(""))?;
    let store = root.join("store");
    let (_, r1) = run_rows(root, &store, std::slice::from_ref(&csv), Some(&["shop"]))?;
    assert_eq!(r1.counts.units, 10);
    std::fs::write(&csv, render("500,new,shop3\n"))?;
    let before = calls(root);
    let (second, r2) = run_rows(root, &store, std::slice::from_ref(&csv), Some(&["shop"]))?;
    assert_eq!(calls(root) - before, 1, "only shop3's mini-batch runs");
    assert_eq!(r2.counts.reused_units, 9);
    let (fresh, _) = run_rows(root, &root.join("fresh-store"), &[csv], Some(&["shop"]))?;
    assert_eq!(second, fresh);
    Ok(())
}

/// An in-process entry counting its calls and returning `<name> <content>` per file, or each
/// CSV row's fields joined by `|`.
struct Echo(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl stepgraph_steps::EntryScript for Echo {
    fn run(
        &mut self,
        mini_batch: &stepgraph_steps::MiniBatch,
    ) -> Result<Vec<String>, stepgraph_steps::EntryError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match &mini_batch.data {
            stepgraph_steps::MiniBatchData::Files(files) => {
                let mut out = Vec::new();
                for f in files {
                    let name = f
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    out.push(format!("{name} {}", std::fs::read_to_string(f)?.trim()));
                }
                Ok(out)
            }
            stepgraph_steps::MiniBatchData::Csv { records, .. } => Ok(records
                .iter()
                .map(|r| r.iter().collect::<Vec<_>>().join("|"))
                .collect()),
            stepgraph_steps::MiniBatchData::JsonLines(_) => Err("expected files or CSV".into()),
        }
    }
}

/// Run the incremental step of [`Echo`] over `input` (mini-batches of `size`) in the store
/// at `store`: (output, number of run() calls, record). A step reused whole made no call.
fn run_rust(
    store: &Path,
    input: impl Into<stepgraph_engine::DataSource>,
    size: &str,
) -> Result<(String, usize, stepgraph_engine::StepRecord), Box<dyn std::error::Error>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let calls = Arc::new(AtomicUsize::new(0));
    let for_factory = Arc::clone(&calls);
    let cfg = stepgraph_steps::ParallelRunConfig::builder()
        .rust_entry("echo-v1", move || Box::new(Echo(Arc::clone(&for_factory))))
        .mini_batch_size(size)
        .error_threshold(0)
        .process_count_per_node(2)
        .incremental(true);
    let store = Store::open(store, OpenOptions::default())?;
    let (run, _) = run_one(&store, step(cfg, input, &[]));
    let r = crate::parallel_run::support::rec(&run).clone();
    if r.status == stepgraph_engine::StepStatus::Reused {
        return Ok((output(&run), 0, r));
    }
    assert_eq!(r.status, stepgraph_engine::StepStatus::Ran, "{:?}", r.error);
    Ok((output(&run), calls.load(Ordering::SeqCst), r))
}

/// [`run_rust`] over the files of `data`.
fn run_echo(
    store: &Path,
    data: &Path,
    size: u64,
) -> Result<(String, usize, stepgraph_engine::StepRecord), Box<dyn std::error::Error>> {
    run_rust(
        store,
        FileDataset::from_files("docs", data.to_path_buf()),
        &size.to_string(),
    )
}

/// One edit of a folder of files.
#[derive(Debug, Clone)]
enum Edit {
    Add(usize, String),
    Delete(usize),
    Modify(usize, String),
    Rename(usize, String),
}

fn apply(data: &Path, edit: &Edit) -> std::io::Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let pick = |i: &usize| names.get(i % names.len().max(1)).cloned();
    match edit {
        Edit::Add(i, text) => std::fs::write(data.join(format!("f{i:05}-{text}.txt")), text),
        Edit::Delete(i) => match pick(i) {
            Some(p) if names.len() > 1 => std::fs::remove_file(p),
            _ => Ok(()),
        },
        Edit::Modify(i, text) => match pick(i) {
            Some(p) => std::fs::write(p, text),
            None => Ok(()),
        },
        Edit::Rename(i, text) => match pick(i) {
            Some(p) => std::fs::rename(&p, data.join(format!("r{i:05}-{text}.txt"))),
            None => Ok(()),
        },
    }
}

fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
    use proptest::prelude::*;
    prop_oneof![
        (0usize..100_000, "[a-z]{1,6}").prop_map(|(i, t)| Edit::Add(i, t)),
        (0usize..100_000).prop_map(Edit::Delete),
        (0usize..100_000, "[a-z]{1,6}").prop_map(|(i, t)| Edit::Modify(i, t)),
        (0usize..100_000, "[a-z]{1,6}").prop_map(|(i, t)| Edit::Rename(i, t)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10))]

    /// For random sequences of edits (add, delete, modify, rename files) the incremental
    /// output equals a from-scratch run's byte for byte, and the mini-batches run stay within
    /// the edits' neighbourhoods.
    #[test]
    fn incremental_output_equals_a_from_scratch_run_after_any_edits(
        n in 20usize..120,
        size in 1u64..9,
        rounds in proptest::collection::vec(proptest::collection::vec(edit(), 1..4), 1..3),
    ) {
        let ws = Workspace::new();
        let data = ws.path().join("data");
        std::fs::create_dir_all(&data).expect("data folder");
        for i in 0..n {
            std::fs::write(data.join(format!("f{i:05}.txt")), format!("file {i}")).expect("write");
        }
        let store = ws.path().join("store");
        run_echo(&store, &data, size).expect("first run");
        for (round, edits) in rounds.iter().enumerate() {
            for e in edits {
                apply(&data, e).expect("edit");
            }
            let (out, calls, r) = run_echo(&store, &data, size).expect("incremental run");
            let fresh_store = ws.path().join(format!("fresh-{round}"));
            let (fresh, _, _) = run_echo(&fresh_store, &data, size).expect("fresh run");
            proptest::prop_assert_eq!(&out, &fresh);
            // Each edit (a rename is a delete and an add) disturbs its mini-batch and, through
            // the bounds, a few around it.
            let bound = edits.len() * 2 * 6;
            proptest::prop_assert!(calls <= bound, "{} mini-batches ran for {} edits ({:?})", calls, edits.len(), r.counts);
            if calls > 0 {
                proptest::prop_assert_eq!(calls as u64 + r.counts.reused_units, r.counts.units);
            }
        }
    }
}

#[test]
fn gc_keeps_the_units_of_the_latest_output_and_removes_the_others() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 40);
    let store_path = ws.path().join("store");
    run_echo(&store_path, &data, 4)?;
    // A second version of the data: the units only the first run used are unreferenced.
    for i in 1..=40 {
        std::fs::write(data.join(doc_name(i)), format!("second version {i}\n"))?;
    }
    let (second, _, _) = run_echo(&store_path, &data, 4)?;
    let store = Store::open(&store_path, OpenOptions::default())?;
    let before = store.unit_entries()?.len();
    let latest = store
        .cache_entries()?
        .into_iter()
        .max_by_key(|e| e.created_unix_ms)
        .ok_or("no entry")?;
    let latest_units = store.entry_units(&latest);
    assert!(
        !latest_units.is_empty() && before > latest_units.len(),
        "{before} units"
    );
    // Too young for `older_than`: nothing goes.
    let kept = store.gc(&stepgraph_engine::GcOptions {
        older_than: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    })?;
    assert_eq!((kept.units, store.unit_entries()?.len()), (0, before));
    let report = store.gc(&stepgraph_engine::GcOptions::default())?;
    assert_eq!(report.units as usize, before - latest_units.len());
    let mut left: Vec<String> = store.unit_entries()?.into_iter().map(|u| u.key).collect();
    left.sort();
    let mut named = latest_units.clone();
    named.sort();
    named.dedup();
    assert_eq!(left, named);
    drop(store);
    // The kept units' objects are intact: a forced rerun of the step... reuses them all.
    let store = Store::open(&store_path, OpenOptions::default())?;
    for key in &named {
        let unit = store.unit_get(key)?.ok_or("unit lost")?;
        for obj in unit.objects.values() {
            store.read_object(obj)?;
        }
    }
    drop(store);
    let (again, _, _) = run_echo(&store_path, &data, 4)?;
    assert_eq!(again, second);
    Ok(())
}

/// Set (to the workspace folder) only in the child process of the kill -9 test.
const KILL_ENV: &str = "STEPGRAPH_TEST_INCREMENTAL_KILL_DIR";

/// Slow: every run() call is logged, so the parent knows when to kill the child.
const SLOW: &str = r#"import os, time
def run(mini_batch):
    time.sleep(0.1)
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write("%s\n" % os.path.basename(mini_batch[0]))
    return ["%s %s" % (os.path.basename(p), open(p).read().strip()) for p in mini_batch]
"#;

fn slow_step(root: &Path) -> stepgraph_steps::ParallelRunStep {
    let cfg = python_entry(root, "slow.py", SLOW)
        .usual("2")
        .incremental(true)
        .environment_variable("CALLS_LOG", root.join("calls.txt").display().to_string());
    step(cfg, FileDataset::from_files("docs", root.join("data")), &[])
}

/// The child's side of the kill -9 test: a no-op unless [`KILL_ENV`] is set.
#[test]
fn incremental_kill_child_entry() {
    let Some(dir) = std::env::var_os(KILL_ENV) else {
        return;
    };
    let root = PathBuf::from(dir);
    let store = Store::open(root.join("store"), OpenOptions::default()).expect("open store");
    let _ = run_one(&store, slow_step(&root));
}

#[test]
fn a_run_killed_with_sigkill_keeps_its_committed_mini_batches_across_an_input_change() -> TestResult
{
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let ws = Workspace::new();
    let root = ws.path();
    docs(root, 60);
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            &format!("{module}::incremental_kill_child_entry"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_ENV, root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    kill_after_calls(
        &mut child,
        &root.join("calls.txt"),
        8,
        Duration::from_secs(60),
        None,
    )?;
    // Orphaned workers may still append to the calls log for a moment.
    std::thread::sleep(Duration::from_millis(300));

    // An input change unrelated to the committed mini-batches: the step's key is new, its
    // mini-batches' keys are not.
    std::fs::write(root.join("data").join(doc_name(61)), "doc 61\n")?;
    let store = Store::open(root.join("store"), OpenOptions::default())?;
    let (run, _) = run_one(&store, slow_step(root));
    let r = ran(&run);
    assert!(r.counts.reused_units >= 4, "{:?}", r.counts);
    assert_eq!(r.counts.resumed_units, 0);
    let second = output(&run);
    drop(store);
    let fresh = Store::open(root.join("fresh-store"), OpenOptions::default())?;
    let (run, _) = run_one(&fresh, slow_step(root));
    assert_eq!(second, output(&run));
    assert_eq!(second.lines().count(), 61);
    Ok(())
}

/// summary_only: one `<name>.out` file per input file, and one per mini-batch holding its
/// file names; `EntryScript().output_dir` is the worker's own folder.
const SUMMARY: &str = r#"import os
from azureml_user.parallel_run import EntryScript

def run(mini_batch):
    out = EntryScript().output_dir
    if out != os.environ["AZUREML_BI_OUTPUT_PATH"]:
        raise RuntimeError("output_dir differs from AZUREML_BI_OUTPUT_PATH")
    names = [os.path.basename(p) for p in mini_batch]
    for p, n in zip(mini_batch, names):
        with open(os.path.join(out, n + ".out"), "w") as f:
            f.write(open(p).read().upper())
    os.makedirs(os.path.join(out, "batches"), exist_ok=True)
    with open(os.path.join(out, "batches", names[0] + ".list"), "w") as f:
        f.write("\n".join(names) + "\n")
    if os.environ.get("SHARED_FILE"):
        with open(os.path.join(out, "all.txt"), "a") as f:
            f.write("\n".join(names) + "\n")
    return names
"#;

/// Every file of a folder: relative path -> content.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    out
}

fn run_summary(
    root: &Path,
    store: &Path,
    shared_file: bool,
) -> Result<stepgraph_engine::RunSummary, Box<dyn std::error::Error>> {
    let mut cfg = python_entry(root, "summary.py", SUMMARY)
        .usual("4")
        .incremental(true)
        .output_action(stepgraph_steps::OutputAction::SummaryOnly)
        .environment_variable("CALLS_LOG", root.join("calls.txt").display().to_string());
    if shared_file {
        cfg = cfg.environment_variable("SHARED_FILE", "1");
    }
    let store = Store::open(store, OpenOptions::default())?;
    let (run, _) = run_one(
        &store,
        step(cfg, FileDataset::from_files("docs", root.join("data")), &[]),
    );
    Ok(run)
}

#[test]
fn summary_only_files_are_memoised_per_mini_batch_and_match_a_from_scratch_run() -> TestResult {
    let ws = Workspace::new();
    let root = ws.path();
    let data = docs(root, 40);
    let store = root.join("store");
    let first = run_summary(root, &store, false)?;
    let units = ran(&first).counts.units as usize;
    let first_tree = tree(&first.output_dir(crate::parallel_run::support::STEP, "output"));
    // One file per input file, one list per mini-batch.
    assert_eq!(first_tree.len(), 40 + units, "{:?}", first_tree.keys());
    assert_eq!(first_tree["doc-07.txt.out"], "DOC 7\n");

    std::fs::write(data.join(doc_name(7)), "doc seven\n")?;
    std::fs::remove_file(data.join(doc_name(30)))?;
    std::fs::write(data.join("doc-41.txt"), "doc 41\n")?;
    let second = run_summary(root, &store, false)?;
    let r = ran(&second);
    assert!(
        r.counts.reused_units >= r.counts.units.saturating_sub(6),
        "{:?}",
        r.counts
    );
    let second_tree = tree(&second.output_dir(crate::parallel_run::support::STEP, "output"));
    assert_eq!(second_tree["doc-07.txt.out"], "DOC SEVEN\n");
    assert!(!second_tree.contains_key("doc-30.txt.out"));
    let fresh = run_summary(root, &root.join("fresh-store"), false)?;
    ran(&fresh);
    let fresh_tree = tree(&fresh.output_dir(crate::parallel_run::support::STEP, "output"));
    assert_eq!(second_tree, fresh_tree);
    Ok(())
}

#[test]
fn an_incremental_summary_only_entry_appending_to_one_shared_file_is_refused() -> TestResult {
    let ws = Workspace::new();
    let root = ws.path();
    docs(root, 12);
    let run = run_summary(root, &root.join("store"), true)?;
    let r = crate::parallel_run::support::rec(&run);
    assert_eq!(r.status, stepgraph_engine::StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("both wrote all.txt") && error.contains("one file per mini-batch"),
        "{error}"
    );
    Ok(())
}

/// [`run_rust`] over the rows of `csv`: (output, run() calls).
fn run_rows_rust(store: &Path, csv: &Path) -> Result<(String, usize), Box<dyn std::error::Error>> {
    let table = TabularDataset::from_delimited_files("table", vec![csv.to_path_buf()]);
    run_rust(store, table, "300").map(|(out, calls, _)| (out, calls))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10))]

    /// For random sequences of row edits (append, insert, delete) the incremental output
    /// equals a from-scratch run's byte for byte, and the mini-batches run stay within the
    /// edits' neighbourhoods.
    #[test]
    fn incremental_rows_output_equals_a_from_scratch_run_after_any_edits(
        rows in proptest::collection::vec("[a-z ]{0,30}", 50..400),
        rounds in proptest::collection::vec(
            proptest::collection::vec((0usize..100_000, 0u8..3, "[a-z]{1,20}"), 1..4),
            1..3,
        ),
    ) {
        let ws = Workspace::new();
        let csv = ws.path().join("table.csv");
        // Rows keep their ids across edits, as real keys do.
        let render = |rows: &[(usize, String)]| -> String {
            let mut t = "id,text\n".to_string();
            for (id, r) in rows {
                t.push_str(&format!("{id},\"{r}\"\n"));
            }
            t
        };
        let mut current: Vec<(usize, String)> = rows.into_iter().enumerate().collect();
        let mut next_id = current.len();
        std::fs::write(&csv, render(&current)).expect("write");
        let store = ws.path().join("store");
        run_rows_rust(&store, &csv).expect("first run");
        for (round, edits) in rounds.iter().enumerate() {
            for (at, kind, text) in edits {
                let i = at % (current.len() + 1);
                next_id += 1;
                match kind {
                    0 => current.push((next_id, text.clone())),
                    1 => current.insert(i, (next_id, text.clone())),
                    _ if current.len() > 1 => {
                        current.remove(i % current.len());
                    }
                    _ => {}
                }
            }
            std::fs::write(&csv, render(&current)).expect("write");
            let (out, calls) = run_rows_rust(&store, &csv).expect("incremental run");
            let (fresh, _) = run_rows_rust(&ws.path().join(format!("fresh-{round}")), &csv)
                .expect("fresh run");
            proptest::prop_assert_eq!(&out, &fresh);
            proptest::prop_assert!(calls <= edits.len() * 6, "{} mini-batches ran for {} edits", calls, edits.len());
        }
    }
}

#[test]
fn a_damaged_memoised_mini_batch_is_run_again_not_served() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    let data = docs(ws.path(), 30);
    let store_path = ws.path().join("store");
    run_echo(&store_path, &data, 4)?;
    // Damage one memoised mini-batch's rows: same size, other bytes.
    {
        let store = Store::open(&store_path, OpenOptions::default())?;
        let unit = store.unit_entries()?.into_iter().next().ok_or("no unit")?;
        let obj = unit.objects.get("rows").ok_or("no rows")?;
        let path = store.object_path(&obj.hash);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let mut bytes = std::fs::read(&path)?;
        bytes[0] ^= 0x20;
        std::fs::write(&path, bytes)?;
    }
    std::fs::write(data.join("doc-31.txt"), "doc 31\n")?;
    let (out, calls, r) = run_echo(&store_path, &data, 4)?;
    assert!(
        calls >= 2,
        "the damaged mini-batch and the new one ran: {calls} ({:?})",
        r.counts
    );
    let (fresh, _, _) = run_echo(&ws.path().join("fresh"), &data, 4)?;
    assert_eq!(out, fresh);
    Ok(())
}

/// summary_only: `<name>.o` per file; a log kept open from init() when `KEEP_OPEN` is set;
/// run() raises on a file named in `$FAIL_ON` when the file `$FAIL_FLAG` exists; shutdown()
/// writes a summary.
const SUMMARY_TRICKY: &str = r#"import os
from azureml_user.parallel_run import EntryScript

log = None

def init():
    global log
    if os.environ.get("KEEP_OPEN"):
        log = open(os.path.join(EntryScript().output_dir, "log.txt"), "a")

def run(mini_batch):
    out = EntryScript().output_dir
    names = [os.path.basename(p) for p in mini_batch]
    if os.path.exists(os.environ["FAIL_FLAG"]) and os.environ["FAIL_ON"] in names:
        raise RuntimeError("failing on purpose")
    for p, n in zip(mini_batch, names):
        with open(os.path.join(out, n + ".o"), "w") as f:
            f.write(open(p).read())
        if log:
            log.write(n + "\n")
            log.flush()
    return names

def shutdown():
    with open(os.path.join(EntryScript().output_dir, "summary.txt"), "w") as f:
        f.write("done\n")
"#;

fn run_tricky(
    root: &Path,
    store: &Path,
    keep_open: bool,
    force: bool,
) -> Result<stepgraph_engine::RunSummary, Box<dyn std::error::Error>> {
    let mut cfg = python_entry(root, "tricky.py", SUMMARY_TRICKY)
        .mini_batch_size("2")
        .error_threshold(10)
        .run_max_try(1)
        .process_count_per_node(1)
        .incremental(true)
        .output_action(stepgraph_steps::OutputAction::SummaryOnly)
        .environment_variable("FAIL_FLAG", root.join("FAIL").display().to_string())
        .environment_variable("FAIL_ON", doc_name(5));
    if keep_open {
        cfg = cfg.environment_variable("KEEP_OPEN", "1");
    }
    let store = Store::open(store, OpenOptions::default())?;
    let pipeline = stepgraph_engine::Pipeline::builder("prs-e2e")
        .step(step(
            cfg,
            FileDataset::from_files("docs", root.join("data")),
            &[],
        ))
        .build()?;
    let opts = stepgraph_engine::RunOptions {
        plan: stepgraph_engine::PlanOptions {
            force: if force {
                [crate::parallel_run::support::STEP.to_string()].into()
            } else {
                Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let sink = stepgraph_engine::CollectSink::default();
    Ok(stepgraph_engine::run(&pipeline, &store, &opts, &sink)?)
}

#[test]
fn a_summary_only_file_kept_open_across_mini_batches_fails_the_step_and_leaves_the_store_intact(
) -> TestResult {
    let ws = Workspace::new();
    let root = ws.path();
    docs(root, 12);
    let run = run_tricky(root, &root.join("store"), true, false)?;
    let r = crate::parallel_run::support::rec(&run);
    assert_eq!(r.status, stepgraph_engine::StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains("log.txt was still written"), "{error}");
    let store = Store::open(root.join("store"), OpenOptions::default())?;
    for unit in store.unit_entries()? {
        for obj in unit.objects.values() {
            store.read_object(obj)?;
        }
    }
    Ok(())
}

#[test]
fn a_forced_run_never_takes_a_failed_mini_batchs_files_from_an_earlier_run() -> TestResult {
    let ws = Workspace::new();
    let root = ws.path();
    docs(root, 12);
    let store = root.join("store");
    let first = run_tricky(root, &store, false, false)?;
    let tree_first = tree(&first.output_dir(crate::parallel_run::support::STEP, "output"));
    assert!(tree_first.contains_key("doc-05.txt.o"));
    std::fs::write(root.join("FAIL"), "")?;
    let forced = run_tricky(root, &store, false, true)?;
    let r = ran(&forced);
    assert_eq!(r.counts.failed_units, 1);
    let out = tree(&forced.output_dir(crate::parallel_run::support::STEP, "output"));
    assert!(!out.contains_key("doc-05.txt.o"), "{:?}", out.keys());
    let fresh = run_tricky(root, &root.join("fresh"), false, false)?;
    let fresh_out = tree(&fresh.output_dir(crate::parallel_run::support::STEP, "output"));
    assert_eq!(out, fresh_out);
    // shutdown()'s file is not part of the output, and a warning says so.
    assert!(!out.contains_key("summary.txt"));
    let events = crate::parallel_run::support::sys_log(&forced);
    assert!(events.contains("files written outside run()"), "{events}");
    Ok(())
}

/// An in-process entry that, while running the mini-batch holding `doc-02.txt`, rewrites
/// `doc-28.txt` (an input changing while the step runs).
struct Meddler(PathBuf);

impl stepgraph_steps::EntryScript for Meddler {
    fn run(
        &mut self,
        mini_batch: &stepgraph_steps::MiniBatch,
    ) -> Result<Vec<String>, stepgraph_steps::EntryError> {
        let stepgraph_steps::MiniBatchData::Files(files) = &mini_batch.data else {
            return Err("expected files".into());
        };
        let mut out = Vec::new();
        for f in files {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name == doc_name(2) {
                std::fs::write(self.0.join(doc_name(28)), "EVIL\n")?;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            out.push(format!("{name} {}", std::fs::read_to_string(f)?.trim()));
        }
        Ok(out)
    }
}

#[test]
fn results_of_inputs_that_changed_while_the_step_ran_are_not_memoised() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 30);
    let store_path = ws.path().join("store");
    let run_meddled = |store: &Store| {
        let dir = data.clone();
        let cfg = stepgraph_steps::ParallelRunConfig::builder()
            .rust_entry("meddler-v1", move || Box::new(Meddler(dir.clone())))
            .mini_batch_size("3")
            .error_threshold(0)
            .process_count_per_node(1)
            .incremental(true);
        run_one(
            store,
            step(cfg, FileDataset::from_files("docs", data.clone()), &[]),
        )
    };
    {
        let store = Store::open(&store_path, OpenOptions::default())?;
        let (run, _) = run_meddled(&store);
        let r = crate::parallel_run::support::rec(&run);
        assert_eq!(
            r.status,
            stepgraph_engine::StepStatus::Failed,
            "{:?}",
            r.error
        );
    }
    // Put the input back: the next run must not serve what was computed from "EVIL".
    std::fs::write(data.join(doc_name(28)), "doc 28\n")?;
    let (out, _, _) = run_echo(&store_path, &data, 3)?;
    assert!(
        out.contains("doc-28.txt doc 28") && !out.contains("EVIL"),
        "{out}"
    );
    Ok(())
}
