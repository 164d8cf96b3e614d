//! [`ParallelRunConfigBuilder`]: Azure's fields in the forms a caller gives them — through the
//! builder's methods, or as the JSON spec's `parallel_run_config` object, which deserializes
//! straight into it — checked and converted into a [`ParallelRunConfig`] once, by `build()`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::super::entry::EntryScript;
use super::super::size::{MiniBatchSize, SizeText};
use super::{
    check_env_names, check_file_name, err, AppendRowFormat, ConfigError, Entry, Limit,
    OutputAction, ParallelRunConfig, TabularInput, MAX_WORKERS,
};
use crate::environment::Environment;
use crate::ports::env_methods;

/// Builder for [`ParallelRunConfig`] (Azure's defaults; `error_threshold` is required).
///
/// Its fields, in this order, are the JSON spec's `parallel_run_config` members.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelRunConfigBuilder {
    #[serde(default, deserialize_with = "optional_path")]
    source_directory: Option<PathBuf>,
    entry_script: Option<String>,
    entry_command: Option<Vec<String>>,
    mini_batch_size: Option<SizeText>,
    error_threshold: Option<i64>,
    allowed_failed_count: Option<i64>,
    allowed_failed_percent: Option<f64>,
    output_action: Option<String>,
    #[serde(default)]
    environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    env_passthrough: Vec<String>,
    append_row_file_name: Option<String>,
    append_row_format: Option<String>,
    process_count_per_node: Option<u32>,
    node_count: Option<u32>,
    run_invocation_timeout: Option<i64>,
    run_max_try: Option<i64>,
    partition_keys: Option<Vec<String>>,
    incremental: Option<bool>,
    environment: Option<Environment>,
    tabular_format: Option<String>,
    logging_level: Option<String>,
    description: Option<String>,
    /// An in-process Rust entry (never from a spec).
    #[serde(skip)]
    rust_entry: Option<Entry>,
}

/// A path given as a JSON string (so its errors read as a string's).
fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(PathBuf::from))
}

/// Setters that keep their argument as given (`build()` checks it).
macro_rules! setters {
    ($($(#[doc = $doc:expr])* $field:ident: $ty:ty;)*) => {$(
        $(#[doc = $doc])*
        pub fn $field(mut self, value: $ty) -> Self {
            self.$field = Some(value.into());
            self
        }
    )*};
}

impl ParallelRunConfigBuilder {
    /// A Python entry script, relative to `source_directory`.
    pub fn entry_script(mut self, path: impl Into<String>) -> Self {
        self.clear_entry();
        self.entry_script = Some(path.into());
        self
    }
    /// A worker program in any language speaking the worker protocol.
    pub fn entry_command<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.clear_entry();
        self.entry_command = Some(argv.into_iter().map(Into::into).collect());
        self
    }
    /// An in-process Rust entry: `factory` makes one instance per worker.
    pub fn rust_entry(
        mut self,
        version: impl Into<String>,
        factory: impl Fn() -> Box<dyn EntryScript> + Send + Sync + 'static,
    ) -> Self {
        self.clear_entry();
        self.rust_entry = Some(Entry::Rust {
            version: version.into(),
            factory: Arc::new(factory),
        });
        self
    }
    /// Folder of the entry script.
    pub fn source_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.source_directory = Some(dir.into());
        self
    }
    /// Azure's `mini_batch_size` (`"10"`, `"64KB"`, `"1MB"`).
    pub fn mini_batch_size(mut self, s: impl Into<String>) -> Self {
        self.mini_batch_size = Some(SizeText(s.into()));
        self
    }
    /// `append_row` (default) or `summary_only`.
    pub fn output_action(mut self, a: OutputAction) -> Self {
        self.output_action = Some(a.as_str().to_string());
        self
    }
    env_methods!(
        environment_variable,
        environment_variables,
        env_passthrough,
        "each worker"
    );
    /// Format of the gathered rows (default text).
    pub fn append_row_format(mut self, f: AppendRowFormat) -> Self {
        self.append_row_format = Some(f.as_str().to_string());
        self
    }
    /// What `run()` receives for a tabular mini-batch (default a pandas DataFrame).
    pub fn tabular_format(mut self, f: TabularInput) -> Self {
        self.tabular_format = Some(f.as_str().to_string());
        self
    }
    /// Group tabular rows by these columns.
    pub fn partition_keys<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.partition_keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    setters! {
        /// Allowed failed items; -1 = no limit. Required.
        error_threshold: i64;
        /// Allowed failed mini-batches; -1 = no limit.
        allowed_failed_count: i64;
        /// Allowed failed mini-batches in percent.
        allowed_failed_percent: f64;
        /// File name of the gathered rows (default `parallel_run_step.txt`).
        append_row_file_name: impl Into<String>;
        /// Workers per node (default: the machine's cores).
        process_count_per_node: u32;
        /// Nodes (default 1).
        node_count: u32;
        /// Seconds per `run()` call (default 60).
        run_invocation_timeout: i64;
        /// Tries per mini-batch (default 3).
        run_max_try: i64;
        /// Content-defined mini-batches, each memoised under its own key: a rerun over
        /// changed inputs runs only the mini-batches whose content changed (default false,
        /// Azure's exact mini-batch composition).
        incremental: bool;
        /// The Python environment: an interpreter (`"python3"`, the default) or an
        /// [`Environment`] with requirements stepgraph installs.
        environment: impl Into<Environment>;
        /// Logging level (not in the fingerprint).
        logging_level: impl Into<String>;
        /// Description (not in the fingerprint).
        description: impl Into<String>;
    }

    /// The last entry given wins.
    fn clear_entry(&mut self) {
        self.entry_script = None;
        self.entry_command = None;
        self.rust_entry = None;
    }

    /// Which entries a spec gave: (`entry_script`, `entry_command`).
    pub(crate) fn given_entries(&self) -> (bool, bool) {
        (self.entry_script.is_some(), self.entry_command.is_some())
    }

    /// The source folder mapped by `f` (a spec resolves it against the spec's folder).
    pub(crate) fn map_source_directory(mut self, f: impl FnOnce(&Path) -> PathBuf) -> Self {
        self.source_directory = self.source_directory.as_deref().map(f);
        self
    }

    /// The environment's requirements file mapped by `f` (a spec resolves it against the
    /// spec's folder).
    pub(crate) fn map_environment_file(mut self, f: impl FnOnce(&Path) -> PathBuf) -> Self {
        self.environment = self.environment.map(|e| e.map_file(f));
        self
    }

    /// Check every rule that does not depend on the inputs.
    ///
    /// # Errors
    /// The first [`ConfigError`], naming its field.
    pub fn build(mut self) -> Result<ParallelRunConfig, ConfigError> {
        let output_action = match self.output_action.take() {
            Some(a) => OutputAction::parse(&a)?,
            None => OutputAction::default(),
        };
        let append_row_format = match self.append_row_format.take() {
            Some(f) => AppendRowFormat::parse(&f)?,
            None => AppendRowFormat::default(),
        };
        let tabular_format = match self.tabular_format.take() {
            Some(f) => TabularInput::parse(&f)?,
            None => TabularInput::default(),
        };
        let mut environment = self.environment.take().unwrap_or_default();
        environment.load().map_err(|e| {
            let field = match e.field() {
                "" => "environment".to_string(),
                f => format!("environment.{f}"),
            };
            err(&field, e.to_string())
        })?;
        let (entry, source_directory) = self.entry()?;
        let (error_threshold, allowed_failed_count, allowed_failed_percent) = self.limits()?;
        let mini_batch_size = match &self.mini_batch_size {
            Some(SizeText(s)) => Some(MiniBatchSize::parse(s)?),
            None => None,
        };
        self.check_partition_keys()?;
        let run_invocation_timeout =
            positive("run_invocation_timeout", self.run_invocation_timeout, 60)?;
        let run_max_try = positive("run_max_try", self.run_max_try, 3)?;
        let append_row_file_name = self
            .append_row_file_name
            .take()
            .unwrap_or_else(|| "parallel_run_step.txt".to_string());
        check_file_name(&append_row_file_name)?;
        let (process_count_per_node, node_count) = self.workers()?;
        check_env_names("environment_variables", self.environment_variables.keys())?;
        check_env_names("env_passthrough", &self.env_passthrough)?;
        let mut env_passthrough = self.env_passthrough;
        env_passthrough.sort();
        env_passthrough.dedup();
        Ok(ParallelRunConfig {
            entry,
            source_directory,
            mini_batch_size,
            error_threshold,
            allowed_failed_count,
            allowed_failed_percent,
            output_action,
            environment_variables: self.environment_variables,
            env_passthrough,
            append_row_file_name,
            append_row_format,
            process_count_per_node,
            node_count,
            run_invocation_timeout: Duration::from_secs(run_invocation_timeout),
            run_max_try: u32::try_from(run_max_try).unwrap_or(u32::MAX),
            partition_keys: self.partition_keys,
            incremental: self.incremental.unwrap_or(false),
            environment,
            tabular_format,
            logging_level: self.logging_level.unwrap_or_else(|| "INFO".to_string()),
            description: self.description,
        })
    }

    /// The entry and the source folder. Azure allows an entry script path without a folder:
    /// the script's own folder is then the source folder (hashed into the fingerprint, like
    /// any source folder).
    fn entry(&mut self) -> Result<(Entry, Option<PathBuf>), ConfigError> {
        let entry = match (
            self.rust_entry.take(),
            self.entry_script.take(),
            self.entry_command.take(),
        ) {
            (Some(rust), _, _) => rust,
            (None, Some(entry_script), _) => Entry::Python { entry_script },
            (None, None, Some(entry_command)) => Entry::Command { entry_command },
            (None, None, None) => {
                return Err(err(
                    "entry_script",
                    "is required (or entry_command, or a Rust entry)",
                ))
            }
        };
        match &entry {
            Entry::Python { entry_script } if entry_script.trim().is_empty() => {
                return Err(err("entry_script", "must not be empty"))
            }
            Entry::Command { entry_command }
                if entry_command.first().is_none_or(|p| p.is_empty()) =>
            {
                return Err(err("entry_command", "must name a program"))
            }
            _ => {}
        }
        let source_directory = self.source_directory.take();
        let (Entry::Python { entry_script }, None) = (&entry, &source_directory) else {
            return Ok((entry, source_directory));
        };
        let path = Path::new(entry_script);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| err("entry_script", format!("{entry_script:?} names no file")))?;
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Ok((Entry::Python { entry_script: name }, Some(dir)))
    }

    /// `error_threshold` (required), `allowed_failed_count`, `allowed_failed_percent`.
    fn limits(&self) -> Result<(Limit, Limit, Limit<f64>), ConfigError> {
        let error_threshold = self
            .error_threshold
            .ok_or_else(|| err("error_threshold", "is required (-1 for no limit)"))?;
        let error_threshold = Limit::from_azure("error_threshold", error_threshold)?;
        let allowed_failed_count = match self.allowed_failed_count {
            Some(c) => Limit::from_azure("allowed_failed_count", c)?,
            None => Limit::Unlimited,
        };
        let allowed_failed_percent = match self.allowed_failed_percent {
            Some(p) if !(0.0..=100.0).contains(&p) => {
                return Err(err(
                    "allowed_failed_percent",
                    format!("must be between 0 and 100, not {p}"),
                ));
            }
            Some(p) => Limit::AtMost(p),
            None => Limit::Unlimited,
        };
        Ok((
            error_threshold,
            allowed_failed_count,
            allowed_failed_percent,
        ))
    }

    fn check_partition_keys(&self) -> Result<(), ConfigError> {
        let Some(keys) = &self.partition_keys else {
            return Ok(());
        };
        if self.mini_batch_size.is_some() {
            return Err(err(
                "partition_keys",
                "cannot be used together with mini_batch_size",
            ));
        }
        if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
            return Err(err(
                "partition_keys",
                "must list at least one non-empty column name",
            ));
        }
        if let Some((_, k)) = keys
            .iter()
            .enumerate()
            .find(|(i, k)| keys[..*i].contains(k))
        {
            return Err(err("partition_keys", format!("names {k:?} twice")));
        }
        Ok(())
    }

    /// `process_count_per_node` (default: the machine's cores) and `node_count` (default 1).
    fn workers(&self) -> Result<(u32, u32), ConfigError> {
        let process_count_per_node = self.process_count_per_node.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        });
        if process_count_per_node == 0 {
            return Err(err("process_count_per_node", "must be at least 1"));
        }
        let node_count = self.node_count.unwrap_or(1);
        if node_count == 0 {
            return Err(err("node_count", "must be at least 1"));
        }
        if u64::from(process_count_per_node) * u64::from(node_count) > MAX_WORKERS {
            return Err(err(
                "process_count_per_node",
                format!("process_count_per_node × node_count must be at most {MAX_WORKERS} workers on one machine"),
            ));
        }
        Ok((process_count_per_node, node_count))
    }
}

/// A whole number greater than 0, `default` when not given.
fn positive(field: &str, value: Option<i64>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if n > 0 => Ok(n.unsigned_abs()),
        Some(n) => Err(err(field, format!("must be greater than 0, not {n}"))),
    }
}
