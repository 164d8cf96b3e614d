//! How a folder is recognised as a stepgraph store, wherever it is and whatever its name:
//! datasets, source snapshots and source copies must never take a store's files as input
//! (they change every run, so a step over `.` would never be reused and its snapshot would
//! grow with every run).

use std::path::Path;

/// The marker file written at the root of every store.
pub const STORE_MARKER: &str = ".stepgraph-store";

const MARKER_TEXT: &str = "This folder is a stepgraph store: the cache, objects and runs of \
stepgraph pipelines. Datasets and source snapshots never include it.\n";

/// Whether `dir` is the root of a stepgraph store: it holds the marker file, or (stores made
/// before the marker existed) a `db` folder, an `objects` folder and a `lock` file.
pub fn is_store_dir(dir: &Path) -> bool {
    if dir.join(STORE_MARKER).is_file() {
        return true;
    }
    dir.join("lock").is_file() && dir.join("db").is_dir() && dir.join("objects").is_dir()
}

/// Write the marker into the store at `root` if it is not there yet. Best effort: a store
/// without it is still recognised by its layout.
pub(crate) fn ensure_marker(root: &Path) {
    let path = root.join(STORE_MARKER);
    if !path.exists() {
        let _ = fs_err::write(path, MARKER_TEXT);
    }
}
