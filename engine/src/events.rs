//! Events tell what executed: progress bars, `--json` output and tests consume the same stream.

use std::sync::Mutex;

use serde::Serialize;

use crate::model::{StepCounts, StepStatus};

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A run began.
    RunStarted {
        /// Run id.
        run_id: String,
        /// Pipeline name.
        pipeline: String,
        /// Steps in topological order.
        steps: Vec<String>,
    },
    /// A step's key was computed and it will execute.
    StepStarted {
        /// Step name.
        step: String,
        /// Node key.
        key: String,
    },
    /// A step's output was taken from the cache; it did not execute.
    StepReused {
        /// Step name.
        step: String,
        /// Node key.
        key: String,
        /// Run that produced the output.
        from_run: String,
        /// True when an upstream step re-executed in this run but produced the same output.
        early_cutoff: bool,
    },
    /// A cached output could not be used (damaged or missing object); the step will run.
    CacheEntryRejected {
        /// Step name.
        step: String,
        /// Node key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A step executed successfully.
    StepFinished {
        /// Step name.
        step: String,
        /// Node key.
        key: String,
        /// Wall time.
        duration_ms: u64,
        /// Counters.
        counts: StepCounts,
    },
    /// A step failed.
    StepFailed {
        /// Step name.
        step: String,
        /// The failure, possibly several lines.
        error: String,
        /// Wall time.
        duration_ms: u64,
    },
    /// A step was not run because an upstream step failed (or the run was cancelled).
    StepSkipped {
        /// Step name.
        step: String,
        /// Why.
        reason: String,
    },
    /// Progress of a step made of units (ParallelRunStep: mini-batches).
    Progress {
        /// Step name.
        step: String,
        /// What one unit is called, singular (`"mini-batch"`).
        unit: String,
        /// Units done (including failed and resumed ones).
        done: u64,
        /// Units in all.
        total: u64,
        /// Items processed.
        items: u64,
        /// Items failed.
        failed_items: u64,
        /// Units failed.
        failed_units: u64,
        /// Units reused from the unit memo (an incremental step), counted in `done`.
        #[serde(default)]
        reused: u64,
    },
    /// A message from a step (retries, worker restarts, resumes).
    Message {
        /// Step name.
        step: String,
        /// `info` or `warn`.
        level: String,
        /// The message.
        text: String,
    },
    /// The run ended.
    RunFinished {
        /// Run id.
        run_id: String,
        /// Per step: name and status.
        steps: Vec<(String, StepStatus)>,
        /// Wall time.
        duration_ms: u64,
    },
}

/// Receives events; implemented by the CLI's renderers and by test collectors.
pub trait EventSink: Send + Sync {
    /// Handle one event. Must not block for long: it is called from worker threads.
    fn emit(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: &Event) {
        self(event)
    }
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}
}

/// Keeps every event, for tests and summaries.
#[derive(Debug, Default)]
pub struct CollectSink {
    events: Mutex<Vec<Event>>,
}

impl CollectSink {
    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// `(kind, step)` for every step-level event, in order: `("started", "a")`, `("reused", "b")`...
    pub fn step_events(&self) -> Vec<(&'static str, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::StepStarted { step, .. } => Some(("started", step)),
                Event::StepReused { step, .. } => Some(("reused", step)),
                Event::StepFinished { step, .. } => Some(("finished", step)),
                Event::StepFailed { step, .. } => Some(("failed", step)),
                Event::StepSkipped { step, .. } => Some(("skipped", step)),
                _ => None,
            })
            .collect()
    }
}

impl EventSink for CollectSink {
    fn emit(&self, event: &Event) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_events_name_their_unit() {
        let e = Event::Progress {
            step: "s".into(),
            unit: "mini-batch".into(),
            done: 2,
            total: 5,
            items: 7,
            failed_items: 1,
            failed_units: 1,
            reused: 0,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "progress", "step": "s", "unit": "mini-batch", "done": 2,
                "total": 5, "items": 7, "failed_items": 1, "failed_units": 1, "reused": 0})
        );
    }
}
