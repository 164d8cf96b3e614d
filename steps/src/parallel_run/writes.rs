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
//!
//! Two more cases duplicate rows, both found when a file *grows in place* (same inode, more
//! bytes; a file rewritten whole by its mini-batch does not):
//! - a retry: an attempt of a mini-batch grows a file that a failed attempt of the same
//!   mini-batch wrote;
//! - a redo after a crash or a failed run: every progress commit saves the listing left by
//!   the last successful attempt (`output-listing.bin` beside the staged output). A resumed
//!   run compares the folder with it: files changed since were written by attempts that
//!   never committed, whose mini-batches are redone now; one of them growing again in this
//!   run is reported.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
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
    ok: bool,
    changed: Vec<PathBuf>,
    /// Changed files that existed before with the same inode and are now bigger.
    grew: Vec<PathBuf>,
}

#[derive(Default)]
struct State {
    gave_up: bool,
    attempts: Vec<Attempt>,
    /// The listing after the latest successful attempt (by end), saved at each commit.
    latest_ok: Option<(u64, Listing)>,
}

/// Watches one output folder.
pub(crate) struct WriteWatch {
    dir: PathBuf,
    saved: PathBuf,
    /// Files changed, when a run resumed, since the listing its last commit saved.
    uncommitted: Vec<PathBuf>,
    clock: AtomicU64,
    state: Mutex<State>,
}

impl WriteWatch {
    /// Watch `dir`; the listing of each commit is saved to `saved`. When `resuming` (a run
    /// goes on from committed mini-batches), the files changed since the listing the last
    /// commit saved are remembered: attempts that never committed wrote them.
    pub(crate) fn new(dir: &Path, saved: &Path, resuming: bool) -> WriteWatch {
        let mut w = WriteWatch {
            dir: dir.to_path_buf(),
            saved: saved.to_path_buf(),
            uncommitted: Vec::new(),
            clock: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        };
        if resuming {
            let old = fs_err::read(saved).ok().and_then(|b| decode(dir, &b));
            if let (Some(old), Some(now)) = (old, w.list()) {
                w.uncommitted = now
                    .into_iter()
                    .filter(|(p, m)| old.get(p) != Some(m))
                    .map(|(p, _)| p)
                    .collect();
            }
        } else {
            let _ = fs_err::remove_file(saved);
        }
        w
    }

    /// Call just before a progress commit; then [`WriteWatch::save`] what it returns once the
    /// commit is durable.
    pub(crate) fn committing(&self) -> Option<Vec<u8>> {
        let state = self.state.lock().ok()?;
        if state.gave_up {
            return None;
        }
        state
            .latest_ok
            .as_ref()
            .map(|(_, listing)| encode(&self.dir, listing))
    }

    /// Save the listing of a commit (best effort: a lost listing costs a warning, never data;
    /// written to a temporary file and renamed, so it is whole or absent after a crash).
    pub(crate) fn save(&self, bytes: Option<Vec<u8>>) {
        let Some(bytes) = bytes else { return };
        let tmp = self.saved.with_extension("tmp");
        if fs_err::write(&tmp, bytes).is_ok() {
            let _ = fs_err::rename(&tmp, &self.saved);
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

    /// Call after the attempt of mini-batch `index` that `before` started; `ok` when it
    /// succeeded.
    pub(crate) fn after(&self, index: u64, before: Before, ok: bool) {
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
        let changed: Vec<PathBuf> = new
            .iter()
            .filter(|(p, m)| old.get(*p) != Some(*m))
            .map(|(p, _)| p.clone())
            .collect();
        let grew = changed
            .iter()
            .filter(|p| match (old.get(*p), new.get(*p)) {
                (Some(o), Some(n)) => o.3 == n.3 && n.0 > o.0,
                _ => false,
            })
            .cloned()
            .collect();
        if ok && state.latest_ok.as_ref().is_none_or(|(e, _)| *e < end) {
            state.latest_ok = Some((end, new));
        }
        state.attempts.push(Attempt {
            index,
            start: before.start,
            end,
            ok,
            changed,
            grew,
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
        let rule = "summary_only output must be one file per mini-batch, named from the \
                    mini-batch; rows appended to a shared file are duplicated when a mini-batch \
                    is redone after a crash or a retry";
        let disjoint = |x: &Attempt, y: &Attempt| {
            x.end < y.start
                && !state
                    .attempts
                    .iter()
                    .any(|z| z.start < x.end && z.end > y.start)
        };
        let mut files: Vec<&PathBuf> = by_file.keys().copied().collect();
        files.extend(self.uncommitted.iter());
        files.sort();
        files.dedup();
        for file in files {
            let writers = by_file.get(file).cloned().unwrap_or_default();
            // The name is the entry's choice: shown with its control characters escaped.
            let rel = crate::process::escape_controls(
                &file
                    .strip_prefix(&self.dir)
                    .unwrap_or(file)
                    .to_string_lossy(),
            );
            let pair = writers.iter().find_map(|x| {
                writers.iter().find_map(|y| {
                    (x.index != y.index && disjoint(x, y)).then_some((x.index, y.index))
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
                out.push(format!(
                    "warning: output file {rel} was written by mini-batches {a} and {b} (changes \
                     seen while mini-batches {}{more} ran): {rule}",
                    shown.join(", "),
                ));
                continue;
            }
            // A failed attempt wrote it, and a later attempt of the same mini-batch grew it.
            let retried = writers.iter().find_map(|x| {
                writers.iter().find_map(|y| {
                    (!x.ok && x.index == y.index && y.grew.contains(file) && disjoint(x, y))
                        .then_some(x.index)
                })
            });
            if let Some(i) = retried {
                out.push(format!(
                    "warning: output file {rel} was written by a failed attempt of mini-batch \
                     {i} and appended to again by its retry: {rule}"
                ));
                continue;
            }
            if self.uncommitted.contains(file) && writers.iter().any(|w| w.grew.contains(file)) {
                out.push(format!(
                    "warning: output file {rel} was written by an attempt of an earlier run \
                     that never committed (a crash or a failed run) and appended to again when \
                     its mini-batch was redone: {rule}"
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
            let Ok(rd) = fs_err::read_dir(&d) else {
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

const MAGIC: &[u8; 8] = b"SGLIST01";

/// A listing as bytes: per file its path below `dir` (exact bytes), size, mtime, inode.
fn encode(dir: &Path, listing: &Listing) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (path, (size, secs, nanos, ino)) in listing {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .as_os_str()
            .as_bytes();
        out.extend((rel.len() as u64).to_le_bytes());
        out.extend(rel);
        out.extend(size.to_le_bytes());
        out.extend(secs.to_le_bytes());
        out.extend(nanos.to_le_bytes());
        out.extend(ino.to_le_bytes());
    }
    out
}

/// The listing [`encode`] wrote, or None when the bytes are not one.
fn decode(dir: &Path, mut b: &[u8]) -> Option<Listing> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn word(b: &mut &[u8]) -> Option<[u8; 8]> {
        take(b, 8)?.try_into().ok()
    }
    if take(&mut b, MAGIC.len())? != MAGIC {
        return None;
    }
    let mut out = Listing::new();
    while !b.is_empty() {
        let len = usize::try_from(u64::from_le_bytes(word(&mut b)?)).ok()?;
        let rel = Path::new(OsStr::from_bytes(take(&mut b, len)?));
        let size = u64::from_le_bytes(word(&mut b)?);
        let secs = i64::from_le_bytes(word(&mut b)?);
        let nanos = i64::from_le_bytes(word(&mut b)?);
        let ino = u64::from_le_bytes(word(&mut b)?);
        out.insert(dir.join(rel), (size, secs, nanos, ino));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_appended_to_by_two_mini_batches_is_reported_and_own_files_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = WriteWatch::new(dir.path(), &dir.path().join("listing"), false);
        for i in 0..3u64 {
            let b = w.before();
            fs_err::write(dir.path().join(format!("own-{i}.txt")), "x").expect("write");
            let shared = dir.path().join("shared.txt");
            let mut text = fs_err::read_to_string(&shared).unwrap_or_default();
            text.push_str(&format!("row {i}\n"));
            fs_err::write(&shared, text).expect("write");
            w.after(i, b, true);
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
        let w = WriteWatch::new(dir.path(), &dir.path().join("listing"), false);
        // A long mini-batch 0 writes its own file early and late; mini-batches 1 and 2 run
        // meanwhile and see both writes.
        let b0 = w.before();
        let b1 = w.before();
        fs_err::write(dir.path().join("own-0.txt"), "a").expect("write");
        w.after(1, b1, true);
        let b2 = w.before();
        fs_err::write(dir.path().join("own-0.txt"), "ab").expect("write");
        w.after(2, b2, true);
        w.after(0, b0, true);
        assert_eq!(w.warnings(), Vec::<String>::new());
    }

    /// A temporary folder and the empty `out` folder in it.
    fn out_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        fs_err::create_dir(&out).expect("mkdir");
        (dir, out)
    }

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(text.as_bytes()).expect("append");
    }

    #[test]
    fn a_retry_appending_again_is_reported_and_a_retry_rewriting_its_file_is_not() {
        let (dir, out) = out_dir();
        let w = WriteWatch::new(&out, &dir.path().join("listing"), false);
        for ok in [false, true] {
            let b = w.before();
            append(&out.join("all.txt"), "f1\nf2\n");
            fs_err::write(out.join("part-0.txt"), "f1\nf2\n").expect("write");
            w.after(0, b, ok);
        }
        let warnings = w.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "warning: output file all.txt was written by a failed attempt of mini-batch 0 \
                 and appended to again by its retry"
            ),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_redo_after_a_crash_appending_again_is_reported() {
        let (dir, out) = out_dir();
        let saved = dir.path().join("listing");
        let attempt = |w: &WriteWatch, i: u64| {
            let b = w.before();
            append(&out.join("all.txt"), &format!("rows of {i}\n"));
            fs_err::write(out.join(format!("part-{i}.txt")), "rows").expect("write");
            w.after(i, b, true);
        };
        // The first run commits mini-batch 0, then crashes after mini-batch 1 wrote.
        let first = WriteWatch::new(&out, &saved, false);
        attempt(&first, 0);
        first.save(first.committing());
        attempt(&first, 1);
        drop(first);
        // The resumed run redoes mini-batch 1.
        let second = WriteWatch::new(&out, &saved, true);
        attempt(&second, 1);
        let warnings = second.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "warning: output file all.txt was written by an attempt of an earlier run"
            ),
            "{}",
            warnings[0]
        );
        // A run that starts afresh forgets the saved listing.
        let third = WriteWatch::new(&out, &saved, false);
        assert!(!saved.exists());
        attempt(&third, 2);
        assert_eq!(third.warnings(), Vec::<String>::new());
    }

    #[test]
    fn file_names_in_warnings_have_their_control_characters_escaped() {
        let (dir, out) = out_dir();
        let w = WriteWatch::new(&out, &dir.path().join("listing"), false);
        for i in 0..2 {
            let b = w.before();
            append(&out.join("a\x1b]0;PWNED\x07.txt"), "row\n");
            w.after(i, b, true);
        }
        let warnings = w.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains(r"output file a\x1b]0;PWNED\x07.txt was written"),
            "{}",
            warnings[0]
        );
    }
}
