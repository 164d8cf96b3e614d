//! Retention: which cache entries, objects, progress files and run folders to remove, and how
//! much disk space that really frees.
//!
//! Sizes are disk usage as `du` counts it (`st_blocks * 512`), each inode once. A file's space
//! is freed only when its last link goes: `runs/<id>/` folders hold hard links to objects, so
//! removing an object still linked from a run folder frees nothing until that folder goes
//! (`runs rm` / `runs prune`), and the reports say so.

use fs_err as fs;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

pub(crate) use super::freeing::remove_counting;
mod policy;

use self::policy::{candidates, choose, running_keys};
use super::freeing::{disk, Freed};
use super::records::{CacheEntry, RunRecord, RunStatus};
use super::{now_unix_ms, Store};
use crate::error::StoreError;

/// Which cache entries `gc` may remove. How the options combine:
///
/// 1. Entries *kept by policy* are never removed: every entry used (run or reused) by the
///    latest run of each pipeline, every entry of a run still going, and with `keep_last = N`
///    the N newest entries of each (pipeline, step).
/// 2. Every other entry is a *candidate*; with `older_than`, only entries created longer ago
///    than that are.
/// 3. Without `max_size` every candidate is removed. With `max_size`, candidates are removed
///    one at a time, cheapest to recompute first (lowest run time per byte freed), only until
///    the store's disk usage is at most `max_size`; when all candidates are gone and the store
///    is still bigger, gc stops there (it never removes what rule 1 keeps).
/// 4. Then every object no remaining entry names is removed, and the progress files of keys
///    that have no committed progress or are already cached.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Also keep the N newest entries of each (pipeline, step).
    pub keep_last: Option<usize>,
    /// Only entries older than this are candidates.
    pub older_than: Option<Duration>,
    /// Remove candidates, cheapest first, only until the store's disk usage is at most this.
    pub max_size: Option<u64>,
    /// Only say what would be removed.
    pub dry_run: bool,
}

/// A cache entry that `gc` removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedEntry {
    /// The node key.
    pub key: String,
    /// Its pipeline.
    pub pipeline: String,
    /// Its step.
    pub step: String,
    /// The run that produced it.
    pub run_id: String,
    /// When it was written (Unix ms).
    pub created_unix_ms: u64,
    /// How long computing it took (ms).
    pub duration_ms: u64,
    /// Disk usage of the objects only it names and nothing else links (what removing it frees).
    pub bytes: u64,
}

/// What `gc` removed (or would remove, with `dry_run`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Whether nothing was removed (a dry run).
    pub dry_run: bool,
    /// Cache entries removed.
    pub entries: Vec<RemovedEntry>,
    /// Cache entries kept.
    pub entries_kept: u64,
    /// Objects removed.
    pub objects: u64,
    /// Objects kept (named by a remaining entry).
    pub kept: u64,
    /// Disk space really freed: files whose last link went, and folders removed.
    pub bytes: u64,
    /// Objects removed from `objects/` whose content is still linked from `runs/` folders.
    pub still_linked: u64,
    /// Disk usage of those objects (freed once the run folders go).
    pub still_linked_bytes: u64,
    /// Progress files and staging folders removed.
    pub progress: u64,
    /// Unit memo records (an incremental step's mini-batches) removed.
    pub units: u64,
    /// Unit memo records kept.
    pub units_kept: u64,
    /// Environments (`envs/<hash>/`) no remaining entry holds, removed.
    pub envs: u64,
    /// The store's disk usage before.
    pub size_before: u64,
    /// With `max_size`: the store is still bigger than it after removing every candidate.
    pub over_max_size: bool,
    /// Databases moved aside as damaged (`db.corrupt-*`) removed.
    pub aside_dbs: u64,
    /// Run folders that had no run record (a run refused or killed before its first record,
    /// or a database lost) removed.
    pub orphan_runs: u64,
    /// Files and folders in the store's folders whose names the store never writes: left
    /// alone (they are not the store's to remove).
    pub foreign: Vec<std::path::PathBuf>,
}

/// What `runs rm` / `runs prune` removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunsReport {
    /// Whether nothing was removed (a dry run).
    pub dry_run: bool,
    /// Run ids removed, newest first.
    pub removed: Vec<String>,
    /// Run records kept.
    pub kept: u64,
    /// Runs kept because they are still going.
    pub running: Vec<String>,
    /// Disk space really freed.
    pub bytes: u64,
}

/// Disk usage of one cache entry's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryUsage {
    /// The node key.
    pub key: String,
    /// Output files.
    pub files: u64,
    /// Bytes of its files (each object once).
    pub size: u64,
    /// Disk usage of its objects, each inode once.
    pub disk: u64,
    /// Disk usage of the objects no other entry names.
    pub exclusive: u64,
}

/// Disk usage of a store, as `du` counts it (each inode once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// The whole store.
    pub total: u64,
    /// `objects/`.
    pub objects: u64,
    /// `runs/`, not counting the inodes already counted in `objects/` (hard links to objects):
    /// work copies, logs, outputs whose objects are gone.
    pub runs: u64,
    /// `db/`.
    pub db: u64,
    /// Per cache entry, in the order of [`Store::cache_entries`].
    pub entries: Vec<EntryUsage>,
}

/// A run id is what [`crate::new_run_id`] makes: letters, digits, `-`, `_`.
pub(crate) fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `name` is the JSON copy of a cache entry: `<64 hex key>.json`.
pub(crate) fn is_entry_copy_name(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|k| super::objects::is_hex(k, 64))
}

/// Whether `name` is a temp file of [`mirror::write_json_atomic`] for the copy `copy`:
/// `.<copy>.tmp-<pid>-<n>`.
fn is_copy_temp_name(name: &str, copy: impl Fn(&str) -> bool) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((copy_name, tail)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    copy(copy_name)
        && tail
            .split_once('-')
            .is_some_and(|(a, b)| digits(a) && digits(b))
}

/// Whether `name` is a progress file of a ParallelRunStep: `<64 hex key>.<step>.bin` or
/// `<64 hex key>.<step>.d`; returns `<key>.<step>`.
fn progress_id(name: &str) -> Option<&str> {
    let id = name
        .strip_suffix(".bin")
        .or_else(|| name.strip_suffix(".d"))?;
    let (key, step) = id.split_once('.')?;
    let step_ok = !step.is_empty()
        && step
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    (super::objects::is_hex(key, 64) && step_ok).then_some(id)
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// One object file's stat.
struct ObjStat {
    disk: u64,
    size: u64,
    links: u64,
}

impl Store {
    fn object_stats(&self) -> Result<HashMap<String, ObjStat>, StoreError> {
        let mut out = HashMap::new();
        for (hash, _) in self.objects()? {
            if let Ok(m) = fs::symlink_metadata(self.object_path(&hash)) {
                out.insert(
                    hash,
                    ObjStat {
                        disk: disk(&m),
                        size: m.len(),
                        links: m.nlink(),
                    },
                );
            }
        }
        Ok(out)
    }

    /// The store's disk usage, with each cache entry's share (each inode counted once).
    ///
    /// # Errors
    /// Db errors, or I/O errors reading the objects folder.
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut walk = |dir: &Path| -> u64 {
            walkdir::WalkDir::new(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| seen.insert((m.dev(), m.ino())))
                .map(|m| disk(&m))
                .sum()
        };
        let objects = walk(&self.root.join("objects"));
        let runs = walk(&self.root.join("runs"));
        let db = walk(&self.root.join("db"));
        let rest = walk(&self.root);
        let stats = self.object_stats()?;
        let entries = self.cache_entries()?;
        let mut refs: HashMap<&str, u64> = HashMap::new();
        let unique: Vec<HashSet<&str>> = entries.iter().map(object_hashes).collect();
        for hashes in &unique {
            for h in hashes {
                *refs.entry(h).or_default() += 1;
            }
        }
        let entries = entries
            .iter()
            .zip(&unique)
            .map(|(e, hashes)| {
                let stat = |h: &&str| stats.get(*h);
                EntryUsage {
                    key: e.key.clone(),
                    files: e.outputs.values().map(|m| m.files.len() as u64).sum(),
                    size: hashes.iter().filter_map(stat).map(|s| s.size).sum(),
                    disk: hashes.iter().filter_map(stat).map(|s| s.disk).sum(),
                    exclusive: hashes
                        .iter()
                        .filter(|h| refs.get(**h) == Some(&1))
                        .filter_map(stat)
                        .map(|s| s.disk)
                        .sum(),
                }
            })
            .collect();
        Ok(StoreUsage {
            total: objects + runs + db + rest,
            objects,
            runs,
            db,
            entries,
        })
    }

    /// Remove cache entries by the retention policy of `opts` (see [`GcOptions`]), then
    /// unreferenced objects, temp files and stale progress; report the space really freed.
    ///
    /// Do not call it while a run is going on this store in the same process.
    ///
    /// # Errors
    /// Db or I/O errors.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport, StoreError> {
        let entries = self.cache_entries()?;
        let runs = self.runs()?;
        let running = running_keys(&runs);
        let candidates = candidates(&entries, &runs, &running, opts, now_unix_ms());
        let stats = self.object_stats()?;
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        report.size_before = self.usage()?.total;
        let memo: HashSet<String> = self
            .unit_entries()?
            .iter()
            .flat_map(|u| u.objects.values().map(|o| o.hash.clone()))
            .collect();
        let removed = choose(
            &entries,
            candidates,
            &stats,
            &memo,
            opts.max_size,
            &mut report,
        );
        let removed_keys: HashSet<&str> = removed.iter().map(|(e, _)| e.key.as_str()).collect();
        report.entries = removed
            .iter()
            .map(|(e, bytes)| RemovedEntry {
                key: e.key.clone(),
                pipeline: e.pipeline.clone(),
                step: e.step.clone(),
                run_id: e.run_id.clone(),
                created_unix_ms: e.created_unix_ms,
                duration_ms: e.duration_ms,
                bytes: *bytes,
            })
            .collect();
        report.entries_kept = (entries.len() - removed.len()) as u64;
        let remaining: Vec<&CacheEntry> = entries
            .iter()
            .filter(|e| !removed_keys.contains(e.key.as_str()))
            .collect();
        let mut sweep = Sweep {
            dry: opts.dry_run,
            report,
            freed: Freed::default(),
            removed_keys,
            remaining_keys: remaining.iter().map(|e| e.key.as_str()).collect(),
        };
        // 1. The entries: their JSON copies, then the index (one flush).
        self.sweep_entries(&mut sweep)?;
        // 2. Unit memo records no remaining entry names (and that are not progress).
        let units = self.unit_entries()?;
        let named: HashSet<String> = remaining.iter().flat_map(|e| self.entry_units(e)).collect();
        let gone_units = policy::unit_candidates(
            &units,
            &entries,
            &runs,
            &named,
            opts.older_than,
            now_unix_ms(),
        );
        let gone_unit_keys: HashSet<&str> = gone_units.iter().map(|u| u.key.as_str()).collect();
        sweep.report.units = gone_units.len() as u64;
        sweep.report.units_kept = (units.len() - gone_units.len()) as u64;
        if !opts.dry_run {
            self.units_remove(gone_unit_keys.iter().copied())?;
        }
        // 3. Objects no remaining entry or unit names.
        let mut referenced: HashSet<&str> =
            remaining.iter().flat_map(|e| object_hashes(e)).collect();
        referenced.extend(
            units
                .iter()
                .filter(|u| !gone_unit_keys.contains(u.key.as_str()))
                .flat_map(|u| u.objects.values().map(|o| o.hash.as_str())),
        );
        self.sweep_objects(&mut sweep, &stats, &referenced)?;
        // 4. Temp files of interrupted writes, JSON copies the index does not know, databases
        // moved aside, run folders without a record.
        self.sweep_leftovers(&mut sweep, &runs)?;
        // 5. Progress nobody can resume from: no committed records, or already cached.
        self.sweep_progress(&mut sweep, &running)?;
        // 6. Environments no remaining entry holds (and failed builds).
        let envs = super::envs::referenced(remaining.iter().copied());
        self.sweep_envs(&mut sweep, &envs)?;
        let mut report = sweep.report;
        report.bytes = sweep.freed.total();
        Ok(report)
    }

    fn sweep_entries(&self, sweep: &mut Sweep<'_>) -> Result<(), StoreError> {
        let entries_dir = self.entries_dir();
        let mut batch = sled::Batch::default();
        for key in &sweep.removed_keys {
            let p = entries_dir.join(format!("{key}.json"));
            if p.exists() {
                sweep
                    .freed
                    .file(&p, sweep.dry)
                    .map_err(|e| StoreError::io(&p, e))?;
            }
            batch.remove(key.as_bytes());
        }
        if !sweep.dry && !sweep.removed_keys.is_empty() {
            self.cache.apply_batch(batch).map_err(|e| self.db_err(e))?;
            self.flush()?;
        }
        Ok(())
    }

    fn sweep_objects(
        &self,
        sweep: &mut Sweep<'_>,
        stats: &HashMap<String, ObjStat>,
        referenced: &HashSet<&str>,
    ) -> Result<(), StoreError> {
        let report = &mut sweep.report;
        for (hash, stat) in stats {
            if referenced.contains(hash.as_str()) {
                report.kept += 1;
                continue;
            }
            report.objects += 1;
            if stat.links > 1 {
                report.still_linked += 1;
                report.still_linked_bytes += stat.disk;
            }
            let p = self.object_path(hash);
            sweep
                .freed
                .file(&p, sweep.dry)
                .map_err(|e| StoreError::io(&p, e))?;
        }
        // Names the store never writes are left alone, and listed.
        let objects_dir = self.root.join("objects");
        for shard in fs::read_dir(&objects_dir).into_iter().flatten().flatten() {
            let name = shard.file_name().to_string_lossy().into_owned();
            if name == "tmp" {
                continue;
            }
            if !super::objects::is_hex(&name, 2) || !shard.path().is_dir() {
                report.foreign.push(shard.path());
                continue;
            }
            for f in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                if !super::objects::is_hex(&f.file_name().to_string_lossy(), 62) {
                    report.foreign.push(f.path());
                }
            }
        }
        Ok(())
    }

    fn sweep_leftovers(&self, sweep: &mut Sweep<'_>, runs: &[RunRecord]) -> Result<(), StoreError> {
        let tmp = self.root.join("objects/tmp");
        for f in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            if !super::objects::is_temp_name(&f.file_name().to_string_lossy()) {
                sweep.report.foreign.push(f.path());
                continue;
            }
            sweep.tree(&f.path())?;
        }
        for f in fs::read_dir(self.entries_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            let temp = is_copy_temp_name(&name, is_entry_copy_name);
            if !temp && !is_entry_copy_name(&name) {
                sweep.report.foreign.push(f.path());
                continue;
            }
            let key = name.strip_suffix(".json").unwrap_or(&name);
            if sweep.removed_keys.contains(key) {
                continue;
            }
            if temp || !sweep.remaining_keys.contains(key) {
                sweep.tree(&f.path())?;
            }
        }
        // Databases moved aside as damaged: kept for a look until now.
        for f in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            if super::is_aside_db(&f.file_name().to_string_lossy()) {
                sweep.report.aside_dbs += 1;
                sweep.tree(&f.path())?;
            }
        }
        // Run folders without a record: nothing lists or reuses them.
        for id in self.orphan_run_dirs(runs) {
            sweep.report.orphan_runs += 1;
            sweep.tree(&self.run_dir(&id))?;
        }
        Ok(())
    }

    fn sweep_progress(
        &self,
        sweep: &mut Sweep<'_>,
        running: &HashSet<String>,
    ) -> Result<(), StoreError> {
        let progress_dir = self.root.join("progress");
        let mut cleared: HashSet<String> = HashSet::new();
        for f in fs::read_dir(&progress_dir).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(id) = progress_id(&name) else {
                sweep.report.foreign.push(f.path());
                continue;
            };
            let key = id.split('.').next().unwrap_or(id);
            if running.contains(key) {
                continue;
            }
            let mut prefix = id.as_bytes().to_vec();
            prefix.push(b'/');
            let has_records = self.progress.scan_prefix(&prefix).next().is_some();
            if has_records && !sweep.remaining_keys.contains(key) {
                continue;
            }
            sweep.report.progress += 1;
            sweep.tree(&f.path())?;
            if !sweep.dry && has_records && cleared.insert(id.to_string()) {
                let mut batch = sled::Batch::default();
                for k in self.progress.scan_prefix(&prefix).keys() {
                    batch.remove(k.map_err(|e| self.db_err(e))?);
                }
                self.progress
                    .apply_batch(batch)
                    .map_err(|e| self.db_err(e))?;
            }
        }
        if !sweep.dry && !cleared.is_empty() {
            self.flush()?;
        }
        Ok(())
    }

    fn sweep_envs(&self, sweep: &mut Sweep<'_>, held: &HashSet<String>) -> Result<(), StoreError> {
        use super::envs::{classify, EnvName};
        let dir = super::envs::envs_dir(&self.root);
        for f in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            match classify(&name) {
                EnvName::Foreign => sweep.report.foreign.push(f.path()),
                EnvName::Env(h) if held.contains(&h) => {}
                EnvName::Env(_) => {
                    if !name.ends_with(".lock") {
                        sweep.report.envs += 1;
                    }
                    sweep.tree(&f.path())?;
                }
            }
        }
        Ok(())
    }

    /// Remove the runs `ids`: each run's folder (outputs, work copies, logs), then its record.
    ///
    /// # Errors
    /// [`StoreError::UnknownRun`] for an id that is not a run (nothing is removed then),
    /// [`StoreError::RunInProgress`] for a run still going, db or I/O errors.
    pub fn runs_remove(&self, ids: &[String], dry_run: bool) -> Result<RunsReport, StoreError> {
        let mut chosen = Vec::new();
        for id in ids {
            let rec = if valid_run_id(id) {
                self.run_get(id)?
            } else {
                None
            };
            match rec {
                // A folder without a record (its record was lost): removable all the same.
                None if valid_run_id(id) && self.run_dir(id).is_dir() => {
                    if !chosen.contains(id) {
                        chosen.push(id.clone());
                    }
                }
                None => return Err(StoreError::UnknownRun { id: id.clone() }),
                Some(r) if r.status == RunStatus::Running => {
                    return Err(StoreError::RunInProgress { id: id.clone() })
                }
                Some(r) if !chosen.contains(&r.id) => chosen.push(r.id),
                Some(_) => {}
            }
        }
        let total = self.runs()?.len() as u64;
        let mut report = RunsReport {
            dry_run,
            kept: total.saturating_sub(chosen.len() as u64),
            ..RunsReport::default()
        };
        report.bytes = self.remove_runs(&chosen, dry_run)?;
        report.removed = chosen;
        Ok(report)
    }

    /// Keep the `keep` newest run records of each pipeline and remove the others (folders and
    /// records); a run still going is never removed.
    ///
    /// # Errors
    /// Db or I/O errors.
    pub fn runs_prune(&self, keep: usize, dry_run: bool) -> Result<RunsReport, StoreError> {
        let mut report = RunsReport {
            dry_run,
            ..RunsReport::default()
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut chosen = Vec::new();
        for r in self.runs()? {
            let n = seen.entry(r.pipeline.clone()).or_default();
            *n += 1;
            if *n <= keep {
                report.kept += 1;
            } else if r.status == RunStatus::Running {
                report.kept += 1;
                report.running.push(r.id);
            } else {
                chosen.push(r.id);
            }
        }
        // Folders without a record go too (a lost database, a run refused before its record).
        chosen.extend(self.orphan_run_dirs(&self.runs()?));
        report.bytes = self.remove_runs(&chosen, dry_run)?;
        report.removed = chosen;
        Ok(report)
    }

    /// Run folders with no record, by id. The store's lock is ours, so no other process is
    /// writing one; call it only when this process runs nothing on the store.
    fn orphan_run_dirs(&self, runs: &[RunRecord]) -> Vec<String> {
        let known: HashSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let mut out: Vec<String> = fs::read_dir(self.root.join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|id| valid_run_id(id) && !known.contains(id.as_str()))
            .collect();
        out.sort();
        out
    }

    /// Folders first (they hold the space), then the records, then one flush.
    fn remove_runs(&self, ids: &[String], dry: bool) -> Result<u64, StoreError> {
        let mut freed = Freed::default();
        for id in ids {
            let dir = self.run_dir(id);
            if dir.exists() {
                freed.tree(&dir, dry).map_err(|e| StoreError::io(&dir, e))?;
            }
            if !dry {
                self.runs
                    .remove(id.as_bytes())
                    .map_err(|e| self.db_err(e))?;
            }
        }
        if !dry && !ids.is_empty() {
            self.flush()?;
        }
        Ok(freed.total())
    }

    /// Remove the JSON copy of the entry `key`.
    pub(crate) fn remove_entry_copy(&self, key: &str) -> Result<(), StoreError> {
        let p = self.entries_dir().join(format!("{key}.json"));
        ignore_missing(fs::remove_file(&p)).map_err(|e| StoreError::io(&p, e))
    }
}

/// The distinct object hashes an entry names.
/// What a gc removes, and what it found so far.
struct Sweep<'e> {
    dry: bool,
    report: GcReport,
    freed: Freed,
    removed_keys: HashSet<&'e str>,
    remaining_keys: HashSet<&'e str>,
}

impl Sweep<'_> {
    /// Remove (or count, for a dry run) a file or folder.
    fn tree(&mut self, path: &Path) -> Result<(), StoreError> {
        self.freed
            .tree(path, self.dry)
            .map_err(|e| StoreError::io(path, e))
    }
}

/// The objects an entry names: its outputs' files and its list of units.
fn object_hashes(e: &CacheEntry) -> HashSet<&str> {
    e.outputs
        .values()
        .flat_map(|m| m.files.values())
        .chain(e.units.iter())
        .map(|o| o.hash.as_str())
        .collect()
}

#[cfg(test)]
mod tests;
