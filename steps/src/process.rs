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
/// snapshot that is hashed into their fingerprint.
/// `skip` (the store, which may sit inside the source folder) is never copied.
pub(crate) fn copy_source(from: &Path, to: &Path, skip: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == "__pycache__" {
            continue;
        }
        let kind = entry.file_type()?;
        let dest = to.join(&name);
        if kind.is_dir() {
            if entry.path().canonicalize().is_ok_and(|p| p == skip) {
                continue;
            }
            copy_source(&entry.path(), &dest, skip)?;
        } else if kind.is_file() || kind.is_symlink() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
