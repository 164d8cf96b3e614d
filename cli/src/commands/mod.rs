//! The subcommands: parsing what they share here, one file per group (`run.rs`: run, status,
//! explain; `runs.rs`: graph, runs, logs; `outputs.rs`: outputs, get; `pictures.rs`: the svg
//! graph and report; `cache.rs`: cache; `store_dir.rs`: finding the store).

mod agent;
mod cache;
mod outputs;
mod pictures;
mod run;
mod runs;
mod store_dir;

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
use stepgraph_engine::{GcOptions, GcReport, RunsReport};

use self::cache::cmd_cache;
use self::run::{cmd_explain, cmd_run, cmd_status};
use self::runs::{
    cmd_logs, cmd_run_show, cmd_runs, print_graph, print_run_graph, print_runs_report,
};

pub(crate) fn dispatch(cli: Cli, source: Source) -> Result<i32> {
    // An agent opens no store (it only relays mini-batches for a coordinator), whatever
    // STEPGRAPH_STORE says on its node.
    if let Command::Agent {
        connect,
        token_file,
        node,
    } = cli.command
    {
        return agent::cmd_agent(connect, token_file, node);
    }
    let built = matches!(source, Source::Built(_));
    let chosen = store_dir::choose(cli.store.as_deref(), &cli.command, built)?;
    let store_dir = chosen.dir;
    let announce_new = chosen.new && !matches!(cli.command, Command::Run { .. });
    let wait = cli.wait;
    // Every command but a run only reads or frees space: on a full disk it may use the
    // store's reserve to open it.
    let use_reserve = !matches!(&cli.command, Command::Run { opts, .. } if !opts.dry_run);
    let open = || -> Result<Store> {
        if announce_new && !store_dir.exists() {
            errln!(
                "note: no {} store in this folder, its parents or the spec's folder: using a \
                 new one, {} (--store DIR or STEPGRAPH_STORE choose another)",
                store_dir::STORE_NAME,
                store_dir.display()
            );
        }
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
            output,
        } => {
            let store = open()?;
            pictures::with_output(output.as_deref(), || {
                cmd_graph(&source, &store, target.as_deref(), format, &params)
            })
        }
        Command::Report { run, output } => pictures::cmd_report(&open()?, run.as_deref(), &output),
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
        Command::Outputs { run, json } => outputs::cmd_outputs(&open()?, run.as_deref(), json),
        Command::Get {
            output,
            dest,
            run,
            link,
            force,
        } => outputs::cmd_get(&open()?, &output, &dest, run.as_deref(), link, force),
        Command::Cache { action } => cmd_cache(&open()?, action),
        Command::Agent {
            connect,
            token_file,
            node,
        } => agent::cmd_agent(connect, token_file, node),
        Command::Validate { spec } => {
            let pipeline = pipeline_of(&source, spec.as_deref())?;
            // Steps on Slurm need its commands and a partition the cluster knows.
            let problems = stepgraph_steps::slurm_problems(&pipeline);
            if !problems.is_empty() {
                let file = spec
                    .map(|s| format!("{}: ", s.display()))
                    .unwrap_or_default();
                for p in problems {
                    errln!("error: {file}{p}");
                }
                return Ok(exit::BAD_INPUT);
            }
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

/// `graph`: a spec's or a built pipeline's graph with its plan, or the graph of a past run.
fn cmd_graph(
    source: &Source,
    store: &Store,
    target: Option<&str>,
    format: GraphFormat,
    params: &[String],
) -> Result<i32> {
    let spec_target = match (source, target) {
        (Source::Built(_), None) => None,
        (Source::Built(_), Some(t)) => {
            return print_run_graph(store, t, format);
        }
        (Source::Spec, None) => bail!("graph needs a spec file or a run id"),
        (Source::Spec, Some(t)) if !Path::new(t).exists() && store.run_get(t)?.is_some() => {
            return print_run_graph(store, t, format);
        }
        (Source::Spec, Some(t)) => Some(PathBuf::from(t)),
    };
    let pipeline = pipeline_of(source, spec_target.as_deref())?;
    let p = plan(&pipeline, store, &plan_opts(params, &[], false)?)?;
    let mut statuses = render::plan_statuses(&p);
    if format == GraphFormat::Svg {
        pictures::mark_failed(store, pipeline.name(), &mut statuses)?;
    }
    print_graph(&pipeline.snapshot(), &statuses, format, Some(&p))?;
    Ok(exit::OK)
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
        estimate_units: false,
    })
}
