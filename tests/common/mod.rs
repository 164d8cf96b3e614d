//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use stepgraph_engine::{
    CacheEntry, OpenOptions, PipelineData, RunOptions, RunSummary, Store, StoreError,
};
use stepgraph_steps::FnStep;

mod skip;
pub(crate) use skip::{in_ci, skipped};
mod slurm;
pub(crate) use slurm::{slurm_cluster, SLURM_PARTITION};

/// Write `contents` to `dir/rel`, creating folders.
pub(crate) fn write(dir: &Path, rel: &str, contents: &str) -> PathBuf {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("create test folder");
    }
    std::fs::write(&p, contents).expect("write test file");
    p
}

/// A shared execution counter, to be captured by step closures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// A counter at zero.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Count one execution.
    pub(crate) fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Executions so far.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Run options with `jobs` workers (1 gives a deterministic event order).
pub(crate) fn jobs(n: usize) -> RunOptions {
    RunOptions {
        jobs: n,
        ..RunOptions::default()
    }
}

/// A temporary folder holding a store at `store/` and room for data beside it.
pub(crate) struct Workspace {
    /// The temporary folder (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A fresh, empty workspace.
    pub(crate) fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("create temp dir"),
        }
    }

    /// A fresh workspace in memory (`/dev/shm`) when the system has one, where fsync is
    /// free: for tests that run hundreds of steps.
    pub(crate) fn in_memory() -> Self {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())
        } else {
            tempfile::tempdir()
        };
        Workspace {
            dir: dir.expect("create temp dir"),
        }
    }

    /// The workspace root.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store folder.
    pub(crate) fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Open the workspace's store.
    pub(crate) fn store(&self) -> Store {
        Store::open(self.store_path(), OpenOptions::default()).expect("open store")
    }

    /// Write `contents` to `rel` inside the workspace.
    pub(crate) fn write(&self, rel: &str, contents: &str) -> PathBuf {
        write(self.path(), rel, contents)
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// `(kind, step)` pairs as owned strings, for comparing with `CollectSink::step_events()`.
pub(crate) fn ev(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, s)| (*k, s.to_string())).collect()
}

/// Two steps over store objects: `produce` writes `good.txt` ("the good content\n") into its
/// output `out` (data `made`); `consume` writes its upper-case copy as `upper.txt` (data
/// `upper`), so the two share no object. Each counts its executions.
pub(crate) fn produce_consume_steps(produced: &Counter, consumed: &Counter) -> (FnStep, FnStep) {
    let (p, c) = (produced.clone(), consumed.clone());
    let produce = FnStep::new("produce", "v1", move |ctx| {
        p.hit();
        std::fs::write(ctx.output("out")?.join("good.txt"), "the good content\n")?;
        Ok(())
    })
    .output("out", PipelineData::new("made"));
    let consume = FnStep::new("consume", "v1", move |ctx| {
        c.hit();
        let text = std::fs::read_to_string(ctx.input("made")?.join("good.txt"))?;
        std::fs::write(ctx.output("out")?.join("upper.txt"), text.to_uppercase())?;
        Ok(())
    })
    .input("made", PipelineData::new("made"))
    .output("out", PipelineData::new("upper"));
    (produce, consume)
}

/// File `file` of output `port` of step `step` in the run `s`.
pub(crate) fn read_output(
    s: &RunSummary,
    step: &str,
    port: &str,
    file: &str,
) -> std::io::Result<String> {
    std::fs::read_to_string(s.output_dir(step, port).join(file))
}

/// Check that each object of each of `entries` holds exactly the bytes its hash names.
pub(crate) fn verify_entries(
    store: &Store,
    entries: impl IntoIterator<Item = CacheEntry>,
) -> Result<(), StoreError> {
    for e in entries {
        for m in e.outputs.values() {
            for o in m.files.values() {
                store.verify_object(o)?;
            }
        }
    }
    Ok(())
}
