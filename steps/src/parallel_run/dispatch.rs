//! The coordinator: hands mini-batches to workers, retries failed tries, applies the failure
//! limits, commits finished mini-batches in groups, reports progress, and stops everything
//! when a limit is exceeded or the run is cancelled.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, RecvTimeoutError};
use serde_json::{json, Value};
use stepgraph_engine::{Event, ProgressLog, StepContext, StepCounts};

use super::config::ParallelRunConfig;
use super::gather::{Gatherer, Piece};
use super::partition::MiniBatchSpec;
use super::worker::{KillHandle, TryOutcome, Worker};
use super::writes::WriteWatch;

/// Finished mini-batches are made durable at most this often (never one fsync per
/// mini-batch). A crash loses at most the mini-batches finished since the last commit.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);

const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Mini-batches handed out per worker at once (one running, the rest queued). After an abort,
/// queued ones come back unrun.
const QUEUED_PER_WORKER: usize = 4;

/// Stops and kills the workers when dropped while armed.
struct StopGuard<'a> {
    stop: &'a AtomicBool,
    kill: &'a [KillHandle],
    armed: bool,
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.stop.store(true, Ordering::SeqCst);
            self.kill.iter().for_each(KillHandle::kill);
        }
    }
}

/// A mini-batch that failed after all its tries.
#[derive(Debug, Clone)]
pub(crate) struct FailedBatch {
    pub index: u64,
    pub items: String,
    pub tries: u32,
    pub error: String,
}

/// What the coordinator ended with.
pub(crate) struct Outcome {
    pub counts: StepCounts,
    pub failed: Vec<FailedBatch>,
    /// `Some(reason)` when the step must fail.
    pub abort: Option<String>,
}

/// A short description of a mini-batch's items for logs and errors.
pub(crate) fn describe_items(spec: &MiniBatchSpec) -> String {
    match spec {
        MiniBatchSpec::Files { files } => {
            let names: Vec<String> = files
                .iter()
                .take(5)
                .map(|f| {
                    f.file_name()
                        .map(|n| crate::process::escape_controls(&n.to_string_lossy()))
                        .unwrap_or_default()
                })
                .collect();
            if files.len() > 5 {
                format!("{} and {} more", names.join(", "), files.len() - 5)
            } else {
                names.join(", ")
            }
        }
        MiniBatchSpec::Tabular {
            segments,
            rows,
            partition_key_value,
            ..
        } => {
            let files: Vec<String> = segments
                .iter()
                .map(|s| {
                    s.path
                        .file_name()
                        .map(|n| crate::process::escape_controls(&n.to_string_lossy()))
                        .unwrap_or_default()
                })
                .collect();
            match partition_key_value {
                Some(k) => format!("{rows} rows of {} where {k:?}", files.join(", ")),
                None => format!("{rows} rows of {}", files.join(", ")),
            }
        }
    }
}

struct Limits {
    error_threshold: i64,
    allowed_failed_count: i64,
    allowed_failed_percent: Option<f64>,
}

impl Limits {
    fn exceeded(&self, c: &StepCounts, total: u64, all_scheduled: bool) -> Option<String> {
        if self.error_threshold >= 0 && c.failed_items as i64 > self.error_threshold {
            return Some(format!(
                "{} failed items exceed error_threshold {}",
                c.failed_items, self.error_threshold
            ));
        }
        if self.allowed_failed_count >= 0 && c.failed_units as i64 > self.allowed_failed_count {
            return Some(format!(
                "{} failed mini-batches exceed allowed_failed_count {}",
                c.failed_units, self.allowed_failed_count
            ));
        }
        if let Some(p) = self.allowed_failed_percent {
            if all_scheduled && total > 0 {
                let pct = c.failed_units as f64 * 100.0 / total as f64;
                if pct > p {
                    return Some(format!(
                        "{} of {total} mini-batches failed ({pct:.1}%), over allowed_failed_percent {p}",
                        c.failed_units
                    ));
                }
            }
        }
        None
    }
}

/// Make the finished mini-batches durable; a summary_only step's write watch saves the
/// listing of its output folder that goes with the commit.
fn commit(log: &mut ProgressLog<'_>, watch: Option<&WriteWatch>) -> Result<(), String> {
    let listing = watch.and_then(WriteWatch::committing);
    log.commit().map_err(|e| e.to_string())?;
    if let Some(w) = watch {
        w.save(listing);
    }
    Ok(())
}

/// Run every pending mini-batch on `workers`; committed results go to `log`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch(
    ctx: &StepContext<'_>,
    cfg: &ParallelRunConfig,
    specs: &[MiniBatchSpec],
    pending: Vec<u64>,
    resumed: &BTreeMap<u64, Value>,
    workers: Vec<Box<dyn Worker>>,
    kill: Vec<KillHandle>,
    log: &mut ProgressLog<'_>,
    mut gatherer: Option<&mut Gatherer>,
    watch: Option<&WriteWatch>,
    sys_log: &mut dyn Write,
) -> Result<Outcome, String> {
    let total = specs.len() as u64;
    let limits = Limits {
        error_threshold: cfg.error_threshold,
        allowed_failed_count: cfg.allowed_failed_count.unwrap_or(-1),
        allowed_failed_percent: cfg.allowed_failed_percent,
    };
    let mut counts = StepCounts::in_units(super::UNIT, total);
    counts.resumed_units = resumed.len() as u64;
    for meta in resumed.values() {
        counts.items += meta.get("items").and_then(Value::as_u64).unwrap_or(0);
        counts.failed_items += meta
            .get("failed_items")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }
    let mut done = resumed.len() as u64;
    let mut failed = Vec::new();
    let mut abort = None;
    let mut queue: VecDeque<u64> = pending.into();
    let mut tries: BTreeMap<u64, u32> = BTreeMap::new();
    let mut last_error: BTreeMap<u64, String> = BTreeMap::new();
    let mut init_failures: BTreeMap<usize, u32> = BTreeMap::new();
    let n_workers = workers.len();

    let (job_tx, job_rx) = unbounded::<u64>();
    let (res_tx, res_rx) = unbounded::<(usize, u64, TryOutcome)>();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n_workers.max(1))
        .thread_name(|i| format!("stepgraph-worker-{i}"))
        .build()
        .map_err(|e| format!("cannot start worker threads: {e}"))?;

    let emit_progress = |counts: &StepCounts, done: u64| {
        ctx.events.emit(&Event::Progress {
            step: ctx.step.to_string(),
            unit: counts.unit.clone(),
            done,
            total,
            items: counts.items,
            failed_items: counts.failed_items,
            failed_units: counts.failed_units,
        });
    };
    emit_progress(&counts, done);

    let stop = AtomicBool::new(false);
    let result: Result<(), String> = pool.in_place_scope(|scope| {
        for (wid, mut worker) in workers.into_iter().enumerate() {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            let stop = &stop;
            scope.spawn(move |_| {
                for index in job_rx.iter() {
                    let Some(spec) = specs.get(index as usize) else { continue };
                    // After an abort, queued mini-batches are handed back unrun.
                    let outcome = if stop.load(Ordering::SeqCst) {
                        TryOutcome::Cancelled
                    } else if let Some(w) = watch {
                        let before = w.before();
                        let outcome = worker.run(index, spec);
                        w.after(index, before, matches!(outcome, TryOutcome::Ok { .. }));
                        outcome
                    } else {
                        worker.run(index, spec)
                    };
                    if res_tx.send((wid, index, outcome)).is_err() {
                        break;
                    }
                }
                worker.shutdown();
            });
        }
        drop(res_tx);
        // Leaving this loop with an error (a failed commit) must not leave workers running
        // their queued mini-batches: the guard stops and kills them unless disarmed.
        let mut guard = StopGuard {
            stop: &stop,
            kill: &kill,
            armed: true,
        };
        let mut in_flight = 0usize;
        let mut last_commit = Instant::now();
        let mut last_progress = Instant::now();
        let step_result = loop {
            if abort.is_none() {
                // A few mini-batches queued per worker, so workers never wait while the
                // coordinator commits (an fsync) or gathers results.
                while in_flight < QUEUED_PER_WORKER * n_workers {
                    let Some(i) = queue.pop_front() else { break };
                    if job_tx.send(i).is_err() {
                        break;
                    }
                    in_flight += 1;
                }
            }
            if in_flight == 0 {
                break Ok(());
            }
            let (wid, index, outcome) = match res_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    if ctx.cancel.is_cancelled() && abort.is_none() {
                        abort = Some("run cancelled".to_string());
                        stop.store(true, Ordering::SeqCst);
                        kill.iter().for_each(KillHandle::kill);
                    }
                    if log.pending() > 0 && last_commit.elapsed() >= COMMIT_INTERVAL {
                        commit(log, watch)?;
                        last_commit = Instant::now();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            };
            in_flight -= 1;
            if abort.is_some() {
                continue;
            }
            let spec = &specs[index as usize];
            let k = spec.item_count();
            let mut final_failure = None;
            match outcome {
                TryOutcome::Ok { count, rows, columns } => {
                    init_failures.remove(&wid);
                    let failed_items = k.saturating_sub(count);
                    counts.items += k;
                    counts.failed_items += failed_items;
                    let meta = json!({"items": k, "count": count, "failed_items": failed_items, "columns": &columns});
                    let rec = log.append(index, meta, &rows).map_err(|e| e.to_string())?;
                    if let Some(g) = gatherer.as_deref_mut() {
                        g.add(index, Piece::Rows { rows, columns, rec }, log)?;
                    }
                    if failed_items > 0 {
                        let _ = writeln!(sys_log, "mini-batch {index}: run() returned {count} of {k} items; {failed_items} counted as failed");
                    }
                    done += 1;
                }
                TryOutcome::InitFailed(text) => {
                    let n = init_failures.entry(wid).or_insert(0);
                    *n += 1;
                    let _ = writeln!(sys_log, "worker-{wid}: init failed (try {n}):\n{text}");
                    if *n >= cfg.run_max_try {
                        abort = Some(format!("init() failed on worker-{wid} {n} times:\n{text}"));
                        stop.store(true, Ordering::SeqCst);
                        kill.iter().for_each(KillHandle::kill);
                        continue;
                    }
                    ctx.message("warn", format!("worker-{wid}: init failed, restarting it"));
                    queue.push_front(index);
                }
                TryOutcome::Cancelled => {
                    abort = Some("run cancelled".into());
                    stop.store(true, Ordering::SeqCst);
                        kill.iter().for_each(KillHandle::kill);
                    continue;
                }
                TryOutcome::Raised(e) | TryOutcome::Died(e) => final_failure = Some(e),
                TryOutcome::TimedOut(secs) => {
                    final_failure = Some(format!(
                        "run() did not return within run_invocation_timeout ({secs} s); the worker was killed and replaced"
                    ))
                }
            }
            if let Some(error) = final_failure {
                let t = tries.entry(index).or_insert(0);
                *t += 1;
                let _ = writeln!(sys_log, "mini-batch {index} try {t} on worker-{wid} failed: {error}");
                last_error.insert(index, error.clone());
                if *t < cfg.run_max_try {
                    ctx.message("warn", format!("mini-batch {index} failed (try {t} of {}), retrying", cfg.run_max_try));
                    queue.push_front(index);
                } else {
                    counts.items += k;
                    counts.failed_items += k;
                    counts.failed_units += 1;
                    failed.push(FailedBatch {
                        index,
                        items: describe_items(spec),
                        tries: *t,
                        error,
                    });
                    if let Some(g) = gatherer.as_deref_mut() {
                        g.add(index, Piece::Nothing, log)?;
                    }
                    done += 1;
                }
            }
            let all_scheduled = queue.is_empty();
            if let Some(reason) = limits.exceeded(&counts, total, all_scheduled) {
                abort = Some(reason);
                stop.store(true, Ordering::SeqCst);
                        kill.iter().for_each(KillHandle::kill);
            }
            if log.pending() > 0 && last_commit.elapsed() >= COMMIT_INTERVAL {
                commit(log, watch)?;
                last_commit = Instant::now();
            }
            if last_progress.elapsed() >= PROGRESS_INTERVAL {
                emit_progress(&counts, done);
                last_progress = Instant::now();
            }
        };
        guard.armed = false;
        drop(job_tx);
        step_result
    });
    // Whatever finished is kept, even when the step fails: a rerun resumes from it.
    commit(log, watch)?;
    emit_progress(&counts, done);
    result?;
    Ok(Outcome {
        counts,
        failed,
        abort,
    })
}
