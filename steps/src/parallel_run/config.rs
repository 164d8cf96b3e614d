//! `ParallelRunConfig`: Azure's fields, defaults and rules, validated once in `build()`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::entry::EntryFactory;
use super::size::{BatchSize, MiniBatchSize, SizeError};

/// A configuration field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field (Azure's name).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error naming `field`.
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

/// A limit on failures. Azure writes "no limit" as `-1` (or leaves the field out); the
/// builder and the JSON spec still accept that form, and turn it into [`Limit::Unlimited`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit<T = u64> {
    /// No limit.
    Unlimited,
    /// At most this many (or this percentage).
    AtMost(T),
}

impl<T: PartialOrd + Copy> Limit<T> {
    /// True if `value` is over the limit.
    pub fn exceeded_by(self, value: T) -> bool {
        match self {
            Limit::Unlimited => false,
            Limit::AtMost(max) => value > max,
        }
    }

    /// The limit, `None` when there is none.
    pub fn at_most(self) -> Option<T> {
        match self {
            Limit::Unlimited => None,
            Limit::AtMost(max) => Some(max),
        }
    }
}

impl Limit {
    /// Azure's form of a count limit: `-1` is no limit, `n >= 0` at most `n`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `field` for any other negative number.
    pub fn from_azure(field: &str, n: i64) -> Result<Self, ConfigError> {
        match u64::try_from(n) {
            Ok(n) => Ok(Limit::AtMost(n)),
            Err(_) if n == -1 => Ok(Limit::Unlimited),
            Err(_) => Err(err(field, format!("must be -1 or more, not {n}"))),
        }
    }

    /// Azure's form: `-1` for no limit.
    fn to_azure(self) -> Value {
        match self {
            Limit::Unlimited => json!(-1),
            Limit::AtMost(n) => json!(n),
        }
    }
}

impl<T: fmt::Display> fmt::Display for Limit<T> {
    /// The number, or "no limit".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("no limit"),
            Limit::AtMost(max) => max.fmt(f),
        }
    }
}

/// What happens to the values `run()` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputAction {
    /// Rows are gathered, in mini-batch order, into one file (`append_row_file_name`).
    #[default]
    AppendRow,
    /// The script writes its own outputs; returned elements only count successes.
    SummaryOnly,
}

impl OutputAction {
    /// Azure's spelling: `append_row` / `summary_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputAction::AppendRow => "append_row",
            OutputAction::SummaryOnly => "summary_only",
        }
    }

    /// Parse Azure's spelling.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `output_action`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "append_row" => Ok(OutputAction::AppendRow),
            "summary_only" => Ok(OutputAction::SummaryOnly),
            other => Err(err(
                "output_action",
                format!("must be \"append_row\" or \"summary_only\", not {other:?}"),
            )),
        }
    }
}

/// How gathered rows are written (beyond Azure, whose users ask for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendRowFormat {
    /// Azure's format: `str()` of each element; DataFrame values space-separated, no header.
    #[default]
    Text,
    /// CSV lines with one header line.
    Csv,
    /// One JSON value per line.
    JsonLines,
}

impl AppendRowFormat {
    /// `text`, `csv` or `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            AppendRowFormat::Text => "text",
            AppendRowFormat::Csv => "csv",
            AppendRowFormat::JsonLines => "jsonl",
        }
    }

    /// Parse `text`, `csv` or `jsonl`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `append_row_format`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "text" => Ok(AppendRowFormat::Text),
            "csv" => Ok(AppendRowFormat::Csv),
            "jsonl" => Ok(AppendRowFormat::JsonLines),
            other => Err(err(
                "append_row_format",
                format!("must be \"text\", \"csv\" or \"jsonl\", not {other:?}"),
            )),
        }
    }
}

/// What `run()` receives for a tabular mini-batch (`tabular_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TabularInput {
    /// A pandas DataFrame, as on Azure (pandas must be importable in the step's
    /// environment, or the step fails at start).
    #[default]
    DataFrame,
    /// A list of dicts (one per row), without pandas.
    Records,
}

impl TabularInput {
    /// `dataframe` or `records`.
    pub fn as_str(self) -> &'static str {
        match self {
            TabularInput::DataFrame => "dataframe",
            TabularInput::Records => "records",
        }
    }

    /// Parse `dataframe` or `records`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `tabular_format`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "dataframe" => Ok(TabularInput::DataFrame),
            "records" => Ok(TabularInput::Records),
            other => Err(err(
                "tabular_format",
                format!("must be \"dataframe\" or \"records\", not {other:?}"),
            )),
        }
    }
}

/// The entry that processes mini-batches.
#[derive(Clone)]
pub enum Entry {
    /// A Python file with `init()` / `run(mini_batch)`, relative to `source_directory`.
    Python {
        /// The script's path relative to the source folder.
        entry_script: String,
    },
    /// A program in any language speaking the JSON-lines worker protocol.
    Command {
        /// Program and arguments (relative programs resolve against `source_directory`).
        entry_command: Vec<String>,
    },
    /// An in-process Rust implementation, one instance per worker.
    Rust {
        /// The code identity in the fingerprint: change it when the code changes.
        version: String,
        /// Makes one instance per worker.
        factory: EntryFactory,
    },
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Python { entry_script } => write!(f, "Python({entry_script:?})"),
            Entry::Command { entry_command } => write!(f, "Command({entry_command:?})"),
            Entry::Rust { version, .. } => write!(f, "Rust(version {version:?})"),
        }
    }
}

/// Azure's `ParallelRunConfig`, validated once by [`ParallelRunConfigBuilder::build`]: its
/// fields are private and typed, so every value read through a getter keeps its rules.
#[derive(Debug, Clone)]
pub struct ParallelRunConfig {
    entry: Entry,
    source_directory: Option<PathBuf>,
    mini_batch_size: Option<MiniBatchSize>,
    error_threshold: Limit,
    allowed_failed_count: Limit,
    allowed_failed_percent: Limit<f64>,
    output_action: OutputAction,
    environment_variables: BTreeMap<String, String>,
    env_passthrough: Vec<String>,
    append_row_file_name: String,
    append_row_format: AppendRowFormat,
    process_count_per_node: u32,
    node_count: u32,
    run_invocation_timeout: Duration,
    run_max_try: u32,
    partition_keys: Option<Vec<String>>,
    incremental: bool,
    environment: crate::environment::Environment,
    tabular_format: TabularInput,
    logging_level: String,
    description: Option<String>,
}

/// The most workers one step may start on this machine.
pub(crate) const MAX_WORKERS: u64 = 1024;

/// Azure's reserved argument names, which a step's `arguments` may not use.
pub(crate) const RESERVED_ARGUMENTS: &[&str] = &[
    "--mini_batch_size",
    "--error_threshold",
    "--allowed_failed_count",
    "--allowed_failed_percent",
    "--output",
    "--output_action",
    "--append_row_file_name",
    "--logging_level",
    "--process_count_per_node",
    "--node_count",
    "--run_invocation_timeout",
    "--run_max_try",
    "--partition_keys",
    "--entry_script",
    "--scoring_module_name",
    "--input_format",
    "--client_sdk_version",
    "--task_overhead_timeout",
    "--progress_update_timeout",
    "--first_task_creation_timeout",
    "--copy_logs_to_parent",
    "--metrics_name_prefix",
    "--push_metrics_to_parent",
    "--resource_monitor_interval",
];

impl ParallelRunConfig {
    /// A builder with Azure's defaults.
    pub fn builder() -> ParallelRunConfigBuilder {
        ParallelRunConfigBuilder::default()
    }

    /// The entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Folder of the entry script; its snapshot is the step's code identity.
    pub fn source_directory(&self) -> Option<&Path> {
        self.source_directory.as_deref()
    }

    /// `mini_batch_size` as given; `None` means the default (10 files, or "1MB" of rows).
    pub fn mini_batch_size(&self) -> Option<&MiniBatchSize> {
        self.mini_batch_size.as_ref()
    }

    /// The mini-batch size for file inputs (`tabular` false) or tabular inputs, defaults
    /// applied.
    ///
    /// # Errors
    /// A [`SizeError`] when the given size means nothing for that kind of input.
    pub fn batch_size(&self, tabular: bool) -> Result<BatchSize, SizeError> {
        MiniBatchSize::resolve(self.mini_batch_size.as_ref(), tabular)
    }

    /// Allowed failed items over the whole step.
    pub fn error_threshold(&self) -> Limit {
        self.error_threshold
    }

    /// Allowed failed mini-batches.
    pub fn allowed_failed_count(&self) -> Limit {
        self.allowed_failed_count
    }

    /// Allowed failed mini-batches, in percent of all.
    pub fn allowed_failed_percent(&self) -> Limit<f64> {
        self.allowed_failed_percent
    }

    /// What happens to returned values.
    pub fn output_action(&self) -> OutputAction {
        self.output_action
    }

    /// Set in each worker; part of the fingerprint.
    pub fn environment_variables(&self) -> &BTreeMap<String, String> {
        &self.environment_variables
    }

    /// Names of the caller's environment variables passed through to the workers, sorted
    /// (nothing else of the caller's environment reaches them besides PATH, HOME, USER, LANG,
    /// LC_*, TZ and TMPDIR). Their values are hashed into the fingerprint.
    pub fn env_passthrough(&self) -> &[String] {
        &self.env_passthrough
    }

    /// Name of the gathered file (append_row).
    pub fn append_row_file_name(&self) -> &str {
        &self.append_row_file_name
    }

    /// Format of the gathered file.
    pub fn append_row_format(&self) -> AppendRowFormat {
        self.append_row_format
    }

    /// Workers per node.
    pub fn process_count_per_node(&self) -> u32 {
        self.process_count_per_node
    }

    /// Nodes (here: a multiplier of workers).
    pub fn node_count(&self) -> u32 {
        self.node_count
    }

    /// Time allowed per `run()` call (whole seconds).
    pub fn run_invocation_timeout(&self) -> Duration {
        self.run_invocation_timeout
    }

    /// Tries per mini-batch (at least 1).
    pub fn run_max_try(&self) -> u32 {
        self.run_max_try
    }

    /// Group tabular rows into mini-batches by these columns' values.
    pub fn partition_keys(&self) -> Option<&[String]> {
        self.partition_keys.as_deref()
    }

    /// Whether mini-batches are content-defined and memoised one by one (see
    /// `partition::cdc` and the README's "Incremental runs").
    pub fn incremental(&self) -> bool {
        self.incremental
    }

    /// The base interpreter for Python entries (default `python3`).
    pub fn environment(&self) -> &str {
        self.environment.interpreter()
    }

    /// The whole environment: the interpreter and the requirements stepgraph installs.
    pub fn python_environment(&self) -> &crate::environment::Environment {
        &self.environment
    }

    /// What `run()` receives for a tabular mini-batch (default a DataFrame).
    pub fn tabular_format(&self) -> TabularInput {
        self.tabular_format
    }

    /// The logging level (not in the fingerprint).
    pub fn logging_level(&self) -> &str {
        &self.logging_level
    }

    /// The description (not in the fingerprint).
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Workers in all: `process_count_per_node × node_count`.
    pub fn workers(&self) -> usize {
        (self.process_count_per_node as usize * self.node_count as usize).max(1)
    }

    /// The settings that can change results, for the fingerprint. Resource knobs
    /// (process_count_per_node, node_count, logging_level, description) are left out, so
    /// changing parallelism never invalidates the cache.
    pub fn fingerprint_config(&self) -> Value {
        let entry = match &self.entry {
            Entry::Python { entry_script } => {
                json!({"type": "python", "entry_script": entry_script, "environment": self.environment.config_value()})
            }
            Entry::Command { entry_command } => {
                json!({"type": "command", "entry_command": entry_command})
            }
            Entry::Rust { version, .. } => json!({"type": "rust", "version": version}),
        };
        let mut v = json!({
            "entry": entry,
            "mini_batch_size": self.mini_batch_size.as_ref().map(MiniBatchSize::as_str),
            "error_threshold": self.error_threshold.to_azure(),
            "allowed_failed_count": self.allowed_failed_count.at_most(),
            "allowed_failed_percent": self.allowed_failed_percent.at_most(),
            "output_action": self.output_action.as_str(),
            "append_row_file_name": self.append_row_file_name,
            "append_row_format": self.append_row_format.as_str(),
            "run_invocation_timeout": self.run_invocation_timeout.as_secs(),
            "run_max_try": self.run_max_try,
            "partition_keys": self.partition_keys,
            "tabular_format": self.tabular_format.as_str(),
        });
        // Only when on, so the keys of every step written before it existed stay the same.
        if self.incremental {
            if let Some(o) = v.as_object_mut() {
                o.insert("incremental".into(), Value::Bool(true));
            }
        }
        v
    }
}

/// Environment variable names: not empty, no `=`, no NUL.
pub(crate) fn check_env_names<'a>(
    field: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    for k in names {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(err(field, format!("invalid variable name {k:?}")));
        }
    }
    Ok(())
}

/// Azure refuses file names with path separators or characters Windows cannot store.
fn check_file_name(name: &str) -> Result<(), ConfigError> {
    // The engine's rule for every file name that becomes a path, then the characters Azure
    // also refuses (so a name that works here works there).
    if let Some(reason) = stepgraph_engine::check_file_name(name) {
        return Err(err("append_row_file_name", format!("{name:?} {reason}")));
    }
    const BAD: &[char] = &[':', '*', '?', '"', '<', '>', '|'];
    if let Some(c) = name.chars().find(|c| BAD.contains(c) || c.is_control()) {
        return Err(err(
            "append_row_file_name",
            format!("{name:?} contains {c:?}, which is not allowed in a file name"),
        ));
    }
    Ok(())
}

/// Check `arguments` (already resolved to their literal or placeholder form): keyword style,
/// no reserved names.
///
/// # Errors
/// A [`ConfigError`] naming `arguments`.
pub(crate) fn check_arguments(args: &[String]) -> Result<(), ConfigError> {
    if let Some(first) = args.first() {
        if !first.starts_with('-') {
            return Err(err(
                "arguments",
                format!("must be keyword style (the first starts with \"-\"), got {first:?}"),
            ));
        }
    }
    for a in args {
        let name = a.split('=').next().unwrap_or(a);
        if RESERVED_ARGUMENTS.contains(&name) {
            return Err(err(
                "arguments",
                format!("{name} is reserved by ParallelRunStep"),
            ));
        }
    }
    Ok(())
}

mod builder;
#[cfg(test)]
mod tests;

pub use builder::ParallelRunConfigBuilder;
