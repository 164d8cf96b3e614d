//! Planning: which steps would be reused, which would run and why. `--dry-run`, `status` and
//! `explain` all come from here; nothing executes.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::stable_graph::NodeIndex;
use serde::Serialize;
use serde_json::Value;

use crate::error::{EngineError, StoreError};
use crate::fingerprint::{diff, ComponentChange, Fingerprint};
use crate::graph::Edge;
use crate::pipeline::Pipeline;
use crate::resolve::{prepare, OutputsMap, Prepared, UpstreamOutput};
use crate::step::{PlanContext, UnitEstimate};
use crate::store::records::CacheEntry;
use crate::store::Store;

/// Options shared by planning and running.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Parameter overrides.
    pub params: BTreeMap<String, Value>,
    /// Steps to run even on a cache hit.
    pub force: BTreeSet<String>,
    /// Run every step (Azure's `regenerate_outputs`).
    pub regenerate_outputs: bool,
    /// Rehash inputs instead of trusting the stat memo.
    pub verify: bool,
    /// Ask the steps that would run how many of their units they would reuse
    /// ([`crate::Step::estimate_units`]: an incremental step partitions and keys its inputs).
    pub estimate_units: bool,
}

/// Why a step would run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RunReason {
    /// No earlier run of this step is recorded.
    NeverRun,
    /// These components changed since the step's latest run.
    Changed {
        /// The changes.
        changes: Vec<ComponentChange>,
    },
    /// Same fingerprint as before, but its cache entry is gone (removed or gc'd).
    NotCached,
    /// The step has allow_reuse off.
    AllowReuseOff,
    /// `--force` or regenerate_outputs.
    Forced,
    /// The cache entry's objects are missing or damaged.
    CacheDamaged {
        /// What is wrong.
        detail: String,
    },
}

impl std::fmt::Display for RunReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunReason::NeverRun => f.write_str("never run"),
            RunReason::Changed { changes } => f.write_str(
                &changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            RunReason::NotCached => f.write_str("not in the cache (removed or collected)"),
            RunReason::AllowReuseOff => f.write_str("allow_reuse is off"),
            RunReason::Forced => f.write_str("forced"),
            RunReason::CacheDamaged { detail } => write!(f, "cached output unusable: {detail}"),
        }
    }
}

/// What would happen to one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The cached output would be reused.
    Reuse {
        /// Node key.
        key: String,
        /// The run that produced the output.
        from_run: String,
    },
    /// The step would run.
    Run {
        /// Node key.
        key: String,
        /// Why.
        reason: RunReason,
    },
    /// The key depends on the output of upstream steps that would run.
    DependsOnUpstream {
        /// Those upstream steps.
        upstream: Vec<String>,
    },
    /// The step's inputs could not be resolved (missing files, bad glob).
    Invalid {
        /// The problem.
        error: String,
    },
}

impl Decision {
    /// True for `Reuse`.
    pub fn is_up_to_date(&self) -> bool {
        matches!(self, Decision::Reuse { .. })
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    /// Step name.
    pub name: String,
    /// The decision.
    pub decision: Decision,
    /// The fingerprint, when it could be computed.
    #[serde(skip)]
    pub fingerprint: Option<Fingerprint>,
    /// For a step that would run and memoises its units (an incremental step), how many
    /// of them it would reuse (with [`PlanOptions::estimate_units`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<UnitEstimate>,
}

/// The plan for a whole pipeline, in topological order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Pipeline name.
    pub pipeline: String,
    /// Steps in topological order.
    pub steps: Vec<PlannedStep>,
}

/// Why a cache entry cannot be served: one of its objects, named by its path in the output.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EntryProblem {
    /// The object's bytes do not match its name.
    #[error("{rel}: object {hash} is damaged (content hash {actual})")]
    Damaged {
        rel: String,
        hash: String,
        actual: String,
    },
    /// The object is not in the store.
    #[error("{rel}: object {hash} is missing")]
    Missing { rel: String, hash: String },
    /// The object could not be checked.
    #[error("{rel}: {source}")]
    Store { rel: String, source: StoreError },
}

/// Check a cache entry's objects: existence and size, or a full rehash with `verify`.
pub(crate) fn check_entry(
    store: &Store,
    entry: &CacheEntry,
    verify: bool,
) -> Result<(), EntryProblem> {
    for m in entry.outputs.values() {
        for (rel, obj) in &m.files {
            let rel = || rel.clone();
            if verify {
                store
                    .verify_object(obj)
                    .map_err(|source| EntryProblem::Store { rel: rel(), source })?;
                continue;
            }
            // Objects are immutable: the stat memo (size, mtime, inode) stands in for a
            // rehash, as for inputs, so a no-op rerun does not read cached outputs. An
            // in-place edit changes the stat and is rehashed; `--verify` rehashes all.
            // One stat per object: the memo compares size, mtime and inode itself.
            let p = store.object_path(&obj.hash);
            match store.hash_file(&p, false) {
                Ok(h) if h == obj.hash => {}
                Ok(actual) => {
                    return Err(EntryProblem::Damaged {
                        rel: rel(),
                        hash: obj.hash.clone(),
                        actual,
                    })
                }
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Err(EntryProblem::Missing {
                        rel: rel(),
                        hash: obj.hash.clone(),
                    })
                }
                Err(source) => return Err(EntryProblem::Store { rel: rel(), source }),
            }
        }
    }
    Ok(())
}

/// Plan a run without executing anything.
///
/// # Errors
/// Unknown parameters or forced steps, store errors.
pub fn plan(pipeline: &Pipeline, store: &Store, opts: &PlanOptions) -> Result<Plan, EngineError> {
    let params = pipeline.resolve_params(&opts.params)?;
    for f in &opts.force {
        if pipeline.node_index(f).is_none() {
            return Err(EngineError::UnknownStep { name: f.clone() });
        }
    }
    let mut outputs: OutputsMap = OutputsMap::new();
    let mut reused: BTreeSet<String> = BTreeSet::new();
    let mut steps = Vec::new();
    for &idx in pipeline.topological_order() {
        let node = pipeline.node(idx);
        let def = &node.module_def;
        let waiting = producers_not_reused(pipeline, idx, &reused);
        if !waiting.is_empty() {
            steps.push(PlannedStep {
                name: node.name.clone(),
                decision: Decision::DependsOnUpstream { upstream: waiting },
                fingerprint: None,
                units: None,
            });
            continue;
        }
        let prepared = match prepare(pipeline, idx, &outputs, &params, store, opts.verify, false) {
            Ok(p) => p,
            Err(e) => {
                steps.push(PlannedStep {
                    name: node.name.clone(),
                    decision: Decision::Invalid {
                        error: e.to_string(),
                    },
                    fingerprint: None,
                    units: None,
                });
                continue;
            }
        };
        let key = prepared.key.0.clone();
        let forced = opts.regenerate_outputs || opts.force.contains(&node.name);
        let entry = store.cache_get(&key)?;
        let decision = if !def.allow_reuse {
            Decision::Run {
                key,
                reason: RunReason::AllowReuseOff,
            }
        } else if forced {
            Decision::Run {
                key,
                reason: RunReason::Forced,
            }
        } else if let Some(entry) = entry {
            match check_entry(store, &entry, opts.verify) {
                Ok(()) => {
                    for (port, m) in &entry.outputs {
                        outputs.insert(
                            (idx, port.clone()),
                            UpstreamOutput {
                                manifest: m.clone(),
                                path: None,
                            },
                        );
                    }
                    reused.insert(node.name.clone());
                    Decision::Reuse {
                        key,
                        from_run: entry.run_id,
                    }
                }
                Err(problem) => Decision::Run {
                    key,
                    reason: RunReason::CacheDamaged {
                        detail: problem.to_string(),
                    },
                },
            }
        } else {
            let reason = why_not_cached(store, pipeline.name(), &node.name, &prepared)?;
            Decision::Run { key, reason }
        };
        let units = match &decision {
            Decision::Run { reason, .. } if opts.estimate_units && reusable(reason) => {
                let ctx = PlanContext {
                    step: &node.name,
                    inputs: &prepared.inputs,
                    fingerprint: &prepared.fingerprint,
                    store,
                };
                // An estimate that cannot be made (unreadable rows) is left out: the run
                // itself reports the problem.
                node.step.estimate_units(&ctx).ok().flatten()
            }
            _ => None,
        };
        steps.push(PlannedStep {
            name: node.name.clone(),
            decision,
            fingerprint: Some(prepared.fingerprint),
            units,
        });
    }
    Ok(Plan {
        pipeline: pipeline.name().to_string(),
        steps,
    })
}

/// Whether a step that runs for `reason` may reuse memoised units (not when it must
/// recompute everything).
fn reusable(reason: &RunReason) -> bool {
    !matches!(reason, RunReason::AllowReuseOff | RunReason::Forced)
}

/// The producers of node `idx`'s data inputs that will not be reused (sorted, once each):
/// until they run, its key is unknown.
fn producers_not_reused(
    pipeline: &Pipeline,
    idx: NodeIndex,
    reused: &BTreeSet<String>,
) -> Vec<String> {
    let mut waiting: Vec<String> = pipeline
        .graph()
        .edges_directed(idx, petgraph::Direction::Incoming)
        .filter(|e| matches!(e.weight(), Edge::Data { .. }))
        .map(|e| {
            pipeline
                .node(petgraph::visit::EdgeRef::source(&e))
                .name
                .clone()
        })
        .filter(|n| !reused.contains(n))
        .collect();
    waiting.sort();
    waiting.dedup();
    waiting
}

/// Why a step whose key has no cache entry runs: never ran, or ran with this key and was not
/// cached, or its fingerprint changed since its latest run (and how).
pub(crate) fn why_not_cached(
    store: &Store,
    pipeline: &str,
    step: &str,
    prepared: &Prepared,
) -> Result<RunReason, EngineError> {
    Ok(match store.latest_get(pipeline, step)? {
        None => RunReason::NeverRun,
        Some(latest) if latest.key == prepared.key.0 => RunReason::NotCached,
        Some(latest) => RunReason::Changed {
            changes: diff(&latest.fingerprint, &prepared.fingerprint),
        },
    })
}
