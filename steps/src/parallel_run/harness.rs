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
];

/// Write the harness into `dir` and return the path of its main script.
///
/// # Errors
/// I/O errors writing the files.
pub(crate) fn install(dir: &Path) -> std::io::Result<PathBuf> {
    for (rel, text) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&p, text)?;
    }
    Ok(dir.join("stepgraph_worker.py"))
}
