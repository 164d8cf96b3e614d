//! A 3-step pipeline built in Rust (two `fn_step!`s, identified by their closures' text, and a
//! ParallelRunStep running an in-process Rust entry), given the full stepgraph CLI by
//! `main_with`:
//!
//! ```text
//! cargo run --example word_count -- run            # run it (again: everything reused)
//! cargo run --example word_count -- graph --format mermaid
//! cargo run --example word_count -- explain --param min_count=3
//! ```

// Examples use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::collections::BTreeMap;
use std::path::Path;

use stepgraph::prelude::*;

/// Word frequencies per file, one row `file word:n,word:n,…` per file; one instance per
/// worker.
struct WordFrequencies;

impl EntryScript for WordFrequencies {
    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<Row>, EntryError> {
        match &mini_batch.data {
            MiniBatchData::Files(files) => files.iter().map(|f| frequencies(f)).collect(),
            _ => Err("word frequencies are counted in files".into()),
        }
    }
}

/// One file's row: its name, then `word:n` pairs in word order.
fn frequencies(file: &Path) -> Result<Row, EntryError> {
    let text = std::fs::read_to_string(file)?;
    let mut freq: BTreeMap<&str, usize> = BTreeMap::new();
    for w in text.split_whitespace() {
        *freq.entry(w).or_default() += 1;
    }
    let pairs: Vec<String> = freq.iter().map(|(w, n)| format!("{w}:{n}")).collect();
    let name = file.file_name().map(|n| n.to_string_lossy());
    Ok(format!("{} {}", name.unwrap_or_default(), pairs.join(",")))
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
    let reviews = FileDataset::from_files(
        "reviews",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipelines/batch-scoring/data/reviews"),
    )
    .with_pattern("*.txt");
    let (lowercase, counts, report) = (
        PipelineData::new("lowercase"),
        PipelineData::new("counts"),
        PipelineData::new("report"),
    );
    let min_count = PipelineParameter::new("min_count", 2);

    // Lower-cased copies of the reviews, one file each.
    let lower = fn_step!("lower", |ctx| {
        let into = ctx.output("lowercase")?;
        for review in ctx.input_files("reviews")? {
            let name = review
                .file_name()
                .ok_or_else(|| StepError::new("no file name"))?;
            let text = std::fs::read_to_string(&review)?;
            std::fs::write(into.join(name), text.to_lowercase())?;
        }
        Ok(())
    })
    .input("reviews", &reviews)
    .output("lowercase", &lowercase);

    let frequency_config = ParallelRunConfig::builder()
        .rust_entry("word-frequencies-v1", || Box::new(WordFrequencies))
        .process_count_per_node(2)
        .mini_batch_size("8")
        .error_threshold(0)
        .build()?;
    let count = ParallelRunStep::builder("word-frequencies", frequency_config)
        .input(&lowercase)
        .output(&counts)
        .build()?;

    let write_report = fn_step!("report", |ctx| {
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
    .input("counts", &counts)
    .param(&min_count)
    .output("report", &report);

    Ok(Pipeline::builder("word-count")
        .step(lower)
        .step(count)
        .step(write_report)
        .build()?)
}
