//! The subcommands.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use stepgraph_engine::{
    plan, CancelFlag, Decision, EventSink, OpenOptions, Pipeline, PlanOptions, RunOptions,
    RunReason, RunStatus, StepStatus, Store,
};

use crate::args::{CacheAction, Cli, Command, GraphFormat, RunArgs, RunsAction};
use crate::out::{errln, out, outln};
use crate::progress::{BarSink, JsonSink, PlainSink};
use crate::render;
use crate::{exit, Source};
use stepgraph_engine::store::{GcOptions, GcReport, RunsReport};

pub(crate) fn dispatch(cli: Cli, source: Source) -> Result<i32> {
    let store_dir = cli.store.clone();
    let wait = cli.wait;
    // Every command but a run only reads or frees space: on a full disk it may use the
    // store's reserve to open it.
    let use_reserve = !matches!(&cli.command, Command::Run { opts, .. } if !opts.dry_run);
    let open = || -> Result<Store> {
        let store = Store::open(&store_dir, OpenOptions { wait, use_reserve })?;
        for w in store.warnings() {
            errln!("warning: {w}");
        }
        Ok(store)
    };
    match cli.command {
        Command::Run { spec, opts } => {
            let pipeline = pipeline_of(&source, spec.as_deref())?;
            cmd_run(&pipeline, &open()?, &opts)
        }
        Command::Graph {
            target,
            format,
            params,
        } => {
            let store = open()?;
            let spec_target = match (&source, &target) {
                (Source::Built(_), None) => None,
                (Source::Built(_), Some(t)) => {
                    return print_run_graph(&store, t, format);
                }
                (Source::Spec, None) => bail!("graph needs a spec file or a run id"),
                (Source::Spec, Some(t))
                    if !Path::new(t).exists() && store.run_get(t)?.is_some() =>
                {
                    return print_run_graph(&store, t, format);
                }
                (Source::Spec, Some(t)) => Some(PathBuf::from(t)),
            };
            let pipeline = pipeline_of(&source, spec_target.as_deref())?;
            let p = plan(&pipeline, &store, &plan_opts(&params, &[], false)?)?;
            print_graph(
                &pipeline.snapshot(),
                &render::plan_statuses(&p),
                format,
                Some(&p),
            )?;
            Ok(exit::OK)
        }
        Command::Status { spec, params } => {
            let pipeline = pipeline_of(&source, spec.as_deref())?;
            cmd_status(&pipeline, &open()?, &params)
        }
        Command::Explain { targets, params } => {
            let (spec, step) = match (&source, targets.as_slice()) {
                (Source::Built(_), []) => (None, None),
                (Source::Built(_), [s]) => (None, Some(s.clone())),
                (Source::Spec, [spec]) => (Some(PathBuf::from(spec)), None),
                (Source::Spec, [spec, s]) => (Some(PathBuf::from(spec)), Some(s.clone())),
                (Source::Spec, []) => {
                    bail!("explain needs a spec file: stepgraph explain SPEC [STEP]")
                }
                _ => bail!("too many arguments: explain takes [SPEC] [STEP]"),
            };
            let pipeline = pipeline_of(&source, spec.as_deref())?;
            cmd_explain(&pipeline, &open()?, step.as_deref(), &params)
        }
        Command::Runs { action, json } => {
            let store = open()?;
            match action {
                None => cmd_runs(&store, json),
                Some(RunsAction::Show { run }) => cmd_run_show(&store, &run, json),
                Some(RunsAction::Rm { runs, dry_run }) => {
                    let r = store.runs_remove(&runs, dry_run)?;
                    print_runs_report(&r)
                }
                Some(RunsAction::Prune { keep, dry_run }) => {
                    let r = store.runs_prune(keep, dry_run)?;
                    print_runs_report(&r)
                }
            }
        }
        Command::Logs { run, step, worker } => cmd_logs(&open()?, &run, &step, worker),
        Command::Cache { action } => cmd_cache(&open()?, action),
        Command::Validate { spec } => {
            let pipeline = pipeline_of(&source, spec.as_deref())?;
            outln!(
                "ok: pipeline {:?} with {} steps ({})",
                pipeline.name(),
                pipeline.step_names().len(),
                pipeline.step_names().join(", ")
            )?;
            Ok(exit::OK)
        }
    }
}

fn pipeline_of(source: &Source, spec: Option<&Path>) -> Result<Pipeline> {
    match (source, spec) {
        (Source::Built(p), None) => Ok((**p).clone()),
        (Source::Built(_), Some(s)) => bail!(
            "this program builds its pipeline in code; it takes no spec file (got {})",
            s.display()
        ),
        (Source::Spec, None) => {
            bail!("a spec file is required (a JSON pipeline, see `stepgraph run --help`)")
        }
        (Source::Spec, Some(path)) => stepgraph_steps::load_spec(path).map_err(|e| anyhow!("{e}")),
    }
}

/// `NAME=VALUE` pairs: a value that parses as JSON is taken as JSON, else as a string.
fn parse_params(pairs: &[String]) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--param {p:?}: expected NAME=VALUE"))?;
        if k.is_empty() {
            bail!("--param {p:?}: the name is empty");
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn plan_opts(params: &[String], force: &[String], verify: bool) -> Result<PlanOptions> {
    Ok(PlanOptions {
        params: parse_params(params)?,
        force: force.iter().cloned().collect::<BTreeSet<_>>(),
        regenerate_outputs: false,
        verify,
    })
}

fn cmd_run(pipeline: &Pipeline, store: &Store, args: &RunArgs) -> Result<i32> {
    let popts = plan_opts(&args.params, &args.force, args.verify)?;
    if args.dry_run {
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
        match print_run_summary(&summary) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(code),
            r => r?,
        }
    }
    Ok(code)
}

fn print_run_summary(summary: &stepgraph_engine::RunSummary) -> std::io::Result<()> {
    {
        let rows: Vec<Vec<String>> = summary
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    render::status_word(s.status.as_str()),
                    if s.status == StepStatus::Ran {
                        render::duration(s.duration_ms)
                    } else {
                        "-".into()
                    },
                    if s.counts.has_units() {
                        s.counts.items.to_string()
                    } else {
                        "-".into()
                    },
                    if s.counts.has_units() {
                        format!(
                            "{} items, {} {}",
                            s.counts.failed_items,
                            s.counts.failed_units,
                            render::plural(&s.counts.unit)
                        )
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect();
        outln!()?;
        out!(
            "{}",
            render::table(&["step", "status", "duration", "items", "failures"], &rows)
        )?;
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
            errln!(
                "\nstep {:?} failed:\n{}",
                s.name,
                s.error.as_deref().unwrap_or("").trim_end()
            );
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

fn print_plan(p: &stepgraph_engine::Plan) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = p
        .steps
        .iter()
        .map(|s| {
            let (word, why) = match &s.decision {
                Decision::Reuse { from_run, .. } => ("reuse", format!("cached by run {from_run}")),
                Decision::Run { reason, .. } => ("run", reason.to_string()),
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

fn cmd_status(pipeline: &Pipeline, store: &Store, params: &[String]) -> Result<i32> {
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

fn cmd_explain(
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
    let p = plan(pipeline, store, &plan_opts(params, &[], false)?)?;
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
    }
    Ok(plan_code(&p))
}

/// Exit code of a command that shows a plan: bad input when a step cannot be planned (an
/// unreadable dataset, a missing file).
fn plan_code(p: &stepgraph_engine::Plan) -> i32 {
    if p.steps
        .iter()
        .any(|s| matches!(s.decision, Decision::Invalid { .. }))
    {
        exit::BAD_INPUT
    } else {
        exit::OK
    }
}

fn print_run_graph(store: &Store, run: &str, format: GraphFormat) -> Result<i32> {
    let rec = store
        .run_get(run)?
        .ok_or_else(|| anyhow!("unknown run {run:?} (see `stepgraph runs`)"))?;
    let statuses = rec
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.status.as_str().to_string()))
        .collect();
    print_graph(&rec.graph, &statuses, format, None)?;
    Ok(exit::OK)
}

fn print_graph(
    g: &stepgraph_engine::GraphSnapshot,
    statuses: &render::Statuses,
    format: GraphFormat,
    plan: Option<&stepgraph_engine::Plan>,
) -> Result<()> {
    match format {
        GraphFormat::Text => out!("{}", render::graph_text(g, statuses))?,
        GraphFormat::Dot => out!("{}", render::graph_dot(g, statuses))?,
        GraphFormat::Mermaid => out!("{}", render::graph_mermaid(g, statuses))?,
        GraphFormat::Json => {
            let v = serde_json::json!({"graph": g, "status": statuses, "plan": plan});
            outln!("{}", serde_json::to_string_pretty(&v)?)?;
        }
    }
    Ok(())
}

fn fmt_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn cmd_runs(store: &Store, json: bool) -> Result<i32> {
    let runs = store.runs()?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&runs)?)?;
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        outln!("no runs in {}", store.root().display())?;
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let n = |st: StepStatus| r.steps.iter().filter(|s| s.status == st).count();
            vec![
                r.id.clone(),
                r.pipeline.clone(),
                render::status_word(r.status.as_str()),
                fmt_time(r.started_unix_ms),
                r.finished_unix_ms
                    .map(|f| render::duration(f.saturating_sub(r.started_unix_ms)))
                    .unwrap_or_else(|| "-".into()),
                format!(
                    "{} ran, {} reused, {} failed, {} skipped",
                    n(StepStatus::Ran),
                    n(StepStatus::Reused),
                    n(StepStatus::Failed),
                    n(StepStatus::Skipped)
                ),
            ]
        })
        .collect();
    out!(
        "{}",
        render::table(
            &["run", "pipeline", "status", "started", "duration", "steps"],
            &rows
        )
    )?;
    Ok(exit::OK)
}

fn cmd_run_show(store: &Store, run: &str, json: bool) -> Result<i32> {
    let r = store
        .run_get(run)?
        .ok_or_else(|| anyhow!("unknown run {run:?} (see `stepgraph runs`)"))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(exit::OK);
    }
    outln!(
        "run {} of pipeline {}: {}",
        r.id,
        r.pipeline,
        render::status_word(r.status.as_str())
    )?;
    outln!("started {}", fmt_time(r.started_unix_ms))?;
    if !r.params.is_empty() {
        let ps: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!("parameters: {}", ps.join(", "))?;
    }
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                render::status_word(s.status.as_str()),
                render::duration(s.duration_ms),
                s.key
                    .as_deref()
                    .map(|k| k.get(..12).unwrap_or(k).to_string())
                    .unwrap_or_else(|| "-".into()),
                if s.counts.has_units() {
                    format!(
                        "{} items ({} failed), {} {} ({} failed, {} resumed)",
                        s.counts.items,
                        s.counts.failed_items,
                        s.counts.units,
                        render::plural(&s.counts.unit),
                        s.counts.failed_units,
                        s.counts.resumed_units
                    )
                } else {
                    "-".into()
                },
                s.reused_from.clone().unwrap_or_default(),
            ]
        })
        .collect();
    outln!()?;
    out!(
        "{}",
        render::table(
            &["step", "status", "duration", "key", "counts", "reused from"],
            &rows
        )
    )?;
    for s in r
        .steps
        .iter()
        .filter(|s| s.error.is_some() && s.status == StepStatus::Failed)
    {
        outln!(
            "\nstep {:?} failed:\n{}",
            s.name,
            s.error.as_deref().unwrap_or("").trim_end()
        )?;
    }
    Ok(exit::OK)
}

fn cmd_logs(store: &Store, run: &str, step: &str, worker: Option<usize>) -> Result<i32> {
    let rec = store
        .run_get(run)?
        .ok_or_else(|| anyhow!("unknown run {run:?} (see `stepgraph runs`)"))?;
    if !rec.steps.iter().any(|s| s.name == step) {
        bail!(
            "run {run} has no step {step:?} (steps: {})",
            rec.steps
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let logs = store.run_layout(run).log_dir(step);
    if let Some(w) = worker {
        let p = logs.join("user").join(format!("worker-{w}.txt"));
        let bytes = std::fs::read(&p)
            .with_context(|| format!("no log for worker {w} ({})", p.display()))?;
        crate::out::stdout_bytes(&bytes)?;
        return Ok(exit::OK);
    }
    if !logs.exists() {
        outln!(
            "step {step:?} has no logs in run {run} (it was {})",
            rec.steps
                .iter()
                .find(|s| s.name == step)
                .map(|s| s.status.as_str())
                .unwrap_or("?")
        )?;
        return Ok(exit::OK);
    }
    let mut files: Vec<PathBuf> = walk(&logs);
    files.sort_by_key(|p| {
        (
            p.file_name().is_none_or(|n| n != "job_result.txt"),
            p.clone(),
        )
    });
    for f in files {
        outln!("==> {} <==", f.strip_prefix(&logs).unwrap_or(&f).display())?;
        // The bytes as they are: a log is not always UTF-8.
        match std::fs::read(&f) {
            Ok(bytes) => {
                crate::out::stdout_bytes(&bytes)?;
                if !bytes.ends_with(b"\n") && !bytes.is_empty() {
                    outln!()?;
                }
            }
            Err(e) => outln!("(cannot read {}: {e})", f.display())?,
        }
    }
    Ok(exit::OK)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn cmd_cache(store: &Store, action: CacheAction) -> Result<i32> {
    match action {
        CacheAction::Ls => {
            let usage = store.usage()?;
            let mut entries: Vec<_> = store
                .cache_entries()?
                .into_iter()
                .zip(usage.entries)
                .collect();
            entries.sort_by(|(a, _), (b, _)| {
                (&a.pipeline, &a.step, a.created_unix_ms).cmp(&(
                    &b.pipeline,
                    &b.step,
                    b.created_unix_ms,
                ))
            });
            if entries.is_empty() {
                outln!("the cache is empty")?;
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|(e, u)| {
                        vec![
                            e.key.get(..12).unwrap_or(&e.key).to_string(),
                            e.pipeline.clone(),
                            e.step.clone(),
                            e.run_id.clone(),
                            format!("{} files, {}", u.files, render::bytes(u.size)),
                            render::bytes(u.disk),
                            render::bytes(u.exclusive),
                            fmt_time(e.created_unix_ms),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    render::table(
                        &[
                            "key",
                            "pipeline",
                            "step",
                            "run",
                            "outputs",
                            "disk",
                            "exclusive",
                            "created"
                        ],
                        &rows
                    )
                )?;
            }
            outln!(
                "\nstore {}: {} on disk (each file counted once): objects {}, runs/ {} more \
                 (work copies, logs, outputs not in objects/), db {}",
                store.root().display(),
                render::bytes(usage.total),
                render::bytes(usage.objects),
                render::bytes(usage.runs),
                render::bytes(usage.db)
            )?;
            outln!("(disk: the entry's objects; exclusive: the objects no other entry shares)")?;
        }
        CacheAction::Gc(args) => {
            let r = store.gc(&GcOptions {
                keep_last: args.keep_last,
                older_than: args.older_than,
                max_size: args.max_size,
                dry_run: args.dry_run,
            })?;
            print_gc_report(&r, args.max_size)?;
        }
        CacheAction::Verify => {
            let report = store.verify_cache()?;
            for d in &report.dropped {
                outln!(
                    "dropped {} (step {}): {}",
                    d.key.get(..12).unwrap_or(&d.key),
                    d.step,
                    d.problems.join("; ")
                )?;
            }
            outln!(
                "verified {} entries: {} dropped",
                report.checked,
                report.dropped.len()
            )?;
        }
        CacheAction::Rm { target } => {
            let entries = store.cache_entries()?;
            let chosen: Vec<_> = entries
                .iter()
                .filter(|e| e.step == target || (target.len() >= 6 && e.key.starts_with(&target)))
                .collect();
            if chosen.is_empty() {
                bail!("no cache entry for step or key {target:?} (see `stepgraph cache ls`)");
            }
            for e in &chosen {
                store.cache_remove(&e.key)?;
            }
            outln!("removed {} cache entries", chosen.len())?;
        }
    }
    Ok(exit::OK)
}

fn print_gc_report(r: &GcReport, max_size: Option<u64>) -> Result<()> {
    let (verb, freed) = if r.dry_run {
        ("would remove", "would free")
    } else {
        ("removed", "freed")
    };
    for e in &r.entries {
        outln!(
            "{verb} entry {} ({} / {}, run {}, computed in {}, {})",
            e.key.get(..12).unwrap_or(&e.key),
            e.pipeline,
            e.step,
            e.run_id,
            render::duration(e.duration_ms),
            render::bytes(e.bytes)
        )?;
    }
    outln!(
        "{verb} {} cache entries (kept {}), {} unreferenced objects (kept {}), {} progress files; \
         {freed} {} on disk",
        r.entries.len(),
        r.entries_kept,
        r.objects,
        r.kept,
        r.progress,
        render::bytes(r.bytes)
    )?;
    if r.aside_dbs > 0 || r.orphan_runs > 0 {
        outln!(
            "{verb} {} damaged databases moved aside earlier and {} run folders without a record",
            r.aside_dbs,
            r.orphan_runs
        )?;
    }
    if !r.foreign.is_empty() {
        let shown: Vec<String> = r
            .foreign
            .iter()
            .take(5)
            .map(|p| p.display().to_string())
            .collect();
        outln!(
            "left alone {} files the store did not write: {}{}",
            r.foreign.len(),
            shown.join(", "),
            if r.foreign.len() > 5 { ", ..." } else { "" }
        )?;
    }
    if r.still_linked > 0 {
        outln!(
            "{} of those objects ({}) are still linked from runs/ folders: their space is freed \
             once those runs go (`stepgraph runs prune --keep N`, `stepgraph runs rm ID`)",
            r.still_linked,
            render::bytes(r.still_linked_bytes)
        )?;
    }
    if let Some(max) = max_size {
        outln!(
            "store disk usage: {} before, about {} after (--max-size {})",
            render::bytes(r.size_before),
            render::bytes(r.size_before.saturating_sub(r.bytes)),
            render::bytes(max)
        )?;
    }
    if let (Some(max), true) = (max_size, r.over_max_size) {
        outln!(
            "the store is still over {}: what the latest runs (and --keep-last) use is kept; \
             remove old runs (`stepgraph runs prune`) or lower --keep-last",
            render::bytes(max)
        )?;
    }
    Ok(())
}

fn print_runs_report(r: &RunsReport) -> Result<i32> {
    let (verb, freed) = if r.dry_run {
        ("would remove", "would free")
    } else {
        ("removed", "freed")
    };
    for id in &r.removed {
        outln!("{verb} run {id}")?;
    }
    for id in &r.running {
        outln!("kept run {id}: still running")?;
    }
    outln!(
        "{verb} {} runs (kept {}); {freed} {} on disk (outputs stay in the cache until \
         `stepgraph cache gc` removes their entries)",
        r.removed.len(),
        r.kept,
        render::bytes(r.bytes)
    )?;
    Ok(exit::OK)
}
