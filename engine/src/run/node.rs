//! Executing one node: resolve and fingerprint its inputs, serve a verified cache hit, or
//! check the stored inputs, run the step, ingest its outputs and write its cache entry. Every
//! way it can end is a [`NodeOutcome`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use petgraph::stable_graph::NodeIndex;
use rayon::prelude::*;
use serde_json::Value;

use super::scheduler::Job;
use super::RunOptions;
use crate::error::{StepError, StoreError};
use crate::events::{Event, EventSink};
use crate::graph::Node;
use crate::model::{StepCounts, StepStatus};
use crate::module_def::{Argument, ModuleDef};
use crate::pipeline::Pipeline;
use crate::plan::{check_entry, why_not_cached, RunReason};
use crate::resolve::{prepare, value_to_arg, OutputsMap, Prepared, UpstreamOutput};
use crate::step::{Step, StepContext};
use crate::store::records::{
    CacheEntry, LatestRecord, ObjectRef, OutputManifest, StepRecord, SCHEMA_VERSION,
};
use crate::store::{now_unix_ms, Store};

/// How the execution of one node ended.
pub(super) enum NodeOutcome {
    /// Reused or ran: its record and its outputs, by port.
    Done {
        /// The step's line in the run record.
        record: StepRecord,
        /// Its outputs, for its consumers.
        outputs: BTreeMap<String, UpstreamOutput>,
    },
    /// Failed, or stopped by cancellation (the record says which).
    Failed(StepRecord),
    /// Did not execute: the stored outputs of these upstream steps are damaged (with what is
    /// wrong). The record says so, in case they are damaged again after a rerun.
    DamagedUpstream {
        /// The step's line in the run record.
        record: StepRecord,
        /// Upstream steps and what is wrong with their stored outputs.
        damaged: Vec<(NodeIndex, String)>,
    },
}

/// What every node of a run shares.
pub(super) struct NodeExec<'a> {
    pub(super) pipeline: &'a Pipeline,
    pub(super) store: &'a Store,
    params: &'a BTreeMap<String, Value>,
    pub(super) opts: &'a RunOptions,
    pub(super) events: &'a dyn EventSink,
    run_id: &'a str,
    /// Objects whose bytes were checked against their name in this run (rehashed before a
    /// step read them, or hashed while being stored), with the inode's stat at that moment.
    /// A later check that finds the same stat (ctime included: no write or chmod can keep it)
    /// trusts the bytes; any change means a full rehash.
    verified: Mutex<HashMap<String, ObjectStat>>,
}

/// The folders and records of a node whose key is known.
struct Keyed {
    key: String,
    out_dirs: BTreeMap<String, PathBuf>,
    latest: LatestRecord,
}

impl<'a> NodeExec<'a> {
    pub(super) fn new(
        pipeline: &'a Pipeline,
        store: &'a Store,
        params: &'a BTreeMap<String, Value>,
        opts: &'a RunOptions,
        events: &'a dyn EventSink,
        run_id: &'a str,
    ) -> Self {
        NodeExec {
            pipeline,
            store,
            params,
            opts,
            events,
            run_id,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Execute node `job.idx`: reuse its cached output or run its step.
    pub(super) fn execute(&self, job: Job) -> NodeOutcome {
        let node = self.pipeline.node(job.idx);
        let name = node.name.clone();
        let mut record = StepRecord::new(name.clone(), StepStatus::Failed);
        record.started_unix_ms = Some(now_unix_ms());
        let t0 = Instant::now();
        if self.opts.cancel.is_cancelled() {
            record.status = StepStatus::Cancelled;
            return NodeOutcome::Failed(record);
        }
        let prepared = match prepare(
            self.pipeline,
            job.idx,
            &job.upstream,
            self.params,
            self.store,
            self.opts.plan.verify,
            true,
        ) {
            Ok(p) => p,
            Err(e) => return self.fail(record, e.to_string(), t0),
        };
        let keyed = self.keyed(&node.name, &node.module_def, &prepared);
        record.key = Some(keyed.key.clone());
        let def = &node.module_def;
        let reusable = def.allow_reuse
            && !job.rerun_damaged
            && !self.opts.plan.regenerate_outputs
            && !self.opts.plan.force.contains(&name);
        if reusable {
            if let Some((entry, outputs)) =
                self.try_reuse(&name, &keyed.key, &keyed.out_dirs, job.upstream_ran)
            {
                let _ = self
                    .store
                    .latest_put(self.pipeline.name(), &name, &keyed.latest);
                record.status = StepStatus::Reused;
                record.counts = entry.counts;
                record.reused_from = Some(entry.run_id);
                record.duration_ms = t0.elapsed().as_millis() as u64;
                record.outputs = outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.manifest.hash.clone()))
                    .collect();
                return NodeOutcome::Done { record, outputs };
            }
        }
        record.reason = Some(self.run_reason(&name, def, &job, reusable, &prepared));
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
            return NodeOutcome::DamagedUpstream { record, damaged };
        }
        let (counts, units) = match self.run_step(&job, node, &prepared, &keyed, reusable) {
            Ok(done) => done,
            Err(e) => return self.fail(record, e.to_string(), t0),
        };
        self.store_outputs(record, prepared, keyed, (counts, units), t0)
    }

    /// Why a step that is not reused runs, in the plan's words (`RunReason`).
    fn run_reason(
        &self,
        name: &str,
        def: &ModuleDef,
        job: &Job,
        reusable: bool,
        prepared: &Prepared,
    ) -> String {
        let reason = if !def.allow_reuse {
            RunReason::AllowReuseOff
        } else if job.rerun_damaged {
            RunReason::CacheDamaged {
                detail: "a consumer found its stored output damaged".into(),
            }
        } else if !reusable {
            RunReason::Forced
        } else if matches!(self.store.cache_get(&prepared.key.0), Ok(Some(_))) {
            RunReason::CacheDamaged {
                detail: "its cache entry was rejected".into(),
            }
        } else {
            match why_not_cached(self.store, self.pipeline.name(), name, prepared) {
                Ok(r) => r,
                Err(e) => return format!("not cached ({e})"),
            }
        };
        reason.to_string()
    }

    /// The node's key, output folders and latest-fingerprint record.
    fn keyed(&self, name: &str, def: &ModuleDef, prepared: &Prepared) -> Keyed {
        let key = prepared.key.0.clone();
        let layout = self.store.run_layout(self.run_id);
        Keyed {
            out_dirs: def
                .outputs
                .iter()
                .map(|o| (o.name.clone(), layout.output_dir(name, o.data.name())))
                .collect(),
            latest: LatestRecord {
                key: key.clone(),
                fingerprint: prepared.fingerprint.clone(),
                run_id: self.run_id.to_string(),
            },
            key,
        }
    }

    /// The step failed (or was cancelled while it ran) with `message`.
    fn fail(&self, mut record: StepRecord, message: String, t0: Instant) -> NodeOutcome {
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
        NodeOutcome::Failed(record)
    }

    /// Run the step in fresh folders; its counters and the unit memo records its output was
    /// gathered from, or why it failed (including inputs that changed while it ran).
    fn run_step(
        &self,
        job: &Job,
        node: &Node<dyn Step>,
        prepared: &Prepared,
        keyed: &Keyed,
        resume: bool,
    ) -> Result<(StepCounts, Vec<String>), StepError> {
        let name = &node.name;
        let def = &node.module_def;
        self.events.emit(&Event::StepStarted {
            step: name.clone(),
            key: keyed.key.clone(),
        });
        let layout = self.store.run_layout(self.run_id);
        let work_dir = layout.work_dir(name);
        let log_dir = layout.log_dir(name);
        for d in keyed.out_dirs.values().chain([&work_dir, &log_dir]) {
            // A step rerun in this run starts from empty folders, not from its first result.
            if job.rerun_damaged && d.exists() {
                fs_err::remove_dir_all(d)?;
            }
            fs_err::create_dir_all(d)?;
        }
        let arguments = self.arguments(def, prepared, &keyed.out_dirs);
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
        let units_used = std::sync::Mutex::new(Vec::new());
        let ctx = StepContext {
            step: name,
            pipeline: self.pipeline.name(),
            key: &keyed.key,
            run_id: self.run_id,
            inputs: &prepared.inputs,
            models: &prepared.models,
            outputs: &keyed.out_dirs,
            params: &step_params,
            arguments: &arguments,
            environment_variables: &def.environment_variables,
            work_dir: &work_dir,
            log_dir: &log_dir,
            store: self.store,
            events: self.events,
            cancel: &self.opts.cancel,
            resume,
            fingerprint: &prepared.fingerprint,
            units: &units_used,
        };
        let counts = catch_step(|| node.step.execute(&ctx))?;
        if self.opts.cancel.is_cancelled() {
            return Err(StepError::new("run cancelled"));
        }
        let units = units_used.into_inner().unwrap_or_else(|p| p.into_inner());
        match self.inputs_changed_while_running(job, prepared) {
            Some(why) => {
                // Units memoised by this execution may hold results of the changed inputs
                // under keys of the old ones: forget them (they are recomputed next time).
                let _ = self.store.units_remove(units.iter().map(String::as_str));
                Err(StepError::new(why))
            }
            None => Ok((counts, units)),
        }
    }

    /// The step's command-line arguments, resolved.
    fn arguments(
        &self,
        def: &ModuleDef,
        prepared: &Prepared,
        out_dirs: &BTreeMap<String, PathBuf>,
    ) -> Vec<String> {
        def.arguments
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
            .collect()
    }

    /// Ingest the outputs of a step that ran into objects, then write its cache entry.
    fn store_outputs(
        &self,
        mut record: StepRecord,
        prepared: Prepared,
        keyed: Keyed,
        (counts, units): (StepCounts, Vec<String>),
        t0: Instant,
    ) -> NodeOutcome {
        let mut manifests: BTreeMap<String, OutputManifest> = BTreeMap::new();
        for (port, dir) in &keyed.out_dirs {
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
                Err(e) => return self.fail(record, format!("output {port:?}: {e}"), t0),
            }
        }
        let duration_ms = t0.elapsed().as_millis() as u64;
        let units = match self.store.put_unit_list(&units) {
            Ok(u) => u,
            Err(e) => return self.fail(record, e.to_string(), t0),
        };
        // Objects are durable (ingest fsyncs them); only now is the entry written.
        let entry = CacheEntry {
            schema: SCHEMA_VERSION,
            key: keyed.key.clone(),
            pipeline: self.pipeline.name().to_string(),
            step: record.name.clone(),
            outputs: manifests.clone(),
            fingerprint: prepared.fingerprint,
            counts: counts.clone(),
            run_id: self.run_id.to_string(),
            duration_ms,
            created_unix_ms: now_unix_ms(),
            units,
        };
        if let Err(e) = self.store.cache_put(&entry) {
            return self.fail(record, e.to_string(), t0);
        }
        let _ = self
            .store
            .latest_put(self.pipeline.name(), &record.name, &keyed.latest);
        self.events.emit(&Event::StepFinished {
            step: record.name.clone(),
            key: keyed.key,
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
        let outputs = manifests
            .into_iter()
            .map(|(port, manifest)| {
                let path = keyed.out_dirs.get(&port).cloned();
                (port, UpstreamOutput { manifest, path })
            })
            .collect();
        NodeOutcome::Done { record, outputs }
    }

    /// A verified cache hit, materialised into the run folder; `None` on a miss (a damaged
    /// entry is reported and treated as a miss, never served).
    #[allow(clippy::type_complexity)]
    fn try_reuse(
        &self,
        name: &str,
        key: &str,
        out_dirs: &BTreeMap<String, PathBuf>,
        upstream_ran: bool,
    ) -> Option<(CacheEntry, BTreeMap<String, UpstreamOutput>)> {
        let entry = match self.store.cache_get(key) {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => {
                self.reject(name, key, e.to_string());
                return None;
            }
        };
        if let Err(problem) = check_entry(self.store, &entry, self.opts.plan.verify) {
            self.reject(name, key, problem.to_string());
            return None;
        }
        let mut outs = BTreeMap::new();
        for (port, manifest) in &entry.outputs {
            let Some(dir) = out_dirs.get(port) else {
                continue;
            };
            if let Err(e) = self.store.materialise(manifest, dir) {
                self.reject(name, key, e.to_string());
                return None;
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
        Some((entry, outs))
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
                        let _ = fs_err::remove_file(self.store.object_path(&obj.hash));
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
        let m = fs_err::metadata(path).ok()?;
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
