//! ParallelRunStep with an in-process Rust entry vs a hand-written rayon loop.
//!
//! Work: 1,000,000 CSV rows of exactly 16 bytes (`0000042,0333158\n`), each costing ~10 µs
//! of CPU (a deterministic arithmetic loop behind `black_box`, calibrated once at start-up;
//! both sides use the same iteration count). Output: one row `id,result` per input row, in
//! input order, in one file.
//!
//! - `stepgraph`: a fresh store per iteration, one `ParallelRunStep` with
//!   `rust_entry(..)`, `mini_batch_size("16000")` (= 1,000 rows per mini-batch),
//!   `process_count_per_node(2)`; timed: `stepgraph_engine::run()` (input hashing,
//!   partitioning, 1,000 mini-batches, progress commits, gather into
//!   `parallel_run_step.txt`, output ingest).
//! - `rayon`: a 2-thread local `rayon::ThreadPool`, read the same CSV, `par_chunks(1000)`,
//!   same per-row work, write the same ordered output file (no fsync).
//!
//! The two outputs are checked to be byte-identical. After criterion, the two are also run
//! alternately (`STEPGRAPH_BENCH_PAIRS` pairs, default 5) and the median of each and the
//! ratio are printed, which is less sensitive to a noisy, shared machine than two
//! back-to-back criterion groups.
//!
//! Goal (issue): stepgraph <= 1.05x rayon.
//!
//! Run: `CARGO_TARGET_DIR=/tmp/target-bench cargo bench --bench parallel_run_rust`
//! (`STEPGRAPH_BENCH_ROWS` changes the row count, for a quick try.)

// Benches use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use stepgraph_engine::{
    Event, NullSink, OpenOptions, Pipeline, PipelineData, RunOptions, RunStatus, Store,
    TabularDataset,
};
use stepgraph_steps::{
    EntryError, EntryScript, MiniBatch, MiniBatchData, ParallelRunConfig, ParallelRunStep,
};

const ROW_BYTES: usize = 16;
const ROWS_PER_BATCH: usize = 1_000;
const TARGET_ITEM: Duration = Duration::from_micros(10);

fn rows() -> usize {
    std::env::var("STEPGRAPH_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// The per-item work: `iters` dependent multiply/xor-shift steps.
#[inline(never)]
fn work(seed: u64, iters: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..iters {
        x = black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
        x ^= x >> 33;
    }
    x
}

/// Iterations for ~10 µs: best of several timings of a long loop (best = least disturbed).
fn calibrate() -> u64 {
    let probe = 2_000_000u64;
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        black_box(work(black_box(12345), probe));
        best = best.min(t.elapsed());
    }
    let per_iter = best.as_secs_f64() / probe as f64;
    (TARGET_ITEM.as_secs_f64() / per_iter).round().max(1.0) as u64
}

fn process_row(id: &str, val: &str, iters: u64) -> String {
    let a: u64 = id.parse().unwrap_or(0);
    let b: u64 = val.parse().unwrap_or(0);
    format!("{id},{}", work(a ^ (b << 20), iters))
}

fn write_csv(path: &Path, n: usize) {
    let mut w = BufWriter::new(File::create(path).expect("create csv"));
    w.write_all(b"id,val\n").expect("write");
    for i in 0..n {
        let line = format!("{:07},{:07}\n", i, (i as u64 * 7919) % 10_000_000);
        debug_assert_eq!(line.len(), ROW_BYTES);
        w.write_all(line.as_bytes()).expect("write");
    }
    w.flush().expect("flush");
}

struct Spin {
    iters: u64,
}

impl EntryScript for Spin {
    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<String>, EntryError> {
        let MiniBatchData::Csv { records, .. } = &mini_batch.data else {
            return Err("expected CSV rows".into());
        };
        Ok(records
            .iter()
            .map(|r| process_row(r.get(0).unwrap_or(""), r.get(1).unwrap_or(""), self.iters))
            .collect())
    }
}

fn pipeline(csv: &Path, iters: u64) -> Pipeline {
    let cfg = ParallelRunConfig::builder()
        .rust_entry("spin-v1", move || Box::new(Spin { iters }))
        .mini_batch_size((ROW_BYTES * ROWS_PER_BATCH).to_string())
        .error_threshold(0)
        .process_count_per_node(2)
        .build()
        .expect("config");
    let step = ParallelRunStep::new(
        "spin",
        cfg,
        vec![TabularDataset::from_delimited_files("rows", vec![csv.to_path_buf()]).into()],
        Some(PipelineData::new("spun")),
        vec![],
        vec![],
        true,
    );
    Pipeline::builder("prs-bench")
        .step(step)
        .build()
        .expect("pipeline")
}

/// One stepgraph run on a fresh store; returns the run time and the output file path
/// (inside `keep`, which the caller drops).
fn run_stepgraph(csv: &Path, iters: u64, keep: &tempfile::TempDir) -> (Duration, PathBuf) {
    let store = Store::open(keep.path().join("store"), OpenOptions::default()).expect("store");
    let p = pipeline(csv, iters);
    let t = Instant::now();
    let s = stepgraph_engine::run(&p, &store, &RunOptions::default(), &NullSink).expect("run");
    let took = t.elapsed();
    assert_eq!(s.status, RunStatus::Succeeded, "{:?}", s.steps[0].error);
    (
        took,
        s.output_dir("spin", "output").join("parallel_run_step.txt"),
    )
}

/// CPU seconds (user + system) used by this process so far, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// One stepgraph run with a timestamping event sink: where the time goes (before the first
/// mini-batch, mini-batches, after the last one).
fn trace_stepgraph(csv: &Path, iters: u64) {
    let keep = tempfile::tempdir_in("/tmp").expect("tempdir");
    let store = Store::open(keep.path().join("store"), OpenOptions::default()).expect("store");
    let p = pipeline(csv, iters);
    let t = Instant::now();
    let marks: Mutex<Vec<(f64, String)>> = Mutex::new(Vec::new());
    let first_done = AtomicBool::new(false);
    let all_done = AtomicBool::new(false);
    let sink = |e: &Event| {
        let at = t.elapsed().as_secs_f64();
        let label = match e {
            Event::StepStarted { .. } => {
                Some("step started (key computed: input hashed)".to_string())
            }
            Event::Progress { done: 0, .. } => {
                Some("inputs partitioned, dispatch starts".to_string())
            }
            Event::Progress { done, total, .. }
                if done == total && !all_done.swap(true, Ordering::Relaxed) =>
            {
                Some("last mini-batch done".to_string())
            }
            Event::Progress { .. } if !first_done.swap(true, Ordering::Relaxed) => {
                Some("first progress report with done > 0".to_string())
            }
            Event::StepFinished { .. } => {
                Some("step finished (gathered, ingested, cached)".to_string())
            }
            _ => None,
        };
        if let Some(l) = label {
            marks.lock().expect("lock").push((at, l));
        }
    };
    let cpu0 = cpu_seconds();
    let s = stepgraph_engine::run(&p, &store, &RunOptions::default(), &sink).expect("run");
    let total = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(s.status, RunStatus::Succeeded);
    let mut last = 0.0;
    for (at, l) in marks.lock().expect("lock").iter() {
        eprintln!("  trace: {at:7.3} s (+{:6.3} s) {l}", at - last);
        last = *at;
    }
    eprintln!(
        "  trace: {total:7.3} s (+{:6.3} s) run() returned",
        total - last
    );
    eprintln!(
        "  stepgraph: wall {total:.3} s, CPU {cpu:.2} s, average busy cores {:.2} of 2",
        cpu / total
    );
    let out = keep.path().join("rayon-trace-out.txt");
    let cpu0 = cpu_seconds();
    let wall = run_rayon(csv, iters, &out).as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    eprintln!(
        "  rayon:     wall {wall:.3} s, CPU {cpu:.2} s, average busy cores {:.2} of 2",
        cpu / wall
    );
}

fn run_rayon(csv: &Path, iters: u64, out: &Path) -> Duration {
    let t = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    let text = std::fs::read_to_string(csv).expect("read csv");
    let rows: Vec<(&str, &str)> = text
        .lines()
        .skip(1)
        .map(|l| l.split_once(',').unwrap_or((l, "")))
        .collect();
    let chunks: Vec<Vec<String>> = pool.install(|| {
        rows.par_chunks(ROWS_PER_BATCH)
            .map(|c| c.iter().map(|(a, b)| process_row(a, b, iters)).collect())
            .collect()
    });
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out).expect("out"));
    for c in &chunks {
        for r in c {
            w.write_all(r.as_bytes()).expect("write");
            w.write_all(b"\n").expect("write");
        }
    }
    w.flush().expect("flush");
    t.elapsed()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let n = rows();
    let tmp = tempfile::Builder::new()
        .prefix("prs-bench")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let csv = tmp.path().join("rows.csv");
    write_csv(&csv, n);
    let iters = calibrate();
    let t = Instant::now();
    for i in 0..10_000u64 {
        black_box(work(black_box(i), iters));
    }
    eprintln!(
        "rows: {n}; work: {iters} iterations per item, measured {:.2} µs/item single-threaded; \
         ideal 2-thread time {:.2} s",
        t.elapsed().as_secs_f64() / 10_000.0 * 1e6,
        t.elapsed().as_secs_f64() / 10_000.0 * n as f64 / 2.0
    );

    // Same output on both sides.
    let ref_out = tmp.path().join("rayon-out.txt");
    run_rayon(&csv, iters, &ref_out);
    {
        let keep = tempfile::tempdir_in("/tmp").expect("tempdir");
        let (_, out) = run_stepgraph(&csv, iters, &keep);
        let a = std::fs::read(&ref_out).expect("read");
        let b = std::fs::read(&out).expect("read");
        assert!(a == b, "stepgraph and rayon outputs differ");
        eprintln!("outputs identical ({} bytes)", a.len());
    }

    eprintln!("one traced stepgraph run:");
    trace_stepgraph(&csv, iters);

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("parallel_run_rust");
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(60));
        g.bench_function("stepgraph", |b| {
            b.iter_custom(|iters_| {
                let mut total = Duration::ZERO;
                for _ in 0..iters_ {
                    let keep = tempfile::tempdir_in("/tmp").expect("tempdir");
                    total += run_stepgraph(&csv, iters, &keep).0;
                }
                total
            })
        });
        let out = tmp.path().join("rayon-bench-out.txt");
        g.bench_function("rayon", |b| {
            b.iter_custom(|iters_| {
                let mut total = Duration::ZERO;
                for _ in 0..iters_ {
                    total += run_rayon(&csv, iters, &out);
                }
                total
            })
        });
        g.finish();
    }
    c.final_summary();

    let pairs: usize = std::env::var("STEPGRAPH_BENCH_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if pairs > 0 {
        let (mut sg, mut ry, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let out = tmp.path().join("rayon-ab-out.txt");
        for _ in 0..pairs {
            let keep = tempfile::tempdir_in("/tmp").expect("tempdir");
            let a = run_stepgraph(&csv, iters, &keep).0.as_secs_f64();
            drop(keep);
            let b = run_rayon(&csv, iters, &out).as_secs_f64();
            eprintln!(
                "pair: stepgraph {a:.3} s, rayon {b:.3} s, ratio {:.3}",
                a / b
            );
            sg.push(a);
            ry.push(b);
            ratios.push(a / b);
        }
        println!(
            "alternating pairs ({pairs}): stepgraph median {:.3} s, rayon median {:.3} s, \
             ratio of medians {:.3}, median of per-pair ratios {:.3}",
            median(&mut sg.clone()),
            median(&mut ry.clone()),
            median(&mut sg) / median(&mut ry),
            median(&mut ratios)
        );
    }
}
