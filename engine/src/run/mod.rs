//! Executing a pipeline: steps in dependency order, independent steps concurrently (bounded
//! by `jobs`), cache hits materialised instead of run, a failed step's descendants skipped
//! while unrelated branches finish.
//!
//! `scheduler.rs` decides what runs when (the ready set, reruns for damaged inputs, skipping
//! the descendants of a failure); `node.rs` executes one node and says how it ended
//! ([`node::NodeOutcome`]); this file opens and closes the run record.

mod node;
mod scheduler;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::error::EngineError;
use crate::events::{Event, EventSink};
use crate::model::{GraphSnapshot, StepStatus};
use crate::pipeline::Pipeline;
use crate::plan::PlanOptions;
use crate::step::CancelFlag;
use crate::store::records::{RunRecord, RunStatus, StepRecord, SCHEMA_VERSION};
use crate::store::{now_unix_ms, RunLayout, Store};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parameters, forced steps, verification.
    pub plan: PlanOptions,
    /// How many steps may execute at once (at least 1).
    pub jobs: usize,
    /// Set to stop the run (Ctrl-C).
    pub cancel: CancelFlag,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            plan: PlanOptions::default(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            cancel: CancelFlag::new(),
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Overall status.
    pub status: RunStatus,
    /// Per step, in topological order.
    pub steps: Vec<StepRecord>,
    /// Wall time.
    pub duration_ms: u64,
    /// The run's folder (`runs/<run-id>` in the store).
    pub run_dir: PathBuf,
    /// The pipeline's graph (steps, their ports and data names).
    pub graph: GraphSnapshot,
}

impl RunSummary {
    /// The record of step `name`.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The materialised folder of output `port` of step `step` (`outputs/<data name>`; the
    /// output's data name is accepted as well as its port).
    pub fn output_dir(&self, step: &str, port: &str) -> PathBuf {
        let data = self
            .graph
            .nodes
            .iter()
            .find(|n| n.name == step)
            .and_then(|n| n.outputs.iter().find(|o| o.port == port))
            .map_or(port, |o| o.data.as_str());
        RunLayout::new(&self.run_dir).output_dir(step, data)
    }
}

/// A new run id: UTC time to the second, then 4 hex digits to keep ids unique.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let digits: String = stamp.chars().filter(|c| c.is_ascii_digit()).collect();
    let (date, time) = digits.split_at(digits.len().min(8));
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{date}-{time}-{salt:04x}")
}

/// The start time of a new run: now, but strictly later than any run started before in this
/// process, so runs started within one millisecond still list in order.
fn run_start_ms() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_unix_ms();
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(prev + 1)
}

/// The most steps that execute at once, whatever `jobs` asks for.
pub(crate) const MAX_JOBS: usize = 256;

/// Run `pipeline` against `store`.
///
/// # Errors
/// Bad parameters or forced step names, and store failures. A failing step is NOT an error:
/// it is reported in the summary (status `failed`).
pub fn run(
    pipeline: &Pipeline,
    store: &Store,
    opts: &RunOptions,
    events: &dyn EventSink,
) -> Result<RunSummary, EngineError> {
    let params = pipeline.resolve_params(&opts.plan.params)?;
    for f in &opts.plan.force {
        if pipeline.node_index(f).is_none() {
            return Err(EngineError::UnknownStep { name: f.clone() });
        }
    }
    let run_id = new_run_id();
    let started = Instant::now();
    let mut record = RunRecord {
        schema: SCHEMA_VERSION,
        id: run_id.clone(),
        pipeline: pipeline.name().to_string(),
        started_unix_ms: run_start_ms(),
        finished_unix_ms: None,
        status: RunStatus::Running,
        params: params.clone(),
        graph: pipeline.snapshot(),
        steps: pipeline
            .topological_order()
            .iter()
            .map(|i| StepRecord::new(pipeline.node(*i).name.clone(), StepStatus::Pending))
            .collect(),
        pid: Some(std::process::id()),
    };
    store.run_put(&record)?;
    events.emit(&Event::RunStarted {
        run_id: run_id.clone(),
        pipeline: pipeline.name().to_string(),
        steps: pipeline
            .step_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    });
    // No more threads than steps (nor than MAX_JOBS): `--jobs 100000` is a wish, not a reason
    // to exhaust the process's threads.
    let jobs = opts
        .jobs
        .clamp(1, MAX_JOBS)
        .min(pipeline.topological_order().len().max(1));
    let exec = node::NodeExec::new(pipeline, store, &params, opts, events, &run_id);
    let (jobs, spawn_error) = scheduler::schedule(&exec, &mut record, jobs);
    let duration_ms = finish(&mut record, store, opts, events, started)?;
    if jobs == 0 {
        if let Some(source) = spawn_error {
            return Err(EngineError::Threads { source });
        }
    }
    Ok(RunSummary {
        run_dir: store.run_dir(&run_id),
        run_id,
        status: record.status,
        steps: record.steps,
        duration_ms,
        graph: record.graph,
    })
}

/// Close the run record: steps never reached are cancelled or skipped, the run's status is
/// decided, and the record is written and flushed. Returns the run's wall time.
fn finish(
    record: &mut RunRecord,
    store: &Store,
    opts: &RunOptions,
    events: &dyn EventSink,
    started: Instant,
) -> Result<u64, EngineError> {
    let cancelled = opts.cancel.is_cancelled();
    for s in &mut record.steps {
        if s.status == StepStatus::Pending {
            s.status = if cancelled {
                StepStatus::Cancelled
            } else {
                StepStatus::Skipped
            };
            if cancelled {
                events.emit(&Event::StepSkipped {
                    step: s.name.clone(),
                    reason: "run cancelled".into(),
                });
            }
        }
    }
    record.status = if cancelled {
        RunStatus::Cancelled
    } else if record.steps.iter().any(|s| {
        matches!(
            s.status,
            StepStatus::Failed | StepStatus::Skipped | StepStatus::Cancelled
        )
    }) {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    record.finished_unix_ms = Some(now_unix_ms());
    store.run_put(record)?;
    store.flush()?;
    let duration_ms = started.elapsed().as_millis() as u64;
    events.emit(&Event::RunFinished {
        run_id: record.id.clone(),
        steps: record
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.status))
            .collect(),
        duration_ms,
    });
    Ok(duration_ms)
}
