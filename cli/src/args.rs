//! Command-line arguments (clap derive). The same subcommands serve the `stepgraph` binary
//! (which takes a SPEC) and `main_with` (whose pipeline is built in code).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// stepgraph: a local DAG pipeline engine with content-addressed reuse.
#[derive(Debug, Parser)]
#[command(name = "stepgraph", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// The store folder (objects, cache, runs). Default: the nearest `.stepgraph` in the
    /// current folder or a parent, else the `.stepgraph` next to the spec (made when missing
    /// by commands given a spec; the others refuse a folder that does not exist).
    #[arg(long, global = true, env = "STEPGRAPH_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Wait for another process using the store instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  stepgraph run examples/pipelines/batch-scoring/pipeline.json
  stepgraph run pipeline.json --param threshold=0.7 --force score-images
  stepgraph explain pipeline.json score-images
  stepgraph graph pipeline.json --format dot | dot -Tsvg > graph.svg
  stepgraph runs show 20261125-101500-3fa2
  stepgraph outputs
  stepgraph get score-reviews results/";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: unchanged steps are reused from the cache.
    #[command(after_help = "Examples:
  stepgraph run pipeline.json
  stepgraph run pipeline.json --param threshold=0.7 --jobs 2
  stepgraph run pipeline.json --force score-images --dry-run
  stepgraph run pipeline.json --json > events.jsonl

Exit codes: 0 every step reused or ran, 1 a step failed, 2 bad input.")]
    Run {
        /// The JSON pipeline spec (omit when the pipeline is built in code).
        spec: Option<PathBuf>,
        /// Run options.
        #[command(flatten)]
        opts: RunArgs,
    },
    /// Show the graph of a spec (with cache status) or of a past run.
    #[command(after_help = "Examples:
  stepgraph graph pipeline.json
  stepgraph graph pipeline.json --format mermaid
  stepgraph graph pipeline.json --format svg -o graph.svg
  stepgraph graph 20261125-101500-3fa2 --format dot")]
    Graph {
        /// A spec file or a run id (with a built-in pipeline: an optional run id).
        target: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Parameter overrides used for the cache status.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Write the graph to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write one self-contained HTML page about a run: its graph with each step's status, a
    /// timeline, mini-batch throughput, failures and why each step ran or was reused.
    #[command(after_help = "Examples:
  stepgraph report -o report.html
  stepgraph report 20261125-101500-3fa2 -o report.html

The page needs no network: its styles, pictures (SVG) and script are inline.")]
    Report {
        /// The run (default: the latest run in the store).
        run: Option<String>,
        /// The HTML file to write.
        #[arg(short, long, value_name = "FILE", default_value = "report.html")]
        output: PathBuf,
    },
    /// Say which steps are up to date, like `dvc status`.
    Status {
        /// The JSON pipeline spec.
        spec: Option<PathBuf>,
        /// Parameter overrides.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Explain why steps would run: the fingerprint components that changed.
    #[command(after_help = "Examples:
  stepgraph explain pipeline.json
  stepgraph explain pipeline.json score-images --param tag=beta")]
    Explain {
        /// `SPEC [STEP]` (with a built-in pipeline: `[STEP]`).
        targets: Vec<String>,
        /// Parameter overrides.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// List runs (newest first), show one, or remove old ones.
    #[command(after_help = "Examples:
  stepgraph runs
  stepgraph runs show 20261125-101500-3fa2
  stepgraph runs rm 20261125-101500-3fa2
  stepgraph runs prune --keep 3 --dry-run

A run whose process died while it ran is shown as `interrupted`.
Removing a run deletes its record and its folder runs/<id>/ (outputs, work copies, logs); its
cache entries stay. The space of outputs is freed once `stepgraph cache gc` also removes their
objects (outputs are hard links to them).")]
    Runs {
        /// `show RUN_ID`, `rm RUN_ID...`, `prune --keep N`, or nothing to list.
        #[command(subcommand)]
        action: Option<RunsAction>,
        /// Print JSON (before or after the action: `runs show ID --json`).
        #[arg(long, global = true)]
        json: bool,
    },
    /// List the outputs of a run (the latest by default): step, output, path, size.
    #[command(after_help = "Examples:
  stepgraph outputs
  stepgraph outputs 20261125-101500-3fa2 --json")]
    Outputs {
        /// Run id (`runs` lists them); the latest run when omitted.
        run: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy (or hard-link) one output of a run out of the store into DEST.
    #[command(after_help = "Examples:
  stepgraph get score-reviews results/
  stepgraph get score-reviews:scores results/ --run 20261125-101500-3fa2
  stepgraph get summarize report/ --link

DEST is a folder; it gets the output's files. A DEST that exists and is not empty is refused
unless --force is given: then the output's files replace the files of the same names in DEST
(other files in DEST stay). With --link the files are hard links to the store's read-only
objects: no copy, but they cannot be edited in place (and DEST must be on the store's file
system).")]
    Get {
        /// `STEP` or `STEP:OUTPUT` (an output's data name or port; needed when the step has
        /// several outputs).
        output: String,
        /// The folder to put the output's files in.
        dest: PathBuf,
        /// The run to take it from (default: the latest run that has the step).
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// Hard-link the files instead of copying them.
        #[arg(long)]
        link: bool,
        /// Write into a DEST that is not empty (files of the same names are replaced).
        #[arg(long)]
        force: bool,
    },
    /// Print the logs of a step of a run.
    Logs {
        /// Run id (`runs` lists them).
        run: String,
        /// Step name.
        step: String,
        /// Print only this worker's log (ParallelRunStep).
        #[arg(long, value_name = "N")]
        worker: Option<usize>,
    },
    /// Inspect and clean the cache.
    #[command(after_help = "Examples:
  stepgraph cache ls
  stepgraph cache gc --dry-run
  stepgraph cache gc --keep-last 2 --older-than 7d
  stepgraph cache gc --max-size 2GiB")]
    Cache {
        /// What to do.
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Check a spec without running anything (for steps on Slurm, also that sbatch, srun and
    /// squeue are on PATH and the partitions are known to sinfo).
    Validate {
        /// The JSON pipeline spec.
        spec: Option<PathBuf>,
    },
    /// Run a ParallelRunStep's workers on this node for a coordinator (`stepgraph run`):
    /// what the Slurm job of a step with a Slurm compute target runs on each node, through
    /// `srun`. Not for use by hand (see README, "Running on a cluster").
    #[command(hide = true)]
    Agent {
        /// The coordinator's address.
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        /// The run's token file (on the shared file system).
        #[arg(long, value_name = "PATH")]
        token_file: PathBuf,
        /// The node's name in the logs (default: `SLURMD_NODENAME`, else the host's name).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
}

/// Options of `run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Override a pipeline parameter (JSON value, or a plain string).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Run this step even if it is cached (repeatable).
    #[arg(long, value_name = "STEP")]
    pub force: Vec<String>,
    /// Print the plan (reuse / run and why) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Steps that may run at once.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Print events as JSON lines instead of progress.
    #[arg(long)]
    pub json: bool,
    /// Rehash every input instead of trusting the stat memo.
    #[arg(long)]
    pub verify: bool,
}

/// `runs` actions.
#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// Show one run: per step status, duration, counts.
    Show {
        /// The run id.
        run: String,
    },
    /// Remove runs: their records and folders (outputs, work copies, logs).
    Rm {
        /// Run ids (`stepgraph runs` lists them).
        #[arg(required = true, value_name = "RUN_ID")]
        runs: Vec<String>,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep the N newest runs of each pipeline; remove the others (never a run still going).
    Prune {
        /// Runs to keep per pipeline.
        #[arg(long, value_name = "N")]
        keep: usize,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

const GC_HELP: &str = "Which entries go:
  1. Kept, always: every entry the latest run of each pipeline used (ran or reused), every
     entry of a run still going, and with --keep-last N the N newest entries of each step.
  2. Every other entry is a candidate; with --older-than, only those older than DURATION.
  3. Without --max-size every candidate is removed. With --max-size, candidates are removed
     cheapest to recompute first (lowest run time per byte freed) only until the store's disk
     usage is at most SIZE; what rule 1 keeps is never removed.
  4. Then every object no remaining entry names, temp files, and progress that cannot be
     resumed from.

Freed bytes are disk space really freed: a file counts only when its last link goes. Outputs in
runs/<id>/ are hard links to objects, so an object still linked from a run folder frees its
space only once `stepgraph runs rm` / `runs prune` removes that folder.

DURATION: 30m, 12h, 7d, 2w (or combined: 1d 12h). SIZE: 500MB, 2GiB, 1024 (KB, MB, GB, TB are
powers of 1000; K, M, G, T and KiB, MiB, GiB, TiB powers of 1024).

Examples:
  stepgraph runs prune --keep 1 && stepgraph cache gc
  stepgraph cache gc --keep-last 3 --older-than 7d --dry-run
  stepgraph cache gc --max-size 2GiB";

/// Options of `cache gc`.
#[derive(Debug, Args, Clone)]
pub struct GcArgs {
    /// Also keep the N newest entries of each (pipeline, step).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Only entries older than this are removed (e.g. 7d, 12h, 30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Remove entries, cheapest to recompute per byte first, only until the store is at most
    /// this big (e.g. 500MB, 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

/// A duration that does not parse (clap prints it after the flag).
#[derive(Debug, thiserror::Error)]
#[error("{source} (expected e.g. 30m, 12h, 7d)")]
struct DurationError {
    /// humantime's reason.
    source: humantime::DurationError,
}

/// `7d`, `12h`, `30m`, `1d 12h`.
fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    humantime::parse_duration(s).map_err(|source| DurationError { source })
}

/// A size that does not parse (clap prints it after the flag).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No number.
    #[error("{input:?} is not a size (expected e.g. 500MB, 2GiB, 1024)")]
    NotASize {
        /// The value given.
        input: String,
    },
    /// A unit that is not one of the listed ones.
    #[error("{input:?}: unknown unit {unit:?} (expected B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
    UnknownUnit {
        /// The value given.
        input: String,
        /// Its unit.
        unit: String,
    },
    /// More bytes than a u64 holds.
    #[error("{input:?} is out of range")]
    OutOfRange {
        /// The value given.
        input: String,
    },
}

/// `500MB`, `2GiB`, `1024`, `10k`.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| SizeError::NotASize {
        input: s.to_string(),
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        other => {
            return Err(SizeError::UnknownUnit {
                input: s.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(SizeError::OutOfRange {
            input: s.to_string(),
        });
    }
    Ok(bytes as u64)
}

/// `cache` actions.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// List cache entries with their disk usage (each object counted once).
    Ls,
    /// Remove cache entries by a retention policy, then unreferenced objects; report the disk
    /// space really freed.
    #[command(after_help = GC_HELP)]
    Gc(GcArgs),
    /// Rehash every cached object; drop entries whose objects are damaged.
    Verify,
    /// Remove the entries of a step (by name) or one entry (by key or key prefix).
    Rm {
        /// Step name or key.
        target: String,
    },
}

/// Formats of `graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Steps in order with ports, edges and cache status.
    Text,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// SVG picture, laid out without graphviz, steps coloured by status.
    Svg,
    /// JSON.
    Json,
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("10 mb"), Ok(10_000_000));
        for bad in ["", "MB", "12 parsecs", "-1GB", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
