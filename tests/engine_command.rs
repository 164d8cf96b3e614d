//! `CommandStep` end to end: an argv (no shell) running a Python script from a hashed
//! source directory.

use std::collections::BTreeMap;
use std::error::Error;

use serde_json::json;
use stepgraph_engine::{
    run, CollectSink, FileDataset, Pipeline, PipelineData, PipelineParameter, RunStatus,
    StepStatus, Store,
};
use stepgraph_steps::CommandStep;

use crate::common::{ev, jobs, read_output, Workspace};

type TestResult = Result<(), Box<dyn Error>>;

const SCRIPT: &str = r#"import os, sys
data, out, tag = sys.argv[1], sys.argv[2], sys.argv[3]
text = "".join(open(os.path.join(data, f)).read() for f in sorted(os.listdir(data)))
with open(os.path.join(out, "result.txt"), "w") as f:
    f.write(tag + ":" + text.upper())
"#;

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("src/script.py", SCRIPT);
    ws.write("data/a.txt", "hello ");
    ws.write("data/b.txt", "world");
    ws
}

fn pipeline(ws: &Workspace) -> Result<Pipeline, Box<dyn Error>> {
    let step = CommandStep::new(
        "shout",
        [
            "python3",
            "script.py",
            "{inputs.data}",
            "{outputs.out}",
            "{params.tag}",
        ],
    )
    .source_directory(ws.path().join("src"))
    .input(
        "data",
        FileDataset::from_files("data", ws.path().join("data")),
    )
    .output("out", PipelineData::new("shouted"))
    .param(PipelineParameter::new("tag", "alpha"));
    Ok(Pipeline::builder("command").step(step).build()?)
}

fn result_text(s: &stepgraph_engine::RunSummary) -> std::io::Result<String> {
    read_output(s, "shout", "out", "result.txt")
}

fn rerun(p: &Pipeline, store: &Store) -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    let sink = CollectSink::default();
    run(p, store, &jobs(1), &sink)?;
    Ok(sink.step_events())
}

#[test]
fn command_step_runs_its_argv_and_writes_the_output() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let s = run(&pipeline(&ws)?, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.status, RunStatus::Succeeded, "{:?}", s.steps);
    assert_eq!(result_text(&s)?, "alpha:HELLO WORLD");
    Ok(())
}

#[test]
fn command_step_parameter_override_reaches_the_command() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let mut opts = jobs(1);
    opts.plan.params = BTreeMap::from([("tag".to_string(), json!("beta"))]);
    let s = run(&pipeline(&ws)?, &store, &opts, &CollectSink::default())?;
    assert_eq!(result_text(&s)?, "beta:HELLO WORLD");
    Ok(())
}

#[test]
fn command_step_reruns_when_its_script_changes() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let p = pipeline(&ws)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    ws.write(
        "src/script.py",
        &SCRIPT.replace("tag + \":\"", "tag + \"=\""),
    );
    let sink = CollectSink::default();
    let s = run(&p, &store, &jobs(1), &sink)?;
    assert_eq!(
        sink.step_events(),
        ev(&[("started", "shout"), ("finished", "shout")])
    );
    assert_eq!(result_text(&s)?, "alpha=HELLO WORLD");
    Ok(())
}

#[test]
fn command_step_ignores_pycache_appearing_in_its_source_directory() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let p = pipeline(&ws)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    ws.write("src/__pycache__/script.cpython-311.pyc", "\u{0}compiled");
    ws.write("src/helper.pyc", "\u{0}compiled");
    assert_eq!(rerun(&p, &store)?, ev(&[("reused", "shout")]));
    Ok(())
}

#[test]
fn command_step_honours_gitignore_in_its_source_directory() -> TestResult {
    let ws = workspace();
    ws.write("src/.gitignore", "*.log\n");
    let store = ws.store();
    let p = pipeline(&ws)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    ws.write("src/debug.log", "noise");
    assert_eq!(rerun(&p, &store)?, ev(&[("reused", "shout")]));
    ws.write("src/notes.txt", "a new source file");
    assert_eq!(
        rerun(&p, &store)?,
        ev(&[("started", "shout"), ("finished", "shout")])
    );
    Ok(())
}

#[test]
fn failing_command_reports_its_stderr() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let step = CommandStep::new(
        "crash",
        [
            "python3",
            "-c",
            "import sys; sys.stderr.write('ValueError: bad row 17\\n'); sys.exit(3)",
        ],
    );
    let p = Pipeline::builder("crash").step(step).build()?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.status, RunStatus::Failed);
    let rec = s.step("crash").ok_or("no record for crash")?;
    assert_eq!(rec.status, StepStatus::Failed);
    let err = rec.error.clone().unwrap_or_default();
    assert!(err.contains("ValueError: bad row 17"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    Ok(())
}

#[test]
fn missing_program_fails_the_step_with_its_name() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let p = Pipeline::builder("missing")
        .step(CommandStep::new(
            "nothing",
            ["stepgraph-no-such-program-xyz"],
        ))
        .build()?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let err = s
        .step("nothing")
        .and_then(|r| r.error.clone())
        .unwrap_or_default();
    assert!(err.contains("stepgraph-no-such-program-xyz"), "{err}");
    Ok(())
}

#[test]
fn command_step_with_the_store_inside_its_source_directory_is_reused_and_leaves_the_folder_alone(
) -> TestResult {
    // The workspace root is the source folder, and the store lives at `store/` inside it.
    let ws = Workspace::new();
    ws.write(
        "note.py",
        "import os, sys\nopen('scratch.txt', 'w').write('x')\nopen(os.path.join(sys.argv[1], 'n.txt'), 'w').write('done')\n",
    );
    let step = CommandStep::new("note", ["python3", "note.py", "{outputs.out}"])
        .source_directory(ws.path())
        .output("out", PipelineData::new("noted"));
    let p = Pipeline::builder("cmd-store-inside").step(step).build()?;
    let store = ws.store();
    let first = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(
        first.steps[0].status,
        StepStatus::Ran,
        "{:?}",
        first.steps[0].error
    );
    assert!(
        !ws.path().join("scratch.txt").exists(),
        "the command ran in a copy, not in the user's folder"
    );
    let sink = CollectSink::default();
    run(&p, &store, &jobs(1), &sink)?;
    assert_eq!(sink.step_events(), ev(&[("reused", "note")]));
    Ok(())
}
