//! Building an environment: probing the interpreter, the venv/uv build, the freeze and the
//! per-environment lock.

use super::*;

/// A built environment in the store.
#[derive(Debug, Clone)]
pub(crate) struct BuiltEnv {
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

/// What an interpreter says about itself.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    /// `sys.executable`.
    pub(super) executable: PathBuf,
    /// `sys.version` and the machine, on one line.
    pub(super) version: String,
}

/// Why an interpreter could not be asked (kept in the probe memo, so cloneable).
#[derive(Debug, Clone)]
pub(super) enum ProbeFailure {
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
pub(super) fn probe(python: &str) -> Result<Probe, EnvironmentError> {
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

pub(super) fn run_probe(python: &str) -> Result<Probe, ProbeFailure> {
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
pub(super) fn read_freeze(dir: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(dir.join(COMPLETE_MARKER)).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// Whether `uv` is on PATH.
pub(super) fn uv_on_path() -> bool {
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
pub(super) const FREEZE_PY: &str = r#"import importlib.metadata as m
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
pub(super) fn build(
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
pub(super) fn build_failure(
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
pub(super) fn names_project(text: &str, name: &str) -> bool {
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
pub(super) fn requirement_name(r: &str) -> &str {
    let end = r
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(r.len());
    &r[..end]
}
