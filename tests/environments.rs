//! Step environments end to end (issue 9 §2): an `environment` with pinned requirements is
//! built once per content hash into the store's `envs/` and shared by the steps and runs that
//! use it; its hash and freeze are the `environment` fingerprint component; a failed build
//! names the requirement; `cache gc` removes environments no entry holds; a tabular input
//! needs pandas unless `tabular_format` is `records`.
//!
//! The tests that build install a tiny pure-Python package (`six`) from PyPI, with `uv` when
//! it is on PATH (CI installs it: there a missing `uv` fails the test, never skips it).

use std::path::{Path, PathBuf};

use stepgraph_engine::GcOptions;
use stepgraph_engine::{
    plan, Decision, FileDataset, Pipeline, PipelineData, PlanOptions, StepStatus, TabularDataset,
};
use stepgraph_steps::{CommandStep, Environment, ParallelRunStep, TabularInput};

use crate::common::Workspace;
use crate::parallel_run::support::{
    job_result, output, python_entry, rec, run_one, run_pipeline, step, TestResult,
};

/// In CI the builder must be uv, as `.ci/install-deps.sh` installs it: fail, never skip.
fn check_builder() {
    let has_uv = std::process::Command::new("uv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            has_uv,
            "uv is not on PATH: .ci/install-deps.sh installs it (pip install uv)"
        );
    }
}

/// The environment hashes built in a store (`envs/<hash>/` complete with `freeze.txt`).
fn built_envs(store: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(store.join("envs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("freeze.txt").is_file())
        .collect();
    out.sort();
    out
}

/// Prints the version of `six` each file of the mini-batch sees.
const SIX_SCRIPT: &str = "import os, six\n\
def run(mini_batch):\n    \
    return [os.path.basename(f) + ' six ' + six.__version__ for f in mini_batch]\n";

/// A ParallelRunStep `score` and a command step `cmd`, both in `env`.
fn six_pipeline(ws: &Workspace, env: &Environment) -> Result<Pipeline, Box<dyn std::error::Error>> {
    ws.write("data/a.txt", "a");
    ws.write(
        "cmd/ver.py",
        "import sys, six\nopen(sys.argv[1] + '/v.txt', 'w').write(six.__version__)\n",
    );
    let cfg = python_entry(ws.path(), "six_score.py", SIX_SCRIPT)
        .mini_batch_size("10")
        .error_threshold(0)
        .process_count_per_node(1)
        .environment(env.clone());
    let score = step(
        cfg,
        FileDataset::from_files("docs", ws.path().join("data")),
        &[],
    );
    let cmd = CommandStep::new("cmd", ["python3", "ver.py", "{outputs.v}"])
        .source_directory(ws.path().join("cmd"))
        .output("v", PipelineData::new("v"))
        .environment(env.clone());
    Ok(Pipeline::builder("envs-e2e")
        .step(score)
        .step(cmd)
        .build()?)
}

fn status(run: &stepgraph_engine::RunSummary, name: &str) -> StepStatus {
    run.steps
        .iter()
        .find(|s| s.name == name)
        .map_or(StepStatus::Failed, |s| s.status)
}

#[test]
fn an_environment_is_built_once_reused_rebuilt_for_a_new_pin_and_collected() -> TestResult {
    check_builder();
    let ws = Workspace::new();
    let store = ws.store();
    let six16 = Environment::python("python3").requirements(["six==1.16.0"]);
    // Two steps in one run use the same environment: built once.
    let p = six_pipeline(&ws, &six16)?;
    let (run, _) = run_pipeline(&store, &p);
    for s in &run.steps {
        assert_eq!(s.status, StepStatus::Ran, "{}: {:?}", s.name, s.error);
    }
    assert_eq!(output(&run), "a.txt six 1.16.0\n");
    assert_eq!(
        std::fs::read_to_string(run.output_dir("cmd", "v").join("v.txt"))?,
        "1.16.0"
    );
    let envs = built_envs(store.root());
    assert_eq!(envs.len(), 1, "{envs:?}");
    let freeze = std::fs::read_to_string(envs[0].join("freeze.txt"))?;
    assert_eq!(freeze.trim(), "six==1.16.0");
    let log = std::fs::read_to_string(envs[0].join("build.log"))?;
    assert_eq!(
        log.matches("$ ").count(),
        2,
        "one venv and one install: {log}"
    );
    // A second run reuses both steps; the environment is not rebuilt.
    let (again, _) = run_pipeline(&store, &p);
    assert_eq!(status(&again, "score"), StepStatus::Reused);
    assert_eq!(status(&again, "cmd"), StepStatus::Reused);
    assert_eq!(std::fs::read_to_string(envs[0].join("build.log"))?, log);
    // A new pin: explain names the environment, both steps rerun in a new environment.
    let six17 = Environment::python("python3").requirements(["six==1.17.0"]);
    let p17 = six_pipeline(&ws, &six17)?;
    let planned = plan(&p17, &store, &PlanOptions::default())?;
    for s in &planned.steps {
        match &s.decision {
            Decision::Run { reason, .. } => {
                let why = reason.to_string();
                assert!(why.contains("environment"), "{}: {why}", s.name);
                assert!(why.contains("six==1.17.0"), "{}: {why}", s.name);
            }
            other => panic!("{}: {other:?}", s.name),
        }
    }
    let (run17, _) = run_pipeline(&store, &p17);
    assert_eq!(status(&run17, "score"), StepStatus::Ran);
    assert_eq!(output(&run17), "a.txt six 1.17.0\n");
    assert_eq!(built_envs(store.root()).len(), 2);
    // The entries of the old pin go, and with them the environment only they held.
    let report = store.gc(&GcOptions::default())?;
    assert_eq!(report.envs, 1, "{report:?}");
    let left = built_envs(store.root());
    assert_eq!(left.len(), 1);
    assert_eq!(
        std::fs::read_to_string(left[0].join("freeze.txt"))?.trim(),
        "six==1.17.0"
    );
    // A tabular input in that environment (no pandas in it): the step fails at start,
    // saying what to do; the same environment is used (nothing is built).
    ws.write("table/t.csv", "id,x\n1,2\n");
    let cfg = python_entry(ws.path(), "rows.py", "def run(mb):\n    return [len(mb)]\n")
        .mini_batch_size("1MB")
        .error_threshold(0)
        .process_count_per_node(1)
        .environment(six17.clone());
    let table = TabularDataset::from_delimited_files("t", vec![ws.path().join("table/t.csv")]);
    let (failed, _) = run_one(&store, step(cfg, table, &[]));
    let r = rec(&failed);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("tabular inputs need pandas in the step's environment: add pandas to environment.requirements"),
        "{error}"
    );
    assert_eq!(built_envs(store.root()).len(), 1);
    Ok(())
}

#[test]
fn a_requirement_that_cannot_be_installed_fails_the_step_naming_it_with_the_log_tail() -> TestResult
{
    check_builder();
    let ws = Workspace::new();
    let store = ws.store();
    ws.write("data/a.txt", "a");
    let bad = "stepgraph-surely-not-a-package-9f2c==1.0";
    let cfg = python_entry(ws.path(), "s.py", "def run(mb):\n    return mb\n")
        .mini_batch_size("10")
        .error_threshold(0)
        .process_count_per_node(1)
        .environment(Environment::python("python3").requirements([bad]));
    let (run, _) = run_one(
        &store,
        step(
            cfg,
            FileDataset::from_files("docs", ws.path().join("data")),
            &[],
        ),
    );
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("step \"score\": environment: building the environment failed"),
        "{error}"
    );
    assert!(
        error.contains(&format!("installing requirement {bad:?} failed")),
        "{error}"
    );
    assert!(error.contains("build.log, last lines:"), "{error}");
    // Nothing complete is left to be used; the next gc takes the failed build.
    assert!(built_envs(store.root()).is_empty());
    let report = store.gc(&GcOptions::default())?;
    assert_eq!(report.envs, 1, "{report:?}");
    Ok(())
}

/// A tabular step over `t.csv` whose `run` returns the type name of its mini-batch.
fn type_step(ws: &Workspace, format: Option<TabularInput>) -> ParallelRunStep {
    ws.write("table/t.csv", "id,x\n1,2\n3,4\n");
    let mut cfg = python_entry(
        ws.path(),
        "kind.py",
        "def run(mb):\n    return [type(mb).__name__ + ' ' + type(r).__name__ for r in mb]\n",
    )
    .mini_batch_size("1MB")
    .error_threshold(0)
    .process_count_per_node(1)
    .environment_variable("STEPGRAPH_NO_PANDAS", "1");
    if let Some(f) = format {
        cfg = cfg.tabular_format(f);
    }
    let table = TabularDataset::from_delimited_files("t", vec![ws.path().join("table/t.csv")]);
    step(cfg, table, &[])
}

#[test]
fn tabular_inputs_without_pandas_fail_at_start_and_never_fall_back_to_dicts() {
    let ws = Workspace::new();
    let (run, _) = run_one(&ws.store(), type_step(&ws, None));
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("tabular inputs need pandas in the step's environment: add pandas to environment.requirements"),
        "{error}"
    );
}

#[test]
fn tabular_format_records_gives_lists_of_dicts_and_is_in_the_fingerprint() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (run, _) = run_one(&store, type_step(&ws, Some(TabularInput::Records)));
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Ran, "{}", job_result(&run));
    assert_eq!(output(&run), "list dict\nlist dict\n");
    // Asking for DataFrames is another configuration: the step would run again.
    let p = Pipeline::builder("prs-e2e")
        .step(type_step(&ws, Some(TabularInput::DataFrame)))
        .build()?;
    let planned = plan(&p, &store, &PlanOptions::default())?;
    match &planned.steps[0].decision {
        Decision::Run { reason, .. } => {
            assert!(reason.to_string().contains("tabular_format"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[test]
fn an_environment_in_a_spec_reads_its_requirements_file_next_to_the_spec() -> TestResult {
    let ws = Workspace::new();
    ws.write("s.py", "def run(mb):\n    return mb\n");
    ws.write("data/a.txt", "a");
    let spec = |env: &str| {
        format!(
            r#"{{"name": "p", "datasets": {{"d": {{"type": "file", "path": "data"}}}},
            "steps": [{{"name": "score", "type": "parallel_run", "inputs": ["d"], "output": "o",
              "parallel_run_config": {{"source_directory": ".", "entry_script": "s.py", "error_threshold": 0,
                "environment": {env}}}}}]}}"#
        )
    };
    let parse = |env: &str| stepgraph_steps::parse_spec(&spec(env), "pipeline.json", ws.path());
    ws.write("env/requirements.txt", "# pinned\nsix==1.16.0\n");
    if let Err(e) = parse(r#"{"python": "python3", "requirements": "env/requirements.txt"}"#) {
        return Err(format!("a requirements file next to the spec: {e}").into());
    }
    assert!(parse(r#"{"requirements": ["six==1.16.0"]}"#).is_ok());
    assert!(parse(r#""python3""#).is_ok());
    let missing = match parse(r#"{"requirements": "nope.txt"}"#) {
        Err(e) => e.to_string(),
        Ok(_) => return Err("a missing requirements file parsed".into()),
    };
    assert!(
        missing.starts_with(
            "pipeline.json: step \"score\": field \"parallel_run_config.environment.requirements\": cannot read requirements file"
        ) && missing.contains("nope.txt"),
        "{missing}"
    );
    // Command steps take the same field.
    let command = |env: &str| {
        let text = format!(
            r#"{{"name": "p", "steps": [{{"name": "cmd", "type": "command",
              "command": ["python3", "-c", "pass"], "environment": {env}}}]}}"#
        );
        stepgraph_steps::parse_spec(&text, "pipeline.json", ws.path())
    };
    if let Err(e) = command(r#"{"requirements": "env/requirements.txt"}"#) {
        return Err(format!("a command step's environment: {e}").into());
    }
    let missing = match command(r#"{"requirements": "env/nope.txt"}"#) {
        Err(e) => e.to_string(),
        Ok(_) => return Err("a missing requirements file parsed".into()),
    };
    assert!(
        missing.starts_with(
            "pipeline.json: step \"cmd\": field \"environment.requirements\": cannot read"
        ),
        "{missing}"
    );
    let unknown = match parse(r#"{"conda": "env.yml"}"#) {
        Err(e) => e.to_string(),
        Ok(_) => return Err("an unknown field parsed".into()),
    };
    assert!(
        unknown.contains("parallel_run_config.environment") && unknown.contains("\"conda\""),
        "{unknown}"
    );
    Ok(())
}

#[test]
fn a_missing_interpreter_fails_the_step_at_start_naming_it_without_init_retries() -> TestResult {
    let ws = Workspace::new();
    ws.write("data/a.txt", "a");
    for python in ["/nonexistent/python9", "stepgraph-no-such-python9"] {
        let cfg = python_entry(ws.path(), "s.py", "def run(mb):\n    return mb\n")
            .error_threshold(0)
            .process_count_per_node(1)
            .environment(Environment::python(python));
        let (run, _) = run_one(
            &ws.store(),
            step(
                cfg,
                FileDataset::from_files("d", ws.path().join("data")),
                &[],
            ),
        );
        let r = rec(&run);
        assert_eq!(r.status, StepStatus::Failed);
        let error = r.error.clone().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "environment: cannot run the interpreter {python:?}"
            )) && !error.contains("init()"),
            "{error}"
        );
    }
    Ok(())
}
