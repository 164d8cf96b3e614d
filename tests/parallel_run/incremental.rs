//! Incremental ParallelRunSteps (`incremental: true`): content-defined mini-batches, each
//! memoised under its own key, so a rerun over changed inputs runs only the mini-batches
//! whose content changed, and gathers an output byte-identical to a from-scratch run.

use std::path::{Path, PathBuf};

use stepgraph_engine::{FileDataset, OpenOptions, Store, TabularDataset};

use crate::common::Workspace;
use crate::parallel_run::support::{
    doc_name, docs, lines, output, python_entry, ran, run_one, step, TestResult, UsualSetUp,
    PY_ROWS,
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
    let (_, r1) = run_rows(root, &store, &[csv.clone()], None)?;
    assert!(r1.counts.units > 20, "{:?}", r1.counts);
    // Append 1% rows, and insert one row in the middle.
    let mut text = format!("id,value\n{}", csv_text(0..1500));
    text.push_str("99999,inserted\n");
    text.push_str(&csv_text(1500..3030));
    std::fs::write(&csv, text)?;
    let before = calls(root);
    let (second, r2) = run_rows(root, &store, &[csv.clone()], None)?;
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
    let (_, r1) = run_rows(root, &store, &[csv.clone()], Some(&["shop"]))?;
    assert_eq!(r1.counts.units, 10);
    std::fs::write(&csv, render("500,new,shop3\n"))?;
    let before = calls(root);
    let (second, r2) = run_rows(root, &store, &[csv.clone()], Some(&["shop"]))?;
    assert_eq!(calls(root) - before, 1, "only shop3's mini-batch runs");
    assert_eq!(r2.counts.reused_units, 9);
    let (fresh, _) = run_rows(root, &root.join("fresh-store"), &[csv], Some(&["shop"]))?;
    assert_eq!(second, fresh);
    Ok(())
}
