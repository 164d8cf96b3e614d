//! `graph` of a run, `runs` (list, show, rm, prune) and `logs`.

#[allow(clippy::wildcard_imports)]
use super::*;
use stepgraph_engine::StepRecord;

pub(super) fn print_run_graph(store: &Store, run: &str, format: GraphFormat) -> Result<i32> {
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

pub(super) fn print_graph(
    g: &stepgraph_engine::GraphSnapshot,
    statuses: &render::Statuses,
    format: GraphFormat,
    plan: Option<&stepgraph_engine::Plan>,
) -> Result<()> {
    match format {
        GraphFormat::Text => out!("{}", render::graph_text(g, statuses))?,
        GraphFormat::Dot => out!("{}", render::graph_dot(g, statuses))?,
        GraphFormat::Mermaid => out!("{}", render::graph_mermaid(g, statuses))?,
        GraphFormat::Svg => out!("{}", crate::svg::graph_svg(g, statuses)?)?,
        GraphFormat::Json => {
            let v = serde_json::json!({"graph": g, "status": statuses, "plan": plan});
            outln!("{}", serde_json::to_string_pretty(&v)?)?;
        }
    }
    Ok(())
}

pub(super) fn cmd_runs(store: &Store, json: bool) -> Result<i32> {
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
            vec![
                r.id.clone(),
                r.pipeline.clone(),
                render::status_word(r.status.as_str()),
                render::time(r.started_unix_ms),
                r.finished_unix_ms
                    .map(|f| render::duration(f.saturating_sub(r.started_unix_ms)))
                    .unwrap_or_else(|| "-".into()),
                crate::report::counts_line(r),
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

pub(super) fn cmd_run_show(store: &Store, run: &str, json: bool) -> Result<i32> {
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
    outln!("started {}", render::time(r.started_unix_ms))?;
    if !r.params.is_empty() {
        let ps: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!("parameters: {}", ps.join(", "))?;
    }
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| {
            let c = &s.counts;
            render::step_row(
                s,
                [
                    render::duration(s.duration_ms),
                    s.key
                        .as_deref()
                        .map(|k| k.get(..12).unwrap_or(k).to_string())
                        .unwrap_or_else(|| "-".into()),
                    if c.has_units() {
                        format!(
                            "{} items ({} failed), {}",
                            c.items,
                            c.failed_items,
                            render::units_summary(c)
                        )
                    } else {
                        "-".into()
                    },
                    s.reused_from.clone().unwrap_or_default(),
                ],
            )
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
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    let metrics = crate::metrics::rows(&store.run_layout(&r.id), &names);
    if !metrics.is_empty() {
        outln!("\nmetrics (<step>/metrics.jsonl in the run folder):")?;
        let header = ["step", "metric", "kind", "values", "last"];
        out!("{}", render::table(&header, &metrics))?;
    }
    let failed = |s: &&StepRecord| s.error.is_some() && s.status == StepStatus::Failed;
    for s in r.steps.iter().filter(failed) {
        outln!("{}", render::step_failure(s))?;
    }
    outln!("outputs: stepgraph outputs {}", r.id)?;
    Ok(exit::OK)
}

pub(super) fn cmd_logs(store: &Store, run: &str, step: &str, worker: Option<usize>) -> Result<i32> {
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
    let mut logs = store.run_layout(run).log_dir(step);
    // A reused step did not run here: its logs are those of the run that produced its output.
    let reused_from = rec
        .steps
        .iter()
        .find(|s| s.name == step && s.status == StepStatus::Reused)
        .and_then(|s| s.reused_from.clone())
        .filter(|from| from != run);
    if let Some(from) = reused_from {
        if store.run_get(&from)?.is_none() {
            outln!(
                "step {step:?} was reused in run {run} from run {from}, which has been removed: \
                 its logs are gone"
            )?;
            return Ok(exit::OK);
        }
        outln!("step {step:?} was reused in run {run}: it ran in run {from}; its logs:")?;
        logs = store.run_layout(&from).log_dir(step);
    }
    if let Some(w) = worker {
        return print_worker_logs(&logs, w);
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
        match fs_err::read(&f) {
            Ok(bytes) => {
                crate::out::stdout_bytes(&bytes)?;
                if !bytes.ends_with(b"\n") && !bytes.is_empty() {
                    outln!()?;
                }
            }
            Err(e) => outln!("({e})")?,
        }
    }
    Ok(exit::OK)
}

/// Worker `w`'s logs in Azure's layout (`logs/user/{stdout,stderr,entry_script_log}/<node>/
/// <process>.*`; workers are numbered node by node, process by process), or the single
/// `logs/user/worker-N.txt` of runs made before that layout.
fn print_worker_logs(logs: &Path, w: usize) -> Result<i32> {
    let user = logs.join("user");
    let Some((node, process)) = worker_places(&user).into_iter().nth(w) else {
        let p = user.join(format!("worker-{w}.txt"));
        let bytes = fs_err::read(&p)
            .with_context(|| format!("no log for worker {w} ({})", user.display()))?;
        crate::out::stdout_bytes(&bytes)?;
        return Ok(exit::OK);
    };
    for (kind, suffix) in [
        ("stdout", ".stdout.txt"),
        ("stderr", ".stderr.txt"),
        ("entry_script_log", ".log.txt"),
    ] {
        let rel = Path::new("user")
            .join(kind)
            .join(&node)
            .join(format!("{process}{suffix}"));
        let Ok(bytes) = fs_err::read(logs.join(&rel)) else {
            continue;
        };
        outln!("==> {} <==", rel.display())?;
        crate::out::stdout_bytes(&bytes)?;
        if !bytes.ends_with(b"\n") && !bytes.is_empty() {
            outln!()?;
        }
    }
    Ok(exit::OK)
}

/// The (node, process) of every worker that wrote `user/stderr/<node>/<process>.stderr.txt`
/// (the engine creates it for each), in worker order: nodes by number, processes by name.
fn worker_places(user: &Path) -> Vec<(String, String)> {
    let names = |dir: &Path| -> Vec<String> {
        fs_err::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let stderr = user.join("stderr");
    let mut nodes = names(&stderr);
    nodes.sort_by_key(|n| (n.parse::<u64>().unwrap_or(u64::MAX), n.clone()));
    let mut out = Vec::new();
    for node in nodes {
        let mut processes: Vec<String> = names(&stderr.join(&node))
            .into_iter()
            .filter_map(|f| f.strip_suffix(".stderr.txt").map(str::to_string))
            .collect();
        processes.sort();
        out.extend(processes.into_iter().map(|p| (node.clone(), p)));
    }
    out
}

/// The files under `dir`, recursively. Symbolic links are neither followed nor listed: the
/// store's own files are never links, and a failed step's leftovers may hold a link loop.
pub(super) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs_err::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                out.extend(walk(&e.path()));
            } else if !kind.is_symlink() {
                out.push(e.path());
            }
        }
    }
    out
}

pub(super) fn print_runs_report(r: &RunsReport) -> Result<i32> {
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
