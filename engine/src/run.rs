//! Executing a pipeline: steps in dependency order, independent steps concurrently (bounded
//! by `jobs`), cache hits materialised instead of run, a failed step's descendants skipped
//! while unrelated branches finish.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::unbounded;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use rayon::prelude::*;
use serde_json::Value;

use crate::error::{EngineError, StepError, StoreError};
use crate::events::{Event, EventSink};
use crate::graph::Edge;
use crate::model::{StepCounts, StepStatus};
use crate::module_def::Argument;
use crate::pipeline::Pipeline;
use crate::plan::{check_entry, PlanOptions};
use crate::resolve::{prepare, value_to_arg, OutputsMap, Prepared, UpstreamOutput};
use crate::step::{CancelFlag, StepContext};
use crate::store::records::{
    CacheEntry, LatestRecord, ObjectRef, OutputManifest, RunRecord, RunStatus, StepRecord,
    SCHEMA_VERSION,
};
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
}

impl RunSummary {
    /// The record of step `name`.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The materialised folder of output `port` of step `name`.
    pub fn output_dir(&self, step: &str, port: &str) -> PathBuf {
        RunLayout::new(&self.run_dir).output_dir(step, port)
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

/// How often the run record is rewritten while a run is going.
const RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

struct Job {
    idx: NodeIndex,
    upstream: OutputsMap,
    upstream_ran: bool,
    /// Execute even on a cache hit: the step's stored output was found damaged in this run.
    rerun_damaged: bool,
}

struct JobResult {
    idx: NodeIndex,
    record: StepRecord,
    outputs: BTreeMap<String, UpstreamOutput>,
    /// Upstream steps whose stored output this step was about to read and found damaged, with
    /// what was wrong. The step did not execute; the coordinator reruns those steps first.
    damaged_upstream: Vec<(NodeIndex, String)>,
}

impl JobResult {
    fn new(idx: NodeIndex, record: StepRecord) -> Self {
        JobResult {
            idx,
            record,
            outputs: BTreeMap::new(),
            damaged_upstream: Vec::new(),
        }
    }
}

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

    let position: HashMap<NodeIndex, usize> = pipeline
        .topological_order()
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let mut waiting: HashMap<NodeIndex, usize> = pipeline
        .topological_order()
        .iter()
        .map(|n| (*n, pipeline.parents(*n).len()))
        .collect();
    let mut ready: BTreeSet<(usize, NodeIndex)> = waiting
        .iter()
        .filter(|(_, w)| **w == 0)
        .map(|(n, _)| (position[n], *n))
        .collect();
    let mut outputs: OutputsMap = OutputsMap::new();
    let mut ran: BTreeSet<NodeIndex> = BTreeSet::new();
    let mut doomed: BTreeSet<NodeIndex> = BTreeSet::new();
    // Steps rerun because a consumer found their stored output damaged: each at most once per
    // run, and who waits for each.
    let mut rerun_for_damage: BTreeSet<NodeIndex> = BTreeSet::new();
    let mut rerun_queue: BTreeSet<(usize, NodeIndex)> = BTreeSet::new();
    let mut rerun_waiters: HashMap<NodeIndex, BTreeSet<NodeIndex>> = HashMap::new();
    // No more threads than steps (nor than MAX_JOBS): `--jobs 100000` is a wish, not a reason
    // to exhaust the process's threads.
    let mut jobs = opts
        .jobs
        .clamp(1, MAX_JOBS)
        .min(pipeline.topological_order().len().max(1));

    let (job_tx, job_rx) = unbounded::<Job>();
    let (res_tx, res_rx) = unbounded::<JobResult>();
    let ctx = ExecShared {
        pipeline,
        store,
        params: &params,
        opts,
        events,
        run_id: &run_id,
        verified: Mutex::new(HashMap::new()),
    };
    let mut spawn_error: Option<std::io::Error> = None;
    std::thread::scope(|scope| {
        let mut started = 0;
        for _ in 0..jobs {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            let ctx = &ctx;
            let spawned = std::thread::Builder::new()
                .name("stepgraph-step".into())
                .spawn_scoped(scope, move || {
                    for job in job_rx.iter() {
                        let res = ctx.execute(job);
                        if res_tx.send(res).is_err() {
                            break;
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                // The system gives no more threads: go on with those there are.
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        jobs = started;
        drop(job_rx);
        drop(res_tx);
        let mut in_flight = 0usize;
        let mut last_record_put = Instant::now();
        loop {
            while in_flight < jobs && !opts.cancel.is_cancelled() {
                let (first, rerun_damaged) = match rerun_queue.iter().next().copied() {
                    Some(r) => (r, true),
                    None => match ready.iter().next().copied() {
                        Some(r) => (r, false),
                        None => break,
                    },
                };
                ready.remove(&first);
                rerun_queue.remove(&first);
                let idx = first.1;
                let mut upstream = OutputsMap::new();
                let mut upstream_ran = false;
                for e in pipeline
                    .graph()
                    .edges_directed(idx, petgraph::Direction::Incoming)
                {
                    if let Edge::Data { from_port, .. } = e.weight() {
                        if let Some(o) = outputs.get(&(e.source(), from_port.clone())) {
                            upstream.insert((e.source(), from_port.clone()), o.clone());
                        }
                        upstream_ran |= ran.contains(&e.source());
                    }
                }
                if job_tx
                    .send(Job {
                        idx,
                        upstream,
                        upstream_ran,
                        rerun_damaged,
                    })
                    .is_err()
                {
                    break;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let Ok(res) = res_rx.recv() else { break };
            in_flight -= 1;
            let idx = res.idx;
            if !res.damaged_upstream.is_empty() {
                // The step found damaged bytes in an upstream step's stored output before it
                // ran: rerun that step (once), then this one. Nothing was computed from them.
                let mut again = Vec::new();
                for (up, reason) in &res.damaged_upstream {
                    let up_record = &record.steps[position[up]];
                    if rerun_for_damage.insert(*up) {
                        events.emit(&Event::CacheEntryRejected {
                            step: up_record.name.clone(),
                            key: up_record.key.clone().unwrap_or_default(),
                            reason: reason.clone(),
                        });
                        rerun_queue.insert((position[up], *up));
                        again.push(*up);
                    } else if rerun_waiters.contains_key(up) {
                        again.push(*up);
                    }
                }
                if again.len() == res.damaged_upstream.len() {
                    for up in &again {
                        rerun_waiters.entry(*up).or_default().insert(idx);
                    }
                    waiting.insert(idx, again.len());
                    continue;
                }
                // Damaged again after a rerun: fail this step rather than loop.
                events.emit(&Event::StepFailed {
                    step: res.record.name.clone(),
                    error: res.record.error.clone().unwrap_or_default(),
                    duration_ms: res.record.duration_ms,
                });
            }
            let rerun_done = rerun_waiters.remove(&idx);
            let ok = matches!(res.record.status, StepStatus::Ran | StepStatus::Reused);
            if res.record.status == StepStatus::Ran {
                ran.insert(idx);
            }
            for (port, o) in res.outputs {
                outputs.insert((idx, port), o);
            }
            if !ok {
                let reason = format!(
                    "upstream step {:?} {}",
                    res.record.name,
                    res.record.status.as_str()
                );
                // A failed rerun dooms only the steps that waited for it (and theirs): its
                // other descendants already finished with its first, good output.
                let doom: BTreeSet<NodeIndex> = match &rerun_done {
                    Some(waiters) => waiters
                        .iter()
                        .flat_map(|w| pipeline.descendants(*w).into_iter().chain([*w]))
                        .collect(),
                    None => pipeline.descendants(idx),
                };
                for d in doom {
                    if doomed.insert(d) {
                        let name = pipeline.node(d).name.clone();
                        events.emit(&Event::StepSkipped {
                            step: name,
                            reason: reason.clone(),
                        });
                        record.steps[position[&d]].status = StepStatus::Skipped;
                        record.steps[position[&d]].error = Some(reason.clone());
                    }
                }
            }
            record.steps[position[&idx]] = res.record;
            // The record (with its graph snapshot) is rewritten at most every 500 ms: once
            // per step would be quadratic in a large pipeline. Cache entries are durable on
            // their own; a crash loses only this progress view, never results.
            if last_record_put.elapsed() >= RECORD_INTERVAL {
                let _ = store.run_put(&record);
                last_record_put = Instant::now();
            }
            // `waiting` counts distinct parents, so count each child once even when this step
            // reaches it by several edges (two of its outputs, or data plus run_after).
            // A step rerun for damage releases only the steps that waited for the rerun: its
            // other children have already been released by its first result.
            let children: BTreeSet<NodeIndex> = match rerun_done {
                Some(waiters) => waiters,
                None => pipeline
                    .graph()
                    .neighbors_directed(idx, petgraph::Direction::Outgoing)
                    .collect(),
            };
            for child in children {
                if let Some(w) = waiting.get_mut(&child) {
                    *w = w.saturating_sub(1);
                    if *w == 0 && !doomed.contains(&child) {
                        ready.insert((position[&child], child));
                    }
                }
            }
        }
        drop(job_tx);
    });

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
    store.run_put(&record)?;
    store.flush()?;
    let duration_ms = started.elapsed().as_millis() as u64;
    events.emit(&Event::RunFinished {
        run_id: run_id.clone(),
        steps: record
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.status))
            .collect(),
        duration_ms,
    });
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
    })
}

struct ExecShared<'a> {
    pipeline: &'a Pipeline,
    store: &'a Store,
    params: &'a BTreeMap<String, Value>,
    opts: &'a RunOptions,
    events: &'a dyn EventSink,
    run_id: &'a str,
    /// Objects whose bytes were checked against their name in this run (rehashed before a
    /// Objects whose bytes were checked against their name in this run (rehashed before a
    /// step read them, or hashed while being stored), with the inode's stat at that moment.
    /// A later check that finds the same stat (ctime included: no write or chmod can keep it)
    /// trusts the bytes; any change means a full rehash.
    verified: Mutex<HashMap<String, ObjectStat>>,
}

impl ExecShared<'_> {
    fn execute(&self, job: Job) -> JobResult {
        let node = self.pipeline.node(job.idx);
        let name = node.name.clone();
        let mut record = StepRecord::new(name.clone(), StepStatus::Failed);
        let t0 = Instant::now();
        let fail = |mut record: StepRecord, message: String, t0: Instant| {
            // On a (nearly) full disk, a failed step's partial outputs must not keep the store
            // from working: they go now (its logs stay).
            self.store.free_after_failure(self.run_id, &record.name);
            let duration_ms = t0.elapsed().as_millis() as u64;
            self.events.emit(&Event::StepFailed {
                step: record.name.clone(),
                error: message.clone(),
                duration_ms,
            });
            // A step stopped by Ctrl-C did not fail on its own: say so.
            record.status = if self.opts.cancel.is_cancelled() {
                StepStatus::Cancelled
            } else {
                StepStatus::Failed
            };
            record.error = Some(message);
            record.duration_ms = duration_ms;
            JobResult::new(job.idx, record)
        };
        if self.opts.cancel.is_cancelled() {
            record.status = StepStatus::Cancelled;
            return JobResult::new(job.idx, record);
        }
        let prepared = match prepare(
            self.pipeline,
            job.idx,
            &job.upstream,
            self.params,
            self.store,
            self.opts.plan.verify,
        ) {
            Ok(p) => p,
            Err(e) => return fail(record, e.to_string(), t0),
        };
        let key = prepared.key.0.clone();
        record.key = Some(key.clone());
        let def = &node.module_def;
        let layout = self.store.run_layout(self.run_id);
        let out_dirs: BTreeMap<String, PathBuf> = def
            .outputs
            .iter()
            .map(|o| (o.name.clone(), layout.output_dir(&name, &o.name)))
            .collect();
        let latest = LatestRecord {
            key: key.clone(),
            fingerprint: prepared.fingerprint.clone(),
            run_id: self.run_id.to_string(),
        };

        let reusable = def.allow_reuse
            && !job.rerun_damaged
            && !self.opts.plan.regenerate_outputs
            && !self.opts.plan.force.contains(&name);
        if reusable {
            match self.try_reuse(&name, &key, &out_dirs, job.upstream_ran) {
                Ok(Some((entry, outs))) => {
                    let _ = self.store.latest_put(self.pipeline.name(), &name, &latest);
                    record.status = StepStatus::Reused;
                    record.counts = entry.counts;
                    record.reused_from = Some(entry.run_id);
                    record.duration_ms = t0.elapsed().as_millis() as u64;
                    record.outputs = outs
                        .iter()
                        .map(|(k, v)| (k.clone(), v.manifest.hash.clone()))
                        .collect();
                    return JobResult {
                        outputs: outs,
                        ..JobResult::new(job.idx, record)
                    };
                }
                Ok(None) => {}
                Err(e) => return fail(record, e, t0),
            }
        }

        // Never compute (and cache) output from stored bytes that are not what their hash
        // says: rehash the upstream objects this step reads, once per run.
        let damaged = self.verify_upstream(&job.upstream);
        if !damaged.is_empty() {
            let what: Vec<String> = damaged.iter().map(|(_, r)| r.clone()).collect();
            record.error = Some(format!(
                "stored input is damaged even after its producer reran: {}",
                what.join("; ")
            ));
            record.duration_ms = t0.elapsed().as_millis() as u64;
            return JobResult {
                damaged_upstream: damaged,
                ..JobResult::new(job.idx, record)
            };
        }
        self.events.emit(&Event::StepStarted {
            step: name.clone(),
            key: key.clone(),
        });
        let work_dir = layout.work_dir(&name);
        let log_dir = layout.log_dir(&name);
        for d in out_dirs.values().chain([&work_dir, &log_dir]) {
            // A step rerun in this run starts from empty folders, not from its first result.
            if job.rerun_damaged && d.exists() {
                if let Err(e) = std::fs::remove_dir_all(d) {
                    return fail(record, format!("{}: {e}", d.display()), t0);
                }
            }
            if let Err(e) = std::fs::create_dir_all(d) {
                return fail(record, format!("{}: {e}", d.display()), t0);
            }
        }
        let arguments: Vec<String> = def
            .arguments
            .iter()
            .map(|a| match a {
                Argument::Literal(s) => s.clone(),
                Argument::Param(p) => {
                    value_to_arg(self.params.get(&p.name).unwrap_or(&p.default_value))
                }
                Argument::Input(p) => prepared
                    .inputs
                    .get(p)
                    .map(|i| i.path.display().to_string())
                    .unwrap_or_default(),
                Argument::Output(p) => out_dirs
                    .get(p)
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            })
            .collect();
        // A step sees exactly the parameters in its fingerprint (`params.<name>`): a value it
        // could read but that is not in its key would make reuse wrong.
        let step_params: BTreeMap<String, Value> = def
            .parameters()
            .into_iter()
            .map(|p| {
                let v = self.params.get(&p.name).unwrap_or(&p.default_value);
                (p.name.clone(), v.clone())
            })
            .collect();
        let ctx = StepContext {
            step: &name,
            pipeline: self.pipeline.name(),
            key: &key,
            run_id: self.run_id,
            inputs: &prepared.inputs,
            outputs: &out_dirs,
            params: &step_params,
            arguments: &arguments,
            environment_variables: &def.environment_variables,
            work_dir: &work_dir,
            log_dir: &log_dir,
            store: self.store,
            events: self.events,
            cancel: &self.opts.cancel,
            resume: reusable,
        };
        let counts = match catch_step(|| node.step.execute(&ctx)) {
            Ok(c) => c,
            Err(e) => return fail(record, e.message, t0),
        };
        if self.opts.cancel.is_cancelled() {
            return fail(record, "run cancelled".into(), t0);
        }
        if let Some(why) = self.inputs_changed_while_running(&job, &prepared) {
            return fail(record, why, t0);
        }
        let mut manifests: BTreeMap<String, OutputManifest> = BTreeMap::new();
        for (port, dir) in &out_dirs {
            match self.store.ingest_dir(dir) {
                Ok(m) => {
                    // Hashed from the step's own bytes just now: known good for this run.
                    let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                    for o in m.files.values() {
                        if let Some(st) = ObjectStat::of(&self.store.object_path(&o.hash)) {
                            v.insert(o.hash.clone(), st);
                        }
                    }
                    drop(v);
                    manifests.insert(port.clone(), m);
                }
                Err(e) => return fail(record, format!("output {port:?}: {e}"), t0),
            }
        }
        let duration_ms = t0.elapsed().as_millis() as u64;
        // Objects are durable (ingest fsyncs them); only now is the entry written.
        let entry = CacheEntry {
            schema: SCHEMA_VERSION,
            key: key.clone(),
            pipeline: self.pipeline.name().to_string(),
            step: name.clone(),
            outputs: manifests.clone(),
            fingerprint: prepared.fingerprint,
            counts: counts.clone(),
            run_id: self.run_id.to_string(),
            duration_ms,
            created_unix_ms: now_unix_ms(),
        };
        if let Err(e) = self.store.cache_put(&entry) {
            return fail(record, e.to_string(), t0);
        }
        let _ = self.store.latest_put(self.pipeline.name(), &name, &latest);
        self.events.emit(&Event::StepFinished {
            step: name.clone(),
            key,
            duration_ms,
            counts: counts.clone(),
        });
        record.status = StepStatus::Ran;
        record.counts = counts;
        record.duration_ms = duration_ms;
        record.outputs = manifests
            .iter()
            .map(|(k, v)| (k.clone(), v.hash.clone()))
            .collect();
        let outs = manifests
            .into_iter()
            .map(|(port, manifest)| {
                let path = out_dirs.get(&port).cloned();
                (port, UpstreamOutput { manifest, path })
            })
            .collect();
        JobResult {
            outputs: outs,
            ..JobResult::new(job.idx, record)
        }
    }

    /// A verified cache hit, materialised into the run folder; `Ok(None)` on a miss (a damaged
    /// entry is reported and treated as a miss, never served).
    #[allow(clippy::type_complexity)]
    fn try_reuse(
        &self,
        name: &str,
        key: &str,
        out_dirs: &BTreeMap<String, PathBuf>,
        upstream_ran: bool,
    ) -> Result<Option<(CacheEntry, BTreeMap<String, UpstreamOutput>)>, String> {
        let entry = match self.store.cache_get(key) {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.reject(name, key, e.to_string());
                return Ok(None);
            }
        };
        if let Err(reason) = check_entry(self.store, &entry, self.opts.plan.verify) {
            self.reject(name, key, reason);
            return Ok(None);
        }
        let mut outs = BTreeMap::new();
        for (port, manifest) in &entry.outputs {
            let Some(dir) = out_dirs.get(port) else {
                continue;
            };
            if let Err(e) = self.store.materialise(manifest, dir) {
                self.reject(name, key, e.to_string());
                return Ok(None);
            }
            outs.insert(
                port.clone(),
                UpstreamOutput {
                    manifest: manifest.clone(),
                    path: Some(dir.clone()),
                },
            );
        }
        self.events.emit(&Event::StepReused {
            step: name.to_string(),
            key: key.to_string(),
            from_run: entry.run_id.clone(),
            early_cutoff: upstream_ran,
        });
        Ok(Some((entry, outs)))
    }

    /// After a step ran: why its output must not be cached, if its inputs are no longer what
    /// its key was computed from. Either the step changed upstream objects in place (they are
    /// removed, so the producers rerun before anyone reads them again), or a dataset or source
    /// file changed while it ran ("file modified during build": the next run computes from
    /// the new bytes). Both checks are stat-cheap: objects by inode stat, files by the memo.
    fn inputs_changed_while_running(&self, job: &Job, prepared: &Prepared) -> Option<String> {
        let changed = self.verify_upstream(&job.upstream);
        if !changed.is_empty() {
            let what: Vec<String> = changed
                .iter()
                .map(|(up, r)| format!("{} {r}", self.pipeline.node(*up).name))
                .collect();
            return Some(format!(
                "the step changed its inputs in place (inputs are read-only: write into the \
                 step's outputs instead); the producers rerun next time: {}",
                what.join("; ")
            ));
        }
        match prepare(
            self.pipeline,
            job.idx,
            &job.upstream,
            self.params,
            self.store,
            false,
        ) {
            Ok(after) if after.key == prepared.key => None,
            Ok(after) => {
                let changed: Vec<String> =
                    crate::fingerprint::diff(&prepared.fingerprint, &after.fingerprint)
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                Some(format!(
                    "inputs changed while the step ran, so its output is not cached (run again): {}",
                    changed.join("; ")
                ))
            }
            Err(e) => Some(format!("inputs changed while the step ran: {e}")),
        }
    }

    /// Check every stored object in `upstream`: one whose stat is unchanged since it was last
    /// verified in this run is trusted, the others are rehashed in parallel. Returns the
    /// producers whose objects are damaged or missing, with what is wrong; a damaged object
    /// is removed, so no cache entry can serve it again.
    fn verify_upstream(&self, upstream: &OutputsMap) -> Vec<(NodeIndex, String)> {
        let mut todo: Vec<(NodeIndex, &str, &ObjectRef)> = Vec::new();
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            for ((node, _), out) in upstream {
                for (rel, obj) in &out.manifest.files {
                    let now = ObjectStat::of(&self.store.object_path(&obj.hash));
                    if now.is_none() || verified.get(&obj.hash) != now.as_ref() {
                        todo.push((*node, rel.as_str(), obj));
                    }
                }
            }
        }
        let results: Vec<Checked<'_>> = todo
            .into_par_iter()
            .map(|(node, rel, obj)| {
                let path = self.store.object_path(&obj.hash);
                let before = ObjectStat::of(&path);
                let res = self.store.verify_object(obj);
                (node, rel, obj, before, res)
            })
            .collect();
        let mut damaged: BTreeMap<NodeIndex, String> = BTreeMap::new();
        for (node, rel, obj, before, res) in results {
            match res {
                Ok(()) => {
                    if let Some(st) = before {
                        let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                        v.insert(obj.hash.clone(), st);
                    }
                }
                Err(e) => {
                    if matches!(e, StoreError::DamagedObject { .. }) {
                        let _ = std::fs::remove_file(self.store.object_path(&obj.hash));
                    }
                    damaged
                        .entry(node)
                        .or_insert_with(|| format!("output file {rel}: {e}"));
                }
            }
        }
        damaged.into_iter().collect()
    }

    fn reject(&self, name: &str, key: &str, reason: String) {
        self.events.emit(&Event::CacheEntryRejected {
            step: name.to_string(),
            key: key.to_string(),
            reason,
        });
    }
}

/// One object rehashed by `verify_upstream`: producer, relative path, object, its stat before
/// hashing, and the verdict.
type Checked<'a> = (
    NodeIndex,
    &'a str,
    &'a ObjectRef,
    Option<ObjectStat>,
    Result<(), StoreError>,
);

/// What identifies the state of an object's inode: any write, truncation, chmod or new link
/// changes its ctime, which no user call can set back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectStat {
    size: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl ObjectStat {
    fn of(path: &std::path::Path) -> Option<ObjectStat> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(ObjectStat {
            size: m.size(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Run a step body, turning a panic inside user code into a step failure.
fn catch_step<F: FnOnce() -> Result<StepCounts, StepError>>(f: F) -> Result<StepCounts, StepError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(StepError::new(format!("step panicked: {msg}")))
        }
    }
}
