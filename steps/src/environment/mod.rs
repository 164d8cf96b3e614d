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

mod build;
mod error;

use build::*;
pub use error::EnvironmentError;

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
            return Ok(Some(BuiltEnv { dir, freeze }));
        }
        let freeze = build(&dir, &probe.executable, &self.requirements)?;
        drop(lock);
        Ok(Some(BuiltEnv { dir, freeze }))
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
