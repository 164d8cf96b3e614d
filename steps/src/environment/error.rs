//! [`EnvironmentError`]: why an environment cannot be used.

use super::*;

/// Why an environment cannot be used: a setting that cannot be used as given (a spec's
/// `environment`, a requirement, a requirements file: [`EnvironmentError::field`] names it),
/// an interpreter that cannot be run, or a build that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvironmentError {
    /// A spec's `environment` (or one of its fields) is not of the expected kind.
    #[error("{}expected {expected}, got {got}", field_prefix(field))]
    Expected {
        /// The field (`python`, `requirements`), or empty for the environment itself.
        field: &'static str,
        /// What it must be, in words.
        expected: &'static str,
        /// What it is, in words.
        got: String,
    },
    /// A spec's `environment` has a field an environment does not take.
    #[error(
        "{name:?} is not a field of an environment (it takes \"python\", \"requirements\" and \
         \"name\")"
    )]
    UnknownField {
        /// The field as given.
        name: String,
    },
    /// The interpreter is blank.
    #[error("must name an interpreter")]
    NoInterpreter,
    /// The requirements file cannot be read (the `fs_err` error names it).
    #[error("cannot read requirements file: {source}")]
    RequirementsFile {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// The requirements file lists no requirement.
    #[error("requirements file {} lists no requirement", path.display())]
    EmptyRequirementsFile {
        /// The file.
        path: PathBuf,
    },
    /// A requirement line is a pip option (`-r other.txt`).
    #[error(
        "{requirement:?}: pip options (-r, -e, --index-url, …) are not supported; list \
         requirements only"
    )]
    PipOption {
        /// The line.
        requirement: String,
    },
    /// A requirement line holds a NUL.
    #[error("{requirement:?} contains a NUL")]
    Nul {
        /// The line.
        requirement: String,
    },
    /// The interpreter cannot be started.
    #[error("cannot run the interpreter {python:?}: {source}")]
    Interpreter {
        /// The interpreter as given.
        python: String,
        /// Why it cannot be started (shared: an interpreter is asked once per process).
        source: Arc<io::Error>,
    },
    /// The interpreter ran but did not print its executable and version.
    #[error("the interpreter {python:?} did not say its version ({status}): {stderr}")]
    NoVersion {
        /// The interpreter as given.
        python: String,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A file or folder of the store's environments could not be written, read or locked
    /// (the `fs_err` error names it).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Installing the requirements failed.
    #[error(
        "building the environment failed: {} ({why}); build log {}, last lines:\n{tail}",
        failed_install(.requirement.as_deref(), requirements),
        log.display()
    )]
    Build {
        /// The requirement that failed, when the log's last lines name one.
        requirement: Option<String>,
        /// All the requirements (boxed: the error stays small).
        requirements: Box<[String]>,
        /// How the failed command ended: its exit status, or why it could not start.
        why: String,
        /// The build log (`envs/<hash>/build.log`).
        log: PathBuf,
        /// The log's last lines.
        tail: String,
        /// The error that kept the command from starting, if that is why it failed.
        source: Option<io::Error>,
    },
    /// Listing the installed packages of a built environment failed.
    #[error(
        "building the environment failed: listing the installed packages failed ({status}); \
         build log {}",
        log.display()
    )]
    Freeze {
        /// How the listing exited.
        status: ExitStatus,
        /// The build log (which holds its stderr).
        log: PathBuf,
    },
    /// The built environment's interpreter cannot be started.
    #[error("cannot run {}: {source}", program.display())]
    Run {
        /// The interpreter.
        program: PathBuf,
        /// Why it cannot be started.
        source: io::Error,
    },
}

impl EnvironmentError {
    /// The field at fault, relative to the environment (`requirements`, `python`), or empty
    /// (the environment itself, its interpreter or its build).
    pub fn field(&self) -> &str {
        match self {
            EnvironmentError::Expected { field, .. } => field,
            EnvironmentError::NoInterpreter => "python",
            EnvironmentError::RequirementsFile { .. }
            | EnvironmentError::EmptyRequirementsFile { .. }
            | EnvironmentError::PipOption { .. }
            | EnvironmentError::Nul { .. } => "requirements",
            _ => "",
        }
    }
}

/// `"field": `, or nothing for the environment itself.
fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field:?}: ")
    }
}

/// What failed in a build, in words: the requirement the log names, or all of them.
fn failed_install(requirement: Option<&str>, requirements: &[String]) -> String {
    match requirement {
        Some(r) => format!("installing requirement {r:?} failed"),
        None => format!(
            "installing the requirements failed ({})",
            requirements.join(", ")
        ),
    }
}
