//! Build, fingerprint and plan a pipeline of 1,000 and 10,000 `FnStep` nodes.
//!
//! Shape: nodes `n00000..n00003` are roots reading one small `FileDataset`; every other
//! node `i` reads the `PipelineData` of node `i-1` (port `a`) and of node `i/2` (port `b`),
//! so the graph is one long chain with fan-in, like a deep incremental pipeline.
//!
//! Benchmarks (all in one process, same run):
//! - `graph/build/N`: `Pipeline::builder(..).step(..)*.build()` (module defs, validation,
//!   edges, topological order), including making the `FnStep` values;
//! - `graph/plan_fresh/N`: `plan()` against a store where nothing ever ran: the roots
//!   compute their keys (hash the dataset, from the stat memo after the first iteration),
//!   every other step is `DependsOnUpstream`;
//! - `graph/plan_cached/N`: `plan()` after one full run, so every step is a cache hit and
//!   every key is computed (fingerprint of all inputs, sled lookup of the cache entry,
//!   object existence checks): the real cost of `stepgraph status` / `--dry-run`.
//!
//! Goal (issue): 10k nodes under 1 s, growing linearly (compare 10k/1k).
//!
//! Run: `CARGO_TARGET_DIR=/tmp/target-bench cargo bench --bench graph`
//! Sizes can be restricted with `STEPGRAPH_BENCH_SIZES=1000` (comma-separated).

// Benches use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stepgraph_engine::{
    plan, Decision, FileDataset, NullSink, OpenOptions, Pipeline, PipelineData, PlanOptions,
    RunOptions, RunStatus, Store,
};
use stepgraph_steps::FnStep;

const ROOTS: usize = 4;

fn sizes() -> Vec<usize> {
    std::env::var("STEPGRAPH_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000])
}

fn name(i: usize) -> String {
    format!("n{i:05}")
}

fn data(i: usize) -> PipelineData {
    PipelineData::new(format!("d{i:05}"))
}

/// The pipeline of `n` steps; each step writes one tiny file naming itself.
fn build_pipeline(n: usize, dataset_dir: &Path) -> Pipeline {
    let mut b = Pipeline::builder("graph-bench");
    for i in 0..n {
        let mut s = FnStep::new(name(i), "v1", move |ctx| {
            std::fs::write(ctx.output("out")?.join("out.txt"), format!("node {i}\n"))?;
            Ok(())
        })
        .output("out", data(i));
        if i < ROOTS {
            s = s.input("src", FileDataset::from_files("src", dataset_dir));
        } else {
            s = s.input("a", data(i - 1)).input("b", data(i / 2));
        }
        b = b.step(s);
    }
    match b.build() {
        Ok(p) => p,
        Err(e) => panic!("pipeline does not build: {e:?}"),
    }
}

fn bench_graph(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dataset_dir = tmp.path().join("dataset");
    std::fs::create_dir_all(&dataset_dir).expect("dataset dir");
    std::fs::write(dataset_dir.join("input.txt"), "a small input file\n").expect("input");

    let mut group = c.benchmark_group("graph");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    for n in sizes() {
        group.throughput(Throughput::Elements(n as u64));

        // --- build ---
        group.bench_with_input(BenchmarkId::new("build", n), &n, |b, &n| {
            b.iter(|| black_box(build_pipeline(n, &dataset_dir)))
        });
        let pipeline = build_pipeline(n, &dataset_dir);

        // --- plan against a fresh store ---
        let fresh_dir = tmp.path().join(format!("fresh-{n}"));
        let fresh = Store::open(&fresh_dir, OpenOptions::default()).expect("store");
        let p = plan(&pipeline, &fresh, &PlanOptions::default()).expect("plan");
        let deps = p
            .steps
            .iter()
            .filter(|s| matches!(s.decision, Decision::DependsOnUpstream { .. }))
            .count();
        assert_eq!(deps, n - ROOTS, "fresh plan: only the roots compute keys");
        group.bench_with_input(BenchmarkId::new("plan_fresh", n), &n, |b, _| {
            b.iter(|| black_box(plan(&pipeline, &fresh, &PlanOptions::default()).expect("plan")))
        });
        drop(fresh);

        // --- plan after a full run: every step cached ---
        let cached_dir = tmp.path().join(format!("cached-{n}"));
        let store = Store::open(&cached_dir, OpenOptions::default()).expect("store");
        let t0 = Instant::now();
        let summary = stepgraph_engine::run(&pipeline, &store, &RunOptions::default(), &NullSink)
            .expect("run");
        eprintln!(
            "setup: full run of {n} steps took {:.2} s (status {:?})",
            t0.elapsed().as_secs_f64(),
            summary.status
        );
        assert_eq!(summary.status, RunStatus::Succeeded);
        let t0 = Instant::now();
        let p = plan(&pipeline, &store, &PlanOptions::default()).expect("plan");
        eprintln!(
            "setup: first cached plan of {n} steps took {:.3} s",
            t0.elapsed().as_secs_f64()
        );
        assert!(
            p.steps.iter().all(|s| s.decision.is_up_to_date()),
            "every step must be a cache hit"
        );
        group.bench_with_input(BenchmarkId::new("plan_cached", n), &n, |b, _| {
            b.iter(|| black_box(plan(&pipeline, &store, &PlanOptions::default()).expect("plan")))
        });
        drop(store);
        let _ = std::fs::remove_dir_all(&cached_dir);
        let _ = std::fs::remove_dir_all(&fresh_dir);
    }
    group.finish();
}

criterion_group!(benches, bench_graph);
criterion_main!(benches);
