//! Finding results: `outputs` (a run's outputs: step, name, path, size), `get` (one output
//! copied or hard-linked out of the store) and the final outputs printed after `run`.

#[allow(clippy::wildcard_imports)]
use super::*;
use std::os::unix::fs::PermissionsExt;

use stepgraph_engine::{RunRecord, RunSummary, SnapshotNode};

/// One output of one step of a run.
#[derive(Debug, serde::Serialize)]
struct OutputRow {
    /// The step.
    step: String,
    /// The output's data name (its folder's name).
    output: String,
    /// The step's port producing it.
    port: String,
    /// The step's status in the run.
    status: String,
    /// The output's folder (a name that is not UTF-8 is written lossily: JSON strings are
    /// text).
    #[serde(serialize_with = "lossy_path")]
    path: PathBuf,
    /// Whether the folder is there (a failed or skipped step has none).
    exists: bool,
    /// Files in it.
    files: u64,
    /// Their total size in bytes.
    size: u64,
}

/// Serialize `path` as text, lossily.
fn lossy_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// The outputs of every step of `rec`, in topological order.
fn outputs_of(store: &Store, rec: &RunRecord) -> Vec<OutputRow> {
    let layout = store.run_layout(&rec.id);
    let status = |step: &str| {
        rec.steps
            .iter()
            .find(|s| s.name == step)
            .map_or("?", |s| s.status.as_str())
            .to_string()
    };
    rec.graph
        .nodes
        .iter()
        .flat_map(|n| {
            n.outputs.iter().map(|o| {
                let path = layout.find_output_dir(&n.name, &o.port, &o.data);
                let (files, size) = folder_size(&path);
                OutputRow {
                    step: n.name.clone(),
                    output: o.data.clone(),
                    port: o.port.clone(),
                    status: status(&n.name),
                    exists: path.is_dir(),
                    path,
                    files,
                    size,
                }
            })
        })
        .collect()
}

/// Files under `dir` and their total length (each link counted: what a copy would take).
fn folder_size(dir: &Path) -> (u64, u64) {
    let files = runs::walk(dir);
    let size = files
        .iter()
        .filter_map(|f| fs_err::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    (files.len() as u64, size)
}

/// `path` relative to the current folder when it is inside it (shorter to read and paste).
fn shown(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// The run `run`, or the newest run when `None`.
fn run_or_latest(store: &Store, run: Option<&str>) -> Result<RunRecord> {
    match run {
        Some(id) => store
            .run_get(id)?
            .ok_or_else(|| anyhow!("unknown run {id:?} (see `stepgraph runs`)")),
        None => store.runs()?.into_iter().next().ok_or_else(|| {
            anyhow!(
                "no runs in {} (run a pipeline first: stepgraph run SPEC)",
                store.root().display()
            )
        }),
    }
}

/// `outputs [RUN_ID] [--json]`.
pub(super) fn cmd_outputs(store: &Store, run: Option<&str>, json: bool) -> Result<i32> {
    let rec = run_or_latest(store, run)?;
    let rows = outputs_of(store, &rec);
    if json {
        let v = serde_json::json!({
            "run": rec.id,
            "pipeline": rec.pipeline,
            "outputs": serde_json::to_value(&rows)?,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(exit::OK);
    }
    outln!(
        "run {} of pipeline {}: {}",
        rec.id,
        rec.pipeline,
        render::status_word(rec.status.as_str())
    )?;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.step.clone(),
                r.output.clone(),
                r.status.clone(),
                if r.exists {
                    format!("{} ({})", render::bytes(r.size), files(r.files))
                } else {
                    "-".into()
                },
                if r.exists {
                    shown(&r.path).display().to_string()
                } else if matches!(r.status.as_str(), "ran" | "reused") {
                    "- (its folder was removed)".into()
                } else {
                    format!("- (step {})", r.status)
                },
            ]
        })
        .collect();
    out!(
        "{}",
        render::table(&["step", "output", "status", "size", "path"], &table)
    )?;
    Ok(exit::OK)
}

/// After `run`: the output folders of the final steps (those no other step follows).
pub(super) fn print_final_outputs(summary: &RunSummary) -> std::io::Result<()> {
    let g = &summary.graph;
    let sinks: Vec<&SnapshotNode> = g
        .nodes
        .iter()
        .filter(|n| !g.edges.iter().any(|e| e.from == n.name))
        .collect();
    let layout = stepgraph_engine::RunLayout::new(&summary.run_dir);
    let mut lines = Vec::new();
    // A failed step's output folder holds what it left behind, not a result.
    let delivered = |step: &str| {
        summary
            .step(step)
            .is_some_and(|s| matches!(s.status, StepStatus::Ran | StepStatus::Reused))
    };
    for n in sinks.into_iter().filter(|n| delivered(&n.name)) {
        for o in &n.outputs {
            let dir = layout.find_output_dir(&n.name, &o.port, &o.data);
            if dir.is_dir() {
                lines.push(format!(
                    "  {}:{}  {}",
                    n.name,
                    o.data,
                    shown(&dir).display()
                ));
            }
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    outln!("outputs (`stepgraph outputs` lists them all, `stepgraph get STEP DEST` copies one):")?;
    for l in lines {
        outln!("{l}")?;
    }
    Ok(())
}

/// `get STEP[:OUTPUT] DEST [--run RUN_ID] [--link] [--force]`.
pub(super) fn cmd_get(
    store: &Store,
    target: &str,
    dest: &Path,
    run: Option<&str>,
    link: bool,
    force: bool,
) -> Result<i32> {
    let (step, wanted) = match target.split_once(':') {
        Some((s, o)) => (s, Some(o)),
        None => (target, None),
    };
    let rec = match run {
        Some(_) => run_or_latest(store, run)?,
        None => store
            .runs()?
            .into_iter()
            .find(|r| {
                r.steps.iter().any(|s| {
                    s.name == step && matches!(s.status, StepStatus::Ran | StepStatus::Reused)
                })
            })
            .ok_or_else(|| {
                anyhow!("no run has an output of step {step:?} (see `stepgraph outputs`)")
            })?,
    };
    let rows = outputs_of(store, &rec);
    let of_step: Vec<&OutputRow> = rows.iter().filter(|r| r.step == step).collect();
    if of_step.is_empty() {
        let steps: BTreeSet<&str> = rec.graph.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!(
            "run {} has no step {step:?} with outputs (steps: {})",
            rec.id,
            steps.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let names = || {
        of_step
            .iter()
            .map(|r| r.output.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let row = match wanted {
        Some(o) => of_step
            .iter()
            .find(|r| r.output == o)
            .or_else(|| of_step.iter().find(|r| r.port == o))
            .ok_or_else(|| anyhow!("step {step:?} has no output {o:?} (outputs: {})", names()))?,
        None if of_step.len() == 1 => &of_step[0],
        None => bail!(
            "step {step:?} has several outputs: say which, as {step}:OUTPUT (outputs: {})",
            names()
        ),
    };
    if !matches!(row.status.as_str(), "ran" | "reused") {
        bail!(
            "step {step:?} has no output {:?} in run {}: it {}",
            row.output,
            rec.id,
            row.status
        );
    }
    if !row.exists {
        bail!(
            "the output {}:{} of run {} is missing: its folder {} was removed",
            row.step,
            row.output,
            rec.id,
            shown(&row.path).display()
        );
    }
    if inside_store(store, dest) {
        bail!(
            "{} is inside the store {}: choose a folder outside it",
            dest.display(),
            store.root().display()
        );
    }
    if fs_err::metadata(dest).is_ok_and(|m| !m.is_dir()) {
        bail!(
            "{} is a file: DEST is the folder the output's files are copied into",
            dest.display()
        );
    }
    if link && !same_file_system(&row.path, dest) {
        bail!(
            "--link cannot hard-link into {}: it is on another file system than the store {}; \
             leave --link out to copy",
            dest.display(),
            store.root().display()
        );
    }
    if !force && is_non_empty(dest) {
        bail!(
            "{} exists and is not empty: choose another folder, or pass --force to write into \
             it (files of the same names are replaced)",
            dest.display()
        );
    }
    let files = runs::walk(&row.path);
    fs_err::create_dir_all(dest)?;
    for f in &files {
        let rel = f.strip_prefix(&row.path).unwrap_or(f);
        let to = dest.join(rel);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent)?;
        }
        if fs_err::symlink_metadata(&to).is_ok() {
            fs_err::remove_file(&to)?;
        }
        if link {
            fs_err::hard_link(f, &to).with_context(|| {
                "--link needs DEST on the store's file system; leave it out to copy"
            })?;
        } else {
            fs_err::copy(f, &to)?;
            // Store objects are read-only; a copy is the user's to edit.
            let mut perms = fs_err::metadata(&to)?.permissions();
            perms.set_mode(perms.mode() | 0o200);
            fs_err::set_permissions(&to, perms)?;
        }
    }
    outln!(
        "{} {}:{} of run {} ({}, {}) to {}",
        if link { "linked" } else { "copied" },
        row.step,
        row.output,
        rec.id,
        self::files(files.len() as u64),
        render::bytes(row.size),
        dest.display()
    )?;
    Ok(exit::OK)
}

/// Whether `dest` (which may not exist yet) is in the store's folder: writing there could
/// replace the store's own files.
fn inside_store(store: &Store, dest: &Path) -> bool {
    let Ok(root) = fs_err::canonicalize(store.root()) else {
        return false;
    };
    let abs = std::path::absolute(dest).unwrap_or_else(|_| dest.to_path_buf());
    // The nearest existing ancestor, resolved (symbolic links included).
    abs.ancestors()
        .find_map(|a| fs_err::canonicalize(a).ok())
        .is_some_and(|a| a.starts_with(&root))
}

/// `1 file`, `3 files`.
fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// Whether `dest` (or, when it does not exist yet, its nearest existing parent) is on the
/// file system of `from`: hard links cannot cross file systems.
fn same_file_system(from: &Path, dest: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let abs = std::path::absolute(dest).unwrap_or_else(|_| dest.to_path_buf());
    let dest_dev = abs.ancestors().find_map(|a| fs_err::metadata(a).ok());
    match (fs_err::metadata(from), dest_dev) {
        (Ok(a), Some(b)) => a.dev() == b.dev(),
        // Unknown: let the link itself say.
        _ => true,
    }
}

/// A file, or a folder with anything in it (a symbolic link is judged by what it points to).
fn is_non_empty(p: &Path) -> bool {
    match fs_err::metadata(p) {
        Err(_) => false,
        Ok(m) if m.is_dir() => fs_err::read_dir(p).map_or(true, |mut rd| rd.next().is_some()),
        Ok(_) => true,
    }
}
