//! The store's serialized records (versioned serde types; the in-memory graph is not serde).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fingerprint::Fingerprint;
use crate::model::{GraphSnapshot, StepCounts, StepStatus};

/// Version of every record layout below; a db with another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 1;

/// A stored object: its blake3 hash (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// blake3 of the content, hex.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
}

/// The files of one output port: relative path -> object, and their Merkle hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputManifest {
    /// Merkle hash over sorted (relative path, content hash): the output's identity.
    pub hash: String,
    /// Relative path (`/`-separated) -> object.
    pub files: BTreeMap<String, ObjectRef>,
}

/// A cache entry: what a step with this key produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Record layout version.
    pub schema: u32,
    /// The node key (hex).
    pub key: String,
    /// Pipeline that produced it.
    pub pipeline: String,
    /// Step that produced it.
    pub step: String,
    /// Output port -> manifest.
    pub outputs: BTreeMap<String, OutputManifest>,
    /// The fingerprint behind the key, with preimages.
    pub fingerprint: Fingerprint,
    /// The step's counters.
    pub counts: StepCounts,
    /// The run that produced it.
    pub run_id: String,
    /// How long the step ran.
    pub duration_ms: u64,
    /// When it was written (Unix ms).
    pub created_unix_ms: u64,
    /// The unit memo records the output was gathered from (an incremental step's
    /// mini-batches), as an object listing their keys one per line (read with
    /// `Store::entry_units`): kept by `cache gc` as long as this entry is. An object, not a
    /// list here, so that a step of 100,000 mini-batches does not make its entry (read at
    /// every plan) megabytes long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<ObjectRef>,
}

/// One step's line in a run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Node key, when it was computed.
    pub key: Option<String>,
    /// Outcome.
    pub status: StepStatus,
    /// Wall time in the step (ms).
    pub duration_ms: u64,
    /// Counters.
    pub counts: StepCounts,
    /// Failure or skip reason.
    pub error: Option<String>,
    /// For reused steps, the run that produced the output.
    pub reused_from: Option<String>,
    /// Output port -> output hash.
    pub outputs: BTreeMap<String, String>,
    /// When the step started in this run (Unix ms; absent in records written before it was
    /// recorded, and for steps that never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_ms: Option<u64>,
    /// Why the step ran (the plan's `RunReason` in words), for steps that ran or failed
    /// running; absent for reused steps (see `reused_from`) and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl StepRecord {
    /// A record of step `name` with `status` and nothing else known yet.
    pub fn new(name: impl Into<String>, status: StepStatus) -> Self {
        StepRecord {
            name: name.into(),
            key: None,
            status,
            duration_ms: 0,
            counts: StepCounts::default(),
            error: None,
            reused_from: None,
            outputs: BTreeMap::new(),
            started_unix_ms: None,
            reason: None,
        }
    }
}

/// Status of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running (or crashed while running).
    Running,
    /// Every step reused or ran.
    Succeeded,
    /// At least one step failed.
    Failed,
    /// Stopped by Ctrl-C.
    Cancelled,
    /// Its process died while it ran (found `running` by a later process holding the lock).
    Interrupted,
}

impl RunStatus {
    /// Lowercase word for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// A run's record in the `runs` tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Record layout version.
    pub schema: u32,
    /// Run id: the UTC start second and 4 hex digits (runs within one second are ordered by
    /// `started_unix_ms`, not by id).
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Start (Unix ms).
    pub started_unix_ms: u64,
    /// End (Unix ms), when finished.
    pub finished_unix_ms: Option<u64>,
    /// Overall status.
    pub status: RunStatus,
    /// Parameter values used.
    pub params: BTreeMap<String, Value>,
    /// The graph that ran.
    pub graph: GraphSnapshot,
    /// Per step, in topological order.
    pub steps: Vec<StepRecord>,
    /// The process that ran it (absent in records written before it was recorded).
    #[serde(default)]
    pub pid: Option<u32>,
}

/// The latest fingerprint of a step (by pipeline and step name), for `explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatestRecord {
    /// Node key.
    pub key: String,
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// The run that computed it.
    pub run_id: String,
}
