//! `run`, `status` and `explain`: running and planning a pipeline.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn cmd_run(pipeline: &Pipeline, store: &Store, args: &RunArgs) -> Result<i32> {
    let popts = plan_opts(&args.params, &args.force, args.verify)?;
    if args.dry_run {
        let mut popts = popts;
        popts.estimate_units = true;
        let p = plan(pipeline, store, &popts)?;
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&p)?)?;
        } else {
            print_plan(&p)?;
        }
        return Ok(plan_code(&p));
    }
    let cancel = CancelFlag::new();
    {
        let cancel = cancel.clone();
        // A second handler cannot be installed in one process (main_with called twice); ignore.
        let _ = ctrlc::set_handler(move || {
            errln!("stopping: waiting for workers to stop (the store stays consistent)");
            cancel.cancel();
        });
    }
    let mut opts = RunOptions {
        plan: popts,
        cancel,
        ..RunOptions::default()
    };
    if let Some(j) = args.jobs {
        if j == 0 {
            bail!("--jobs must be at least 1");
        }
        opts.jobs = j;
    }
    let sink: Box<dyn EventSink> = if args.json {
        Box::new(JsonSink)
    } else if std::io::stderr().is_terminal() {
        Box::new(BarSink::new())
    } else {
        Box::new(PlainSink::default())
    };
    let summary = stepgraph_engine::run(pipeline, store, &opts, sink.as_ref())?;
    drop(sink);
    let code = match summary.status {
        RunStatus::Succeeded => exit::OK,
        _ => exit::STEP_FAILED,
    };
    if !args.json {
        // The run is done: a reader that went away does not change its exit code.
        match print_run_summary(&summary).and_then(|()| outputs::print_final_outputs(&summary)) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(code),
            r => r?,
        }
    }
    Ok(code)
}

pub(super) fn print_run_summary(summary: &stepgraph_engine::RunSummary) -> std::io::Result<()> {
    {
        outln!()?;
        out!("{}", render::run_table(&summary.steps))?;
        let count = |st: StepStatus| summary.steps.iter().filter(|s| s.status == st).count();
        outln!(
            "\nrun {}: {} in {} ({} ran, {} reused, {} failed, {} skipped)",
            summary.run_id,
            render::status_word(summary.status.as_str()),
            render::duration(summary.duration_ms),
            count(StepStatus::Ran),
            count(StepStatus::Reused),
            count(StepStatus::Failed),
            count(StepStatus::Skipped)
        )?;
        for s in summary
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
        {
            errln!("{}", render::step_failure(s));
        }
        if summary.status == RunStatus::Failed {
            errln!(
                "\nsteps downstream of a failed step were skipped; independent steps ran to the end \
                 (logs: stepgraph logs {} STEP)",
                summary.run_id
            );
        }
    }
    Ok(())
}

pub(super) fn print_plan(p: &stepgraph_engine::Plan) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = p
        .steps
        .iter()
        .map(|s| {
            let (word, why) = match &s.decision {
                Decision::Reuse { from_run, .. } => ("reuse", format!("cached by run {from_run}")),
                Decision::Run { reason, .. } => match &s.units {
                    Some(u) => (
                        "run",
                        format!(
                            "{reason}; {} of {} {} to run ({} reused)",
                            stepgraph_engine::grouped(u.total - u.reused),
                            stepgraph_engine::grouped(u.total),
                            render::plural(&u.unit),
                            stepgraph_engine::grouped(u.reused)
                        ),
                    ),
                    None => ("run", reason.to_string()),
                },
                Decision::DependsOnUpstream { upstream } => (
                    "depends",
                    format!("depends on upstream {}", upstream.join(", ")),
                ),
                Decision::Invalid { error } => ("invalid", error.clone()),
            };
            vec![s.name.clone(), render::status_word(word), why]
        })
        .collect();
    out!("{}", render::table(&["step", "plan", "why"], &rows))
}

pub(super) fn cmd_status(pipeline: &Pipeline, store: &Store, params: &[String]) -> Result<i32> {
    let p = plan(pipeline, store, &plan_opts(params, &[], false)?)?;
    let mut all = true;
    for s in &p.steps {
        let line = match &s.decision {
            Decision::Reuse { .. } => render::status_word("up to date"),
            Decision::Run { reason, .. } => {
                all = false;
                format!("{}: {reason}", render::status_word("will run"))
            }
            Decision::DependsOnUpstream { upstream } => {
                all = false;
                format!(
                    "{}: upstream {} will run",
                    render::status_word("will run"),
                    upstream.join(", ")
                )
            }
            Decision::Invalid { error } => {
                all = false;
                format!("invalid: {error}")
            }
        };
        outln!("{}: {line}", s.name)?;
    }
    if all {
        outln!("pipeline {:?} is up to date", p.pipeline)?;
    }
    Ok(plan_code(&p))
}

pub(super) fn cmd_explain(
    pipeline: &Pipeline,
    store: &Store,
    step: Option<&str>,
    params: &[String],
) -> Result<i32> {
    if let Some(s) = step {
        if pipeline.node_index(s).is_none() {
            bail!(
                "unknown step {s:?} (steps: {})",
                pipeline.step_names().join(", ")
            );
        }
    }
    let mut opts = plan_opts(params, &[], false)?;
    opts.estimate_units = true;
    let p = plan(pipeline, store, &opts)?;
    for s in p.steps.iter().filter(|s| step.is_none_or(|n| n == s.name)) {
        match &s.decision {
            Decision::Reuse { from_run, .. } => {
                outln!("{}: up to date (cached by run {from_run})", s.name)?
            }
            Decision::Run {
                reason: RunReason::Changed { changes },
                ..
            } => {
                outln!("{}: will run; changed since its last run:", s.name)?;
                for c in changes {
                    outln!("  {c}")?;
                }
            }
            Decision::Run { reason, .. } => outln!("{}: will run: {reason}", s.name)?,
            Decision::DependsOnUpstream { upstream } => outln!(
                "{}: will run if upstream output changes: upstream {} will rerun",
                s.name,
                upstream.join(", ")
            )?,
            Decision::Invalid { error } => outln!("{}: cannot plan: {error}", s.name)?,
        }
        if let Some(u) = &s.units {
            let units = render::plural(&u.unit);
            outln!(
                "  incremental: {} of {} {units} will run ({} reused)",
                stepgraph_engine::grouped(u.total - u.reused),
                stepgraph_engine::grouped(u.total),
                stepgraph_engine::grouped(u.reused)
            )?;
        }
    }
    Ok(plan_code(&p))
}

/// Exit code of a command that shows a plan: bad input when a step cannot be planned (an
/// unreadable dataset, a missing file).
pub(super) fn plan_code(p: &stepgraph_engine::Plan) -> i32 {
    if p.steps
        .iter()
        .any(|s| matches!(s.decision, Decision::Invalid { .. }))
    {
        exit::BAD_INPUT
    } else {
        exit::OK
    }
}
