//! Per-process system logs as Azure lays them out: `logs/sys/node/<node>/<process>.txt`, one
//! line when a worker picks a mini-batch up and one when it is done (items, succeeded and
//! failed counts, duration). Best effort: a log that cannot be written never fails the step.

use fs_err::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::dispatch::describe_items;
use super::partition::MiniBatchSpec;
use super::worker::TryOutcome;
use super::workers::LogPlace;

/// The system log of one worker process.
pub(super) struct NodeLog {
    file: Option<File>,
}

impl NodeLog {
    /// The log of worker `wid` below the step's `log_dir` (`logs/`).
    pub(super) fn open(log_dir: &Path, wid: usize, per_node: u32) -> Self {
        let place = LogPlace::of(wid, per_node);
        let dir = log_dir.join("sys").join("node").join(&place.node);
        let file = fs_err::create_dir_all(&dir).ok().and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.txt", place.process)))
                .ok()
        });
        NodeLog { file }
    }

    fn line(&mut self, text: &str) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{text}");
        }
    }

    /// Mini-batch `index` was picked up.
    pub(super) fn started(&mut self, index: u64, spec: &MiniBatchSpec) {
        let text = format!(
            "mini-batch {index}: picked up, {} items ({})",
            spec.item_count(),
            describe_items(spec)
        );
        self.line(&text);
    }

    /// Mini-batch `index` ended with `outcome` after `took`.
    pub(super) fn finished(
        &mut self,
        index: u64,
        spec: &MiniBatchSpec,
        outcome: &TryOutcome,
        took: Duration,
    ) {
        let k = spec.item_count();
        let secs = took.as_secs_f64();
        let what = match outcome {
            TryOutcome::Ok { count, .. } => format!(
                "done: {k} items, {} succeeded, {} failed",
                count.min(&k),
                k.saturating_sub(*count)
            ),
            TryOutcome::Raised(_) => "failed: run() raised".to_string(),
            TryOutcome::Died(_) => "failed: the worker died".to_string(),
            TryOutcome::TimedOut(t) => format!("failed: run() timed out after {t} s"),
            TryOutcome::InitFailed(_) => "not run: init() failed".to_string(),
            TryOutcome::Cancelled => "not run: cancelled".to_string(),
            TryOutcome::Lost(_) => "not finished: its node was lost (requeued)".to_string(),
        };
        self.line(&format!("mini-batch {index}: {what} in {secs:.3} s"));
    }
}
