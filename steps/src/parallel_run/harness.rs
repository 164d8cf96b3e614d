//! The Python harness, shipped inside the binary and written out next to each run.

use std::path::{Path, PathBuf};

/// (relative path, contents) of every harness file.
const FILES: &[(&str, &str)] = &[
    (
        "stepgraph_worker.py",
        include_str!("../../python/stepgraph_worker.py"),
    ),
    (
        "entry_script.py",
        include_str!("../../python/entry_script.py"),
    ),
    (
        "azureml_user/__init__.py",
        include_str!("../../python/azureml_user/__init__.py"),
    ),
    (
        "azureml_user/parallel_run.py",
        include_str!("../../python/azureml_user/parallel_run.py"),
    ),
    (
        "azureml/__init__.py",
        include_str!("../../python/azureml/__init__.py"),
    ),
    (
        "azureml/_shim.py",
        include_str!("../../python/azureml/_shim.py"),
    ),
    (
        "azureml/exceptions.py",
        include_str!("../../python/azureml/exceptions.py"),
    ),
    (
        "azureml/core/__init__.py",
        include_str!("../../python/azureml/core/__init__.py"),
    ),
    (
        "azureml/core/model.py",
        include_str!("../../python/azureml/core/model.py"),
    ),
    (
        "azureml/core/run.py",
        include_str!("../../python/azureml/core/run.py"),
    ),
];

/// Write the harness into `dir` and return the path of its main script.
///
/// # Errors
/// I/O errors writing the files.
pub(crate) fn install(dir: &Path) -> std::io::Result<PathBuf> {
    write_files(dir, |_| true)?;
    Ok(dir.join("stepgraph_worker.py"))
}

/// Write only the `azureml` shim into `dir` (for a command step's `PYTHONPATH`).
///
/// # Errors
/// I/O errors writing the files.
pub(crate) fn install_azureml(dir: &Path) -> std::io::Result<()> {
    write_files(dir, |rel| rel.starts_with("azureml/"))
}

fn write_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> std::io::Result<()> {
    for (rel, text) in FILES.iter().filter(|(rel, _)| wanted(rel)) {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&p, text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Python file of `steps/python` but its tests, relative to it, sorted.
    fn shipped_sources(root: &Path, rel: &Path, found: &mut Vec<String>) {
        let Ok(entries) = fs_err::read_dir(root.join(rel)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let rel = rel.join(&name);
            if entry.path().is_dir() {
                if name != "tests" && name != "__pycache__" {
                    shipped_sources(root, &rel, found);
                }
            } else if rel.extension().is_some_and(|e| e == "py") {
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_python_source_is_shipped() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let mut found = Vec::new();
        shipped_sources(&root, Path::new(""), &mut found);
        found.sort();
        let mut shipped: Vec<String> = FILES.iter().map(|(rel, _)| rel.to_string()).collect();
        shipped.sort();
        assert_eq!(found, shipped, "add new harness files to FILES");
    }

    #[test]
    fn the_shim_alone_is_the_azureml_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        install_azureml(dir.path()).expect("install");
        assert!(dir.path().join("azureml/core/model.py").is_file());
        assert!(!dir.path().join("stepgraph_worker.py").exists());
        assert!(!dir.path().join("azureml_user").exists());
    }

    #[test]
    fn installed_shim_imports_and_refuses_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = install(dir.path()).expect("install");
        assert_eq!(main, dir.path().join("stepgraph_worker.py"));
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(concat!(
                "from azureml.core import Model, Run\n",
                "from azureml.core.model import Model as M\n",
                "assert M is Model\n",
                "try:\n    from azureml.core import Workspace\n",
                "except ImportError as e:\n    print(e)\n",
            ))
            .current_dir(dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python3 must be installed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("azureml.core.Workspace is not supported locally"),
            "{stdout}"
        );
    }
}
