//! The Rust API a pipeline author writes (the facade's doc test, as a program): an `FnStep`
//! identified by its closure's text, a `ParallelRunStep` with an in-process Rust entry, run by
//! a `Runner` into the store `./.stepgraph`.
//!
//! ```text
//! cargo run --example word_count_api     # 2 ran; again: 2 reused
//! ```

// Examples show user code, which uses std::fs; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::process::ExitCode;

use stepgraph::prelude::*;

/// Counts the words of each file: one row per file, `name count`.
struct CountWords;

impl EntryScript for CountWords {
    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<Row>, EntryError> {
        let MiniBatchData::Files(files) = &mini_batch.data else {
            return Err("expected files".into());
        };
        let mut rows = Vec::with_capacity(files.len());
        for f in files {
            let words = std::fs::read_to_string(f)?.split_whitespace().count();
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            rows.push(format!("{name} {words}"));
        }
        Ok(rows)
    }
}

fn main() -> ExitCode {
    match word_count() {
        Ok(summary) => {
            for s in &summary.steps {
                println!("{}: {}", s.name, s.status.as_str());
            }
            println!(
                "rows: {}",
                summary
                    .output_dir("count-words", "output")
                    .join("parallel_run_step.txt")
                    .display()
            );
            if summary
                .steps
                .iter()
                .all(|s| matches!(s.status, StepStatus::Ran | StepStatus::Reused))
            {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn word_count() -> Result<RunSummary, Box<dyn std::error::Error>> {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/pipelines/batch-scoring/data/reviews");

    let reviews = FileDataset::from_files("reviews", data).with_pattern("*.txt");
    let texts = PipelineData::new("texts");
    let counts = PipelineData::new("counts");

    let normalise = fn_step!("normalise", |ctx| {
        let out = ctx.output("texts")?;
        for f in ctx.input_files("reviews")? {
            let text = std::fs::read_to_string(&f)?.to_lowercase();
            std::fs::write(out.join(f.file_name().unwrap_or_default()), text)?;
        }
        Ok(())
    })
    .input("reviews", &reviews)
    .output("texts", &texts);

    let config = ParallelRunConfig::builder()
        .rust_entry("count-words-v1", || Box::new(CountWords))
        .mini_batch_size("8")
        .error_threshold(0)
        .build()?;
    let count = ParallelRunStep::builder("count-words", config)
        .input(&texts)
        .output(&counts)
        .allow_reuse(true)
        .build()?;

    let pipeline = Pipeline::builder("word-count")
        .step(normalise)
        .step(count)
        .build()?;
    let store = Store::open(".stepgraph", OpenOptions::default())?;
    let summary = Runner::new(&store).jobs(2).run(&pipeline)?; // summary.steps[i].status
    Ok(summary)
}
