//! Gathering: rows do not depend on parallelism, append_row formats, summary_only outputs,
//! steps sharing a key.

use stepgraph_engine::{FileDataset, Pipeline, PipelineData, StepStatus};
use stepgraph_steps::{AppendRowFormat, OutputAction, ParallelRunStep};

use crate::common::{read_output, Workspace};
use crate::parallel_run::support::{
    doc_name, docs, output, output_file, python, python_entry, ran, run_docs, run_one,
    run_with_report, script, step, TestResult, UsualSetUp, STEP,
};

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
        ran(&run);
        assert_eq!(output(&run), expected, "{workers} workers");
    }
}

#[test]
fn summary_only_files_written_to_output_dir_reach_the_downstream_step() -> TestResult {
    let ws = Workspace::new();
    let data = docs(ws.path(), 5);
    let cfg = python_entry(
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
    )
        .usual("2")
        .output_action(OutputAction::SummaryOnly);
    let store = ws.store();
    let (run, _) = run_with_report(
        &store,
        step(cfg, FileDataset::from_files("docs", data), &[]),
    );
    let r = ran(&run);
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

const DICT_ROWS: &str = r#"import os

def run(mini_batch):
    return [{"name": os.path.basename(p), "size": len(open(p).read()), "note": "a,b"}
            for p in mini_batch]
"#;

fn run_format(format: AppendRowFormat) -> String {
    let ws = Workspace::new();
    let data = docs(ws.path(), 5);
    let cfg = python_entry(ws.path(), "dicts.py", DICT_ROWS)
        .usual("2")
        .append_row_format(format);
    let (run, _) = run_docs(&ws, cfg, data);
    ran(&run);
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
            .usual("2")
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
    let (run, _) = crate::parallel_run::support::run_pipeline(&store, &pipeline);
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
            read_output(&run, name, "output", "parallel_run_step.txt").expect("gathered file");
        assert_eq!(out, expected, "{name}");
    }
}
