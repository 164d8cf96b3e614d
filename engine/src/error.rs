//! Errors of the engine: one enum for building a pipeline, one for the store, one for running.

use std::path::PathBuf;

/// A problem found while building a pipeline. The builder reports every problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A pipeline name that cannot be printed on one line.
    #[error("pipeline name {name:?} {reason}")]
    InvalidPipelineName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two steps share a name.
    #[error("step {step:?}: duplicate step name")]
    DuplicateStepName {
        /// The repeated name.
        step: String,
    },
    /// A step name breaks Azure's rule `^[a-z]([-a-z0-9]*[a-z0-9])?$`, 3-32 characters.
    #[error("step {step:?}: invalid step name: {reason}")]
    InvalidStepName {
        /// The offending name.
        step: String,
        /// Which part of the rule it breaks.
        reason: String,
    },
    /// A name that becomes a path component (an output, port, data or dataset name, a file
    /// name) breaks the name rule ([`crate::name::check_data_name`],
    /// [`crate::name::check_file_name`]).
    #[error("step {step:?}: {field} {name:?} is not a valid name: {reason}")]
    InvalidName {
        /// The step declaring it.
        step: String,
        /// What the name is ("output name", "input port", "dataset name", ...).
        field: String,
        /// The offending name.
        name: String,
        /// Which part of the rule it breaks.
        reason: String,
    },
    /// A step consumes a `PipelineData` that no step produces.
    #[error("step {step:?}: input {port:?} reads {data:?}, which no step produces")]
    NoProducer {
        /// The consuming step.
        step: String,
        /// The consuming port.
        port: String,
        /// The data name.
        data: String,
    },
    /// Several steps produce the same `PipelineData`.
    #[error("data {data:?} is produced by several steps: {}", steps.join(", "))]
    MultipleProducers {
        /// The data name.
        data: String,
        /// Every producing step.
        steps: Vec<String>,
    },
    /// A `run_after` or other reference names a step that does not exist.
    #[error("step {step:?}: {field} names unknown step {name:?}")]
    UnknownStep {
        /// The referring step.
        step: String,
        /// The field holding the reference.
        field: String,
        /// The unknown name.
        name: String,
    },
    /// A `run_after` between steps one of which declared no sequencing ports
    /// (`create_sequencing_ports: false`).
    #[error("step {step:?}: run_after {after:?} needs sequencing ports, but step {without:?} was declared without them")]
    NoSequencingPorts {
        /// The step ordered after another.
        step: String,
        /// The step it is ordered after.
        after: String,
        /// The one of the two without sequencing ports.
        without: String,
    },
    /// A reference to something that is not defined (a parameter, a port).
    #[error("step {step:?}: {field} refers to unknown {what} {name:?}")]
    UnknownReference {
        /// The referring step.
        step: String,
        /// The field holding the reference.
        field: String,
        /// What kind of thing was expected ("parameter", "input port", ...).
        what: String,
        /// The unknown name.
        name: String,
    },
    /// Two ports of one step share a name.
    #[error("step {step:?}: duplicate port name {port:?}")]
    DuplicatePort {
        /// The step.
        step: String,
        /// The repeated port name.
        port: String,
    },
    /// The graph has a cycle; `steps` is the full chain, first step repeated at the end.
    #[error("cycle between steps: {}", steps.join(" -> "))]
    Cycle {
        /// The steps on the cycle, `a -> b -> c -> a`.
        steps: Vec<String>,
    },
    /// A step's own configuration is invalid.
    #[error("step {step:?}: {field}: {message}")]
    InvalidConfig {
        /// The step.
        step: String,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two pipeline parameters share a name but differ in default.
    #[error("parameter {name:?} is declared twice with different defaults")]
    ConflictingParameter {
        /// The parameter name.
        name: String,
    },
}

/// Every problem found while building a pipeline (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_errors(.0))]
pub struct BuildErrors(pub Vec<BuildError>);

/// One problem per line, as spec errors are.
fn render_errors(errors: &[BuildError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A problem with the store: its lock, database or objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store's lock.
    #[error("store {path} is in use by run pid {pid} since {since}")]
    Locked {
        /// The store directory.
        path: PathBuf,
        /// The holder's process id, as written in the lock file.
        pid: String,
        /// When the holder took the lock.
        since: String,
    },
    /// The store's lock file was deleted (or replaced) while another process held the store:
    /// the lock could be taken, but the database is still held by that process.
    #[error(
        "store {} is in use by another process, whose lock file {}/lock was deleted while it \
         ran (so its pid is unknown): wait for it to finish (--wait) or stop it; never delete \
         the lock file by hand",
        path.display(),
        path.display()
    )]
    LockLost {
        /// The store directory.
        path: PathBuf,
    },
    /// The disk holding the store has no space left (ENOSPC or a quota).
    #[error(
        "the disk holding {} is full: free space, e.g. `stepgraph runs prune --keep 1` then \
         `stepgraph cache gc` (both work on a full disk)",
        path.display()
    )]
    DiskFull {
        /// The store, or the path in it that could not be written.
        path: PathBuf,
    },
    /// The store folder exists, holds files and is not a stepgraph store (no
    /// `.stepgraph-store` marker, not the layout of an older store): it is never adopted, so
    /// nothing in it is ever overwritten or removed by `cache gc`.
    #[error(
        "{} is not a stepgraph store: it already holds other files (for example {}); use an \
         empty or new folder for --store / STEPGRAPH_STORE",
        path.display(),
        example
    )]
    NotAStore {
        /// The folder given as the store.
        path: PathBuf,
        /// One of the names found in it.
        example: String,
    },
    /// Something other than a folder is where the store should be (a file named
    /// `.stepgraph`, say).
    #[error(
        "{} is a file, not a stepgraph store folder: move it away, or choose another folder \
         with --store / STEPGRAPH_STORE",
        path.display()
    )]
    NotAFolder {
        /// The path given or found as the store.
        path: PathBuf,
    },
    /// A run id that is not in the store.
    #[error("unknown run {id:?} (see `stepgraph runs`)")]
    UnknownRun {
        /// The id given.
        id: String,
    },
    /// A run that is still going cannot be removed.
    #[error("run {id} is still running; it cannot be removed")]
    RunInProgress {
        /// The run id.
        id: String,
    },
    /// An I/O error on a path of the store (named once: an `fs_err` error names it already).
    #[error("{}", name_once(path, source))]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The sled database failed.
    #[error("store database {}: {message}", path.display())]
    Db {
        /// The database directory.
        path: PathBuf,
        /// sled's message.
        message: String,
    },
    /// A stored record could not be decoded.
    #[error("store record {what}: {message}")]
    Record {
        /// Which record.
        what: String,
        /// What was wrong.
        message: String,
    },
    /// An object's content does not match its name.
    #[error("object {hash} is damaged (content hash {actual})")]
    DamagedObject {
        /// The expected hash (the object's name).
        hash: String,
        /// The hash of what is on disk.
        actual: String,
    },
    /// No such object in the store.
    #[error("object {hash} is missing from the store")]
    MissingObject {
        /// The hash looked for.
        hash: String,
    },
    /// A step output that cannot be stored as it is (a symbolic link, a fifo).
    #[error("output {}: {message}", path.display())]
    UnsupportedOutput {
        /// The offending file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// A path that would leave the folder it belongs in (a manifest entry with `..`, an output
    /// folder that is a symbolic link): refused, never followed.
    #[error("refusing to write outside {}: {message}", dest.display())]
    UnsafePath {
        /// The folder the path had to stay in.
        dest: PathBuf,
        /// What was wrong.
        message: String,
    },
}

impl StoreError {
    /// An I/O error on `path`; a full disk becomes [`StoreError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if is_disk_full(&source) {
            return StoreError::DiskFull { path: path.into() };
        }
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether this error means the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}

/// `path: error`, or the error alone when its message already names the path in backquotes,
/// as `fs_err`'s messages do (`failed to open file \`path\`: ...`): a path is named once.
fn name_once(path: &std::path::Path, source: &std::io::Error) -> String {
    let text = source.to_string();
    if text.contains(&format!("`{}`", path.display())) {
        text
    } else {
        format!("{}: {text}", path.display())
    }
}

/// An I/O error in words, without Rust's `(os error N)` suffix.
pub(crate) fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// Whether an I/O error means "no space left" (ENOSPC, or a quota: EDQUOT).
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Why the files of a dataset or of a step's source folder could not be listed or hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// An invalid glob: a dataset's pattern (`what`: "invalid pattern") or a step's source
    /// rule ("source rule").
    #[error("{what} {pattern:?}: {source}")]
    Pattern {
        /// Which kind of pattern.
        what: &'static str,
        /// The pattern as given.
        pattern: String,
        /// Why it is invalid.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A dataset's pattern that matches no file of its folder (a typo would otherwise give
    /// an empty dataset and a step that silently does nothing).
    #[error(
        "pattern {pattern:?} matches no file in {} ({files} files there)",
        path.display()
    )]
    NoMatch {
        /// The pattern as given.
        pattern: String,
        /// The dataset's folder.
        path: PathBuf,
        /// How many files the folder holds.
        files: usize,
    },
    /// A dataset path that does not exist.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// A source folder that is not a folder.
    #[error("{} is not a folder", path.display())]
    NotAFolder {
        /// The path given.
        path: PathBuf,
    },
    /// A folder without files where files are needed (a model registered from a folder).
    #[error("{} is a folder without files", path.display())]
    NoFiles {
        /// The folder.
        path: PathBuf,
    },
    /// A stepgraph store given as data.
    #[error("{} is a stepgraph store, not data: its files change with every run", path.display())]
    IsAStore {
        /// The store's folder.
        path: PathBuf,
    },
    /// A path that could not be read or walked.
    #[error("{}: {source}", path.display())]
    Path {
        /// The dataset's or folder's path.
        path: PathBuf,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A folder walk that failed (its message names the path).
    #[error(transparent)]
    Walk(Box<dyn std::error::Error + Send + Sync>),
    /// A file error whose message names the file (`fs_err`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file could not be hashed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An error while planning or running a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input could not be read.
    #[error("step {step:?}: input {port:?}: {}", name_once(path, source))]
    Input {
        /// The step reading it.
        step: String,
        /// The input port.
        port: String,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A component the step computes could not be computed (an environment that failed to
    /// build).
    #[error("step {step:?}: {component}: {source}")]
    Component {
        /// The step.
        step: String,
        /// The component (`environment`).
        component: String,
        /// What went wrong (the component's error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An input dataset is invalid (bad glob, missing files).
    #[error("step {step:?}: input {port:?}: {message}")]
    InvalidInput {
        /// The step.
        step: String,
        /// The input port.
        port: String,
        /// What is wrong.
        message: String,
    },
    /// A declared model cannot be read (missing path, a folder without files).
    #[error("step {step:?}: model {model:?}: {message}")]
    InvalidModel {
        /// The step.
        step: String,
        /// The model's name.
        model: String,
        /// What is wrong.
        message: String,
    },
    /// A `--param` names a parameter the pipeline does not declare.
    #[error("unknown parameter {name:?} (known: {known})")]
    UnknownParameter {
        /// The name given.
        name: String,
        /// The declared names.
        known: String,
    },
    /// The system refused every thread the run asked for.
    #[error("cannot start a thread to run steps: {source}")]
    Threads {
        /// Why the system refused.
        source: std::io::Error,
    },
    /// A `--force` names a step the pipeline does not have.
    #[error("unknown step {name:?}")]
    UnknownStep {
        /// The name given.
        name: String,
    },
    /// A run id that is not in the store.
    #[error("unknown run {id:?}")]
    UnknownRun {
        /// The id given.
        id: String,
    },
    /// The run was cancelled (Ctrl-C).
    #[error("run cancelled")]
    Cancelled,
}

/// Why a step failed. Its `Display` is the whole text shown to the user (a context, then
/// `: ` and the cause when there is one); [`std::error::Error::source`] gives the cause to code
/// that wants to inspect it (as [`StoreError::Io`] does).
#[derive(Debug, thiserror::Error)]
#[error("{}", render_step_error(.context, .source.as_deref()))]
pub struct StepError {
    /// One or more lines explaining the failure (a traceback, an exit status), or what was
    /// being done when `source` failed.
    context: String,
    /// The error that made the step fail, if any.
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `context: source`, or whichever of the two there is.
fn render_step_error(
    context: &str,
    source: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
) -> String {
    match source {
        None => context.to_string(),
        Some(source) if context.is_empty() => source.to_string(),
        Some(source) => format!("{context}: {source}"),
    }
}

impl StepError {
    /// A step error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            context: message.into(),
            source: None,
        }
    }

    /// A step error caused by `source`, with what was being done: displayed as
    /// `context: source`, and `source` stays reachable through
    /// [`std::error::Error::source`].
    pub fn with_source(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StepError {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// What was being done (for an error made by [`StepError::new`], the whole message).
    pub fn context(&self) -> &str {
        &self.context
    }
}

/// Attaches what was being done to the error of a `Result`, making it a [`StepError`] that
/// keeps the error as its source: `fs_err::read(p).context("reading the model")?`.
pub trait ErrorContext<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T, StepError>;
    /// Wraps the error with the context `f` returns (computed only on error).
    fn with_context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T, StepError>;
}

impl<T, E> ErrorContext<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn context(self, context: impl Into<String>) -> Result<T, StepError> {
        self.map_err(|e| StepError::with_source(context, e))
    }

    fn with_context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T, StepError> {
        self.map_err(|e| StepError::with_source(f(), e))
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::with_source(String::new(), e)
    }
}

impl From<FilesError> for StepError {
    fn from(e: FilesError) -> Self {
        StepError::with_source(String::new(), e)
    }
}

/// The error as it is: with `fs_err` its message names the path and the operation.
impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        StepError::with_source(String::new(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_display_one_problem_per_line() {
        let e = BuildErrors(vec![
            BuildError::DuplicateStepName { step: "a".into() },
            BuildError::UnknownStep {
                step: "b".into(),
                field: "run_after".into(),
                name: "c".into(),
            },
        ]);
        assert_eq!(
            e.to_string(),
            "step \"a\": duplicate step name\nstep \"b\": run_after names unknown step \"c\""
        );
    }

    #[test]
    fn component_errors_name_the_step_and_keep_the_components_error() {
        use std::error::Error as _;
        let e = EngineError::Component {
            step: "score".into(),
            component: "environment".into(),
            source: std::io::Error::other("no interpreter").into(),
        };
        assert_eq!(e.to_string(), "step \"score\": environment: no interpreter");
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::Other)
        );
    }

    #[test]
    fn store_io_errors_name_their_path_once() {
        let path = std::path::Path::new("/nonexistent-stepgraph-dir/objects/ab");
        let named = StoreError::io(path, fs_err::read(path).unwrap_err()).to_string();
        assert_eq!(
            named
                .matches("/nonexistent-stepgraph-dir/objects/ab")
                .count(),
            1
        );
        assert!(named.starts_with("failed to open file `"), "{named}");
        let plain = StoreError::io(path, std::io::Error::other("boom")).to_string();
        assert_eq!(plain, "/nonexistent-stepgraph-dir/objects/ab: boom");
    }

    #[test]
    fn step_errors_name_the_file_and_keep_their_source() {
        use std::error::Error as _;
        let missing = std::path::Path::new("/nonexistent-stepgraph-dir/model.bin");
        let e = StepError::from(fs_err::read(missing).unwrap_err());
        assert!(
            e.to_string()
                .contains("/nonexistent-stepgraph-dir/model.bin"),
            "{e}"
        );
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );

        let e = fs_err::read(missing)
            .context("loading the model")
            .unwrap_err();
        assert!(e.to_string().starts_with("loading the model: "), "{e}");
        assert!(e.to_string().contains("model.bin"), "{e}");
        assert_eq!(e.context(), "loading the model");
        assert!(e.source().is_some());

        let e = StepError::new("exit status 3");
        assert_eq!(e.to_string(), "exit status 3");
        assert!(e.source().is_none());
    }
}
