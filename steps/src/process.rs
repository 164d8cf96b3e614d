//! Child processes of steps: each runs in its own process group, so stopping it stops what it
//! started too.

use std::path::Path;
use std::process::Child;

/// Kill a child and everything it started (it must have been spawned with `process_group(0)`).
pub(crate) fn kill_tree(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
}

/// Copy a source folder (without `.git` and `__pycache__`) to `to`: steps run in a copy, the
/// way Azure runs a snapshot, so nothing they write lands in the user's folder or in the
/// snapshot that is hashed into their fingerprint. `skip` (the store, which may sit inside
/// the source folder) is never copied.
pub(crate) fn copy_source(from: &Path, to: &Path, skip: &Path) -> std::io::Result<()> {
    copy_tree(from, to, &|path: &Path| {
        let name = path.file_name().unwrap_or_default();
        name != ".git"
            && name != "__pycache__"
            && !(path.is_dir()
                && (stepgraph_engine::store::is_store_dir(path)
                    || path.canonicalize().is_ok_and(|p| p == skip)))
    })
}

/// Copy a file, or a folder recursively, keeping only the entries `keep` accepts.
pub(crate) fn copy_tree(
    from: &Path,
    to: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> std::io::Result<()> {
    let kind = std::fs::metadata(from)?.file_type();
    if !kind.is_dir() {
        std::fs::copy(from, to)?;
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if keep(&path) {
            if let Some(name) = path.file_name() {
                copy_tree(&path, &to.join(name), keep)?;
            }
        }
    }
    Ok(())
}
