//! The step's execution: partition the inputs, resume from committed progress, dispatch the
//! mini-batches to the workers, gather the output and move it into place.

use fs_err::{self as fs, File, OpenOptions};
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use stepgraph_engine::{
    grouped, ErrorContext, InputKind, ProgressLog, ResolvedInput, StepContext, StepCounts,
    StepError,
};

use super::collect::Collector;
use super::config::OutputAction;
use super::partition::{self, MiniBatchSpec, PartitionValues, TabularSource};
use super::results::{Memo, Results, Stored};
use super::size::BatchSize;
use super::step::{input_port, ParallelRunStep};
use super::workers::make_workers;
use super::{datasets, dispatch, gather, incremental, report, writes};

/// Mini-batches of the step's main inputs (`inputs`: the resolved inputs by port), in
/// deterministic order; for an incremental step's rows cut by size, each one's content
/// digest, computed while partitioning.
pub(super) fn partition_inputs(
    step: &ParallelRunStep,
    inputs: &BTreeMap<String, ResolvedInput>,
) -> Result<(Vec<MiniBatchSpec>, Option<Vec<blake3::Hash>>), StepError> {
    let cfg = &step.config;
    let formats = step.partition_formats().context("partitioning inputs")?;
    let keys = cfg.partition_keys();
    // Keys read from the paths' partition values rather than from columns.
    let keys_from_paths = keys.is_some_and(|k| {
        formats
            .iter()
            .flatten()
            .any(|f| k.iter().any(|k| f.keys().contains(k)))
    });
    let mut files: Vec<(PathBuf, PartitionValues)> = Vec::new();
    // Each file's name relative to its dataset (where content-defined boundaries fall).
    let mut relatives: Vec<String> = Vec::new();
    let mut sources: Vec<(TabularSource, PartitionValues)> = Vec::new();
    for (i, source) in step.inputs.iter().enumerate() {
        let port = input_port(i);
        let Some(input) = inputs.get(&port) else {
            return Err(StepError::new(format!("input {port:?} was not resolved")));
        };
        let format = formats.get(i).and_then(Option::as_ref);
        let values = datasets::values_of(source, format, input.files(), keys_from_paths)
            .context("partitioning inputs")?;
        match &input.kind {
            InputKind::Files(fs) => {
                files.extend(fs.iter().map(|f| f.path.clone()).zip(values));
                relatives.extend(fs.iter().map(|f| f.relative.clone()));
            }
            InputKind::Tabular { format, files: fs } => {
                let format = *format;
                datasets::check_columns(
                    source,
                    formats.get(i).and_then(Option::as_ref),
                    format,
                    fs,
                )
                .context("partitioning inputs")?;
                sources.extend(
                    fs.iter()
                        .map(|f| TabularSource::new(f.path.clone(), format))
                        .zip(values),
                );
            }
        }
    }
    let with_partitions = formats.iter().any(Option::is_some);
    let err = |e: partition::PartitionError| StepError::with_source("partitioning inputs", e);
    let mut digests = None;
    let mut specs = match keys {
        Some(keys) if keys_from_paths && sources.is_empty() => {
            datasets::partition_files_by_keys(&files, keys)
        }
        Some(keys) if keys_from_paths => {
            // Every row of a file shares its partition values: one mini-batch of whole
            // files per key combination.
            let mut out = Vec::new();
            for (kv, members) in datasets::group_by_keys(&sources, keys) {
                let group: Vec<TabularSource> = members.into_iter().map(|(s, _)| s).collect();
                for mut spec in partition::partition_tabular(&group, u64::MAX).map_err(err)? {
                    if let MiniBatchSpec::Tabular {
                        partition_key_value,
                        ..
                    } = &mut spec
                    {
                        *partition_key_value = Some(kv.clone());
                    }
                    out.push(spec);
                }
            }
            out
        }
        Some(keys) if !sources.is_empty() => {
            let plain: Vec<TabularSource> = sources.iter().map(|(s, _)| s.clone()).collect();
            partition::partition_by_keys(&plain, keys).map_err(err)?
        }
        _ => {
            // The size was resolved against the same inputs when the step was built.
            let size = cfg
                .batch_size(!sources.is_empty())
                .context("partitioning inputs")?;
            match size {
                BatchSize::Bytes(bytes) => {
                    let plain: Vec<TabularSource> =
                        sources.iter().map(|(s, _)| s.clone()).collect();
                    if cfg.incremental() {
                        let (specs, d): (Vec<_>, Vec<_>) =
                            partition::cdc::partition_tabular_cdc(&plain, bytes)
                                .map_err(err)?
                                .into_iter()
                                .unzip();
                        digests = Some(d);
                        specs
                    } else {
                        partition::partition_tabular(&plain, bytes).map_err(err)?
                    }
                }
                BatchSize::Files(n) if cfg.incremental() => {
                    let named: Vec<(PathBuf, String)> = files
                        .iter()
                        .map(|(f, _)| f.clone())
                        .zip(relatives.iter().cloned())
                        .collect();
                    partition::cdc::partition_files_cdc(&named, n)
                }
                BatchSize::Files(n) => {
                    let plain: Vec<PathBuf> = files.iter().map(|(f, _)| f.clone()).collect();
                    partition::partition_files(&plain, n)
                }
            }
        }
    };
    if with_partitions {
        attach_partitions(&mut specs, &files, &sources);
    }
    Ok((specs, digests))
}

/// Give each file and segment of `specs` its partition values (files in input order; a
/// segment's file looked up by path).
fn attach_partitions(
    specs: &mut [MiniBatchSpec],
    files: &[(PathBuf, PartitionValues)],
    sources: &[(TabularSource, PartitionValues)],
) {
    let of_file: std::collections::HashMap<&Path, &PartitionValues> =
        files.iter().map(|(p, v)| (p.as_path(), v)).collect();
    let of_source: std::collections::HashMap<&Path, &PartitionValues> =
        sources.iter().map(|(s, v)| (s.path.as_path(), v)).collect();
    for spec in specs {
        match spec {
            MiniBatchSpec::Files {
                files, partitions, ..
            } => {
                *partitions = files
                    .iter()
                    .map(|f| {
                        of_file
                            .get(f.as_path())
                            .map(|v| (*v).clone())
                            .unwrap_or_default()
                    })
                    .collect();
            }
            MiniBatchSpec::Tabular {
                segments,
                partitions,
                ..
            } => {
                *partitions = segments
                    .iter()
                    .map(|s| {
                        of_source
                            .get(s.path.as_path())
                            .map(|v| (*v).clone())
                            .unwrap_or_default()
                    })
                    .collect();
            }
        }
    }
}

/// Run the step: see the module's summary.
pub(super) fn execute(
    step: &ParallelRunStep,
    ctx: &StepContext<'_>,
) -> Result<StepCounts, StepError> {
    let cfg = &step.config;
    let (specs, digests) = partition_inputs(step, ctx.inputs)?;
    let (mut sys_log, user_dir) = open_logs(ctx)?;
    let staging = Staging::new(ctx);
    let (mut log, committed) = if cfg.incremental() {
        memo_results(step, ctx, &specs, digests.as_deref())?
    } else {
        let log = staging.open(ctx)?;
        let committed: BTreeMap<u64, Stored> = log
            .committed()?
            .into_iter()
            .filter(|(i, _)| (*i as usize) < specs.len())
            .map(|(i, r)| (i, Stored::Log(r)))
            .collect();
        (Results::Log(log), committed)
    };
    if committed.is_empty() || cfg.incremental() {
        // Nothing to resume (an incremental step resumes from its memo, not from staged
        // files): files left in staging by an earlier attempt must not leak in.
        staging.clear()?;
    }
    fs::create_dir_all(&staging.output_dir)?;
    let resumed: BTreeMap<u64, Value> = committed
        .iter()
        .map(|(i, r)| (*i, r.meta().clone()))
        .collect();
    let pending = plan(
        ctx,
        &mut sys_log,
        &specs,
        &resumed,
        cfg.incremental(),
        cfg.workers(),
    );

    let side_inputs: BTreeMap<String, PathBuf> = ctx
        .inputs
        .values()
        .filter(|i| i.role == stepgraph_engine::InputRole::Side)
        .map(|i| (i.port.clone(), i.path.clone()))
        .collect();
    let mut gatherer = make_gatherer(step, &staging, &committed, specs.len(), &log)?;
    let summary_only = cfg.output_action() == OutputAction::SummaryOnly;
    // An incremental summary_only step: each worker writes into its own folder, so that each
    // mini-batch's files are known (and memoised with it).
    let collect = (summary_only && cfg.incremental()).then(|| Collector::new(&staging.dir));
    if let Some(c) = &collect {
        c.prepare(cfg.workers())?;
    }
    // summary_only: notice files that several mini-batches write (rows duplicated on a redo).
    // Not needed when each mini-batch's files are collected apart.
    let watch = (summary_only && collect.is_none()).then(|| {
        writes::WriteWatch::new(
            &staging.output_dir,
            &staging.dir.join("output-listing.bin"),
            !resumed.is_empty(),
        )
    });
    // Marks every process of this execution; dropping it kills whatever they left behind.
    let tree = crate::process::ProcessTree::new();
    let (workers, kill, notices) = make_workers(
        step,
        ctx,
        &tree,
        &staging.output_dir,
        &user_dir,
        &side_inputs,
        collect.as_ref(),
    )?;
    // Remote workers' messages (nodes ready or lost) reach the run's events meanwhile.
    let outcome = notices.relay(ctx, || {
        dispatch::Dispatch {
            ctx,
            config: cfg,
            specs: &specs,
            pending,
            resumed: &resumed,
            reused: cfg.incremental(),
            workers,
            kill,
            log: &mut log,
            gatherer: gatherer.as_mut(),
            watch: watch.as_ref(),
            collect: collect.as_ref(),
            sys_log: &mut sys_log,
        }
        .run()
    });
    // The workers have stopped (normally, on error or on abort): kill what they left behind.
    drop(tree);
    let outcome = outcome?;
    let warnings = watch.map(|w| w.warnings()).unwrap_or_default();
    for w in &warnings {
        let _ = writeln!(sys_log, "{w}");
        ctx.message("warn", w.clone());
    }
    let _ = sys_log.flush();

    report::write_job_result(step, ctx, &outcome, specs.len(), &warnings)?;
    if let Some(reason) = &outcome.abort {
        return Err(report::failure(step, ctx, &outcome, reason));
    }
    if let Some(g) = gatherer {
        g.finish(specs.len() as u64)?;
    }
    if let (Some(c), Results::Memo(memo)) = (&collect, &log) {
        memo.check_copied()?;
        for w in c.leftovers(cfg.workers()) {
            let msg = format!("{w}: files written outside run() (in init() or shutdown()) are not part of an incremental summary_only step's output");
            let _ = writeln!(sys_log, "{msg}");
            ctx.message("warn", msg);
        }
        let failed: std::collections::BTreeSet<u64> =
            outcome.failed.iter().map(|f| f.index).collect();
        let of = |i: u64| {
            memo.produced(i)
                .or_else(|| committed.get(&i))
                .and_then(Stored::files)
        };
        assemble_files(ctx, specs.len() as u64, &failed, of, &staging.output_dir)?;
    }
    staging.deliver(step, ctx, log)?;
    Ok(outcome.counts)
}

/// An incremental step's results: the unit memo, with the mini-batches it already holds
/// (none when the step must recompute: `--force`, allow_reuse off, regenerate_outputs).
fn memo_results<'s>(
    step: &ParallelRunStep,
    ctx: &StepContext<'s>,
    specs: &[MiniBatchSpec],
    digests: Option<&[blake3::Hash]>,
) -> Result<(Results<'s>, BTreeMap<u64, Stored>), StepError> {
    let keys = incremental::mini_batch_keys(step, ctx.inputs, ctx.fingerprint, specs, digests)
        .context("keying mini-batches")?;
    let mut reused = BTreeMap::new();
    if ctx.resume {
        for (i, key) in keys.iter().enumerate() {
            if let Some(rec) = ctx.unit_get(key)? {
                reused.insert(i as u64, Stored::of_unit(&rec));
            }
        }
    }
    // Each mini-batch's input files as they are now, when their keys were computed: a
    // result computed after one of them changed is not memoised under the old key. Only
    // for the mini-batches that will run (reused ones are never memoised again).
    let inputs = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            if reused.contains_key(&(i as u64)) {
                return Vec::new();
            }
            let mut paths: Vec<PathBuf> = match spec {
                MiniBatchSpec::Files { files, .. } => files.clone(),
                MiniBatchSpec::Tabular { segments, .. } => {
                    segments.iter().map(|s| s.path.clone()).collect()
                }
            };
            paths.dedup();
            paths
                .into_iter()
                .map(|p| {
                    let st = super::results::file_stat(&p);
                    (p, st)
                })
                .collect()
        })
        .collect();
    let memo = Memo::new(ctx.unit_writer(), keys, inputs, ctx.pipeline, ctx.step);
    Ok((Results::Memo(memo), reused))
}

/// An incremental summary_only step's output: the files of every mini-batch this run ran
/// or reused (`files_of`), in mini-batch order; mini-batches that failed after all their
/// tries (`failed`) have none. Two mini-batches writing one file is refused: which one would
/// win depends on what ran, and reuse must not change the output.
fn assemble_files<'a>(
    ctx: &StepContext<'_>,
    total: u64,
    failed: &std::collections::BTreeSet<u64>,
    files_of: impl Fn(u64) -> Option<&'a BTreeMap<String, stepgraph_engine::ObjectRef>>,
    out: &Path,
) -> Result<(), StepError> {
    let mut written: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for index in (0..total).filter(|i| !failed.contains(i)) {
        let Some(files) = files_of(index) else {
            return Err(StepError::new(format!(
                "mini-batch {index} has no result to gather"
            )));
        };
        for (name, obj) in files {
            let Some(encoded) = name.strip_prefix(super::results::FILES) else {
                continue;
            };
            if let Some(first) = written.insert(encoded.to_string(), index) {
                let shown = crate::process::escape_controls(encoded);
                return Err(StepError::new(format!(
                    "mini-batches {first} and {index} both wrote {shown}: an incremental summary_only entry must write one file per mini-batch, named from the mini-batch (e.g. from its first item); files written in init() count as the first mini-batch's of each worker, so write those elsewhere (EntryScript().working_dir)"
                )));
            }
            let rel = stepgraph_engine::relpath::decode(encoded)
                .map_err(|e| StepError::with_source(format!("stored file name {encoded:?}"), e))?;
            let dest = out.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            ctx.copy_object(obj, &dest)?;
        }
    }
    Ok(())
}

/// append_row: the output is gathered in order while mini-batches finish, starting from the
/// committed (or reused) ones.
fn make_gatherer(
    step: &ParallelRunStep,
    staging: &Staging,
    committed: &BTreeMap<u64, Stored>,
    total: usize,
    log: &Results<'_>,
) -> Result<Option<gather::Gatherer>, StepError> {
    let cfg = &step.config;
    if cfg.output_action() != OutputAction::AppendRow || step.output.is_none() {
        return Ok(None);
    }
    let path = staging.output_dir.join(cfg.append_row_file_name());
    let mut g = gather::Gatherer::create(&path, cfg.append_row_format())?;
    for (i, rec) in committed {
        if (*i as usize) < total {
            g.add(*i, gather::Piece::Committed(rec.clone()), log)?;
        }
    }
    Ok(Some(g))
}

/// `logs/sys/events.txt`, opened for appending, and the `logs/user` folder.
fn open_logs(ctx: &StepContext<'_>) -> Result<(BufWriter<File>, PathBuf), StepError> {
    let sys_dir = ctx.log_dir.join("sys");
    let user_dir = ctx.log_dir.join("user");
    fs::create_dir_all(&sys_dir)?;
    fs::create_dir_all(&user_dir)?;
    let sys_log = BufWriter::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(sys_dir.join("events.txt"))?,
    );
    Ok((sys_log, user_dir))
}

/// Where this step's staged outputs live. Progress and staging belong to this step AND key
/// (`StepContext::resume_log`, `StepContext::staging_dir`): two steps of one pipeline with the
/// same definition share a key and may run at the same time.
struct Staging {
    /// Outputs written by entries go to a staging folder that survives a crash, so a resumed
    /// run keeps the files of mini-batches committed before it.
    dir: PathBuf,
    /// The staged output folder.
    output_dir: PathBuf,
}

impl Staging {
    fn new(ctx: &StepContext<'_>) -> Self {
        let dir = ctx.staging_dir();
        let output_dir = dir.join("output");
        Staging { dir, output_dir }
    }

    /// The progress log, emptied first when the step must not resume.
    fn open<'s>(&self, ctx: &StepContext<'s>) -> Result<ProgressLog<'s>, StepError> {
        if !ctx.resume {
            // --force / allow_reuse off / regenerate_outputs: recompute everything.
            ctx.clear_resume()?;
        }
        Ok(ctx.resume_log()?)
    }

    /// Forget the progress records first, then move the staged files out: a crash in between
    /// costs a full rerun, never a resume that skips mini-batches whose files were moved. An
    /// incremental step's memo stays (it is what the next run reuses); the cache entry names
    /// the records the output was gathered from.
    fn deliver(
        &self,
        step: &ParallelRunStep,
        ctx: &StepContext<'_>,
        log: Results<'_>,
    ) -> Result<(), StepError> {
        match log {
            Results::Log(log) => log.clear()?,
            Results::Memo(_) => ctx.record_units(log.unit_keys().to_vec()),
        }
        let final_out = step.output_port().and_then(|p| ctx.outputs.get(p));
        if let Some(final_out) = final_out {
            move_contents(&self.output_dir, final_out)?;
        }
        let _ = ctx.clear_resume();
        Ok(())
    }

    /// Remove the staged files.
    fn clear(&self) -> Result<(), StepError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The mini-batches to run (those not resumed or reused), said in the sys log (and a
/// message when resuming or reusing).
fn plan(
    ctx: &StepContext<'_>,
    sys_log: &mut impl Write,
    specs: &[MiniBatchSpec],
    resumed: &BTreeMap<u64, Value>,
    incremental: bool,
    workers: usize,
) -> Vec<u64> {
    if incremental {
        let msg = format!(
            "incremental: {} reused, {} to run (of {} mini-batches)",
            grouped(resumed.len() as u64),
            grouped((specs.len() - resumed.len()) as u64),
            grouped(specs.len() as u64)
        );
        let _ = writeln!(sys_log, "{msg}");
        ctx.message("info", msg);
    } else if !resumed.is_empty() {
        let msg = format!(
            "resuming: {} of {} mini-batches were committed by an earlier run",
            resumed.len(),
            specs.len()
        );
        let _ = writeln!(sys_log, "{msg}");
        ctx.message("info", msg);
    }
    let pending: Vec<u64> = (0..specs.len() as u64)
        .filter(|i| !resumed.contains_key(i))
        .collect();
    let _ = writeln!(
        sys_log,
        "{} mini-batches ({} pending), {} workers",
        specs.len(),
        pending.len(),
        workers
    );
    pending
}

/// Move every entry of `from` into `to` (same file system: renames).
fn move_contents(from: &Path, to: &Path) -> Result<(), StepError> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if fs::rename(e.path(), &dest).is_err() {
            // Across devices: copy files (folders are rare here; copy them file by file).
            crate::process::copy_tree(&e.path(), &dest, &|_| true)?;
        }
    }
    Ok(())
}
