//! The store's serialized records (versioned serde types; the in-memory graph is not serde).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fingerprint::Fingerprint;

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

/// Counters a step reports (ParallelRunStep fills all of them; simple steps leave zeros).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    /// Items processed (files or rows).
    pub items: u64,
    /// Items that failed.
    pub failed_items: u64,
    /// Mini-batches in the step.
    pub mini_batches: u64,
    /// Mini-batches that failed after all tries.
    pub failed_mini_batches: u64,
    /// Mini-batches taken from an interrupted earlier run instead of being run again.
    pub resumed_mini_batches: u64,
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
}

/// What happened to a step in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// Output taken from the cache.
    Reused,
    /// Executed successfully.
    Ran,
    /// Executed and failed.
    Failed,
    /// Not run because an upstream step failed.
    Skipped,
    /// Stopped by cancellation.
    Cancelled,
}

impl StepStatus {
    /// Lowercase word for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Reused => "reused",
            StepStatus::Ran => "ran",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
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

/// A node of a graph snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotNode {
    /// Step name.
    pub name: String,
    /// Step type.
    pub execution_type: String,
    /// Input port -> (source kind, source name).
    pub inputs: Vec<SnapshotPort>,
    /// Output port -> data name.
    pub outputs: Vec<SnapshotPort>,
    /// Whether reuse is allowed.
    pub allow_reuse: bool,
}

/// A port in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPort {
    /// Port name.
    pub port: String,
    /// Data or dataset name.
    pub data: String,
    /// `pipeline_data`, `file`, `tabular`, `reference`, or `output`.
    pub kind: String,
    /// `main` or `side` for inputs.
    pub role: String,
}

/// An edge of a graph snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEdge {
    /// Producer step.
    pub from: String,
    /// Consumer step.
    pub to: String,
    /// For data edges, `from_port -> to_port` via data; `None` for `run_after`.
    pub data: Option<SnapshotDataEdge>,
}

/// The data part of a snapshot edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDataEdge {
    /// Output port of the producer.
    pub from_port: String,
    /// Input port of the consumer.
    pub to_port: String,
    /// The data name.
    pub data: String,
}

/// A pipeline's graph as stored with a run (steps in topological order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GraphSnapshot {
    /// Pipeline name.
    pub pipeline: String,
    /// Steps in topological order.
    pub nodes: Vec<SnapshotNode>,
    /// Data and sequencing edges.
    pub edges: Vec<SnapshotEdge>,
    /// Pipeline parameters and defaults.
    pub parameters: BTreeMap<String, Value>,
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
