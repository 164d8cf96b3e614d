//! A 3-step pipeline built in Rust, with a ParallelRunStep running an in-process Rust entry,
//! given the full stepgraph CLI by `main_with`:
//!
//! ```text
//! cargo run --example word_count -- run            # run it (again: everything reused)
//! cargo run --example word_count -- graph --format mermaid
//! cargo run --example word_count -- explain --param min_count=3
//! ```

// Examples use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::collections::BTreeMap;
use std::path::PathBuf;

use stepgraph::engine::{FileDataset, Pipeline, PipelineData, PipelineParameter};
use stepgraph::steps::parallel_run::{EntryError, Row};
use stepgraph::steps::{
    EntryScript, FnStep, MiniBatch, MiniBatchData, ParallelRunConfig, ParallelRunStep,
};

/// Counts words per file; one instance per worker.
struct CountWords;

impl EntryScript for CountWords {
    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<Row>, EntryError> {
        let MiniBatchData::Files(files) = &mini_batch.data else {
            return Err("expected files".into());
        };
        let mut rows = Vec::with_capacity(files.len());
        for f in files {
            let text = std::fs::read_to_string(f)?;
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for w in text.split_whitespace() {
                *counts.entry(w).or_default() += 1;
            }
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let words: Vec<String> = counts.iter().map(|(w, n)| format!("{w}:{n}")).collect();
            rows.push(format!("{name} {}", words.join(",")));
        }
        Ok(rows)
    }
}

fn main() -> std::process::ExitCode {
    match pipeline() {
        Ok(p) => stepgraph::cli::main_with(p),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The three-step word-count pipeline over the batch-scoring example's reviews.
fn pipeline() -> Result<Pipeline, Box<dyn std::error::Error>> {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/pipelines/batch-scoring/data/reviews");
    let min_count = PipelineParameter::new("min_count", 2);

    let normalise = FnStep::new("normalise", "v1", |ctx| {
        let out = ctx.output("texts")?;
        for f in ctx.input_files("reviews")? {
            let text = std::fs::read_to_string(&f)?.to_lowercase();
            let name = f
                .file_name()
                .ok_or_else(|| stepgraph::engine::StepError::new("no file name"))?;
            std::fs::write(out.join(name), text)?;
        }
        Ok(())
    })
    .input(
        "reviews",
        FileDataset::from_files("reviews", data).with_pattern("*.txt"),
    )
    .output("texts", PipelineData::new("texts"));

    let config = ParallelRunConfig::builder()
        .rust_entry("count-words-v1", || Box::new(CountWords))
        .mini_batch_size("8")
        .error_threshold(0)
        .process_count_per_node(2)
        .build()?;
    let count = ParallelRunStep::new(
        "count-words",
        config,
        vec![PipelineData::new("texts").into()],
        Some(PipelineData::new("counts")),
        vec![],
        vec![],
        true,
    );

    let report = FnStep::new("report", "v1", |ctx| {
        let min = ctx.param("min_count").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
        let rows = std::fs::read_to_string(ctx.input("counts")?.join("parallel_run_step.txt"))?;
        let mut totals: BTreeMap<String, usize> = BTreeMap::new();
        for line in rows.lines() {
            for pair in line
                .split_once(' ')
                .map(|(_, w)| w)
                .unwrap_or("")
                .split(',')
            {
                if let Some((w, n)) = pair.split_once(':') {
                    *totals.entry(w.to_string()).or_default() += n.parse::<usize>().unwrap_or(0);
                }
            }
        }
        let mut lines: Vec<(usize, String)> = totals
            .into_iter()
            .filter(|(_, n)| *n >= min)
            .map(|(w, n)| (n, w))
            .collect();
        lines.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let text: String = lines.iter().map(|(n, w)| format!("{w} {n}\n")).collect();
        std::fs::write(ctx.output("report")?.join("word_totals.txt"), text)?;
        Ok(())
    })
    .input("counts", PipelineData::new("counts"))
    .param(min_count)
    .output("report", PipelineData::new("report"));

    Ok(Pipeline::builder("word-count")
        .step(normalise)
        .step(count)
        .step(report)
        .build()?)
}
