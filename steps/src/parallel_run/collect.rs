//! The files an incremental `summary_only` step's mini-batches write, told apart by
//! mini-batch: each worker writes into a folder of its own (`AZUREML_BI_OUTPUT_PATH`,
//! `EntryScript().output_dir`), and a worker runs one mini-batch at a time, so whatever is in
//! its folder after a successful try is that mini-batch's. The folder's contents are moved
//! to `batches/<index>/` (then memoised as the mini-batch's objects); after a failed try
//! they are dropped. The step's output is then assembled from every mini-batch's files, in
//! order, reused or run.

use fs_err as fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the workers write, and where each mini-batch's files wait to be memoised.
#[derive(Debug, Clone)]
pub(crate) struct Collector {
    workers: PathBuf,
    batches: PathBuf,
}

impl Collector {
    /// Folders under `staging`: `workers/<w>/` and `batches/<index>/`.
    pub(crate) fn new(staging: &Path) -> Self {
        Collector {
            workers: staging.join("workers"),
            batches: staging.join("batches"),
        }
    }

    /// Worker `w`'s own output folder.
    pub(crate) fn worker_dir(&self, w: usize) -> PathBuf {
        self.workers.join(w.to_string())
    }

    /// The files mini-batch `index` wrote, once taken.
    pub(crate) fn batch_dir(&self, index: u64) -> PathBuf {
        self.batches.join(index.to_string())
    }

    /// Make the workers' folders (empty).
    pub(crate) fn prepare(&self, workers: usize) -> io::Result<()> {
        for w in 0..workers {
            fs::create_dir_all(self.worker_dir(w))?;
        }
        fs::create_dir_all(&self.batches)
    }

    /// After a successful try of `index` on worker `w`: what the worker wrote becomes the
    /// mini-batch's (replacing what an earlier try left), and the worker gets an empty folder.
    pub(crate) fn take(&self, w: usize, index: u64) -> io::Result<()> {
        let dest = self.batch_dir(index);
        remove(&dest)?;
        let dir = self.worker_dir(w);
        fs::create_dir_all(&dir)?;
        fs::rename(&dir, &dest)?;
        fs::create_dir_all(&dir)
    }

    /// The workers whose folders still hold files once the workers stopped (written in
    /// `shutdown()`, or in `init()` of a worker that never ran a mini-batch), as
    /// `worker-N: a.txt, b.txt`.
    pub(crate) fn leftovers(&self, workers: usize) -> Vec<String> {
        (0..workers)
            .filter_map(|w| {
                let files = files_under(&self.worker_dir(w)).ok()?;
                if files.is_empty() {
                    return None;
                }
                let names: Vec<String> = files
                    .iter()
                    .take(5)
                    .map(|(rel, _)| crate::process::escape_controls(&rel.to_string_lossy()))
                    .collect();
                Some(format!("worker-{w} left {}", names.join(", ")))
            })
            .collect()
    }

    /// After a failed try on worker `w`: what it wrote is dropped.
    pub(crate) fn discard(&self, w: usize) {
        let dir = self.worker_dir(w);
        let _ = remove(&dir);
        let _ = fs::create_dir_all(&dir);
    }
}

/// Remove a folder and everything in it; a missing one is fine.
fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The regular files under `dir`, by their path relative to it (sorted).
///
/// # Errors
/// A link or special file (outputs must be regular files), or I/O errors.
pub(crate) fn files_under(dir: &Path) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(io::Error::other)?;
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(io::Error::other(format!(
                "{}: not a regular file (outputs must be regular files; write a copy instead)",
                entry.path().display()
            )));
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .map_err(io::Error::other)?
            .to_path_buf();
        out.push((rel, entry.path().to_path_buf()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successful_try_keeps_its_files_and_a_failed_one_drops_them() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let c = Collector::new(dir.path());
        c.prepare(2)?;
        fs::write(c.worker_dir(0).join("a.txt"), "a")?;
        c.discard(0);
        assert!(files_under(&c.worker_dir(0))?.is_empty());
        fs::create_dir_all(c.worker_dir(1).join("sub"))?;
        fs::write(c.worker_dir(1).join("sub/b.txt"), "b")?;
        c.take(1, 7)?;
        assert!(files_under(&c.worker_dir(1))?.is_empty());
        let taken = files_under(&c.batch_dir(7))?;
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, PathBuf::from("sub/b.txt"));
        Ok(())
    }
}
