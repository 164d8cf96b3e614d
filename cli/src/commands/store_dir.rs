//! Which store a command uses, found as git finds `.git`: `--store DIR` / `STEPGRAPH_STORE`
//! when given; else the nearest `.stepgraph` store in the current folder or a parent; else the
//! nearest one in the spec's folder or a parent; else a new `.stepgraph` next to the spec (in
//! the current folder for a pipeline built in code). A command that names no spec and finds no
//! store is refused rather than given a new, empty one.

use std::path::{Path, PathBuf};

use crate::args::Command;

/// The name of a store found by discovery.
pub(super) const STORE_NAME: &str = ".stepgraph";

/// Where the store is, and how it was chosen.
pub(super) struct Chosen {
    /// The store folder.
    pub(super) dir: PathBuf,
    /// No store was found: `dir` is a new one.
    pub(super) new: bool,
}

/// No store was found for a command that names no spec: making an empty one would only say
/// "no runs" about a store that exists elsewhere.
#[derive(Debug, thiserror::Error)]
pub(super) enum NoStore {
    /// Nothing found by discovery.
    #[error(
        "no stepgraph store here: no {STORE_NAME} store in {} or its parents (a run makes one \
         next to its spec: run this from that folder, or pass --store DIR)",
        cwd.display()
    )]
    NotFound {
        /// The folder searched from.
        cwd: PathBuf,
    },
    /// `--store` / `STEPGRAPH_STORE` names a folder that does not exist (a typo would
    /// otherwise leave a new, empty store there).
    #[error(
        "no stepgraph store at {}: the folder given by --store / STEPGRAPH_STORE does not exist \
         (a run makes it)",
        dir.display()
    )]
    Missing {
        /// The folder given.
        dir: PathBuf,
    },
}

/// The store for `command`, given `--store` / `STEPGRAPH_STORE` (`given`); `built`: the
/// pipeline is built in code (no spec ever: a new store goes in the current folder).
///
/// # Errors
/// [`NoStore`] when nothing is found for a command that names no spec and does not run, or
/// the store it is given does not exist.
pub(super) fn choose(
    given: Option<&Path>,
    command: &Command,
    built: bool,
) -> Result<Chosen, NoStore> {
    let makes_one = built || spec_of(command).is_some() || matches!(command, Command::Run { .. });
    if let Some(dir) = given {
        if !makes_one && !dir.exists() {
            return Err(NoStore::Missing {
                dir: dir.to_path_buf(),
            });
        }
        return Ok(Chosen {
            dir: dir.to_path_buf(),
            new: false,
        });
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let spec_dir = spec_of(command).map(|spec| {
        let parent = spec.parent().unwrap_or(Path::new(""));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::path::absolute(cwd.join(parent)).unwrap_or_else(|_| cwd.join(parent))
    });
    if let Some(found) = nearest(&cwd).or_else(|| spec_dir.as_deref().and_then(nearest)) {
        return Ok(Chosen {
            dir: found,
            new: false,
        });
    }
    if !makes_one {
        return Err(NoStore::NotFound { cwd });
    }
    Ok(Chosen {
        dir: spec_dir.unwrap_or(cwd).join(STORE_NAME),
        new: true,
    })
}

/// The nearest `.stepgraph` store in `start` or a parent.
fn nearest(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(STORE_NAME))
        .find(|d| stepgraph_engine::is_store_dir(d))
}

/// The spec file a command names, if any (`graph` and `explain` take one as their first
/// target when it is a file).
fn spec_of(command: &Command) -> Option<&Path> {
    match command {
        Command::Run { spec, .. } | Command::Status { spec, .. } | Command::Validate { spec } => {
            spec.as_deref()
        }
        Command::Graph { target, .. } => target.as_deref().map(Path::new).filter(|p| p.is_file()),
        Command::Explain { targets, .. } => targets.first().map(Path::new).filter(|p| p.is_file()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_store_in_a_parent_is_found() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = dir.path().join(STORE_NAME);
        fs_err::create_dir_all(&store)?;
        fs_err::write(store.join(stepgraph_engine::STORE_MARKER), "")?;
        let deep = dir.path().join("a/b");
        fs_err::create_dir_all(&deep)?;
        assert_eq!(nearest(&deep), Some(store.clone()));
        // A `.stepgraph` that is not a store is not taken.
        fs_err::create_dir_all(deep.join(STORE_NAME))?;
        assert_eq!(nearest(&deep), Some(store));
        Ok(())
    }
}
