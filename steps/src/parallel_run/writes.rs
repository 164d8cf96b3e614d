//! Which mini-batch attempts wrote which files of a summary_only step's output folder, to warn
//! about the pattern that duplicates rows after a crash or a retry: several mini-batches
//! appending to one shared file (a redone mini-batch appends its rows a second time).
//!
//! Each attempt's window is bracketed by two listings of the folder (size, mtime, inode of
//! each file). Attempts run concurrently, so a change seen in a window may come from another
//! attempt; a file is reported only when changes were seen in two windows of different
//! mini-batches that are disjoint and that no single attempt's window overlaps both: then at
//! least two different attempts wrote it. No false alarm, whatever the concurrency; with one
//! worker every shared file is found. The listing stops (and so does the check) once the
//! folder holds more than [`MAX_WATCHED`] files: per-mini-batch files, the right pattern.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The most files listed per window; past it the check is given up for the step.
pub(crate) const MAX_WATCHED: usize = 256;

type Listing = BTreeMap<PathBuf, (u64, i64, i64, u64)>;

/// An attempt in progress: its start and the listing before it.
pub(crate) struct Before {
    start: u64,
    listing: Option<Listing>,
}

struct Attempt {
    index: u64,
    start: u64,
    end: u64,
    changed: Vec<PathBuf>,
}

#[derive(Default)]
struct State {
    gave_up: bool,
    attempts: Vec<Attempt>,
}

/// Watches one output folder.
pub(crate) struct WriteWatch {
    dir: PathBuf,
    clock: AtomicU64,
    state: Mutex<State>,
}

impl WriteWatch {
    /// Watch `dir`.
    pub(crate) fn new(dir: &Path) -> WriteWatch {
        WriteWatch {
            dir: dir.to_path_buf(),
            clock: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn gave_up(&self) -> bool {
        self.state.lock().map(|s| s.gave_up).unwrap_or(true)
    }

    /// Call before an attempt.
    pub(crate) fn before(&self) -> Before {
        let start = self.clock.fetch_add(1, Ordering::SeqCst);
        let listing = if self.gave_up() { None } else { self.list() };
        Before { start, listing }
    }

    /// Call after the attempt of mini-batch `index` that `before` started.
    pub(crate) fn after(&self, index: u64, before: Before) {
        let now = if before.listing.is_some() {
            self.list()
        } else {
            None
        };
        let end = self.clock.fetch_add(1, Ordering::SeqCst);
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let (Some(old), Some(new)) = (before.listing, now) else {
            state.gave_up = true;
            return;
        };
        let changed = new
            .into_iter()
            .filter(|(p, m)| old.get(p) != Some(m))
            .map(|(p, _)| p)
            .collect();
        state.attempts.push(Attempt {
            index,
            start: before.start,
            end,
            changed,
        });
    }

    /// One warning line per file that at least two different mini-batches wrote.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        if state.gave_up {
            return Vec::new();
        }
        let mut by_file: BTreeMap<&PathBuf, Vec<&Attempt>> = BTreeMap::new();
        for a in &state.attempts {
            for f in &a.changed {
                by_file.entry(f).or_default().push(a);
            }
        }
        let mut out = Vec::new();
        for (file, writers) in by_file {
            let pair = writers.iter().find_map(|x| {
                writers.iter().find_map(|y| {
                    let shared = x.index != y.index
                        && x.end < y.start
                        && !state
                            .attempts
                            .iter()
                            .any(|z| z.start < x.end && z.end > y.start);
                    shared.then_some((x.index, y.index))
                })
            });
            if let Some((a, b)) = pair {
                let mut all: Vec<u64> = writers.iter().map(|w| w.index).collect();
                all.sort_unstable();
                all.dedup();
                let shown: Vec<String> = all.iter().take(10).map(u64::to_string).collect();
                let more = if all.len() > 10 {
                    format!(" and {} more", all.len() - 10)
                } else {
                    String::new()
                };
                let rel = file.strip_prefix(&self.dir).unwrap_or(file);
                out.push(format!(
                    "warning: output file {} was written by mini-batches {a} and {b} (changes \
                     seen while mini-batches {}{more} ran): summary_only output must be one file \
                     per mini-batch, named from the mini-batch; rows appended to a shared file \
                     are duplicated when a mini-batch is redone after a crash or a retry",
                    rel.display(),
                    shown.join(", "),
                ));
            }
        }
        out
    }

    /// The files below the folder, or None when there are more than [`MAX_WATCHED`].
    fn list(&self) -> Option<Listing> {
        let mut out = Listing::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() {
                    dirs.push(e.path());
                } else {
                    if out.len() >= MAX_WATCHED {
                        return None;
                    }
                    out.insert(e.path(), (m.len(), m.mtime(), m.mtime_nsec(), m.ino()));
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_appended_to_by_two_mini_batches_is_reported_and_own_files_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = WriteWatch::new(dir.path());
        for i in 0..3u64 {
            let b = w.before();
            std::fs::write(dir.path().join(format!("own-{i}.txt")), "x").expect("write");
            let shared = dir.path().join("shared.txt");
            let mut text = std::fs::read_to_string(&shared).unwrap_or_default();
            text.push_str(&format!("row {i}\n"));
            std::fs::write(&shared, text).expect("write");
            w.after(i, b);
        }
        let warnings = w.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("shared.txt"), "{}", warnings[0]);
        assert!(
            warnings[0].contains("mini-batches 0 and 1"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn overlapping_attempts_are_never_blamed_for_each_others_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = WriteWatch::new(dir.path());
        // A long mini-batch 0 writes its own file early and late; mini-batches 1 and 2 run
        // meanwhile and see both writes.
        let b0 = w.before();
        let b1 = w.before();
        std::fs::write(dir.path().join("own-0.txt"), "a").expect("write");
        w.after(1, b1);
        let b2 = w.before();
        std::fs::write(dir.path().join("own-0.txt"), "ab").expect("write");
        w.after(2, b2);
        w.after(0, b0);
        assert_eq!(w.warnings(), Vec::<String>::new());
    }
}
