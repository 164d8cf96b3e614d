//! Build one `ParallelRunStep` and run it once against a fresh store; used by
//! `bench/python_vs_parallel.sh` and `bench/tabular_rss.sh`.
//!
//! ```text
//! bench_python_entry --store DIR (--files DIR | --csv FILE)
//!     [--source-dir DIR --entry SCRIPT.py | --rust-entry]
//!     [--mini-batch-size S] [--workers N] [--sample-rss] [--hash-only]
//! ```
//!
//! - `--files DIR`: a FileDataset of every file under DIR; `--csv FILE`: a TabularDataset.
//! - `--source-dir` / `--entry`: a Python entry script (`init()` / `run(mini_batch)`).
//! - `--rust-entry`: an in-process Rust entry returning one short row (`id,field_count`) per
//!   CSV row, instead of Python.
//! - `--sample-rss`: a thread samples `/proc/self/status` every 50 ms and the peak VmRSS,
//!   RssAnon and RssFile of this (engine) process are printed at the end (worker
//!   processes are not included).
//! - `--hash-only`: only hash the input into the store's stat memo (`Store::hash_file`) and
//!   exit; a following run on the same store then finds the input hash in the memo.
//!
//! Prints a summary on stderr and, on stdout, the path of the gathered output file (inside
//! the store, so read it before deleting the store). Exit code 1 when the step failed.
//!
//! Build: `CARGO_TARGET_DIR=/tmp/target-bench cargo build --release --example bench_python_entry`

// Examples use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgraph_engine::{
    DataSource, FileDataset, NullSink, OpenOptions, Pipeline, PipelineData, RunOptions, RunStatus,
    Store, TabularDataset,
};
use stepgraph_steps::{
    EntryError, EntryScript, MiniBatch, MiniBatchData, ParallelRunConfig, ParallelRunStep,
};

#[derive(Default)]
struct Args {
    store: Option<PathBuf>,
    files: Option<PathBuf>,
    csv: Option<PathBuf>,
    source_dir: Option<PathBuf>,
    entry: Option<String>,
    rust_entry: bool,
    mini_batch_size: Option<String>,
    workers: u32,
    sample_rss: bool,
    hash_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        workers: 2,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => a.store = Some(val()?.into()),
            "--files" => a.files = Some(val()?.into()),
            "--csv" => a.csv = Some(val()?.into()),
            "--source-dir" => a.source_dir = Some(val()?.into()),
            "--entry" => a.entry = Some(val()?),
            "--mini-batch-size" => a.mini_batch_size = Some(val()?),
            "--workers" => a.workers = val()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--rust-entry" => a.rust_entry = true,
            "--sample-rss" => a.sample_rss = true,
            "--hash-only" => a.hash_only = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// Rust entry for CSV rows: one short row per input row.
struct ShortRows;

impl EntryScript for ShortRows {
    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<String>, EntryError> {
        match &mini_batch.data {
            MiniBatchData::Csv { records, .. } => Ok(records
                .iter()
                .map(|r| format!("{},{}", r.get(0).unwrap_or(""), r.len()))
                .collect()),
            MiniBatchData::Files(f) => Ok(f.iter().map(|p| p.display().to_string()).collect()),
            MiniBatchData::JsonLines(v) => Ok(v.iter().map(|_| "1".to_string()).collect()),
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Peak {
    vm_rss: u64,
    rss_anon: u64,
    rss_file: u64,
}

fn status_kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let store_dir = args.store.clone().ok_or("--store is required")?;
    if args.hash_only {
        // Fill the store's stat memo for the input, so that a following run (same store) does
        // not hash it again: isolates what the run itself costs.
        let store = Store::open(&store_dir, OpenOptions::default())?;
        let input = args.csv.clone().or(args.files.clone()).ok_or("no input")?;
        let files: Vec<PathBuf> = if input.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&input)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            v.sort();
            v
        } else {
            vec![input]
        };
        for f in &files {
            store.hash_file(f, false)?;
        }
        store.flush()?;
        eprintln!("hashed {} input file(s) into the store's memo", files.len());
        return Ok(());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = args.sample_rss.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = Peak::default();
            loop {
                if let Ok(t) = std::fs::read_to_string("/proc/self/status") {
                    peak.vm_rss = peak.vm_rss.max(status_kb(&t, "VmRSS:"));
                    peak.rss_anon = peak.rss_anon.max(status_kb(&t, "RssAnon:"));
                    peak.rss_file = peak.rss_file.max(status_kb(&t, "RssFile:"));
                }
                if stop.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    });

    let mut cfg = ParallelRunConfig::builder()
        .error_threshold(0)
        .process_count_per_node(args.workers);
    if let Some(s) = &args.mini_batch_size {
        cfg = cfg.mini_batch_size(s.clone());
    }
    if args.rust_entry {
        cfg = cfg.rust_entry("short-rows-v1", || Box::new(ShortRows));
    } else {
        let dir = args.source_dir.clone().ok_or("--source-dir is required")?;
        let entry = args.entry.clone().ok_or("--entry is required")?;
        cfg = cfg.source_directory(dir).entry_script(entry);
    }
    let input: DataSource = match (&args.files, &args.csv) {
        (Some(d), None) => FileDataset::from_files("files", d).into(),
        (None, Some(f)) => TabularDataset::from_delimited_files("rows", vec![f.clone()]).into(),
        _ => return Err("give exactly one of --files or --csv".into()),
    };
    let step = ParallelRunStep::new(
        "bench",
        cfg.build()?,
        vec![input],
        Some(PipelineData::new("bench_out")),
        vec![],
        vec![],
        true,
    );
    let pipeline = Pipeline::builder("bench").step(step).build()?;
    let store = Store::open(&store_dir, OpenOptions::default())?;
    let t = Instant::now();
    let summary = stepgraph_engine::run(&pipeline, &store, &RunOptions::default(), &NullSink)?;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let rec = &summary.steps[0];
    eprintln!(
        "run: {:.3} s, status {:?}, items {}, mini-batches {}, failed items {}",
        took.as_secs_f64(),
        summary.status,
        rec.counts.items,
        rec.counts.units,
        rec.counts.failed_items
    );
    if let Some(h) = sampler {
        if let Ok(p) = h.join() {
            eprintln!(
                "engine process peak (sampled every 50 ms): VmRSS {} MB, RssAnon {} MB, RssFile {} MB",
                p.vm_rss / 1024,
                p.rss_anon / 1024,
                p.rss_file / 1024
            );
        }
    }
    if summary.status != RunStatus::Succeeded {
        eprintln!("step error: {}", rec.error.clone().unwrap_or_default());
        std::process::exit(1);
    }
    println!(
        "{}",
        summary
            .output_dir("bench", "output")
            .join("parallel_run_step.txt")
            .display()
    );
    Ok(())
}
