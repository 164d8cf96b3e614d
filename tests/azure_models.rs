//! Azure scoring scripts that load registered models (`Model.get_model_path`) and log metrics
//! (`Run.get_context().log`), run unchanged: models declared in a spec or in Rust are inputs
//! of their steps, laid out as Azure lays them out, and the `azureml` shim refuses what it
//! does not provide with a clear message.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use stepgraph_engine::{
    plan, Decision, FileDataset, Model, Pipeline, PipelineData, PlanOptions, RunReason, RunSummary,
    StepStatus, Store,
};
use stepgraph_steps::{CommandStep, ParallelRunConfig, ParallelRunStep};

use crate::common::Workspace;
use crate::parallel_run::support::{run_pipeline, TestResult};

/// A scoring script in the style of Azure's published tabular batch-inference samples: the
/// model is loaded once in `init()` through `Model.get_model_path`, each mini-batch arrives
/// as a DataFrame, the predictions go back as a DataFrame, and a metric is logged per
/// mini-batch.
const SCORE_IRIS: &str = r#"
import os
import pickle

import pandas as pd
from azureml.core import Run
from azureml.core.model import Model


def init():
    global iris_model
    # AZUREML_MODEL_DIR/<name>/<version>/<registered file>, as on Azure.
    model_path = Model.get_model_path("iris-prs")
    with open(model_path, "rb") as f:
        iris_model = pickle.load(f)


def run(input_data):
    num_rows, num_cols = input_data.shape
    threshold = iris_model["threshold"]
    varieties = [
        iris_model["labels"][1] if p > threshold else iris_model["labels"][0]
        for p in input_data["petal_length"]
    ]
    Run.get_context().log("rows_scored", num_rows)
    return pd.DataFrame({"id": input_data["id"], "variety": varieties})
"#;

/// Six iris rows: ids 1..=6, petal lengths 1.4, 4.7, 1.3, 5.1, 6.0, 1.5.
const IRIS_CSV: &str = "id,sepal_length,petal_length\n\
1,5.1,1.4\n2,7.0,4.7\n3,4.9,1.3\n4,6.3,5.1\n5,7.1,6.0\n6,5.0,1.5\n";

/// Pickle `{"threshold": threshold, "labels": ["setosa", "virginica"]}` into `path`.
fn pickle_model(path: &Path, threshold: f64) -> TestResult {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import pickle, sys\npickle.dump({{'threshold': {threshold}, 'labels': ['setosa', 'virginica']}}, open(sys.argv[1], 'wb'))"
        ))
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(())
}

/// A workspace with the iris data, the pickled model and `pipeline.json`: one parallel_run
/// step `score` reading model `iris-prs` (declared `version`).
fn iris_project(version: u32) -> Result<Workspace, Box<dyn std::error::Error>> {
    let ws = Workspace::new();
    ws.write("data/iris.csv", IRIS_CSV);
    ws.write("scripts/score.py", SCORE_IRIS);
    pickle_model(&ws.path().join("models/iris.pkl"), 2.0)?;
    let spec = serde_json::json!({
        "name": "iris-batch",
        "datasets": {"iris": {"type": "tabular", "path": "data/iris.csv"}},
        "models": {"iris-prs": {"path": "models/iris.pkl", "version": version}},
        "steps": [{
            "name": "score", "type": "parallel_run", "inputs": ["iris"], "output": "scores",
            "models": [format!("iris-prs:{version}")],
            "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
              "mini_batch_size": "40", "error_threshold": 0, "process_count_per_node": 2}
        }]
    });
    ws.write("pipeline.json", &serde_json::to_string_pretty(&spec)?);
    Ok(ws)
}

fn load(ws: &Workspace) -> Result<Pipeline, Box<dyn std::error::Error>> {
    Ok(stepgraph_steps::load_spec(
        &ws.path().join("pipeline.json"),
    )?)
}

/// The record of step `name`, asserted to have `status` (its error shown when not).
#[track_caller]
fn assert_status(run: &RunSummary, name: &str, status: StepStatus) {
    let r = run.step(name).expect("step record");
    assert_eq!(r.status, status, "{:?}", r.error);
}

/// The error of step `name`.
fn error_of(run: &RunSummary, name: &str) -> String {
    run.step(name)
        .and_then(|r| r.error.clone())
        .unwrap_or_default()
}

/// One line of a metrics file: `(kind, name, value)`.
type Metric = (String, String, serde_json::Value);

/// The metrics step `name` recorded in this run, line by line.
fn metrics(run: &RunSummary, name: &str) -> Result<Vec<Metric>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(run.run_dir.join(name).join("metrics.jsonl"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        out.push((
            v["kind"].as_str().unwrap_or_default().to_string(),
            v["name"].as_str().unwrap_or_default().to_string(),
            v["value"].clone(),
        ));
    }
    Ok(out)
}

/// What `explain` says about step `name`: its changed components, or its decision.
fn explain(
    store: &Store,
    p: &Pipeline,
    name: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let planned = plan(p, store, &PlanOptions::default())?;
    let step = planned
        .steps
        .into_iter()
        .find(|s| s.name == name)
        .ok_or("no such step")?;
    Ok(match step.decision {
        Decision::Run {
            reason: RunReason::Changed { changes },
            ..
        } => changes.iter().map(ToString::to_string).collect(),
        other => vec![format!("{other:?}")],
    })
}

#[test]
fn a_tabular_scoring_script_loads_its_pickled_model_and_logs_metrics() -> TestResult {
    if !crate::parallel_run::support::pandas_or_skip(
        "Azure tabular scoring with a model (DataFrames)",
    ) {
        return Ok(());
    }
    let ws = iris_project(1)?;
    let store = ws.store();
    let (run, _) = run_pipeline(&store, &load(&ws)?);
    assert_status(&run, "score", StepStatus::Ran);
    let rows = std::fs::read_to_string(
        run.output_dir("score", "output")
            .join("parallel_run_step.txt"),
    )?;
    assert_eq!(
        rows,
        "1 setosa\n2 virginica\n3 setosa\n4 virginica\n5 virginica\n6 setosa\n"
    );
    // Run.get_context().log(...) from both mini-batches, in the step's run folder.
    let logged = metrics(&run, "score")?;
    assert!(logged
        .iter()
        .all(|(kind, name, _)| kind == "log" && name == "rows_scored"));
    let total: u64 = logged.iter().filter_map(|(_, _, v)| v.as_u64()).sum();
    assert_eq!(total, 6);
    // The workers read a read-only copy laid out as Azure lays models out.
    let copy = run
        .run_dir
        .join("score/work/azureml-models/iris-prs/1/iris.pkl");
    assert_eq!(
        std::fs::read(&copy)?,
        std::fs::read(ws.path().join("models/iris.pkl"))?
    );
    assert_eq!(std::fs::metadata(&copy)?.permissions().mode() & 0o222, 0);
    Ok(())
}

#[test]
fn a_changed_model_reruns_its_step_and_explain_names_it() -> TestResult {
    if !crate::parallel_run::support::pandas_or_skip(
        "Azure tabular scoring with a model (DataFrames)",
    ) {
        return Ok(());
    }
    let ws = iris_project(1)?;
    let store = ws.store();
    let pipeline = load(&ws)?;
    let (first, _) = run_pipeline(&store, &pipeline);
    assert_status(&first, "score", StepStatus::Ran);
    let (again, _) = run_pipeline(&store, &pipeline);
    assert_status(&again, "score", StepStatus::Reused);

    // New bytes under the same name and version: the step reruns, and explain says why.
    pickle_model(&ws.path().join("models/iris.pkl"), 5.5)?;
    assert_eq!(
        explain(&store, &pipeline, "score")?,
        ["models.iris-prs: changed 1/iris.pkl"]
    );
    let (changed, _) = run_pipeline(&store, &pipeline);
    assert_status(&changed, "score", StepStatus::Ran);
    let rows = std::fs::read_to_string(
        changed
            .output_dir("score", "output")
            .join("parallel_run_step.txt"),
    )?;
    assert_eq!(
        rows,
        "1 setosa\n2 setosa\n3 setosa\n4 setosa\n5 virginica\n6 setosa\n"
    );

    // A new version of the same file is a change too (Azure's layout puts it elsewhere).
    drop(store);
    let ws2 = iris_project(2)?;
    let store2 = Store::open(ws.store_path(), stepgraph_engine::OpenOptions::default())?;
    let v2 = stepgraph_steps::load_spec(&ws2.path().join("pipeline.json"))?;
    // Same pipeline name and step: the latest fingerprint of ws's runs is the baseline.
    let said = explain(&store2, &v2, "score")?;
    assert!(
        said.iter()
            .any(|c| c.starts_with("models.iris-prs:") && c.contains("added 2/iris.pkl")),
        "{said:?}"
    );
    Ok(())
}

/// A one-step pipeline: the ParallelRunStep `score` over `docs/` running `script`, reading
/// `models`.
fn score_docs(
    ws: &Workspace,
    script: &str,
    models: Vec<Model>,
) -> Result<RunSummary, Box<dyn std::error::Error>> {
    ws.write("docs/a.txt", "alpha");
    ws.write("scripts/score.py", script);
    let cfg = ParallelRunConfig::builder()
        .source_directory(ws.path().join("scripts"))
        .entry_script("score.py")
        .mini_batch_size("5")
        .error_threshold(0)
        .run_max_try(1)
        .process_count_per_node(1)
        .build()?;
    let mut step = ParallelRunStep::new(
        "score",
        cfg,
        vec![FileDataset::from_files("docs", ws.path().join("docs")).into()],
        Some(PipelineData::new("scores")),
        vec![],
        vec![],
        true,
    );
    for m in models {
        step = step.model(m);
    }
    let pipeline = Pipeline::builder("models").step(step).build()?;
    let (run, _) = run_pipeline(&ws.store(), &pipeline);
    Ok(run)
}

#[test]
fn asking_for_an_undeclared_model_fails_naming_the_step_and_the_fix() -> TestResult {
    let ws = Workspace::new();
    let declared = ws.write("models/iris.pkl", "not read");
    let run = score_docs(
        &ws,
        "from azureml.core.model import Model\n\ndef init():\n    Model.get_model_path('resnet')\n\ndef run(mini_batch):\n    return mini_batch\n",
        vec![Model::new("iris-prs", declared)],
    )?;
    assert_status(&run, "score", StepStatus::Failed);
    let err = error_of(&run, "score");
    for expected in [
        "ModelNotFoundException",
        r#"step "score" does not declare model 'resnet' (it declares: iris-prs:1)"#,
        r#"add it to `models` of step "score""#,
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
    Ok(())
}

#[test]
fn importing_an_unsupported_azureml_symbol_fails_with_a_clear_message() -> TestResult {
    let ws = Workspace::new();
    let run = score_docs(
        &ws,
        "from azureml.core import Model, Workspace\n\ndef run(mini_batch):\n    return mini_batch\n",
        vec![],
    )?;
    assert_status(&run, "score", StepStatus::Failed);
    let err = error_of(&run, "score");
    assert!(
        err.contains("ImportError: azureml.core.Workspace is not supported locally"),
        "{err}"
    );
    let run = score_docs(
        &ws,
        "from azureml.data.dataset_factory import TabularDatasetFactory\n\ndef run(mini_batch):\n    return mini_batch\n",
        vec![],
    )?;
    assert_status(&run, "score", StepStatus::Failed);
    let err = error_of(&run, "score");
    assert!(
        err.contains("ModuleNotFoundError: azureml.data is not supported locally"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_command_step_reads_a_folder_model_and_its_named_inputs() -> TestResult {
    let ws = Workspace::new();
    ws.write("models/bert-base/config.json", "{\"layers\": 2}");
    ws.write("models/bert-base/vocab/words.txt", "a b c");
    ws.write("docs/a.txt", "alpha");
    ws.write(
        "scripts/describe.py",
        r#"
import json, os, sys
from azureml.core import Model, Run

path = Model.get_model_path("bert", version=3)
run = Run.get_context()
run.log_row("model", layers=json.load(open(os.path.join(path, "config.json")))["layers"])
run.tag("source", "command")
with open(os.path.join(sys.argv[1], "described.json"), "w") as f:
    json.dump({
        "path": os.path.relpath(path, os.environ["AZUREML_MODEL_DIR"]),
        "files": sorted(os.listdir(path)),
        "inputs": sorted(run.input_datasets),
    }, f)
"#,
    );
    let step = CommandStep::new("describe", ["python3", "describe.py", "{outputs.out}"])
        .source_directory(ws.path().join("scripts"))
        .input(
            "docs",
            FileDataset::from_files("docs", ws.path().join("docs")),
        )
        .output("out", PipelineData::new("out"))
        .model(Model::new("bert", ws.path().join("models/bert-base")).with_version(3));
    let pipeline = Pipeline::builder("models").step(step).build()?;
    let (run, _) = run_pipeline(&ws.store(), &pipeline);
    assert_status(&run, "describe", StepStatus::Ran);
    let described: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        run.output_dir("describe", "out").join("described.json"),
    )?)?;
    assert_eq!(
        described,
        serde_json::json!({"path": "bert/3/bert-base", "files": ["config.json", "vocab"], "inputs": ["docs"]})
    );
    let logged: BTreeMap<String, serde_json::Value> = metrics(&run, "describe")?
        .into_iter()
        .map(|(kind, name, v)| (format!("{kind} {name}"), v))
        .collect();
    assert_eq!(
        logged,
        BTreeMap::from([
            (
                "log_row model".to_string(),
                serde_json::json!({"layers": 2})
            ),
            ("tag source".to_string(), serde_json::json!("command")),
        ])
    );
    Ok(())
}

#[test]
fn a_model_that_cannot_be_read_fails_its_step_naming_it() -> TestResult {
    let ws = Workspace::new();
    let gone: PathBuf = ws.path().join("models/gone.pkl");
    let run = score_docs(
        &ws,
        "def run(mini_batch):\n    return mini_batch\n",
        vec![Model::new("gone", gone)],
    )?;
    // A model is resolved like a dataset: an unreadable one fails the step before it starts.
    assert_status(&run, "score", StepStatus::Failed);
    let err = error_of(&run, "score");
    assert!(err.contains(r#"step "score": model "gone": "#), "{err}");
    Ok(())
}
