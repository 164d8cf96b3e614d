//! The example pipelines under `examples/pipelines/`, run end to end with the real binary from
//! a copy of their folder.
//!
//! `azure-batch-inference` builds an environment with pinned pandas from PyPI (with `uv` when
//! it is on PATH; uv's cache keeps it fast after the first time). In CI (`CI=true`, where
//! `.ci/install-deps.sh` installs uv) a missing uv or a failed build fails the test; elsewhere a
//! failed environment build (no network) skips it, saying so.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::process::Command;

mod common;
use common::{in_ci, sg, skipped, Out};

/// Copy the folder `from` into `to`, recursively (the example's own `.stepgraph`, if a user
/// ran it in place, is left out).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read example folder") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        if name == ".stepgraph" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A copy of `examples/pipelines/<name>` in a fresh temporary folder.
fn example(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/pipelines")
        .join(name);
    copy_dir(&src, dir.path());
    dir
}

/// The run id in `run`'s last line (`run ID: succeeded …`).
fn run_id(out: &Out) -> String {
    out.stdout()
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("run ")?;
            let (id, tail) = rest.split_once(':')?;
            tail.contains("succeeded").then(|| id.to_string())
        })
        .unwrap_or_else(|| panic!("no run id in:\n{}", out.stdout()))
}

#[test]
fn azure_batch_inference_runs_scores_per_site_and_reuses_both_steps() {
    if in_ci() {
        let has_uv = Command::new("uv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            has_uv,
            "uv is not on PATH: .ci/install-deps.sh installs it (pip install uv)"
        );
    }
    let dir = example("azure-batch-inference");
    let first = sg(dir.path(), &["run", "pipeline.json"]);
    if first.code() != 0 && !in_ci() && first.stderr().contains("environment") {
        skipped(
            "azure-batch-inference example",
            "its environment (pandas from PyPI) could not be built here (no network?)",
        );
        return;
    }
    let first = first.ok();
    assert!(
        first.stdout().contains("(2 ran, 0 reused"),
        "{}",
        first.stdout()
    );
    let id = run_id(&first);

    // The summary: every sample of both sites, in the order of first appearance.
    let report_path = dir
        .path()
        .join(".stepgraph/runs")
        .join(&id)
        .join("summarize/outputs/report/report.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report.json"))
            .expect("report is JSON");
    assert_eq!(report["samples"], 24, "{report}");
    assert_eq!(report["accuracy"], 1.0, "{report}");
    for site in ["field", "greenhouse"] {
        assert_eq!(report["sites"][site]["scored"], 12, "{report}");
        assert_eq!(report["sites"][site]["correct"], 12, "{report}");
    }

    // The predictions: the DataFrame rows as Azure's append_row text, one mini-batch per site,
    // with the partition values (site, day) as columns; the stray data/iris/README.md is out.
    let predictions = std::fs::read_to_string(
        dir.path()
            .join(".stepgraph/runs")
            .join(&id)
            .join("score-iris/outputs/predictions/parallel_run_step.txt"),
    )
    .expect("predictions");
    let lines: Vec<&str> = predictions.lines().collect();
    assert_eq!(lines.len(), 24, "{predictions}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("s001 greenhouse 2024-03-08 setosa setosa 0.")),
        "{predictions}"
    );
    let sites: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(sites.iter().filter(|s| **s == "field").count(), 12);
    assert_eq!(sites.iter().filter(|s| **s == "greenhouse").count(), 12);

    // The metrics logged through Run.get_context(), per mini-batch (one per site).
    let metrics = std::fs::read_to_string(
        dir.path()
            .join(".stepgraph/runs")
            .join(&id)
            .join("score-iris/metrics.jsonl"),
    )
    .expect("metrics.jsonl");
    let rows: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).expect("metric line is JSON"))
        .collect();
    let scored: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["name"] == "rows_scored")
        .map(|r| &r["value"])
        .collect();
    assert_eq!(
        scored,
        [&serde_json::json!(12), &serde_json::json!(12)],
        "{metrics}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["name"] == "site_accuracy" && r["kind"] == "log_row")
            .count(),
        2,
        "{metrics}"
    );
    let show = sg(dir.path(), &["runs", "show", &id]).ok().stdout();
    assert!(show.contains("rows_scored"), "{show}");
    assert!(show.contains("site_accuracy"), "{show}");

    // Run again: both steps reused, the same outputs listed.
    let second = sg(dir.path(), &["run", "pipeline.json"]).ok();
    assert!(
        second.stdout().contains("(0 ran, 2 reused"),
        "{}",
        second.stdout()
    );
    let outputs = sg(dir.path(), &["outputs"]).ok().stdout();
    assert!(
        outputs.contains("score-iris  predictions  reused"),
        "{outputs}"
    );
    assert!(
        outputs.contains("summarize   report       reused"),
        "{outputs}"
    );
}
