//! Command-line arguments (clap derive). The same subcommands serve the `stepgraph` binary
//! (which takes a SPEC) and `main_with` (whose pipeline is built in code).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// stepgraph: a local DAG pipeline engine with content-addressed reuse.
#[derive(Debug, Parser)]
#[command(name = "stepgraph", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// The store folder (objects, cache, runs).
    #[arg(
        long,
        global = true,
        env = "STEPGRAPH_STORE",
        default_value = ".stepgraph",
        value_name = "DIR"
    )]
    pub store: PathBuf,
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
  stepgraph runs show 20261125-101500-3fa2";

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
    /// List runs (newest first), or show one.
    Runs {
        /// `show RUN_ID`, or nothing to list.
        #[command(subcommand)]
        action: Option<RunsAction>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    Cache {
        /// What to do.
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Check a spec without running anything.
    Validate {
        /// The JSON pipeline spec.
        spec: Option<PathBuf>,
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
}

/// `cache` actions.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// List cache entries.
    Ls,
    /// Remove objects no cache entry references.
    Gc {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
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
    /// JSON.
    Json,
}
