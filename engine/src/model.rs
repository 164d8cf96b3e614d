//! The shared vocabulary of runs: what a step reports ([`StepCounts`]), what happened to it
//! ([`StepStatus`]) and a pipeline's graph as recorded with a run ([`GraphSnapshot`]). The
//! scheduler, events, steps and the store all use these; the store depends on them, not the
//! reverse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
