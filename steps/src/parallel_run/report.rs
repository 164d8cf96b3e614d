//! What a run reports: `logs/job_result.txt` and the step's error when it stopped.

use fs_err as fs;

use stepgraph_engine::{StepContext, StepError};

use super::dispatch::Outcome;
use super::step::ParallelRunStep;

/// Failed mini-batches whose whole (bounded) error job_result.txt shows; later ones show
/// only the first line.
const FULL_ERRORS_IN_JOB_RESULT: usize = 5;

/// Past the first failed mini-batch, errors are shown whole in a step's error message only
/// while it stays under this size.
const STEP_ERROR_BYTES: usize = 16 * 1024;

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Write `logs/job_result.txt`: status, counts, limits, warnings and the failed mini-batches.
pub(super) fn write_job_result(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    outcome: &Outcome,
    total: usize,
    warnings: &[String],
) -> Result<(), StepError> {
    let cfg = &step.config;
    let c = &outcome.counts;
    let mut text = String::new();
    text.push_str(&format!("step: {}\nrun: {}\n", step.name, ctx.run_id));
    // On a cluster: the Slurm job (`compute: Slurm job 123, …`).
    if let Some(line) = super::remote::compute_line(ctx.log_dir) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&format!(
        "status: {}\n",
        match &outcome.abort {
            None => "succeeded".to_string(),
            Some(r) => format!("failed: {r}"),
        }
    ));
    text.push_str(&format!(
        "mini-batches: {total} total, {} failed, {} resumed from an earlier run\n",
        c.failed_units, c.resumed_units
    ));
    if cfg.incremental() {
        text.push_str(&format!(
            "incremental: {} reused from earlier runs, {} run\n",
            c.reused_units, outcome.ran
        ));
    }
    text.push_str(&format!(
        "items: {} processed, {} failed\n",
        c.items, c.failed_items
    ));
    text.push_str(&format!(
        "limits: error_threshold {}, allowed_failed_count {}, allowed_failed_percent {}\n",
        cfg.error_threshold(),
        cfg.allowed_failed_count(),
        cfg.allowed_failed_percent(),
    ));
    for w in warnings {
        text.push_str(w);
        text.push('\n');
    }
    if !outcome.failed.is_empty() {
        text.push_str("failed mini-batches:\n");
        for (i, f) in outcome.failed.iter().enumerate() {
            // Every error is a bounded excerpt; past the first ones, only their first line.
            let error = if i < FULL_ERRORS_IN_JOB_RESULT {
                indent(f.error.trim_end())
            } else {
                indent(f.error.lines().next().unwrap_or_default())
            };
            text.push_str(&format!(
                "- mini-batch {} ({}), {} tries:\n{error}\n",
                f.index, f.items, f.tries,
            ));
        }
    }
    fs::write(ctx.log_dir.join("job_result.txt"), text)?;
    Ok(())
}

/// The step's error when it stopped: the reason, the first failed mini-batches' errors (the
/// message is kept in the db and events, so it stays small) and where job_result.txt is.
pub(super) fn failure(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
    outcome: &Outcome,
    reason: &str,
) -> StepError {
    let mut msg = format!("ParallelRunStep {:?} stopped: {reason}", step.name);
    for (i, f) in outcome.failed.iter().take(3).enumerate() {
        let head = format!(
            "\nmini-batch {} ({}) failed after {} tries:\n",
            f.index, f.items, f.tries
        );
        let full = indent(f.error.trim_end());
        // Each error is a bounded excerpt already; past the first, a long one shows only
        // its first line, so the message (kept in the db and events) stays small.
        let error = if i == 0 || msg.len() + full.len() <= STEP_ERROR_BYTES {
            full
        } else {
            indent(f.error.lines().next().unwrap_or_default())
        };
        msg.push_str(&head);
        msg.push_str(&error);
    }
    msg.push_str(&format!(
        "\n(see {})",
        ctx.log_dir.join("job_result.txt").display()
    ));
    StepError::new(msg)
}
