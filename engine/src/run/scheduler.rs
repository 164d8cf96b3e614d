//! What runs when: the coordinator keeps the ready set and hands nodes to `jobs` threads;
//! each finished node releases its children, a failure skips its descendants, and a node that
//! found an upstream step's stored output damaged waits for that step to rerun (once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use crossbeam_channel::unbounded;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::node::{NodeExec, NodeOutcome};
use crate::events::{Event, EventSink};
use crate::graph::Edge;
use crate::model::StepStatus;
use crate::pipeline::Pipeline;
use crate::resolve::OutputsMap;
use crate::store::records::{RunRecord, StepRecord};

/// How often the run record is rewritten while a run is going.
const RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A node handed to a thread, with the outputs of its upstream steps.
pub(super) struct Job {
    pub(super) idx: NodeIndex,
    pub(super) upstream: OutputsMap,
    pub(super) upstream_ran: bool,
    /// Execute even on a cache hit: the step's stored output was found damaged in this run.
    pub(super) rerun_damaged: bool,
}

/// Execute the nodes of `exec`'s pipeline on up to `jobs` threads, keeping `record` up to
/// date (written at most every [`RECORD_INTERVAL`]). Returns how many threads started and,
/// when fewer than `jobs`, why.
pub(super) fn schedule(
    exec: &NodeExec<'_>,
    record: &mut RunRecord,
    jobs: usize,
) -> (usize, Option<std::io::Error>) {
    let mut sched = Scheduler::new(exec.pipeline, exec.events);
    let (job_tx, job_rx) = unbounded::<Job>();
    let (res_tx, res_rx) = unbounded::<(NodeIndex, NodeOutcome)>();
    let mut spawn_error = None;
    let mut started = 0;
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            let spawned = std::thread::Builder::new()
                .name("stepgraph-step".into())
                .spawn_scoped(scope, move || {
                    for job in job_rx.iter() {
                        let idx = job.idx;
                        if res_tx.send((idx, exec.execute(job))).is_err() {
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
        drop(job_rx);
        drop(res_tx);
        let mut in_flight = 0usize;
        let mut last_record_put = Instant::now();
        loop {
            while in_flight < started && !exec.opts.cancel.is_cancelled() {
                let Some(job) = sched.next_job() else { break };
                if job_tx.send(job).is_err() {
                    break;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let Ok((idx, outcome)) = res_rx.recv() else {
                break;
            };
            in_flight -= 1;
            // The record (with its graph snapshot) is rewritten at most every 500 ms: once
            // per step would be quadratic in a large pipeline. Cache entries are durable on
            // their own; a crash loses only this progress view, never results.
            if sched.settle(idx, outcome, record) && last_record_put.elapsed() >= RECORD_INTERVAL {
                let _ = exec.store.run_put(record);
                last_record_put = Instant::now();
            }
        }
        drop(job_tx);
    });
    (started, spawn_error)
}

/// The coordinator's state.
struct Scheduler<'p> {
    pipeline: &'p Pipeline,
    events: &'p dyn EventSink,
    /// Topological position of each node (its line in the run record).
    position: HashMap<NodeIndex, usize>,
    /// Parents each node still waits for.
    waiting: HashMap<NodeIndex, usize>,
    ready: BTreeSet<(usize, NodeIndex)>,
    outputs: OutputsMap,
    ran: BTreeSet<NodeIndex>,
    doomed: BTreeSet<NodeIndex>,
    /// Steps rerun because a consumer found their stored output damaged: each at most once
    /// per run, and who waits for each.
    rerun_for_damage: BTreeSet<NodeIndex>,
    rerun_queue: BTreeSet<(usize, NodeIndex)>,
    rerun_waiters: HashMap<NodeIndex, BTreeSet<NodeIndex>>,
}

impl<'p> Scheduler<'p> {
    fn new(pipeline: &'p Pipeline, events: &'p dyn EventSink) -> Self {
        let order = pipeline.topological_order();
        let position: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let waiting: HashMap<NodeIndex, usize> = order
            .iter()
            .map(|n| (*n, pipeline.parents(*n).len()))
            .collect();
        let ready = waiting
            .iter()
            .filter(|(_, w)| **w == 0)
            .map(|(n, _)| (position[n], *n))
            .collect();
        Scheduler {
            pipeline,
            events,
            position,
            waiting,
            ready,
            outputs: OutputsMap::new(),
            ran: BTreeSet::new(),
            doomed: BTreeSet::new(),
            rerun_for_damage: BTreeSet::new(),
            rerun_queue: BTreeSet::new(),
            rerun_waiters: HashMap::new(),
        }
    }

    /// The next node to execute: a rerun for damage first, then the ready node first in
    /// topological order; `None` when nothing is ready.
    fn next_job(&mut self) -> Option<Job> {
        let (first, rerun_damaged) = match self.rerun_queue.iter().next().copied() {
            Some(r) => (r, true),
            None => (self.ready.iter().next().copied()?, false),
        };
        self.ready.remove(&first);
        self.rerun_queue.remove(&first);
        let idx = first.1;
        let mut upstream = OutputsMap::new();
        let mut upstream_ran = false;
        for e in self
            .pipeline
            .graph()
            .edges_directed(idx, petgraph::Direction::Incoming)
        {
            if let Edge::Data { from_port, .. } = e.weight() {
                if let Some(o) = self.outputs.get(&(e.source(), from_port.clone())) {
                    upstream.insert((e.source(), from_port.clone()), o.clone());
                }
                upstream_ran |= self.ran.contains(&e.source());
            }
        }
        Some(Job {
            idx,
            upstream,
            upstream_ran,
            rerun_damaged,
        })
    }

    /// Take node `idx`'s outcome into the record and release or skip what depends on it.
    /// False when the node only waits for damaged upstream steps to rerun.
    fn settle(&mut self, idx: NodeIndex, outcome: NodeOutcome, record: &mut RunRecord) -> bool {
        let (step, outputs) = match outcome {
            NodeOutcome::Done { record, outputs } => (record, outputs),
            NodeOutcome::Failed(record) => (record, BTreeMap::new()),
            NodeOutcome::DamagedUpstream {
                record: step,
                damaged,
            } => {
                if self.wait_for_reruns(idx, &damaged, record) {
                    return false;
                }
                // Damaged again after a rerun: fail this step rather than loop.
                self.events.emit(&Event::StepFailed {
                    step: step.name.clone(),
                    error: step.error.clone().unwrap_or_default(),
                    duration_ms: step.duration_ms,
                });
                (step, BTreeMap::new())
            }
        };
        let rerun_done = self.rerun_waiters.remove(&idx);
        if step.status == StepStatus::Ran {
            self.ran.insert(idx);
        }
        for (port, o) in outputs {
            self.outputs.insert((idx, port), o);
        }
        if !matches!(step.status, StepStatus::Ran | StepStatus::Reused) {
            self.skip_descendants(idx, &step, rerun_done.as_ref(), record);
        }
        record.steps[self.position[&idx]] = step;
        self.release_children(idx, rerun_done);
        true
    }

    /// The step found damaged bytes in upstream steps' stored outputs before it ran: rerun
    /// those steps (each once per run), then this one. Nothing was computed from them. False
    /// when an upstream step was already rerun and is damaged again.
    fn wait_for_reruns(
        &mut self,
        idx: NodeIndex,
        damaged: &[(NodeIndex, String)],
        record: &RunRecord,
    ) -> bool {
        let mut again = Vec::new();
        for (up, reason) in damaged {
            let up_record = &record.steps[self.position[up]];
            if self.rerun_for_damage.insert(*up) {
                self.events.emit(&Event::CacheEntryRejected {
                    step: up_record.name.clone(),
                    key: up_record.key.clone().unwrap_or_default(),
                    reason: reason.clone(),
                });
                self.rerun_queue.insert((self.position[up], *up));
                again.push(*up);
            } else if self.rerun_waiters.contains_key(up) {
                again.push(*up);
            }
        }
        if again.len() != damaged.len() {
            return false;
        }
        for up in &again {
            self.rerun_waiters.entry(*up).or_default().insert(idx);
        }
        self.waiting.insert(idx, again.len());
        true
    }

    /// Skip what depends on a step that did not succeed. A failed rerun dooms only the steps
    /// that waited for it (and theirs): its other descendants already finished with its
    /// first, good output.
    fn skip_descendants(
        &mut self,
        idx: NodeIndex,
        step: &StepRecord,
        rerun_done: Option<&BTreeSet<NodeIndex>>,
        record: &mut RunRecord,
    ) {
        let reason = format!("upstream step {:?} {}", step.name, step.status.as_str());
        let doom: BTreeSet<NodeIndex> = match rerun_done {
            Some(waiters) => waiters
                .iter()
                .flat_map(|w| self.pipeline.descendants(*w).into_iter().chain([*w]))
                .collect(),
            None => self.pipeline.descendants(idx),
        };
        for d in doom {
            if self.doomed.insert(d) {
                self.events.emit(&Event::StepSkipped {
                    step: self.pipeline.node(d).name.clone(),
                    reason: reason.clone(),
                });
                let line = &mut record.steps[self.position[&d]];
                line.status = StepStatus::Skipped;
                line.error = Some(reason.clone());
            }
        }
    }

    /// One parent of each child of `idx` is done. `waiting` counts distinct parents, so each
    /// child counts once even when this step reaches it by several edges (two of its outputs,
    /// or data plus run_after). A step rerun for damage releases only the steps that waited
    /// for the rerun: its other children were released by its first result.
    fn release_children(&mut self, idx: NodeIndex, rerun_done: Option<BTreeSet<NodeIndex>>) {
        let children: BTreeSet<NodeIndex> = match rerun_done {
            Some(waiters) => waiters,
            None => self
                .pipeline
                .graph()
                .neighbors_directed(idx, petgraph::Direction::Outgoing)
                .collect(),
        };
        for child in children {
            if let Some(w) = self.waiting.get_mut(&child) {
                *w = w.saturating_sub(1);
                if *w == 0 && !self.doomed.contains(&child) {
                    self.ready.insert((self.position[&child], child));
                }
            }
        }
    }
}
