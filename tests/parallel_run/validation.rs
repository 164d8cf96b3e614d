//! Build-time validation of a ParallelRunStep: each bad configuration is refused naming its
//! field, and the valid ones build. One table, one row a case.

use stepgraph_engine::{
    Argument, BuildError, BuildErrors, DataSource, FileDataset, Pipeline, PipelineData,
    TabularDataset,
};
use stepgraph_steps::ParallelRunConfigBuilder;
use stepgraph_steps::{OutputAction, ParallelRunStep};

use crate::common::Workspace;
use crate::parallel_run::support::{python, script, STEP};

/// The fields named by the `InvalidConfig` errors of building a pipeline of `step` alone
/// (`step.field`; any other error as `other: <error>`).
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

/// The main inputs of a case.
#[derive(Debug, Clone, Copy)]
enum Inputs {
    /// No input at all.
    None,
    /// The file dataset `docs` (`data/`).
    Files,
    /// `docs` and the tabular dataset `table` (`table.csv`) together.
    FilesAndTable,
    /// `docs` with the partition_format `{region}/{name}.txt`.
    PartitionedFiles,
    /// `docs` with a partition_format that does not parse.
    BadPartitionFormat,
}

/// One case (named as the test it was before the table): a step `score` over `inputs` running `entry` (the workspace holds only `ok.py`),
/// configured with error_threshold 0 and `config`, and the `step.field`s its build must name.
struct Case {
    name: &'static str,
    entry: &'static str,
    config: fn(ParallelRunConfigBuilder) -> ParallelRunConfigBuilder,
    inputs: Inputs,
    output: bool,
    args: &'static [&'static str],
    expected: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "valid_step_builds_without_errors",
        entry: "ok.py",
        config: |c| c,
        inputs: Inputs::Files,
        output: true,
        args: &["--x", "1"],
        expected: &[],
    },
    Case {
        name: "step_without_inputs_is_refused_naming_inputs",
        entry: "ok.py",
        config: |c| c,
        inputs: Inputs::None,
        output: true,
        args: &[],
        expected: &["score.inputs"],
    },
    Case {
        name: "file_and_tabular_inputs_together_are_refused_naming_inputs",
        entry: "ok.py",
        config: |c| c,
        inputs: Inputs::FilesAndTable,
        output: true,
        args: &[],
        expected: &["score.inputs"],
    },
    Case {
        name: "append_row_without_output_is_refused_naming_output",
        entry: "ok.py",
        config: |c| c,
        inputs: Inputs::Files,
        output: false,
        args: &[],
        expected: &["score.output"],
    },
    Case {
        name: "summary_only_without_output_builds",
        entry: "ok.py",
        config: |c| c.output_action(OutputAction::SummaryOnly),
        inputs: Inputs::Files,
        output: false,
        args: &[],
        expected: &[],
    },
    Case {
        // The unit is valid for tabular inputs, so the config itself builds.
        name: "mini_batch_size_with_a_unit_on_a_file_dataset_is_refused_naming_mini_batch_size",
        entry: "ok.py",
        config: |c| c.mini_batch_size("5KB"),
        inputs: Inputs::Files,
        output: true,
        args: &[],
        expected: &["score.mini_batch_size"],
    },
    Case {
        // Valid for tabular inputs, so the config itself builds.
        name: "partition_keys_on_a_file_dataset_without_partition_format_are_refused_naming_partition_keys",
        entry: "ok.py",
        config: |c| c.partition_keys(["region"]),
        inputs: Inputs::Files,
        output: true,
        args: &[],
        expected: &["score.partition_keys"],
    },
    Case {
        name: "partition_keys_not_in_the_file_datasets_partition_format_are_refused_naming_partition_keys",
        entry: "ok.py",
        config: |c| c.partition_keys(["user"]),
        inputs: Inputs::PartitionedFiles,
        output: true,
        args: &[],
        expected: &["score.partition_keys"],
    },
    Case {
        name: "partition_keys_of_the_file_datasets_partition_format_build",
        entry: "ok.py",
        config: |c| c.partition_keys(["region", "name"]),
        inputs: Inputs::PartitionedFiles,
        output: true,
        args: &[],
        expected: &[],
    },
    Case {
        name: "a_partition_format_that_does_not_parse_is_refused_naming_partition_format",
        entry: "ok.py",
        config: |c| c,
        inputs: Inputs::BadPartitionFormat,
        output: true,
        args: &[],
        expected: &["score.partition_format"],
    },
    Case {
        name: "positional_first_argument_is_refused_naming_arguments",
        entry: "ok.py",
        config: |c| c,
        inputs: Inputs::Files,
        output: true,
        args: &["0.5", "--x"],
        expected: &["score.arguments"],
    },
    Case {
        name: "reserved_output_argument_is_refused_naming_arguments",
        entry: "ok.py",
        config: |c| c,
        inputs: Inputs::Files,
        output: true,
        args: &["--x", "1", "--output", "o"],
        expected: &["score.arguments"],
    },
    Case {
        // Its existence is checked when the step is built, not by the config.
        name: "missing_entry_script_is_refused_naming_entry_script",
        entry: "missing.py",
        config: |c| c,
        inputs: Inputs::Files,
        output: true,
        args: &[],
        expected: &["score.entry_script"],
    },
];

#[test]
fn each_invalid_configuration_is_refused_naming_its_field_and_valid_ones_build() {
    for case in CASES {
        let ws = Workspace::new();
        let root = ws.path();
        script(
            root,
            "ok.py",
            "def run(mini_batch):\n    return mini_batch\n",
        );
        let cfg = (case.config)(python(root, case.entry).error_threshold(0))
            .build()
            .unwrap_or_else(|e| panic!("case {:?}: the config builds: {e}", case.name));
        let files = || DataSource::from(FileDataset::from_files("docs", root.join("data")));
        let inputs = match case.inputs {
            Inputs::None => vec![],
            Inputs::Files => vec![files()],
            Inputs::FilesAndTable => vec![
                files(),
                TabularDataset::from_delimited_files("table", vec![root.join("table.csv")]).into(),
            ],
            Inputs::PartitionedFiles => vec![FileDataset::from_files("docs", root.join("data"))
                .with_partition_format("{region}/{name}.txt")
                .into()],
            Inputs::BadPartitionFormat => vec![FileDataset::from_files("docs", root.join("data"))
                .with_partition_format("{region/{name}.txt")
                .into()],
        };
        let step = ParallelRunStep::new(
            STEP,
            cfg,
            inputs,
            case.output.then(|| PipelineData::new("scores")),
            vec![],
            case.args.iter().map(|a| Argument::from(*a)).collect(),
            true,
        );
        assert_eq!(invalid_fields(step), case.expected, "case {:?}", case.name);
    }
}
