//! Step processes end to end: bounded stray output, exact non-UTF-8 paths through the worker
//! protocol and command placeholders, long CSV fields, orphans killed when a step ends, and
//! the summary_only shared-file warning, control characters escaped in errors.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use stepgraph_engine::{FileDataset, Pipeline, PipelineData, StepStatus, TabularDataset};
use stepgraph_steps::{CommandStep, OutputAction, ParallelRunConfig};

use crate::common::{read_output, Workspace};
use crate::parallel_run::support::{
    docs, job_result, output, output_file, python, python_entry, ran, rec, run_docs, run_one,
    run_pipeline, script, step, TestResult,
};

/// A worker speaking the protocol that answers each run with `LINE` (Python expression).
fn raw_worker(line_expr: &str) -> String {
    format!(
        r#"import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m["type"] == "init":
        print(json.dumps({{"type": "ready"}}), flush=True)
    elif m["type"] == "run":
        sys.stdout.write({line_expr})
        sys.stdout.flush()
    elif m["type"] == "shutdown":
        break
"#
    )
}

/// Run, over one document, a step whose `entry_command` is `scripts/<name>`, a [`raw_worker`]
/// answering `line_expr`, with one worker and one try.
fn run_raw_worker(ws: &Workspace, name: &str, line_expr: &str) -> stepgraph_engine::RunSummary {
    let data = docs(ws.path(), 1);
    script(ws.path(), name, &raw_worker(line_expr));
    let cfg = ParallelRunConfig::builder()
        .source_directory(ws.path().join("scripts"))
        .entry_command(["python3", name])
        .error_threshold(0)
        .run_max_try(1)
        .process_count_per_node(1);
    run_docs(ws, cfg, data).0
}

// ----- item 9: stray output is kept as a bounded excerpt -----

#[test]
fn a_long_non_json_line_from_a_worker_fails_the_try_with_a_bounded_excerpt() {
    let ws = Workspace::new();
    let run = run_raw_worker(&ws, "noise.py", r#""HEAD" + "x" * 1000000 + "TAIL\n""#);
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains("not a JSON line: HEAD"), "{error:.300}");
    assert!(error.contains("TAIL"), "both ends are kept");
    assert!(error.contains("bytes omitted"), "{error:.300}");
    assert!(error.len() < 20_000, "error of {} bytes", error.len());
    let result = job_result(&run);
    assert!(
        result.len() < 20_000,
        "job_result of {} bytes",
        result.len()
    );
    assert!(result.contains("bytes omitted"));
}

// ----- terminal escape sequences from steps are escaped in errors -----

#[test]
fn terminal_escapes_from_a_worker_or_a_command_are_escaped_in_errors() {
    let ws = Workspace::new();
    let run = run_raw_worker(&ws, "escapes.py", r#""\x1b]0;PWNED\x07\x1b[31mRED\r\n""#);
    let error = rec(&run).error.clone().unwrap_or_default();
    assert!(
        error.contains(r"not a JSON line: \x1b]0;PWNED\x07\x1b[31mRED"),
        "{error:?}"
    );
    let result = job_result(&run);
    for text in [&error, &result] {
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
    }

    let step = CommandStep::new(
        "shout",
        [
            "sh",
            "-c",
            r"printf '\033]0;PWNED\007\033[31mRED' >&2; exit 3",
        ],
    );
    let pipeline = Pipeline::builder("escapes")
        .step(step)
        .build()
        .expect("build");
    let (run, _) = run_pipeline(&ws.store(), &pipeline);
    let error = run
        .step("shout")
        .and_then(|r| r.error.clone())
        .unwrap_or_default();
    assert!(error.ends_with(r"\x1b]0;PWNED\x07\x1b[31mRED"), "{error:?}");
    assert!(!error.contains('\x1b'), "{error:?}");
}

// ----- item 2: non-UTF-8 names keep their exact bytes -----

/// `dir/a\xff.txt` and `dir/a\xfe.txt`, two different names a lossy conversion would merge.
fn non_utf8_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut out = Vec::new();
    for (byte, text) in [(0xffu8, "content of ff"), (0xfe, "content of fe")] {
        let mut name = b"a".to_vec();
        name.push(byte);
        name.extend_from_slice(b".txt");
        let p = dir.join(OsStr::from_bytes(&name));
        std::fs::write(&p, text).expect("write");
        out.push(p);
    }
    out
}

#[test]
fn python_entries_open_files_whose_names_are_not_utf8() {
    let ws = Workspace::new();
    non_utf8_files(&ws.path().join("data"));
    let cfg = python_entry(
        ws.path(),
        "read.py",
        "def run(mini_batch):\n    return sorted(open(p).read() for p in mini_batch)\n",
    )
    .error_threshold(0)
    .mini_batch_size("10")
    .process_count_per_node(1);
    let (run, _) = run_one(
        &ws.store(),
        step(
            cfg,
            FileDataset::from_files("docs", ws.path().join("data")),
            &[],
        ),
    );
    let _r = ran(&run);
    assert_eq!(output(&run), "content of fe\ncontent of ff\n");
}

#[test]
fn command_placeholders_pass_non_utf8_paths_exactly() {
    let ws = Workspace::new();
    let dir = ws.path().join(OsStr::from_bytes(b"d\xff"));
    non_utf8_files(&dir);
    let step = CommandStep::new(
        "copy",
        [
            "sh",
            "-c",
            "cat \"$1\"/a* > \"$2\"/all.txt",
            "sh",
            "{inputs.docs}",
            "{outputs.all}",
        ],
    )
    .input("docs", FileDataset::from_files("docs", &dir))
    .output("all", PipelineData::new("all"));
    let pipeline = Pipeline::builder("paths")
        .step(step)
        .build()
        .expect("build");
    let (run, _) = run_pipeline(&ws.store(), &pipeline);
    let r = run.step("copy").expect("record");
    assert_eq!(r.status, StepStatus::Ran, "{:?}", r.error);
    let all = read_output(&run, "copy", "all", "all.txt").expect("output");
    assert_eq!(all, "content of fecontent of ff");
}

// ----- item 14: CSV fields as long as a protocol line -----

#[test]
fn python_entries_read_csv_fields_over_128_kib() {
    let ws = Workspace::new();
    let big = "y".repeat(1 << 20);
    let csv = ws.path().join("big.csv");
    std::fs::write(&csv, format!("id,text\n1,{big}\n2,short\n")).expect("write");
    script(
        ws.path(),
        "len.py",
        "def run(mini_batch):\n    rows = mini_batch.to_dict('records') if hasattr(mini_batch, 'to_dict') else mini_batch\n    return [f\"{r['id']} {len(r['text'])}\" for r in rows]\n",
    );
    // The csv module's path (pandas has no field limit).
    let cfg = python(ws.path(), "len.py")
        .error_threshold(0)
        .mini_batch_size("4MB")
        .tabular_format(stepgraph_steps::TabularInput::Records)
        .process_count_per_node(1);
    let table = TabularDataset::from_delimited_files("table", vec![csv]);
    let (run, _) = run_one(&ws.store(), step(cfg, table, &[]));
    let r = rec(&run);
    assert_eq!(
        r.status,
        StepStatus::Ran,
        "{:.2000}",
        r.error.clone().unwrap_or_default()
    );
    assert_eq!(output(&run), format!("1 {}\n2 5\n", 1 << 20));
}

// ----- item 13: what a step leaves behind is killed -----

/// Pids of live processes whose environment holds `needle` (e.g. `NAME=value`).
fn processes_with_env(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

/// The command name of a live process (None when it is gone).
fn comm(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat
        .rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .to_string();
    if state == "Z" {
        return None;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn processes_a_worker_starts_in_their_own_session_do_not_survive_the_step() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 2);
    // Unique to this test process, so nothing else matches.
    let mark = format!("STEPGRAPH_TEST_ORPHAN={}", std::process::id());
    let seconds = format!("3001.{}", std::process::id());
    let cfg = python_entry(
        ws.path(),
        "orphans.py",
        &format!(
            r#"import os, subprocess
MARK = {mark:?}
SECONDS = {seconds:?}

def run(mini_batch):
    name, value = MARK.split("=")
    # A child in a session of its own, keeping the environment.
    subprocess.Popen(["setsid", "sleep", "3000"], env=dict(os.environ, **{{name: value}}))
    # A double fork into a new session with an empty environment.
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execve("/bin/sleep", ["sleep", SECONDS], {{}})
        os._exit(0)
    os.wait()
    return mini_batch
"#
        ),
    )
    .error_threshold(0)
    .mini_batch_size("1")
    .process_count_per_node(1);
    let (run, _) = run_one(
        &ws.store(),
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    let _r = ran(&run);
    let survivors = processes_with_env(&mark);
    assert_eq!(
        survivors,
        Vec::<i32>::new(),
        "setsid children survived the step"
    );
    let cmdline = format!("sleep\0{seconds}\0");
    let double_forked: Vec<i32> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default() == cmdline.as_bytes()
                && comm(*pid).is_some()
        })
        .collect();
    assert_eq!(
        double_forked,
        Vec::<i32>::new(),
        "double-forked orphans survived"
    );
    Ok(())
}

// ----- item 15: summary_only scripts appending to one shared file -----

/// A summary_only step over 3 docs in mini-batches of 1, with one worker and 3 tries, whose
/// `run({signature})` writes the names of its files to `{path}` in the output folder, opened
/// with `mode`; the second mini-batch then fails once.
fn summary_only_run(
    ws: &Workspace,
    signature: &str,
    path: &str,
    mode: &str,
) -> stepgraph_engine::RunSummary {
    let body = format!(
        r#"
def run({signature}):
    out = EntryScript().output_dir
    with open(os.path.join(out, {path}), "{mode}") as f:
        for p in mini_batch:
            f.write(os.path.basename(p) + "\n")
    # The second mini-batch fails once after writing: with "a", its rows are written twice.
    if "doc-02" in mini_batch[0] and not os.path.exists(MARKER):
        open(MARKER, "w").close()
        raise RuntimeError("fails once")
    return mini_batch
"#
    );
    let data = docs(ws.path(), 3);
    let marker = ws.path().join("failed-once");
    script(
        ws.path(),
        "summary.py",
        &format!(
            "import os\nfrom azureml_user.parallel_run import EntryScript\nMARKER = {:?}\n{body}",
            marker.display().to_string()
        ),
    );
    let cfg = python(ws.path(), "summary.py")
        .error_threshold(-1)
        .mini_batch_size("1")
        .run_max_try(3)
        .process_count_per_node(1)
        .output_action(OutputAction::SummaryOnly);
    let (run, _) = run_docs(ws, cfg, data);
    ran(&run);
    run
}

#[test]
fn summary_only_appending_to_one_file_is_reported_in_job_result() {
    let ws = Workspace::new();
    let run = summary_only_run(&ws, "mini_batch", r#""all.txt""#, "a");
    let text = job_result(&run);
    assert!(
        text.contains("warning: output file all.txt was written by mini-batches 0 and 1"),
        "{text}"
    );
    assert!(text.contains("one file per mini-batch"), "{text}");
}

#[test]
fn summary_only_writing_one_file_per_mini_batch_gives_no_warning() {
    let ws = Workspace::new();
    let run = summary_only_run(
        &ws,
        "mini_batch, context",
        r#""part-%d.txt" % context.minibatch_index"#,
        "w",
    );
    let text = job_result(&run);
    assert!(!text.contains("warning"), "{text}");
}

/// A summary_only step over `n` docs in mini-batches of 2, with one worker, whose `run`
/// appends its file names to the shared `all.txt`, then raises once (removing the marker)
/// when the file `fail-once` exists and names one of its files.
fn appending_run(ws: &Workspace, n: usize, run_max_try: i64) -> stepgraph_engine::RunSummary {
    let data = docs(ws.path(), n);
    script(
        ws.path(),
        "append.py",
        &format!(
            r#"import os
from azureml_user.parallel_run import EntryScript
MARKER = {:?}

def run(mini_batch):
    out = EntryScript().output_dir
    with open(os.path.join(out, "all.txt"), "a") as f:
        for p in mini_batch:
            f.write(os.path.basename(p) + "\n")
    if os.path.exists(MARKER) and any(open(MARKER).read() in os.path.basename(p) for p in mini_batch):
        os.remove(MARKER)
        raise RuntimeError("fails once after appending")
    return mini_batch
"#,
            ws.path().join("fail-once").display().to_string()
        ),
    );
    let cfg = python(ws.path(), "append.py")
        .error_threshold(0)
        .mini_batch_size("2")
        .run_max_try(run_max_try)
        .process_count_per_node(1)
        .output_action(OutputAction::SummaryOnly);
    run_docs(ws, cfg, data).0
}

#[test]
fn summary_only_a_retry_appending_again_is_reported_in_job_result() {
    let ws = Workspace::new();
    // One mini-batch (doc-01, doc-02): its first try appends, then fails.
    std::fs::write(ws.path().join("fail-once"), "doc-01").expect("marker");
    let run = appending_run(&ws, 2, 3);
    ran(&run);
    assert_eq!(
        output_file(&run, "all.txt"),
        "doc-01.txt\ndoc-02.txt\ndoc-01.txt\ndoc-02.txt\n"
    );
    let text = job_result(&run);
    assert!(
        text.contains(
            "warning: output file all.txt was written by a failed attempt of mini-batch 0 and \
             appended to again by its retry"
        ),
        "{text}"
    );
}

#[test]
fn summary_only_a_redo_after_an_interrupted_run_appending_again_is_reported() {
    let ws = Workspace::new();
    // The first run commits mini-batch 0, then mini-batch 1 appends and fails: the step stops
    // with mini-batch 0 committed and mini-batch 1's rows already in all.txt (what a crash
    // after the append leaves, too).
    std::fs::write(ws.path().join("fail-once"), "doc-03").expect("marker");
    let first = appending_run(&ws, 4, 1);
    assert_eq!(rec(&first).status, StepStatus::Failed);
    // The second run resumes and redoes mini-batch 1, which appends its rows again.
    let run = appending_run(&ws, 4, 1);
    ran(&run);
    assert_eq!(
        output_file(&run, "all.txt"),
        "doc-01.txt\ndoc-02.txt\ndoc-03.txt\ndoc-04.txt\ndoc-03.txt\ndoc-04.txt\n"
    );
    let text = job_result(&run);
    assert!(text.contains("1 resumed from an earlier run"), "{text}");
    assert!(
        text.contains(
            "warning: output file all.txt was written by an attempt of an earlier run that \
             never committed"
        ),
        "{text}"
    );
}
