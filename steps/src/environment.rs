//! [`Environment`]: the Python environment a step runs in, as Azure's
//! `Environment.from_pip_requirements`: a base interpreter and pip requirements. stepgraph
//! builds it once per content hash into the store (`envs/<hash>/`, see
//! `stepgraph_engine::store::envs`), with `uv` when it is on PATH and `python -m venv` + pip
//! otherwise.
//!
//! - The *environment hash* covers the requirements (as normalised lines) and the base
//!   interpreter's version; it is computed without building (one `python -c` per interpreter
//!   and process), so `plan`/`status` stay cheap.
//! - The fingerprint component `environment` holds that hash, the requirements, the
//!   interpreter version and, once the environment is built, its resolved `pip freeze`. A step
//!   that runs builds it first (at resolve), so the key it is cached under covers the freeze;
//!   a plan before the first build shows the freeze as not built yet.
//! - Builds run under a per-environment flock (`envs/<hash>.lock`) and are complete only when
//!   `freeze.txt` is written (last, atomically): an interrupted build is never used.

use fs_err as fs;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use stepgraph_engine::{ComputedComponent, ENV_HASH_KEY};

/// The file whose presence marks an environment complete (written last, atomically).
const COMPLETE_MARKER: &str = "freeze.txt";

/// The fingerprint component naming a step's environment.
pub(crate) const ENVIRONMENT_COMPONENT: &str = "environment";

/// How many lines of a failed build's log an error shows.
const LOG_TAIL_LINES: usize = 20;

/// The Python environment of a step: a base interpreter (default `python3`) and, optionally,
/// pip requirements installed into a virtual environment that stepgraph builds and caches.
///
/// ```
/// use stepgraph_steps::Environment;
/// let env = Environment::python("python3").requirements(["six==1.16.0"]);
/// assert_eq!(env.interpreter(), "python3");
/// assert_eq!(env.requirement_lines(), ["six==1.16.0"]);
/// let plain: Environment = "python3".into();
/// assert!(!plain.has_requirements());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    name: Option<String>,
    python: String,
    requirements: Vec<String>,
    /// A requirements file not read yet (a spec's relative path, resolved then read).
    file: Option<PathBuf>,
}

impl Default for Environment {
    fn default() -> Self {
        Environment::python("python3")
    }
}

impl From<&str> for Environment {
    fn from(s: &str) -> Self {
        Environment::python(s)
    }
}

impl From<String> for Environment {
    fn from(s: String) -> Self {
        Environment::python(s)
    }
}

impl From<&String> for Environment {
    fn from(s: &String) -> Self {
        Environment::python(s.clone())
    }
}

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

impl Environment {
    /// The interpreter `python` (a program on PATH or a path), no requirements: what a plain
    /// `environment` string means.
    pub fn python(python: impl Into<String>) -> Environment {
        Environment {
            name: None,
            python: python.into(),
            requirements: Vec::new(),
            file: None,
        }
    }

    /// These pip requirements (`"pandas==1.5.3"`), installed into a virtual environment
    /// built from the interpreter. Blank lines and `#` comments are dropped.
    pub fn requirements<S: Into<String>>(mut self, reqs: impl IntoIterator<Item = S>) -> Self {
        self.requirements = normalise(reqs.into_iter().map(Into::into));
        self.file = None;
        self
    }

    /// A name shown in messages (Azure's `Environment(name)`); not in the fingerprint.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Azure's `Environment.from_pip_requirements(name, file_path)`: `python3` and the
    /// requirements of a pip requirements file, read now.
    ///
    /// # Errors
    /// The file cannot be read, or holds a line stepgraph does not support.
    pub fn from_pip_requirements(
        name: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Environment, EnvironmentError> {
        let mut env = Environment::default().named(name);
        env.file = Some(path.as_ref().to_path_buf());
        env.load()?;
        Ok(env)
    }

    /// The base interpreter.
    pub fn interpreter(&self) -> &str {
        &self.python
    }

    /// Check, without running it, that the base interpreter exists: a path to a file, or a
    /// program found on PATH. A worker that cannot start would otherwise count as a failed
    /// `init()` and be retried.
    ///
    /// # Errors
    /// [`EnvironmentError::Interpreter`] naming the interpreter.
    pub(crate) fn check_interpreter(&self) -> Result<(), EnvironmentError> {
        let python = Path::new(&self.python);
        let found = if self.python.contains(std::path::MAIN_SEPARATOR) {
            python.is_file()
        } else {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(python).is_file()))
        };
        if found {
            return Ok(());
        }
        Err(EnvironmentError::Interpreter {
            python: self.python.clone(),
            source: Arc::new(io::Error::new(
                io::ErrorKind::NotFound,
                "no such file, nor a program of that name on PATH",
            )),
        })
    }

    /// The requirements, one per line (normalised).
    pub fn requirement_lines(&self) -> &[String] {
        &self.requirements
    }

    /// Whether stepgraph builds a virtual environment for it.
    pub fn has_requirements(&self) -> bool {
        !self.requirements.is_empty() || self.file.is_some()
    }

    /// The requirements file not read yet, mapped by `f` (a spec resolves it against the
    /// spec's folder).
    pub(crate) fn map_file(mut self, f: impl FnOnce(&Path) -> PathBuf) -> Self {
        self.file = self.file.as_deref().map(f);
        self
    }

    /// Read a pending requirements file and check the requirements.
    ///
    /// # Errors
    /// The file cannot be read, or a line is not supported.
    pub(crate) fn load(&mut self) -> Result<(), EnvironmentError> {
        if self.python.trim().is_empty() {
            return Err(EnvironmentError::NoInterpreter);
        }
        if let Some(file) = self.file.take() {
            let text = match fs::read_to_string(&file) {
                Ok(text) => text,
                Err(source) => {
                    return Err(EnvironmentError::RequirementsFile { path: file, source });
                }
            };
            self.requirements = normalise(text.lines().map(str::to_string));
            if self.requirements.is_empty() {
                return Err(EnvironmentError::EmptyRequirementsFile { path: file });
            }
        }
        for r in &self.requirements {
            if r.starts_with('-') {
                return Err(EnvironmentError::PipOption {
                    requirement: r.clone(),
                });
            }
            if r.contains('\0') {
                return Err(EnvironmentError::Nul {
                    requirement: r.clone(),
                });
            }
        }
        Ok(())
    }

    /// The settings for a step's `config` fingerprint component: the interpreter (the
    /// requirements are in the `environment` component).
    pub(crate) fn config_value(&self) -> Value {
        Value::String(self.python.clone())
    }

    /// The `environment` fingerprint component, when the environment has requirements.
    pub(crate) fn component(&self) -> Option<Arc<dyn ComputedComponent>> {
        self.has_requirements()
            .then(|| Arc::new(self.clone()) as Arc<dyn ComputedComponent>)
    }

    /// The environment's hash: the requirements and the base interpreter's version.
    ///
    /// # Errors
    /// The interpreter cannot be run.
    pub fn hash(&self) -> Result<String, EnvironmentError> {
        let probe = probe(&self.python)?;
        Ok(env_hash(&probe.version, &self.requirements))
    }

    /// Build the environment into the store at `envs_dir` unless it is built, and return
    /// it. A plain interpreter (no requirements) builds nothing: `None`.
    ///
    /// # Errors
    /// The interpreter cannot be run, or the build failed (the message names the requirement
    /// that failed when the log says, and shows the log's last lines).
    pub(crate) fn ensure_built(
        &self,
        envs_dir: &Path,
    ) -> Result<Option<BuiltEnv>, EnvironmentError> {
        if !self.has_requirements() {
            return Ok(None);
        }
        let probe = probe(&self.python)?;
        let hash = env_hash(&probe.version, &self.requirements);
        let envs = envs_dir.to_path_buf();
        fs::create_dir_all(&envs)?;
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(envs.join(format!("{hash}.lock")))?;
        lock.lock()?;
        let dir = envs.join(&hash);
        if let Some(freeze) = read_freeze(&dir) {
            return Ok(Some(BuiltEnv { hash, dir, freeze }));
        }
        let freeze = build(&dir, &probe.executable, &self.requirements)?;
        drop(lock);
        Ok(Some(BuiltEnv { hash, dir, freeze }))
    }

    /// The component's value (see the module doc).
    fn value(&self, envs_dir: &Path, build: bool) -> Result<Value, EnvironmentError> {
        let probe = probe(&self.python)?;
        let hash = env_hash(&probe.version, &self.requirements);
        let freeze = if build {
            self.ensure_built(envs_dir)?.map(|b| b.freeze)
        } else {
            read_freeze(&envs_dir.join(&hash))
        };
        Ok(json!({
            ENV_HASH_KEY: hash,
            "python": probe.version,
            "requirements": self.requirements,
            "freeze": freeze.map_or(Value::String("(not built yet)".into()), |f| json!(f)),
        }))
    }
}

impl ComputedComponent for Environment {
    fn compute(
        &self,
        envs_dir: &Path,
        build: bool,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.value(envs_dir, build)?)
    }
}

/// A built environment in the store.
#[derive(Debug, Clone)]
pub(crate) struct BuiltEnv {
    /// The environment hash.
    #[allow(dead_code)]
    pub(crate) hash: String,
    /// `envs/<hash>/`.
    pub(crate) dir: PathBuf,
    /// The resolved packages (`name==version`, sorted).
    pub(crate) freeze: Vec<String>,
}

impl BuiltEnv {
    /// The virtual environment's folder.
    pub(crate) fn venv(&self) -> PathBuf {
        self.dir.join("venv")
    }

    /// Its interpreter.
    pub(crate) fn python(&self) -> PathBuf {
        self.venv().join("bin").join("python")
    }

    /// `PATH` and `VIRTUAL_ENV` for a process running in it, given the process's `PATH`.
    pub(crate) fn set_vars(
        &self,
        env: &mut std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString>,
    ) {
        let bin = self.venv().join("bin");
        let mut path = bin.into_os_string();
        if let Some(old) = env.get(std::ffi::OsStr::new("PATH")) {
            path.push(":");
            path.push(old);
        }
        env.insert("PATH".into(), path);
        env.insert("VIRTUAL_ENV".into(), self.venv().into_os_string());
    }
}

/// Requirements as lines: trimmed, comments and blank lines dropped, in the given order.
fn normalise(lines: impl Iterator<Item = String>) -> Vec<String> {
    lines
        .map(|l| {
            let l = match l.find(" #") {
                Some(i) => &l[..i],
                None => l.as_str(),
            };
            l.trim().to_string()
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The environment hash: 32 hex digits of blake3 over the interpreter version and the
/// requirement lines.
fn env_hash(version: &str, requirements: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"stepgraph-env-v1\n");
    h.update(version.as_bytes());
    h.update(b"\n");
    for r in requirements {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex()[..32].to_string()
}

/// What an interpreter says about itself.
#[derive(Debug, Clone)]
struct Probe {
    /// `sys.executable`.
    executable: PathBuf,
    /// `sys.version` and the machine, on one line.
    version: String,
}

/// Why an interpreter could not be asked (kept in the probe memo, so cloneable).
#[derive(Debug, Clone)]
enum ProbeFailure {
    /// It cannot be started.
    Spawn(Arc<io::Error>),
    /// It did not print its executable and version.
    NoVersion { status: ExitStatus, stderr: String },
}

impl ProbeFailure {
    /// The error, naming the interpreter.
    fn into_error(self, python: &str) -> EnvironmentError {
        match self {
            ProbeFailure::Spawn(source) => EnvironmentError::Interpreter {
                python: python.to_string(),
                source,
            },
            ProbeFailure::NoVersion { status, stderr } => EnvironmentError::NoVersion {
                python: python.to_string(),
                status,
                stderr,
            },
        }
    }
}

/// Ask `python` for its executable and version, once per interpreter and process.
fn probe(python: &str) -> Result<Probe, EnvironmentError> {
    type Memo = Mutex<HashMap<String, Result<Probe, ProbeFailure>>>;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    let known = memo.lock().ok().and_then(|m| m.get(python).cloned());
    let result = match known {
        Some(result) => result,
        None => {
            let result = run_probe(python);
            if let Ok(mut m) = memo.lock() {
                m.insert(python.to_string(), result.clone());
            }
            result
        }
    };
    result.map_err(|f| f.into_error(python))
}

fn run_probe(python: &str) -> Result<Probe, ProbeFailure> {
    let out = Command::new(python)
        .args([
            "-I",
            "-c",
            "import sys, platform; print(sys.executable); \
             print(' '.join(sys.version.split()) + ' ' + platform.machine())",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProbeFailure::Spawn(Arc::new(e)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (out.status.success(), lines.next(), lines.next()) {
        (true, Some(exe), Some(version)) if !exe.is_empty() => Ok(Probe {
            executable: PathBuf::from(exe),
            version: version.to_string(),
        }),
        _ => Err(ProbeFailure::NoVersion {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// The freeze of a complete environment, or `None`.
fn read_freeze(dir: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(dir.join(COMPLETE_MARKER)).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// Whether `uv` is on PATH.
fn uv_on_path() -> bool {
    Command::new("uv")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Lists the installed distributions as `pip freeze` does (without pip, setuptools, wheel,
/// distribute), with the standard library only, so uv-built environments (no pip) say the
/// same as pip-built ones.
const FREEZE_PY: &str = r#"import importlib.metadata as m
skip = {"pip", "setuptools", "wheel", "distribute"}
names = set()
for d in m.distributions():
    n = d.metadata["Name"] or ""
    if n and n.lower() not in skip:
        names.add(n + "==" + d.version)
print("\n".join(sorted(names, key=str.lower)))
"#;

/// Build the environment into `dir` (its previous content, an unfinished build, is removed
/// first): the virtual environment, the requirements installed, then `freeze.txt`. The log
/// is `dir/build.log`.
fn build(
    dir: &Path,
    python: &Path,
    requirements: &[String],
) -> Result<Vec<String>, EnvironmentError> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    let req_file = dir.join("requirements.txt");
    fs::write(&req_file, requirements.join("\n") + "\n")?;
    let log_path = dir.join("build.log");
    let mut log = fs::File::create(&log_path)?;
    let venv = dir.join("venv");
    let venv_python = venv.join("bin").join("python");
    let steps: Vec<Vec<std::ffi::OsString>> = if uv_on_path() {
        vec![
            vec![
                "uv".into(),
                "venv".into(),
                "--quiet".into(),
                "--python".into(),
                python.into(),
                venv.clone().into(),
            ],
            vec![
                "uv".into(),
                "pip".into(),
                "install".into(),
                "--python".into(),
                venv_python.clone().into(),
                "-r".into(),
                req_file.clone().into(),
            ],
        ]
    } else {
        vec![
            vec![
                python.into(),
                "-m".into(),
                "venv".into(),
                venv.clone().into(),
            ],
            vec![
                venv_python.clone().into(),
                "-m".into(),
                "pip".into(),
                "install".into(),
                "--disable-pip-version-check".into(),
                "--no-input".into(),
                "-r".into(),
                req_file.clone().into(),
            ],
        ]
    };
    for argv in &steps {
        let shown: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let _ = writeln!(log, "$ {}", shown.join(" "));
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        let out_log = log.try_clone()?;
        let err_log = log.try_clone()?;
        let status = Command::new(program)
            .args(args)
            .env_remove("VIRTUAL_ENV")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .env("PIP_NO_INPUT", "1")
            .stdin(Stdio::null())
            .stdout(out_log.into_file())
            .stderr(err_log.into_file())
            .status();
        let failed = match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some((s.to_string(), None)),
            Err(e) => Some((format!("cannot run {}: {e}", shown.join(" ")), Some(e))),
        };
        if let Some((why, source)) = failed {
            let _ = writeln!(log, "stepgraph: {why}");
            return Err(build_failure(&log_path, requirements, why, source));
        }
    }
    let out = Command::new(&venv_python)
        .args(["-I", "-c", FREEZE_PY])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| EnvironmentError::Run {
            program: venv_python.clone(),
            source,
        })?;
    if !out.status.success() {
        let _ = log.write_all(&out.stderr);
        return Err(EnvironmentError::Freeze {
            status: out.status,
            log: log_path,
        });
    }
    let freeze = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = writeln!(log, "stepgraph: installed\n{freeze}");
    // freeze.txt last, atomically: its presence marks the environment complete.
    let tmp = dir.join(format!("{COMPLETE_MARKER}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(freeze.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(COMPLETE_MARKER))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(freeze.lines().map(str::to_string).collect())
}

/// A failed build: the requirement that failed (the first one the log's tail names), where
/// the log is, and its last lines.
fn build_failure(
    log_path: &Path,
    requirements: &[String],
    why: String,
    source: Option<io::Error>,
) -> EnvironmentError {
    let text = fs::read_to_string(log_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    let lower = tail.to_lowercase().replace('_', "-");
    let requirement = requirements
        .iter()
        .find(|r| {
            let name = requirement_name(r).to_lowercase().replace('_', "-");
            !name.is_empty() && names_project(&lower, &name)
        })
        .cloned();
    EnvironmentError::Build {
        requirement,
        requirements: requirements.into(),
        why,
        log: log_path.to_path_buf(),
        tail,
        source,
    }
}

/// `text` names the project `name` as a whole word: `py` is not named by `python` or
/// `venv/lib/py`, `six` not by `six-extra` nor `six.moves`.
fn names_project(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '/';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let mut after = text[at + name.len()..].chars();
        let next = after.next();
        let longer = match next {
            Some('.') => after.next().is_some_and(|c| c.is_ascii_alphanumeric()),
            Some(c) => word(c),
            None => false,
        };
        !before.is_some_and(|c| word(c) || c == '.') && !longer
    })
}

/// The project name of a requirement line (`pandas` of `pandas[excel]>=1.5; python_version>"3"`).
fn requirement_name(r: &str) -> &str {
    let end = r
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(r.len());
    &r[..end]
}

/// `environment` in a spec: an interpreter string, or an object
/// `{"python": "python3", "requirements": [..] | "requirements.txt"}`.
impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        parse_value(&v).map_err(D::Error::custom)
    }
}

fn parse_value(v: &Value) -> Result<Environment, EnvironmentError> {
    const EXPECTED: &str = "an interpreter (\"python3\") or an object \
        {\"python\": \"python3\", \"requirements\": [\"pandas==1.5.3\"] or \"requirements.txt\"}";
    let expected = |field, expected, got: String| EnvironmentError::Expected {
        field,
        expected,
        got,
    };
    match v {
        Value::String(s) if s.trim().is_empty() => Err(expected("", EXPECTED, "\"\"".into())),
        Value::String(s) => Ok(Environment::python(s.clone())),
        Value::Object(m) if m.is_empty() => Err(expected("", EXPECTED, "an object".into())),
        Value::Object(m) => {
            let mut env = Environment::default();
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("python", Value::String(s)) if !s.trim().is_empty() => env.python = s.clone(),
                    ("python", other) => {
                        return Err(expected(
                            "python",
                            "an interpreter (\"python3\")",
                            describe(other),
                        ))
                    }
                    ("name", Value::String(s)) => env.name = Some(s.clone()),
                    ("requirements", Value::String(s)) if !s.trim().is_empty() => {
                        env.file = Some(PathBuf::from(s))
                    }
                    ("requirements", Value::Array(items)) => {
                        let mut reqs = Vec::new();
                        for i in items {
                            match i {
                                Value::String(s) => reqs.push(s.clone()),
                                other => {
                                    return Err(expected(
                                        "requirements",
                                        "requirement strings (\"pandas==1.5.3\")",
                                        describe(other),
                                    ))
                                }
                            }
                        }
                        env.requirements = normalise(reqs.into_iter());
                    }
                    ("requirements", other) => {
                        return Err(expected(
                            "requirements",
                            "a list of requirements or a requirements file name",
                            describe(other),
                        ))
                    }
                    (other, _) => {
                        return Err(EnvironmentError::UnknownField {
                            name: other.to_string(),
                        })
                    }
                }
            }
            Ok(env)
        }
        other => Err(expected("", EXPECTED, describe(other))),
    }
}

/// A JSON value in words, as the spec's other errors say them.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(a) if a.is_empty() => "an empty list".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests;
