//! The shared vocabulary of runs: what a step reports ([`StepCounts`]), what happened to it
//! ([`StepStatus`]) and a pipeline's graph as recorded with a run ([`GraphSnapshot`]). The
//! scheduler, events, steps and the store all use these; the store depends on them, not the
//! reverse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Counters a step reports. A step that works in units (ParallelRunStep: mini-batches) names
/// its unit and counts them; a simple step leaves zeros and no unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StepCountsRecord")]
pub struct StepCounts {
    /// What one unit is called, singular (`"mini-batch"`); empty when the step has no units.
    pub unit: String,
    /// Items processed (files or rows).
    pub items: u64,
    /// Items that failed.
    pub failed_items: u64,
    /// Units in the step.
    pub units: u64,
    /// Units that failed after all tries.
    pub failed_units: u64,
    /// Units taken from an interrupted earlier run instead of being run again.
    pub resumed_units: u64,
    /// Units whose result was reused from the store's unit memo (an incremental step's
    /// mini-batches whose content an earlier run already processed).
    pub reused_units: u64,
}

impl StepCounts {
    /// Counters of a step made of `total` units called `unit` (singular), nothing done yet.
    pub fn in_units(unit: impl Into<String>, total: u64) -> Self {
        StepCounts {
            unit: unit.into(),
            units: total,
            ..StepCounts::default()
        }
    }

    /// Whether the step counted units (only then are its counters worth showing).
    pub fn has_units(&self) -> bool {
        self.units > 0
    }
}

/// A count as people read it: a comma between groups of three digits (`12,345`).
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How [`StepCounts`] is read: today's field names, and those of records written before the
/// counters were generic (`mini_batches`, … without a unit name).
#[derive(Deserialize)]
struct StepCountsRecord {
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    items: u64,
    #[serde(default)]
    failed_items: u64,
    #[serde(default, alias = "mini_batches")]
    units: u64,
    #[serde(default, alias = "failed_mini_batches")]
    failed_units: u64,
    #[serde(default, alias = "resumed_mini_batches")]
    resumed_units: u64,
    #[serde(default)]
    reused_units: u64,
}

/// The unit of records written before units were named: only ParallelRunStep counted units.
const UNNAMED_UNIT: &str = "mini-batch";

impl From<StepCountsRecord> for StepCounts {
    fn from(r: StepCountsRecord) -> Self {
        let unit = match r.unit {
            Some(unit) => unit,
            None if r.units > 0 => UNNAMED_UNIT.to_string(),
            None => String::new(),
        };
        StepCounts {
            unit,
            items: r.items,
            failed_items: r.failed_items,
            units: r.units,
            failed_units: r.failed_units,
            resumed_units: r.resumed_units,
            reused_units: r.reused_units,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_by_three() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn counts_written_before_units_were_named_still_load() {
        let old = r#"{"items":12,"failed_items":1,"mini_batches":3,"failed_mini_batches":1,"resumed_mini_batches":2}"#;
        let c: StepCounts = serde_json::from_str(old).unwrap();
        assert_eq!(
            c,
            StepCounts {
                unit: "mini-batch".into(),
                items: 12,
                failed_items: 1,
                units: 3,
                failed_units: 1,
                resumed_units: 2,
                reused_units: 0,
            }
        );
        let none = r#"{"items":0,"failed_items":0,"mini_batches":0,"failed_mini_batches":0,"resumed_mini_batches":0}"#;
        let c: StepCounts = serde_json::from_str(none).unwrap();
        assert_eq!(c, StepCounts::default());
    }

    #[test]
    fn counts_round_trip_with_their_unit() {
        let mut c = StepCounts::in_units("page", 4);
        c.failed_units = 1;
        c.items = 9;
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""unit":"page""#), "{json}");
        assert!(json.contains(r#""failed_units":1"#), "{json}");
        assert_eq!(serde_json::from_str::<StepCounts>(&json).unwrap(), c);
        assert!(c.has_units());
        assert!(!StepCounts::default().has_units());
    }
}
