//! Build-time validation of a ParallelRunStep: each bad configuration is refused naming its field.

use std::path::Path;

use stepgraph_engine::{
    Argument, BuildError, BuildErrors, FileDataset, Pipeline, PipelineData, TabularDataset,
};
use stepgraph_steps::{OutputAction, ParallelRunConfig, ParallelRunStep};

use crate::common::Workspace;
use crate::parallel_run::support::{python, script, STEP};

/// The fields named by the `InvalidConfig` errors of building a pipeline of `step` alone.
fn invalid_fields(step: ParallelRunStep) -> Vec<String> {
    match Pipeline::builder("validation").step(step).build() {
        Ok(_) => Vec::new(),
        Err(BuildErrors(errors)) => errors
            .into_iter()
            .map(|e| match e {
                BuildError::InvalidConfig { step, field, .. } => format!("{step}.{field}"),
                other => format!("other: {other}"),
            })
            .collect(),
    }
}

fn ok_config(root: &Path) -> ParallelRunConfig {
    script(
        root,
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    python(root, "ok.py")
        .error_threshold(0)
        .build()
        .expect("valid config")
}

fn prs(
    cfg: ParallelRunConfig,
    inputs: Vec<stepgraph_engine::DataSource>,
    output: Option<PipelineData>,
    args: &[&str],
) -> ParallelRunStep {
    ParallelRunStep::new(
        STEP,
        cfg,
        inputs,
        output,
        vec![],
        args.iter().map(|a| Argument::from(*a)).collect(),
        true,
    )
}

#[test]
fn valid_step_builds_without_errors() {
    let ws = Workspace::new();
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let cfg = ok_config(ws.path());
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &["--x", "1"])),
        Vec::<String>::new()
    );
}

#[test]
fn step_without_inputs_is_refused_naming_inputs() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let out = Some(PipelineData::new("scores"));
    assert_eq!(invalid_fields(prs(cfg, vec![], out, &[])), ["score.inputs"]);
}

#[test]
fn file_and_tabular_inputs_together_are_refused_naming_inputs() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let table = TabularDataset::from_delimited_files("table", vec![ws.path().join("table.csv")]);
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into(), table.into()], out, &[])),
        ["score.inputs"]
    );
}

#[test]
fn append_row_without_output_is_refused_naming_output() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], None, &[])),
        ["score.output"]
    );
}

#[test]
fn summary_only_without_output_builds() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "ok.py")
        .error_threshold(0)
        .output_action(OutputAction::SummaryOnly)
        .build()
        .expect("valid config");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], None, &[])),
        Vec::<String>::new()
    );
}

#[test]
fn mini_batch_size_with_a_unit_on_a_file_dataset_is_refused_naming_mini_batch_size() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "ok.py")
        .error_threshold(0)
        .mini_batch_size("5KB")
        .build()
        .expect("the unit is valid for tabular inputs");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &[])),
        ["score.mini_batch_size"]
    );
}

#[test]
fn partition_keys_on_a_file_dataset_are_refused_naming_partition_keys() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "ok.py")
        .error_threshold(0)
        .partition_keys(["region"])
        .build()
        .expect("valid for tabular inputs");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &[])),
        ["score.partition_keys"]
    );
}

#[test]
fn positional_first_argument_is_refused_naming_arguments() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &["0.5", "--x"])),
        ["score.arguments"]
    );
}

#[test]
fn reserved_output_argument_is_refused_naming_arguments() {
    let ws = Workspace::new();
    let cfg = ok_config(ws.path());
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(
            cfg,
            vec![files.into()],
            out,
            &["--x", "1", "--output", "o"]
        )),
        ["score.arguments"]
    );
}

#[test]
fn missing_entry_script_is_refused_naming_entry_script() {
    let ws = Workspace::new();
    script(
        ws.path(),
        "ok.py",
        "def run(mini_batch):\n    return mini_batch\n",
    );
    let cfg = python(ws.path(), "missing.py")
        .error_threshold(0)
        .build()
        .expect("existence is checked when the step is built");
    let files = FileDataset::from_files("docs", ws.path().join("data"));
    let out = Some(PipelineData::new("scores"));
    assert_eq!(
        invalid_fields(prs(cfg, vec![files.into()], out, &[])),
        ["score.entry_script"]
    );
}
