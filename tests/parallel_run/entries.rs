//! What an entry sees: side inputs, pipeline parameters, the user logger; and entry_command
//! workers speaking the protocol directly.

use stepgraph_engine::{Argument, DataReference, FileDataset, Pipeline, PipelineData};
use stepgraph_steps::{ParallelRunConfig, ParallelRunStep};

use crate::common::Workspace;
use crate::parallel_run::support::{
    doc_name, docs, output, python, python_entry, ran, run_docs, run_in, script, TestResult,
    UsualSetUp, STEP,
};

#[test]
fn side_inputs_reach_the_script_and_are_never_partitioned() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 4);
    ws.write("side/lookup.txt", "prefix-X\n");
    ws.write("labels/a.lbl", "");
    ws.write("labels/b.lbl", "");
    let calls = ws.path().join("calls.txt");
    let cfg = python_entry(
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
    )
    .usual("2")
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
    let (run, _) = run_in(&ws, prs);
    let r = ran(&run);
    let expected: String = (1..=4)
        .map(|i| format!("prefix-X {} a.lbl,b.lbl\n", doc_name(i)))
        .collect();
    assert_eq!(output(&run), expected);
    assert_eq!((r.counts.items, r.counts.units), (4, 2));
    let mut seen = crate::parallel_run::support::lines(&calls);
    seen.sort();
    assert_eq!(seen, ["doc-01.txt doc-02.txt", "doc-03.txt doc-04.txt"]);
    Ok(())
}

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
        .usual("2");
    let (run, _) = run_docs(&ws, cfg, data);
    let r = ran(&run);
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
        .usual("2")
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
    let (first, _) = crate::parallel_run::support::run_pipeline(&store, &pipeline);
    ran(&first);
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
    ran(&second);
    assert_eq!(output(&second), rows("beta"));
}

#[test]
fn entry_script_logger_writes_to_the_user_log_folder() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 2);
    let cfg = python_entry(
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
    )
    .mini_batch_size("2")
    .error_threshold(0)
    .process_count_per_node(1);
    let (run, _) = run_docs(&ws, cfg, data);
    ran(&run);
    // One place, as Azure lays it out: logs/user/entry_script_log/<node>/<process>.log.txt.
    let log =
        crate::parallel_run::support::log_file(&run, "user/entry_script_log/0/process000.log.txt");
    assert_eq!(log.matches("init of worker-0").count(), 1, "{log}");
    assert!(log.contains("|INFO|worker-0|init of worker-0"), "{log}");
    let everything = crate::parallel_run::support::user_logs(&run);
    assert_eq!(
        everything.matches("init of worker-0").count(),
        1,
        "each logger line once in logs/user: {everything}"
    );
    // The process's system log, as Azure's logs/sys/node/<node>/<process>.txt: each
    // mini-batch picked up and done.
    let sys = crate::parallel_run::support::log_file(&run, "sys/node/0/process000.txt");
    assert!(
        sys.contains("mini-batch 0: picked up, 2 items (doc-01.txt, doc-02.txt)"),
        "{sys}"
    );
    assert!(
        sys.contains("mini-batch 0: done: 2 items, 2 succeeded, 0 failed in "),
        "{sys}"
    );
    assert!(
        log.contains("|WARNING|worker-0|scoring doc-01.txt"),
        "{log}"
    );
    assert!(
        log.contains("|WARNING|worker-0|scoring doc-02.txt"),
        "{log}"
    );
}
