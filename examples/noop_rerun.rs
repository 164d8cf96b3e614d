//! A 50-step pipeline over a folder of input files, for `bench/noop_rerun.sh`.
//!
//! ```text
//! noop_rerun --data DIR --store DIR [--steps 50] [--verify]
//! ```
//!
//! Step `slice-NN` is an `FnStep` reading the `FileDataset` slice `fNN.bin` of DIR (its
//! content hash is part of the step's fingerprint) and writing a one-line summary of its
//! input (name and size: the body stats, it does not read). Run it twice against the same
//! store: the second run is a no-op (every step reused) and should only stat the inputs.
//! `--verify` forces a rehash of every input (PlanOptions::verify), i.e. reads all the data.
//!
//! Prints one line: run time, and how many steps ran / were reused.
//!
//! Build: `CARGO_TARGET_DIR=/tmp/target-bench cargo build --release --example noop_rerun`

// Examples use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::time::Instant;

use stepgraph_engine::{
    FileDataset, NullSink, OpenOptions, Pipeline, PipelineData, PlanOptions, RunOptions, RunStatus,
    StepStatus, Store,
};
use stepgraph_steps::FnStep;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut data: Option<PathBuf> = None;
    let mut store_dir: Option<PathBuf> = None;
    let mut steps = 50usize;
    let mut verify = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => data = it.next().map(PathBuf::from),
            "--store" => store_dir = it.next().map(PathBuf::from),
            "--steps" => steps = it.next().ok_or("--steps needs a value")?.parse()?,
            "--verify" => verify = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let data = data.ok_or("--data is required")?;
    let store_dir = store_dir.ok_or("--store is required")?;

    let t0 = Instant::now();
    let mut b = Pipeline::builder("noop-rerun");
    for i in 0..steps {
        let step = FnStep::new(format!("slice-{i:02}"), "v1", |ctx| {
            let mut summary = String::new();
            for f in ctx.input_files("slice")? {
                let len = std::fs::metadata(&f)?.len();
                summary.push_str(&format!("{} {len}\n", f.display()));
            }
            std::fs::write(ctx.output("summary")?.join("summary.txt"), summary)?;
            Ok(())
        })
        .input(
            "slice",
            FileDataset::from_files(format!("slice{i:02}"), &data)
                .with_pattern(format!("f{i:02}.bin")),
        )
        .output("summary", PipelineData::new(format!("summary{i:02}")));
        b = b.step(step);
    }
    let pipeline = b.build()?;
    let store = Store::open(&store_dir, OpenOptions::default())?;
    let opts = RunOptions {
        plan: PlanOptions {
            verify,
            ..PlanOptions::default()
        },
        ..RunOptions::default()
    };
    let t = Instant::now();
    let s = stepgraph_engine::run(&pipeline, &store, &opts, &NullSink)?;
    let run_time = t.elapsed();
    let ran = s
        .steps
        .iter()
        .filter(|x| x.status == StepStatus::Ran)
        .count();
    let reused = s
        .steps
        .iter()
        .filter(|x| x.status == StepStatus::Reused)
        .count();
    println!(
        "run {:.3} s (process work incl. build + store open {:.3} s): {ran} ran, {reused} reused, status {:?}",
        run_time.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        s.status
    );
    if s.status != RunStatus::Succeeded {
        return Err("run failed".into());
    }
    Ok(())
}
