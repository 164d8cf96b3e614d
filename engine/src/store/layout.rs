//! Where a run's files are: `runs/<run-id>/<step>/{outputs/<name>, work, logs}`, an output's
//! folder named by the data it holds. Every path into a run folder is built here, so the layout
//! has one definition.

use std::path::{Path, PathBuf};

/// The name of a step's metrics file in its run folder ([`RunLayout::metrics_file`]).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// The folder of one run and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    dir: PathBuf,
}

impl RunLayout {
    /// The layout of the run folder `dir` (`<store>/runs/<run-id>`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunLayout { dir: dir.into() }
    }

    /// The run's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of `step` in this run.
    pub fn step_dir(&self, step: &str) -> PathBuf {
        self.dir.join(step)
    }

    /// The materialised folder of the output of `step` whose data is named `data`
    /// (`outputs/<data>`).
    pub fn output_dir(&self, step: &str, data: &str) -> PathBuf {
        self.step_dir(step).join("outputs").join(data)
    }

    /// The folder holding output port `port` (data `data`) of `step`: `outputs/<data>`, or, in
    /// runs made before output folders were named by their data, `outputs/<port>` when only
    /// that one exists.
    pub fn find_output_dir(&self, step: &str, port: &str, data: &str) -> PathBuf {
        let named = self.output_dir(step, data);
        if named.exists() {
            return named;
        }
        let old = self.output_dir(step, port);
        if old.exists() {
            old
        } else {
            named
        }
    }

    /// The scratch folder `step` runs in.
    pub fn work_dir(&self, step: &str) -> PathBuf {
        self.step_dir(step).join("work")
    }

    /// The metrics `step` recorded (`Run.get_context().log(..)` in the Python `azureml` shim),
    /// JSON Lines: `<step>/metrics.jsonl`.
    pub fn metrics_file(&self, step: &str) -> PathBuf {
        self.step_dir(step).join(METRICS_FILE)
    }

    /// The log folder of `step` (`user/`, `sys/`, `job_result.txt`).
    pub fn log_dir(&self, step: &str) -> PathBuf {
        self.step_dir(step).join("logs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let l = RunLayout::new("/s/runs/r1");
        assert_eq!(
            l.output_dir("a", "out"),
            Path::new("/s/runs/r1/a/outputs/out")
        );
        assert_eq!(l.work_dir("a"), Path::new("/s/runs/r1/a/work"));
        assert_eq!(l.log_dir("a"), Path::new("/s/runs/r1/a/logs"));
        assert_eq!(l.metrics_file("a"), Path::new("/s/runs/r1/a/metrics.jsonl"));
    }

    #[test]
    fn outputs_are_found_by_data_name_and_old_runs_by_port() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let l = RunLayout::new(dir.path());
        // Nothing there yet: the data name.
        assert_eq!(
            l.find_output_dir("a", "output", "scores"),
            dir.path().join("a/outputs/scores")
        );
        // A run made before folders were named by data: the port's folder.
        fs_err::create_dir_all(dir.path().join("a/outputs/output"))?;
        assert_eq!(
            l.find_output_dir("a", "output", "scores"),
            dir.path().join("a/outputs/output")
        );
        // Both: the data name wins.
        fs_err::create_dir_all(dir.path().join("a/outputs/scores"))?;
        assert_eq!(
            l.find_output_dir("a", "output", "scores"),
            dir.path().join("a/outputs/scores")
        );
        Ok(())
    }
}
