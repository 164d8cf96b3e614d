//! Helpers shared by the CLI test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../../tests/common/skip.rs"]
mod skip;
#[allow(unused_imports)] // not every test binary skips
pub(crate) use skip::{in_ci, skipped};
#[path = "../../../tests/common/slurm.rs"]
mod slurm;
#[allow(unused_imports)] // only the Slurm tests need a cluster
pub(crate) use slurm::{slurm_cluster, SLURM_PARTITION};

/// The `stepgraph` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_stepgraph");

/// `stepgraph ARGS` in folder `cwd`, without `STEPGRAPH_STORE`, colours off (not started).
pub(crate) fn command(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .args(args)
        .env_remove("STEPGRAPH_STORE")
        .env("NO_COLOR", "1");
    c
}

/// Run `stepgraph ARGS` in folder `cwd`, without `STEPGRAPH_STORE`.
pub(crate) fn sg(cwd: &Path, args: &[&str]) -> Out {
    Out(command(cwd, args).output().expect("run stepgraph"))
}

/// Write `text` to `root/rel`, making its folders.
pub(crate) fn write_file(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(p, text).expect("write");
}

/// The spec of a pipeline `name` over the `.txt` files of `data/` (dataset `docs`):
/// `score-docs` (parallel_run of `scripts/score.py`, `batch` files a mini-batch, `procs`
/// processes, data `scores`), `summarize` (`scripts/summarize.py`, data `report`), then
/// `more_steps` (step objects, each after a comma).
pub(crate) fn score_and_summarize_spec(
    name: &str,
    batch: u32,
    procs: u32,
    report: &str,
    more_steps: &str,
) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "datasets": {{"docs": {{"type": "file", "path": "data", "pattern": "*.txt"}}}},
  "steps": [
    {{"name": "score-docs", "type": "parallel_run", "inputs": ["docs"], "output": "scores",
     "parallel_run_config": {{"source_directory": "scripts", "entry_script": "score.py",
       "mini_batch_size": "{batch}", "error_threshold": 0, "process_count_per_node": {procs}}}}},
    {{"name": "summarize", "type": "command",
     "command": ["python3", "summarize.py", "{{inputs.scores}}", "{{outputs.{report}}}"],
     "source_directory": "scripts", "inputs": {{"scores": "scores"}}, "outputs": ["{report}"]}}{more_steps}
  ]
}}"#
    )
}

/// A project folder the tests write files into and run `stepgraph` in (each test binary adds
/// its own constructor).
pub(crate) struct Project {
    /// The folder.
    pub(crate) dir: tempfile::TempDir,
}

impl Project {
    /// `rel` in the folder.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `text` to `rel`, making its folders.
    pub(crate) fn write(&self, rel: &str, text: &str) {
        write_file(self.dir.path(), rel, text);
    }

    /// `stepgraph ARGS` in the folder (not started).
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        command(self.dir.path(), args)
    }

    /// Run `stepgraph ARGS` in the folder.
    pub(crate) fn run(&self, args: &[&str]) -> Out {
        Out(self.cmd(args).output().expect("run stepgraph"))
    }
}

/// What one `stepgraph` invocation gave.
pub(crate) struct Out(pub Output);

impl Out {
    /// The exit code (-1 when killed by a signal).
    pub(crate) fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    /// Standard output, lossily as text.
    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    /// Standard error, lossily as text.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Assert exit code `code`, printing both streams otherwise.
    #[track_caller]
    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    /// Assert exit code 0 (printing both streams otherwise).
    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        self.assert_code(0);
        self
    }

    /// Assert exit code `code` (printing both streams otherwise) and return standard error.
    #[track_caller]
    pub(crate) fn fails(self, code: i32) -> String {
        self.assert_code(code);
        self.stderr()
    }
}
