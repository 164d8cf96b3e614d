//! A step sees exactly what is hashed into its key: command steps and ParallelRunStep
//! workers run in a copy of exactly their source snapshot (ignore files honoured, regular
//! files only), a command step's file dataset input holds exactly the listed files, and a
//! worker's reply that breaks the protocol fails its mini-batch.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stepgraph_engine::{run, CollectSink, FileDataset, Pipeline, PipelineData, StepStatus, Store};
use stepgraph_steps::{CommandStep, OutputAction, ParallelRunConfig};

use crate::common::{ev, jobs, read_output, Workspace};
use crate::parallel_run::support::{
    docs, job_result, output, ran, rec, run_docs, run_one, script, step, STEP,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Events = Vec<(&'static str, String)>;

/// Run `p`, returning the step events and the text of `<step>/outputs/out/r.txt`.
fn run_r(
    p: &Pipeline,
    store: &Store,
    step: &str,
) -> Result<(Events, String), Box<dyn std::error::Error>> {
    let sink = CollectSink::default();
    let s = run(p, store, &jobs(1), &sink)?;
    let rec = s.step(step).ok_or("no record")?;
    assert_ne!(rec.status, StepStatus::Failed, "{:?}", rec.error);
    let text = read_output(&s, step, "out", "r.txt")?;
    Ok((sink.step_events(), text))
}

#[test]
fn a_command_step_never_sees_a_gitignored_file_of_its_source_folder() -> TestResult {
    let ws = Workspace::new();
    ws.write("src/.gitignore", "conf.txt\n");
    ws.write("src/conf.txt", "one\n");
    ws.write("src/sub/kept.txt", "kept\n");
    let store = ws.store();
    let p = Pipeline::builder("gi")
        .step(
            CommandStep::new(
                "ccc",
                [
                    "sh",
                    "-c",
                    "{ cat conf.txt 2>/dev/null || echo absent; cat sub/kept.txt; } > {outputs.out}/r.txt",
                ],
            )
            .source_directory(ws.path().join("src"))
            .output("out", PipelineData::new("out")),
        )
        .build()?;
    let (_, first) = run_r(&p, &store, "ccc")?;
    assert_eq!(first, "absent\nkept\n");
    // Changing the ignored file reuses the step, and rightly so: the step never saw it.
    ws.write("src/conf.txt", "two\n");
    let (events, second) = run_r(&p, &store, "ccc")?;
    assert_eq!(events, ev(&[("reused", "ccc")]));
    assert_eq!(second, "absent\nkept\n");
    Ok(())
}

/// The `stepgraph` binary of this build.
fn stepgraph_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STEPGRAPH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("stepgraph"))
        .unwrap_or_default()
}

#[test]
fn a_fifo_in_a_command_step_s_source_folder_is_never_opened() -> TestResult {
    let ws = Workspace::new();
    ws.write("src/a.txt", "hi\n");
    let made = Command::new("mkfifo")
        .arg(ws.path().join("src/pipe"))
        .status()?;
    assert!(made.success(), "mkfifo failed");
    let spec = r#"{"name":"fifo","steps":[{"name":"ccc","type":"command","source_directory":"src",
        "command":["sh","-c","ls > {outputs.out}/r.txt"],"outputs":["out"]}]}"#;
    ws.write("p.json", spec);
    let mut child = Command::new(stepgraph_bin())
        .arg("run")
        .arg("p.json")
        .current_dir(ws.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // A guard, not an assertion on time: a hang must fail the test, never CI.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("stepgraph run hung on a fifo in the source folder".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "stepgraph run failed: {status}");
    let runs = ws.path().join(".stepgraph/runs");
    let run_dir = std::fs::read_dir(&runs)?
        .next()
        .ok_or("no run folder")??
        .path();
    let listed = std::fs::read_to_string(run_dir.join("ccc/outputs/out/r.txt"))?;
    assert_eq!(listed, "a.txt\n");
    Ok(())
}

#[test]
fn a_command_step_s_dataset_input_holds_exactly_the_listed_files() -> TestResult {
    let ws = Workspace::new();
    ws.write("data/a.txt", "t1\n");
    ws.write("data/sub/c.txt", "t2\n");
    ws.write("data/b.csv", "c1\n");
    let store = ws.store();
    let dataset = FileDataset {
        name: "d".into(),
        path: ws.path().join("data"),
        pattern: Some("**/*.txt".into()),
        partition_format: None,
    };
    let p = Pipeline::builder("pattern")
        .step(
            CommandStep::new(
                "ccc",
                [
                    "sh",
                    "-c",
                    "cd {inputs.d} && find . -type f -o -type l | sort > {outputs.out}/r.txt && cat a.txt sub/c.txt >> {outputs.out}/r.txt",
                ],
            )
            .input("d", dataset)
            .output("out", PipelineData::new("out")),
        )
        .build()?;
    let (_, first) = run_r(&p, &store, "ccc")?;
    assert_eq!(first, "./a.txt\n./sub/c.txt\nt1\nt2\n");
    ws.write("data/b.csv", "c2\n");
    let (events, _) = run_r(&p, &store, "ccc")?;
    assert_eq!(events, ev(&[("reused", "ccc")]));
    Ok(())
}

#[test]
fn parallel_run_workers_run_in_a_copy_of_exactly_their_snapshot() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 2);
    let scripts = script(
        ws.path(),
        "score.py",
        r#"import os
state = {}
def init():
    here = os.path.dirname(os.path.abspath(__file__))
    model = os.path.join(here, "model.txt")
    state["model"] = open(model).read().strip() if os.path.exists(model) else "absent"
    state["here"] = here
    state["cwd"] = os.getcwd()
def run(mini_batch):
    return [state["model"] + " " + str(state["here"] == state["cwd"]) + " " + state["here"]
            for _ in mini_batch]
"#,
    );
    std::fs::write(scripts.join(".amlignore"), "model.txt\n")?;
    std::fs::write(scripts.join("model.txt"), "one\n")?;
    let store = ws.store();
    let cfg = ParallelRunConfig::builder()
        .source_directory(&scripts)
        .entry_script("score.py")
        .mini_batch_size("2")
        .error_threshold(0);
    let (run, _) = run_one(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    let _r = ran(&run);
    let out = output(&run);
    let scripts = scripts.canonicalize()?;
    for line in out.lines() {
        let mut parts = line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("absent"), "{out}");
        assert_eq!(parts.next(), Some("True"), "{out}");
        let here = Path::new(parts.next().unwrap_or_default());
        assert!(
            !here.starts_with(&scripts),
            "ran in the user's folder: {out}"
        );
    }
    assert_eq!(out.lines().count(), 2, "{out}");
    Ok(())
}

const HOSTILE_WORKER: &str = r#"import json, sys
reply = json.loads(sys.argv[1])
for line in sys.stdin:
    m = json.loads(line)
    if m["type"] == "init":
        print(json.dumps({"type": "ready"}), flush=True)
    elif m["type"] == "run":
        r = dict(reply, type="result", index=m["index"])
        print(json.dumps(r).replace('"HUGE"', "1" + "0" * 30), flush=True)
    elif m["type"] == "shutdown":
        print(json.dumps({"type": "bye"}), flush=True)
        break
"#;

/// Run a 2-document append_row step whose `entry_command` worker answers every mini-batch
/// with `reply` (a JSON object; the string \"HUGE\" becomes 10**30); returns the error and
/// job_result.txt.
fn hostile(reply: &str) -> Result<(String, String), Box<dyn std::error::Error>> {
    let ws = Workspace::new();
    let data = docs(ws.path(), 2);
    let scripts = script(ws.path(), "worker.py", HOSTILE_WORKER);
    let cfg = ParallelRunConfig::builder()
        .source_directory(&scripts)
        .entry_command(["python3", "worker.py", reply])
        .output_action(OutputAction::AppendRow)
        .mini_batch_size("2")
        .run_max_try(1)
        .error_threshold(0);
    let (run, _) = run_docs(&ws, cfg, data);
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Failed, "the step succeeded ({STEP})");
    Ok((r.error.clone().unwrap_or_default(), job_result(&run)))
}

#[test]
fn an_append_row_result_without_rows_is_a_protocol_error() -> TestResult {
    let (err, job) = hostile(r#"{"count": 2}"#)?;
    assert!(err.contains("protocol error"), "{err}");
    assert!(err.contains("\"rows\""), "{err}");
    assert!(job.contains("mini-batch 0"), "{job}");
    Ok(())
}

#[test]
fn an_out_of_range_or_negative_count_is_a_protocol_error_naming_the_mini_batch() -> TestResult {
    for reply in [
        r#"{"count": "HUGE", "rows": ["a", "b"]}"#,
        r#"{"count": -1, "rows": ["a", "b"]}"#,
    ] {
        let (err, job) = hostile(reply)?;
        assert!(err.contains("protocol error"), "{reply}: {err}");
        assert!(err.contains("\"count\""), "{reply}: {err}");
        assert!(job.contains("mini-batch 0"), "{reply}: {job}");
    }
    Ok(())
}
