//! Datasets as Azure builds them: folder-partitioned file datasets (`partition_format`,
//! `partition_keys`, the two-argument `run` reading `mini_batch_context`), tabular datasets
//! with partition columns and a `pattern` leaving stray files out. Scripts are written in the
//! style of Azure's published parallel-run samples.

use stepgraph_engine::{FileDataset, StepStatus, TabularDataset};

use crate::common::Workspace;
use crate::parallel_run::support::{
    counts, output, pandas_or_skip, python_entry, ran, rec, run_in, run_one, step, TestResult,
    UsualSetUp,
};

/// `songs/{user}/{season}/{genres}.wav`, small files, and a stray README.
fn songs(ws: &Workspace) -> std::path::PathBuf {
    for (rel, bytes) in [
        ("ana/summer/jazz.wav", "RIFF1"),
        ("ana/winter/jazz.wav", "RIFF22"),
        ("ana/winter/rock.wav", "RIFF333"),
        ("bob/summer/jazz.wav", "RIFF4444"),
        ("README.md", "# songs"),
    ] {
        ws.write(&format!("songs/{rel}"), bytes);
    }
    ws.path().join("songs")
}

/// An Azure-style scoring script over a file dataset cut by `partition_keys`.
const BY_PARTITION: &str = r#"import os
from azureml_user.parallel_run import EntryScript

def init():
    global logger
    logger = EntryScript().logger

def run(mini_batch, mini_batch_context):
    key = mini_batch_context.partition_key_value
    dataset = mini_batch_context.dataset
    assert dataset.to_path() == mini_batch, (dataset.to_path(), mini_batch)
    logger.info("%r", mini_batch_context)
    # One row per file: a row is a succeeded item.
    return ["%d %s %s %s %d %s" % (mini_batch_context.minibatch_index, key["user"],
            key["genres"], values["season"], os.path.getsize(path), repr(dataset).split("(")[0])
            for path, values in zip(mini_batch, dataset.partition_values())]
"#;

#[test]
fn a_folder_partitioned_file_dataset_gives_one_mini_batch_per_key_combination() -> TestResult {
    let ws = Workspace::new();
    let data = songs(&ws);
    let store = ws.store();
    let make = |format: &str| {
        let cfg = python_entry(ws.path(), "by_partition.py", BY_PARTITION)
            .error_threshold(0)
            .process_count_per_node(2)
            .partition_keys(["user", "genres"]);
        step(
            cfg,
            FileDataset::from_files("songs", data.clone())
                .with_pattern("*/*/*.wav")
                .with_partition_format(format),
            &[],
        )
    };
    let (run, _) = run_one(&store, make("{user}/{season}/{genres}.wav"));
    let r = ran(&run);
    // In order of first appearance over the sorted files: (ana, jazz), (ana, rock), (bob, jazz).
    assert_eq!(
        output(&run),
        "0 ana jazz summer 5 FileDataset\n\
         0 ana jazz winter 6 FileDataset\n\
         1 ana rock winter 7 FileDataset\n\
         2 bob jazz summer 8 FileDataset\n"
    );
    assert_eq!(counts(r), (4, 0, 3, 0));

    // The same format again: reused; another format changes what the step sees: it runs.
    let (again, _) = run_one(&store, make("{user}/{season}/{genres}.wav"));
    assert_eq!(rec(&again).status, StepStatus::Reused);
    let (other, _) = run_one(&store, make("/{user}/{season}/{genres}.wav"));
    assert_eq!(
        rec(&other).status,
        StepStatus::Ran,
        "{:?}",
        rec(&other).error
    );
    Ok(())
}

#[test]
fn a_file_that_does_not_match_the_partition_format_fails_the_step_naming_it() -> TestResult {
    let ws = Workspace::new();
    let data = songs(&ws);
    let cfg = python_entry(ws.path(), "by_partition.py", BY_PARTITION)
        .error_threshold(0)
        .partition_keys(["user"]);
    // No pattern: the README is in the dataset, and has no user.
    let ds = FileDataset::from_files("songs", data)
        .with_partition_format("{user}/{season}/{genres}.wav");
    let (run, _) = run_in(&ws, step(cfg, ds, &[]));
    let r = rec(&run);
    assert_eq!(r.status, StepStatus::Failed);
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("README.md")
            && error.contains("partition_format")
            && error.contains("pattern"),
        "{error}"
    );
    Ok(())
}

#[test]
fn partition_values_of_a_file_dataset_without_keys_reach_the_context() -> TestResult {
    let ws = Workspace::new();
    let data = songs(&ws);
    let cfg = python_entry(
        ws.path(),
        "values.py",
        r#"def run(mini_batch, mini_batch_context):
    values = mini_batch_context.dataset.partition_values()
    return ["%s %s" % (mini_batch_context.partition_key_value, v) for v in values]
"#,
    )
    .usual("10");
    let ds = FileDataset::from_files("songs", data)
        .with_pattern("**/*.wav")
        .with_partition_format("{user}/{season}/{genres}.wav");
    let (run, _) = run_in(&ws, step(cfg, ds, &[]));
    ran(&run);
    assert_eq!(
        output(&run).lines().next(),
        Some("{} {'user': 'ana', 'season': 'summer', 'genres': 'jazz'}")
    );
    Ok(())
}

/// `sales/{region}/{year}.csv` and a README beside them.
fn sales(ws: &Workspace) -> std::path::PathBuf {
    ws.write("sales/eu/2023.csv", "id,amount\n1,10\n2,\n");
    ws.write("sales/us/2024.csv", "id,amount\n3,30\n");
    ws.write("sales/README.md", "Sales per region and year.\n");
    ws.path().join("sales")
}

#[test]
fn a_column_partitioned_tabular_dataset_appends_its_partition_columns() -> TestResult {
    if !pandas_or_skip("tabular partition columns (DataFrames)") {
        return Ok(());
    }
    let ws = Workspace::new();
    let data = sales(&ws);
    let cfg = python_entry(
        ws.path(),
        "score.py",
        r#"def run(mini_batch, mini_batch_context):
    print(repr(mini_batch_context.dataset))
    frame = mini_batch_context.dataset.to_pandas_dataframe()
    assert list(frame.columns) == ["id", "amount", "region", "year"], list(frame.columns)
    mini_batch["double"] = mini_batch["amount"] * 2
    return mini_batch
"#,
    )
    .usual("1MB");
    let ds = TabularDataset::from_delimited_files("sales", vec![data])
        .with_pattern("*/*.csv")
        .with_partition_format("{region}/{year}.csv");
    let (run, _) = run_in(&ws, step(cfg, ds, &[]));
    let r = ran(&run);
    // The file's own columns, then the partition columns, then what run() added; a missing
    // value is written as pandas' str() writes it.
    assert_eq!(
        output(&run),
        "1 10.0 eu 2023 20.0\n2 nan eu 2023 nan\n3 30.0 us 2024 60.0\n"
    );
    assert_eq!(counts(r), (3, 0, 1, 0));
    Ok(())
}

#[test]
fn a_partition_field_named_as_a_column_of_the_file_fails_the_step_naming_both() -> TestResult {
    let ws = Workspace::new();
    // The files have their own "region" column; the format's "region" would hide it.
    ws.write("sales/eu/2023.csv", "id,region\n1,north\n");
    ws.write("sales/us/2024.jsonl", "{\"id\": 2, \"year\": \"x\"}\n");
    for (pattern, format, file, column) in [
        ("*/*.csv", "{region}/{year}.csv", "eu/2023.csv", "region"),
        (
            "*/*.jsonl",
            "{region}/{year}.jsonl",
            "us/2024.jsonl",
            "year",
        ),
    ] {
        let cfg = python_entry(
            ws.path(),
            "rows.py",
            "def run(mini_batch):\n    return []\n",
        )
        .tabular_format(stepgraph_steps::TabularInput::Records)
        .error_threshold(-1)
        .partition_keys(["region"]);
        let ds = if pattern.ends_with("csv") {
            TabularDataset::from_delimited_files("sales", vec![ws.path().join("sales")])
        } else {
            TabularDataset::from_json_lines_files("sales", vec![ws.path().join("sales")])
        }
        .with_pattern(pattern)
        .with_partition_format(format);
        let (run, _) = run_in(&ws, step(cfg, ds, &[]));
        let r = rec(&run);
        assert_eq!(r.status, StepStatus::Failed, "{format}");
        let error = r.error.clone().unwrap_or_default();
        assert!(
            error.contains(&format!("field {column:?}"))
                && error.contains(file)
                && error.contains("\"sales\""),
            "{error}"
        );
    }
    Ok(())
}

#[test]
fn tabular_partition_keys_from_the_partition_format_group_whole_files() -> TestResult {
    if !pandas_or_skip("tabular partition columns (DataFrames)") {
        return Ok(());
    }
    let ws = Workspace::new();
    let data = sales(&ws);
    ws.write("sales/eu/2024.csv", "id,amount\n4,40\n");
    let cfg = python_entry(
        ws.path(),
        "by_region.py",
        r#"def run(mini_batch, mini_batch_context):
    region = mini_batch_context.partition_key_value["region"]
    assert set(mini_batch["region"]) == {region}
    ids = ",".join(str(i) for i in mini_batch["id"])
    return ["%s %s %s" % (region, ids, year) for year in mini_batch["year"]]
"#,
    )
    .error_threshold(0)
    .partition_keys(["region"]);
    let ds = TabularDataset::from_delimited_files("sales", vec![data])
        .with_pattern("*/*.csv")
        .with_partition_format("{region}/{year}.csv");
    let (run, _) = run_in(&ws, step(cfg, ds, &[]));
    ran(&run);
    assert_eq!(
        output(&run),
        "eu 1,2,4 2023\neu 1,2,4 2023\neu 1,2,4 2024\nus 3 2024\n"
    );
    Ok(())
}

#[test]
fn a_tabular_folder_with_a_stray_readme_is_read_through_its_pattern() -> TestResult {
    let ws = Workspace::new();
    ws.write("table/a.csv", "id,name\n1,x\n");
    ws.write("table/b.csv", "id,name\n2,y\n");
    ws.write(
        "table/README.md",
        "This folder holds the tables.\nid|name\n",
    );
    let cfg = python_entry(
        ws.path(),
        "rows.py",
        r#"def run(mini_batch):
    rows = mini_batch.to_dict("records") if hasattr(mini_batch, "to_dict") else mini_batch
    return ["%s %s" % (r["id"], r["name"]) for r in rows]
"#,
    )
    .usual("1MB")
    .rows_as_available();
    let ds = TabularDataset::from_delimited_files("table", vec![ws.path().join("table")])
        .with_pattern("*.csv");
    let (run, _) = run_in(&ws, step(cfg, ds, &[]));
    let r = ran(&run);
    assert_eq!(output(&run), "1 x\n2 y\n");
    assert_eq!(counts(r).0, 2);
    Ok(())
}

#[test]
fn a_json_spec_declares_partition_format_pattern_and_partition_keys_on_files() -> TestResult {
    let ws = Workspace::new();
    songs(&ws);
    ws.write("scripts/by_partition.py", BY_PARTITION);
    let spec = ws.write(
        "pipeline.json",
        r#"{"name": "songs",
  "datasets": {"songs": {"type": "file", "path": "songs", "pattern": "*/*/*.wav",
                         "partition_format": "{user}/{season}/{genres}.wav"}},
  "steps": [{"name": "score", "type": "parallel_run", "inputs": ["songs"], "output": "scores",
    "parallel_run_config": {"source_directory": "scripts", "entry_script": "by_partition.py",
      "error_threshold": 0, "process_count_per_node": 2, "partition_keys": ["user", "genres"]}}]}"#,
    );
    let pipeline = stepgraph_steps::load_spec(&spec)?;
    let (run, _) = crate::parallel_run::support::run_pipeline(&ws.store(), &pipeline);
    ran(&run);
    assert_eq!(
        output(&run).lines().map(|l| &l[..9]).collect::<Vec<_>>(),
        ["0 ana jaz", "0 ana jaz", "1 ana roc", "2 bob jaz"]
    );
    Ok(())
}

#[test]
fn a_spec_tabular_folder_with_a_jsonl_pattern_reads_json_lines() -> TestResult {
    let ws = Workspace::new();
    ws.write("d/2024/03/09/eu.jsonl", "{\"id\": 1}\n{\"id\": 2}\n");
    ws.write("d/2024/03/10/us.jsonl", "{\"id\": 3}\n");
    ws.write("d/README.md", "readme\n");
    ws.write(
        "scripts/rows.py",
        "def run(mini_batch):\n    return [\"%s %s %s\" % (r[\"id\"], r[\"day\"], r[\"region\"]) for r in mini_batch]\n",
    );
    let spec = ws.write(
        "pipeline.json",
        r#"{"name": "days",
  "datasets": {"d": {"type": "tabular", "path": "d", "pattern": "**/*.jsonl",
                     "partition_format": "{day:yyyy/MM/dd}/{region}.jsonl"}},
  "steps": [{"name": "score", "type": "parallel_run", "inputs": ["d"], "output": "o",
    "parallel_run_config": {"source_directory": "scripts", "entry_script": "rows.py",
      "error_threshold": 0, "process_count_per_node": 1, "tabular_format": "records"}}]}"#,
    );
    let pipeline = stepgraph_steps::load_spec(&spec)?;
    let (run, _) = crate::parallel_run::support::run_pipeline(&ws.store(), &pipeline);
    ran(&run);
    assert_eq!(
        output(&run),
        "1 2024-03-09 eu\n2 2024-03-09 eu\n3 2024-03-10 us\n"
    );
    Ok(())
}
