//! The coordinator: hands mini-batches to workers, retries failed tries, applies the failure
//! limits, commits finished mini-batches in groups, reports progress, and stops everything
//! when a limit is exceeded or the run is cancelled.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};
use stepgraph_engine::{Event, StepContext, StepCounts, StepError};

use super::collect::Collector;
use super::config::{Limit, ParallelRunConfig};
use super::gather::{Gatherer, Piece};
use super::partition::MiniBatchSpec;
use super::results::Results;
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
    /// Mini-batches settled by this execution (succeeded or failed after all tries).
    pub ran: u64,
    pub failed: Vec<FailedBatch>,
    /// `Some(reason)` when the step must fail.
    pub abort: Option<String>,
}

/// A short description of a mini-batch's items for logs and errors.
pub(crate) fn describe_items(spec: &MiniBatchSpec) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| crate::process::escape_controls(&n.to_string_lossy()))
            .unwrap_or_default()
    };
    match spec {
        MiniBatchSpec::Files {
            files,
            partition_key_value,
            ..
        } => {
            let names: Vec<String> = files.iter().take(5).map(|f| name(f)).collect();
            let list = if files.len() > 5 {
                format!("{} and {} more", names.join(", "), files.len() - 5)
            } else {
                names.join(", ")
            };
            match partition_key_value {
                Some(k) => format!("{list} where {k:?}"),
                None => list,
            }
        }
        MiniBatchSpec::Tabular {
            segments,
            rows,
            partition_key_value,
            ..
        } => {
            let files: Vec<String> = segments.iter().map(|s| name(&s.path)).collect();
            match partition_key_value {
                Some(k) => format!("{rows} rows of {} where {k:?}", files.join(", ")),
                None => format!("{rows} rows of {}", files.join(", ")),
            }
        }
    }
}

struct Limits {
    error_threshold: Limit,
    allowed_failed_count: Limit,
    allowed_failed_percent: Limit<f64>,
}

impl Limits {
    fn exceeded(&self, c: &StepCounts, total: u64, all_scheduled: bool) -> Option<String> {
        if self.error_threshold.exceeded_by(c.failed_items) {
            return Some(format!(
                "{} failed items exceed error_threshold {}",
                c.failed_items, self.error_threshold
            ));
        }
        if self.allowed_failed_count.exceeded_by(c.failed_units) {
            return Some(format!(
                "{} failed mini-batches exceed allowed_failed_count {}",
                c.failed_units, self.allowed_failed_count
            ));
        }
        if let Limit::AtMost(p) = self.allowed_failed_percent {
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

/// The start of the `logs/sys/events.txt` line written when a mini-batch finishes:
/// `mini-batch done N at UNIX_MS ms: K items on worker-W`.
pub const DONE_PREFIX: &str = "mini-batch done ";

/// Now, in Unix milliseconds (0 before 1970).
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// One run of the coordinator: every pending mini-batch of a step, on its workers.
pub(crate) struct Dispatch<'a, 'log> {
    /// The step being run: its events, messages and cancel flag.
    pub(crate) ctx: &'a StepContext<'a>,
    /// The step's configuration: tries and failure limits.
    pub(crate) config: &'a ParallelRunConfig,
    /// Every mini-batch of the step, by index.
    pub(crate) specs: &'a [MiniBatchSpec],
    /// The indices of the mini-batches to run, in order.
    pub(crate) pending: Vec<u64>,
    /// The records of the mini-batches an earlier run committed (or, for an incremental
    /// step, the memo holds), by index.
    pub(crate) resumed: &'a BTreeMap<u64, Value>,
    /// Whether `resumed` were reused from the unit memo (an incremental step) rather than
    /// resumed from an interrupted run: they are counted apart.
    pub(crate) reused: bool,
    /// The workers: one thread each.
    pub(crate) workers: Vec<Box<dyn Worker>>,
    /// Handles that kill the process workers when the run stops.
    pub(crate) kill: Vec<KillHandle>,
    /// Where finished mini-batches are committed.
    pub(crate) log: &'a mut Results<'log>,
    /// append_row: gathers the rows in index order while mini-batches finish.
    pub(crate) gatherer: Option<&'a mut Gatherer>,
    /// summary_only: watches the files entries write.
    pub(crate) watch: Option<&'a WriteWatch>,
    /// An incremental summary_only step: takes each mini-batch's files from its worker's
    /// own folder.
    pub(crate) collect: Option<&'a Collector>,
    /// The step's `logs/sys/events.txt`.
    pub(crate) sys_log: &'a mut dyn Write,
}

/// A try's result as a worker thread reports it: (worker, mini-batch, outcome).
type Report = (usize, u64, TryOutcome);

impl Dispatch<'_, '_> {
    /// Run every pending mini-batch; whatever finished is committed, even when the step fails
    /// (a rerun resumes from it).
    ///
    /// # Errors
    /// The worker threads cannot start, or a commit or the gathered output failed.
    pub(crate) fn run(self) -> Result<Outcome, StepError> {
        let Dispatch {
            ctx,
            config,
            specs,
            pending,
            resumed,
            reused,
            workers,
            kill,
            log,
            gatherer,
            watch,
            collect,
            sys_log,
        } = self;
        let n_workers = workers.len();
        let stop = AtomicBool::new(false);
        let mut c = Coordinator::new(ctx, config, specs, resumed, &stop, &kill);
        if reused {
            c.counts.reused_units = std::mem::take(&mut c.counts.resumed_units);
        }
        c.queue = pending.into();
        // Failures recorded by resumed or reused mini-batches count as in a full run: they
        // alone may exceed a limit.
        let total = specs.len() as u64;
        if let Some(reason) = c.limits.exceeded(&c.counts, total, c.queue.is_empty()) {
            c.stop_all(format!(
                "{reason} (failures recorded by the mini-batches reused or resumed from earlier runs)"
            ));
        }
        c.emit_progress();
        let (job_tx, job_rx) = unbounded::<u64>();
        let (res_tx, res_rx) = unbounded::<Report>();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_workers.max(1))
            .thread_name(|i| format!("stepgraph-worker-{i}"))
            .build()
            .map_err(|e| StepError::with_source("cannot start worker threads", e))?;
        let mut sinks = Sinks {
            log,
            gatherer,
            watch,
            collect,
            sys_log,
        };
        let result: Result<(), StepError> = pool.in_place_scope(|scope| {
            for (wid, mut worker) in workers.into_iter().enumerate() {
                let (job_rx, res_tx, stop) = (job_rx.clone(), res_tx.clone(), &stop);
                scope.spawn(move |_| {
                    let mut node_log = super::node_log::NodeLog::open(
                        ctx.log_dir,
                        wid,
                        config.process_count_per_node(),
                    );
                    for index in job_rx.iter() {
                        let Some(spec) = specs.get(index as usize) else {
                            continue;
                        };
                        // After an abort, queued mini-batches are handed back unrun.
                        let outcome = if stop.load(Ordering::SeqCst) {
                            TryOutcome::Cancelled
                        } else {
                            node_log.started(index, spec);
                            let began = Instant::now();
                            let outcome = run_watched(worker.as_mut(), index, spec, watch);
                            let outcome = match collect {
                                Some(c) => collected(c, wid, index, outcome),
                                None => outcome,
                            };
                            node_log.finished(index, spec, &outcome, began.elapsed());
                            outcome
                        };
                        if res_tx.send((wid, index, outcome)).is_err() {
                            break;
                        }
                    }
                    worker.shutdown();
                });
            }
            drop(res_tx);
            // Leaving the loop with an error (a failed commit) must not leave workers running
            // their queued mini-batches: the guard stops and kills them unless disarmed.
            let mut guard = StopGuard {
                stop: &stop,
                kill: &kill,
                armed: true,
            };
            let step_result = c.coordinate(&job_tx, &res_rx, &mut sinks, n_workers);
            guard.armed = false;
            drop(job_tx);
            step_result
        });
        sinks.commit()?;
        c.emit_progress();
        result?;
        Ok(Outcome {
            ran: c.done.saturating_sub(resumed.len() as u64),
            counts: c.counts,
            failed: c.failed,
            abort: c.abort,
        })
    }
}

/// One try on `worker`; a summary_only step's watch notes the files it wrote.
fn run_watched(
    worker: &mut dyn Worker,
    index: u64,
    spec: &MiniBatchSpec,
    watch: Option<&WriteWatch>,
) -> TryOutcome {
    let Some(w) = watch else {
        return worker.run(index, spec);
    };
    let before = w.before();
    let outcome = worker.run(index, spec);
    w.after(index, before, matches!(outcome, TryOutcome::Ok { .. }));
    outcome
}

/// An incremental summary_only step: a successful try's files become its mini-batch's; a
/// failed try's are dropped. A successful try whose files cannot be taken failed.
fn collected(c: &Collector, wid: usize, index: u64, outcome: TryOutcome) -> TryOutcome {
    if !matches!(outcome, TryOutcome::Ok { .. }) {
        c.discard(wid);
        return outcome;
    }
    match c.take(wid, index) {
        Ok(()) => outcome,
        Err(e) => {
            c.discard(wid);
            TryOutcome::Raised(format!("the files run() wrote could not be collected: {e}"))
        }
    }
}

/// Where the coordinator puts what finished.
struct Sinks<'a, 'log> {
    log: &'a mut Results<'log>,
    gatherer: Option<&'a mut Gatherer>,
    watch: Option<&'a WriteWatch>,
    collect: Option<&'a Collector>,
    sys_log: &'a mut dyn Write,
}

impl Sinks<'_, '_> {
    /// Make the finished mini-batches durable; a summary_only step's write watch saves the
    /// listing of its output folder that goes with the commit.
    fn commit(&mut self) -> Result<(), StepError> {
        let listing = self.watch.and_then(WriteWatch::committing);
        self.log.commit()?;
        if let Some(w) = self.watch {
            w.save(listing);
        }
        Ok(())
    }

    /// Commit when there is something to commit and the last commit is [`COMMIT_INTERVAL`]
    /// old.
    fn commit_if_due(&mut self, last_commit: &mut Instant) -> Result<(), StepError> {
        if self.log.pending() > 0 && last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit()?;
            *last_commit = Instant::now();
        }
        Ok(())
    }

    /// Gather a finished mini-batch's piece (append_row).
    fn gather(&mut self, index: u64, piece: Piece) -> Result<(), StepError> {
        match self.gatherer.as_deref_mut() {
            Some(g) => g.add(index, piece, self.log),
            None => Ok(()),
        }
    }
}

/// The coordinator's tally while mini-batches run.
struct Coordinator<'a> {
    ctx: &'a StepContext<'a>,
    config: &'a ParallelRunConfig,
    specs: &'a [MiniBatchSpec],
    limits: Limits,
    stop: &'a AtomicBool,
    kill: &'a [KillHandle],
    counts: StepCounts,
    done: u64,
    failed: Vec<FailedBatch>,
    abort: Option<String>,
    queue: VecDeque<u64>,
    tries: BTreeMap<u64, u32>,
    init_failures: BTreeMap<usize, u32>,
}

impl<'a> Coordinator<'a> {
    fn new(
        ctx: &'a StepContext<'a>,
        config: &'a ParallelRunConfig,
        specs: &'a [MiniBatchSpec],
        resumed: &BTreeMap<u64, Value>,
        stop: &'a AtomicBool,
        kill: &'a [KillHandle],
    ) -> Self {
        let mut counts = StepCounts::in_units(super::UNIT, specs.len() as u64);
        counts.resumed_units = resumed.len() as u64;
        for meta in resumed.values() {
            counts.items += meta.get("items").and_then(Value::as_u64).unwrap_or(0);
            counts.failed_items += meta
                .get("failed_items")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        Coordinator {
            ctx,
            config,
            specs,
            limits: Limits {
                error_threshold: config.error_threshold(),
                allowed_failed_count: config.allowed_failed_count(),
                allowed_failed_percent: config.allowed_failed_percent(),
            },
            stop,
            kill,
            counts,
            done: resumed.len() as u64,
            failed: Vec::new(),
            abort: None,
            queue: VecDeque::new(),
            tries: BTreeMap::new(),
            init_failures: BTreeMap::new(),
        }
    }

    fn emit_progress(&self) {
        self.ctx.events.emit(&Event::Progress {
            step: self.ctx.step.to_string(),
            unit: self.counts.unit.clone(),
            done: self.done,
            total: self.specs.len() as u64,
            items: self.counts.items,
            failed_items: self.counts.failed_items,
            failed_units: self.counts.failed_units,
            reused: self.counts.reused_units,
        });
    }

    /// Stop the run: no more mini-batches are handed out, the queued ones come back unrun and
    /// the process workers are killed.
    fn stop_all(&mut self, reason: String) {
        self.abort = Some(reason);
        self.stop.store(true, Ordering::SeqCst);
        self.kill.iter().for_each(KillHandle::kill);
    }

    /// Hand out mini-batches and settle their tries until none is left or the run stopped.
    fn coordinate(
        &mut self,
        jobs: &Sender<u64>,
        reports: &Receiver<Report>,
        sinks: &mut Sinks<'_, '_>,
        n_workers: usize,
    ) -> Result<(), StepError> {
        let mut in_flight = 0usize;
        let mut last_commit = Instant::now();
        let mut last_progress = Instant::now();
        loop {
            if self.abort.is_none() {
                // A few mini-batches queued per worker, so workers never wait while the
                // coordinator commits (an fsync) or gathers results.
                while in_flight < QUEUED_PER_WORKER * n_workers {
                    let Some(i) = self.queue.pop_front() else {
                        break;
                    };
                    if jobs.send(i).is_err() {
                        break;
                    }
                    in_flight += 1;
                }
            }
            if in_flight == 0 {
                return Ok(());
            }
            let (wid, index, outcome) = match reports.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    if self.ctx.cancel.is_cancelled() && self.abort.is_none() {
                        self.stop_all("run cancelled".to_string());
                    }
                    sinks.commit_if_due(&mut last_commit)?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            in_flight -= 1;
            if self.abort.is_some() || !self.settle(wid, index, outcome, sinks)? {
                continue;
            }
            let all_scheduled = self.queue.is_empty();
            let total = self.specs.len() as u64;
            if let Some(reason) = self.limits.exceeded(&self.counts, total, all_scheduled) {
                self.stop_all(reason);
            }
            sinks.commit_if_due(&mut last_commit)?;
            if last_progress.elapsed() >= PROGRESS_INTERVAL {
                self.emit_progress();
                last_progress = Instant::now();
            }
        }
    }

    /// Count one try's outcome: a result, a retry, a failed mini-batch. False when the try
    /// stopped the run.
    fn settle(
        &mut self,
        wid: usize,
        index: u64,
        outcome: TryOutcome,
        sinks: &mut Sinks<'_, '_>,
    ) -> Result<bool, StepError> {
        let (cfg, ctx) = (self.config, self.ctx);
        let spec = &self.specs[index as usize];
        let k = spec.item_count();
        let error = match outcome {
            TryOutcome::Ok {
                count,
                rows,
                columns,
            } => {
                self.init_failures.remove(&wid);
                let failed_items = k.saturating_sub(count);
                self.counts.items += k;
                self.counts.failed_items += failed_items;
                let meta = json!({"items": k, "count": count, "failed_items": failed_items, "columns": &columns});
                let files = sinks.collect.map(|c| c.batch_dir(index));
                let rec = sinks.log.append(index, meta, &rows, files.as_deref())?;
                sinks.gather(index, Piece::Rows { rows, columns, rec })?;
                if failed_items > 0 {
                    let _ = writeln!(sinks.sys_log, "mini-batch {index}: run() returned {count} of {k} items; {failed_items} counted as failed");
                }
                // When each mini-batch finished, for the throughput chart of `stepgraph report`.
                let _ = writeln!(
                    sinks.sys_log,
                    "{DONE_PREFIX}{index} at {} ms: {k} items on worker-{wid}",
                    unix_ms()
                );
                self.done += 1;
                return Ok(true);
            }
            TryOutcome::InitFailed(text) => {
                let n = self.init_failures.entry(wid).or_insert(0);
                *n += 1;
                let n = *n;
                let _ = writeln!(sinks.sys_log, "worker-{wid}: init failed (try {n}):\n{text}");
                if n >= cfg.run_max_try() {
                    self.stop_all(format!("init() failed on worker-{wid} {n} times:\n{text}"));
                    return Ok(false);
                }
                ctx.message("warn", format!("worker-{wid}: init failed, restarting it"));
                self.queue.push_front(index);
                return Ok(true);
            }
            TryOutcome::Cancelled => {
                self.stop_all("run cancelled".into());
                return Ok(false);
            }
            // A remote worker's node was lost: run it again elsewhere, not counted as a try.
            TryOutcome::Lost(None) => {
                self.queue.push_front(index);
                return Ok(true);
            }
            TryOutcome::Lost(Some(reason)) => {
                self.stop_all(reason);
                return Ok(false);
            }
            TryOutcome::Raised(e) | TryOutcome::Died(e) => e,
            TryOutcome::TimedOut(secs) => format!(
                "run() did not return within run_invocation_timeout ({secs} s); the worker was killed and replaced"
            ),
        };
        let t = self.tries.entry(index).or_insert(0);
        *t += 1;
        let t = *t;
        let _ = writeln!(
            sinks.sys_log,
            "mini-batch {index} try {t} on worker-{wid} failed: {error}"
        );
        if t < cfg.run_max_try() {
            ctx.message(
                "warn",
                format!(
                    "mini-batch {index} failed (try {t} of {}), retrying",
                    cfg.run_max_try()
                ),
            );
            self.queue.push_front(index);
        } else {
            self.counts.items += k;
            self.counts.failed_items += k;
            self.counts.failed_units += 1;
            self.failed.push(FailedBatch {
                index,
                items: describe_items(spec),
                tries: t,
                error,
            });
            sinks.gather(index, Piece::Nothing)?;
            self.done += 1;
        }
        Ok(true)
    }
}
