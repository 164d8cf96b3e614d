//! The store: a sled database (an index) and content-addressed objects (the truth).
//!
//! Layout under the store root (default `.stepgraph/`):
//! - `.stepgraph-store`: the marker that makes any folder recognisable as a store
//!   ([`is_store_dir`]), so datasets and source snapshots skip it.
//! - `lock`: held (flock) by the one process using the store; holds its pid and start time.
//! - `db/`: sled, trees `cache`, `runs`, `latest`, `filehash`, `progress`, `units` (the unit
//!   memo of incremental steps, [`UnitRecord`]).
//! - `entries/<key>.json`, `runs/<run-id>/run.json`: JSON copies of the cache entries and run
//!   records, from which a database that cannot be opened is rebuilt.
//! - `objects/ab/cdef...`: read-only files named by their blake3 hash.
//! - `progress/<key>.<step>.bin`, `progress/<key>.<step>.d/`: mini-batch results and staged
//!   outputs of unfinished ParallelRunSteps (resume).
//! - `runs/<run-id>/<step>/`: materialised outputs, work and log folders.
//! - `reserve`: a few MiB of ballast, deleted when the disk is full so that the database can
//!   still be opened to free space (as CockroachDB's emergency ballast).

mod db;
pub(crate) mod envs;
mod filehash;
mod freeing;
mod layout;
mod lock;
mod marker;
mod mirror;
mod objects;
pub(crate) use objects::relative_slash;
mod progress;
pub(crate) mod records;
mod retention;
mod room;
mod units;
mod verify;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::StepStatus;
pub use filehash::hash_file_uncached;
pub use layout::{RunLayout, METRICS_FILE};
pub use marker::{is_store_dir, STORE_MARKER};
pub use progress::{ProgressLog, ProgressRecord};
use records::{CacheEntry, LatestRecord, RunRecord, RunStatus};
pub use retention::{EntryUsage, GcOptions, GcReport, RemovedEntry, RunsReport, StoreUsage};
pub use units::{UnitRecord, UnitWriter};
pub use verify::{DroppedEntry, VerifyReport};

use crate::error::StoreError;
use db::{open_db, sled_err, OpenDbError};
pub(crate) use room::{free_bytes, is_aside_db};
use room::{has_room, make_room, refuse_foreign_folder, release_reserve, reserve_warning};

/// How to open a store.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Wait for another process to release the store instead of failing with `Locked`.
    pub wait: bool,
    /// On a full disk, give up the store's `reserve` ballast to open it. For commands that
    /// only read or free space (listing, `gc`, pruning runs); not for a run, which would fill
    /// the disk again and leave nothing for the commands that free space.
    pub use_reserve: bool,
}

/// An open store. Open it once per process and share it (`&Store` is `Sync`).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    _lock: lock::StoreLock,
    db: sled::Db,
    cache: sled::Tree,
    runs: sled::Tree,
    latest: sled::Tree,
    filehash: sled::Tree,
    progress: sled::Tree,
    units: sled::Tree,
    warnings: Vec<String>,
    /// Runs found `running` at open whose record could not be rewritten (a full disk): shown
    /// as interrupted all the same.
    interrupted: BTreeSet<String>,
}

const SCHEMA_KEY: &[u8] = b"schema_version";

/// Size of the `reserve` ballast: room for sled to start a new 512 KiB log segment and
/// snapshot when the disk is otherwise full.
const RESERVE_BYTES: usize = 2 << 20;

/// Free space sled needs to open: a log segment (512 KiB) and a snapshot, with margin.
const SLED_ROOM: usize = 1 << 20;

/// Free space a run needs to start: below it the run is refused before it starts, so that it
/// cannot fill the disk and leave the store with nothing (`runs prune`, `cache gc` still work).
pub const RUN_MARGIN: usize = 4 << 20;

/// A damaged database is kept aside only when at least this much stays free.
const KEEP_ASIDE_MARGIN: u64 = 64 << 20;

impl Store {
    /// Open (creating if needed) the store at `root`.
    ///
    /// Opening holds the store's lock for as long as the `Store` lives. Runs that the records
    /// say are `running` are from a process that died holding the lock (the lock is ours now):
    /// they are marked [`RunStatus::Interrupted`].
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds it (unless `options.wait`),
    /// [`StoreError::LockLost`] when another process holds its database but its lock file was
    /// deleted, [`StoreError::DiskFull`] when the disk is full even after giving up the
    /// store's reserve, [`StoreError::NotAStore`] / [`StoreError::NotAFolder`] when `root` is
    /// a folder of other files or a file, [`StoreError::Io`] / [`StoreError::Db`] when it cannot be created or
    /// opened. A database that cannot be opened for any other reason (corrupt, garbage in its
    /// files, another sled or schema version) is moved aside and rebuilt from the JSON copies
    /// of entries and run records (objects are kept); [`Store::warnings`] says so.
    pub fn open(root: impl AsRef<Path>, options: OpenOptions) -> Result<Store, StoreError> {
        let root = root.as_ref().to_path_buf();
        let full = |root: &Path, e: StoreError| {
            if e.is_disk_full() {
                StoreError::DiskFull {
                    path: root.to_path_buf(),
                }
            } else {
                e
            }
        };
        refuse_foreign_folder(&root)?;
        fs_err::create_dir_all(&root).map_err(|e| full(&root, StoreError::io(&root, e)))?;
        let root = root.canonicalize().map_err(|e| StoreError::io(&root, e))?;
        // The marker first: a store interrupted right after it was created is still a store.
        marker::ensure_marker(&root);
        let lock = lock::StoreLock::acquire(&root, options.wait).map_err(|e| full(&root, e))?;
        for dir in ["objects", "objects/tmp", "runs", "progress"] {
            let p = root.join(dir);
            fs_err::create_dir_all(&p).map_err(|e| full(&root, StoreError::io(&p, e)))?;
        }
        let mut warnings = Vec::new();
        // sled writes when it opens (a new log segment, a snapshot) and can damage its log
        // when that fails half-way: never let it start on a full disk. Make room from the
        // reserve when allowed, else stop here with a clear error.
        let mut reserve_used = make_room(&root, options, &mut warnings)?;
        // sled's own lock while we hold the store's: another process whose lock file was
        // deleted, or this process's previous `Db` still closing (its flusher thread holds the
        // files for a moment after the `Store` is dropped), which a short wait outlasts.
        let grace = std::time::Instant::now() + lock::OWN_LOCK_GRACE;
        let (db, rebuilt) = loop {
            match open_db(&root.join("db")) {
                Ok(x) => break x,
                Err(OpenDbError::Locked) if options.wait || std::time::Instant::now() < grace => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(OpenDbError::Locked) => return Err(StoreError::LockLost { path: root }),
                Err(OpenDbError::Full)
                    if options.use_reserve && !reserve_used && release_reserve(&root) =>
                {
                    reserve_used = true;
                    warnings.push(reserve_warning(&root));
                }
                Err(OpenDbError::Full) => return Err(StoreError::DiskFull { path: root }),
                Err(OpenDbError::Other(e)) => return Err(full(&root, e)),
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| sled_err(&root, e));
        let mut store = Store {
            cache: tree("cache")?,
            runs: tree("runs")?,
            latest: tree("latest")?,
            filehash: tree("filehash")?,
            progress: tree("progress")?,
            units: tree("units")?,
            root,
            _lock: lock,
            db,
            warnings,
            interrupted: BTreeSet::new(),
        };
        if let Some(reason) = rebuilt {
            let r = store.rebuild_from_mirrors()?;
            let warning = reason.warning(&store.root.join("db"), &r);
            store.warnings.push(warning);
        }
        store.write_missing_mirrors();
        store.mark_interrupted();
        Ok(store)
    }

    /// Every run still `running` belongs to a process that died holding the lock (the lock is
    /// ours now, and this process runs nothing yet): mark it interrupted.
    fn mark_interrupted(&mut self) {
        /// Only the status: cheap to decode for every run at every open.
        #[derive(serde::Deserialize)]
        struct Status {
            status: RunStatus,
        }
        let running: Vec<sled::IVec> = self
            .runs
            .iter()
            .flatten()
            .filter(|(_, v)| {
                serde_json::from_slice::<Status>(v).is_ok_and(|s| s.status == RunStatus::Running)
            })
            .map(|(k, _)| k)
            .collect();
        for key in running {
            let id = String::from_utf8_lossy(&key).into_owned();
            let Ok(Some(mut r)) = get_json::<RunRecord>(&self.runs, &key, "run") else {
                continue;
            };
            r.status = RunStatus::Interrupted;
            if self.run_put(&r).is_err() {
                self.interrupted.insert(id);
            }
        }
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Problems found and repaired while opening (a corrupt db moved aside).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The folder of a run.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(run_id)
    }

    /// The layout of the folder of run `run_id`.
    pub fn run_layout(&self, run_id: &str) -> RunLayout {
        RunLayout::new(self.run_dir(run_id))
    }

    /// Make every write so far durable.
    ///
    /// # Errors
    /// [`StoreError::Db`] when sled cannot flush.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.db_err(e))
    }

    fn db_err(&self, e: sled::Error) -> StoreError {
        sled_err(&self.root, e)
    }

    // ----- cache -----

    /// The cache entry for `key`, if any.
    ///
    /// # Errors
    /// Db or record-decoding errors.
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        get_json(&self.cache, key.as_bytes(), "cache").map_err(|e| self.map_db(e))
    }

    /// Write a cache entry and flush. Call only after every object it names is durable.
    ///
    /// # Errors
    /// Db errors.
    pub fn cache_put(&self, entry: &CacheEntry) -> Result<(), StoreError> {
        // The JSON copy first: an index entry always has its copy for a rebuild.
        mirror::write_json_atomic(&self.entries_dir(), &format!("{}.json", entry.key), entry)?;
        self.check_sled_room()?;
        put_json(&self.cache, entry.key.as_bytes(), entry).map_err(|e| self.map_db(e))?;
        self.flush()
    }

    /// sled damages its log when a write fails half-way on a full disk: with less than
    /// [`SLED_ROOM`] free, refuse before handing it a write (the JSON copy is written, so a
    /// rebuild still finds the record).
    pub(super) fn check_sled_room(&self) -> Result<(), StoreError> {
        match free_bytes(&self.root) {
            Some(free) if free < SLED_ROOM as u64 => Err(StoreError::DiskFull {
                path: self.root.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Remove the cache entry `key`; returns whether there was one.
    ///
    /// # Errors
    /// Db errors.
    pub fn cache_remove(&self, key: &str) -> Result<bool, StoreError> {
        // The unit memo records its output was gathered from go with it (`cache rm` means:
        // compute this again).
        if let Ok(Some(entry)) = self.cache_get(key) {
            let units = self.entry_units(&entry);
            self.units_remove(units.iter().map(String::as_str))?;
        }
        self.remove_entry_copy(key)?;
        let had = self
            .cache
            .remove(key.as_bytes())
            .map_err(|e| self.db_err(e))?
            .is_some();
        self.flush()?;
        Ok(had)
    }

    /// Every cache entry (undecodable ones are skipped and reported as errors in the list).
    ///
    /// # Errors
    /// Db errors.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.cache.iter() {
            let (_, v) = item.map_err(|e| self.db_err(e))?;
            if let Ok(entry) = serde_json::from_slice::<CacheEntry>(&v) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    // ----- runs -----

    /// Write (or overwrite) a run record and flush.
    ///
    /// # Errors
    /// Db errors.
    pub fn run_put(&self, run: &RunRecord) -> Result<(), StoreError> {
        if !retention::valid_run_id(&run.id) {
            return Err(StoreError::Record {
                what: format!("run {:?}", run.id),
                message: "a run id is letters, digits, `-` and `_` only".into(),
            });
        }
        let dir = self.run_dir(&run.id);
        let new_dir = !dir.exists();
        let write = || {
            mirror::write_json_atomic(&dir, "run.json", run)?;
            self.check_sled_room()?;
            put_json(&self.runs, run.id.as_bytes(), run).map_err(|e| self.map_db(e))?;
            self.flush()
        };
        let written = if run.status == RunStatus::Running {
            write()
        } else {
            // A step that failed by filling the disk must not leave its partial output there.
            for step in run.steps.iter().filter(|s| s.status == StepStatus::Failed) {
                self.free_after_failure(&run.id, &step.name);
            }
            // The final record says how the run ended, even when it filled the disk.
            self.write_room(write)
        };
        if written.is_err() && new_dir {
            // A run refused before its first record leaves no folder behind.
            let _ = fs_err::remove_dir_all(&dir);
        }
        written
    }

    /// Run `write`; when the disk is full, give up the reserve ballast and try once more (a
    /// run's final record must say how it ended). The reserve is made again at the next open
    /// with room.
    fn write_room(&self, write: impl Fn() -> Result<(), StoreError>) -> Result<(), StoreError> {
        match write() {
            Err(e) if e.is_disk_full() && release_reserve(&self.root) => write(),
            r => r,
        }
    }

    /// When the disk holding the store is (nearly) full, remove the `outputs/` and `work/`
    /// folders of a step that failed in run `run_id` (its logs are kept): a step that failed
    /// by filling the disk must not leave its partial output eating it. Returns the bytes
    /// freed (0 when the disk has room: the folders are then kept for a look).
    ///
    /// The engine calls it for every failed step; nothing in those folders is cached.
    pub fn free_after_failure(&self, run_id: &str, step: &str) -> u64 {
        let nearly_full = free_bytes(&self.root).is_none_or(|free| free < RUN_MARGIN as u64)
            || !has_room(&self.root, SLED_ROOM);
        if !nearly_full || !retention::valid_run_id(run_id) || step.contains('/') {
            return 0;
        }
        self.discard_failed_step_dir(run_id, step)
    }

    /// Remove the `outputs/` and `work/` folders of step `step` of run `run_id` (keeping its
    /// `logs/`); returns the bytes freed. For a step that failed: nothing there is cached.
    pub fn discard_failed_step_dir(&self, run_id: &str, step: &str) -> u64 {
        if !retention::valid_run_id(run_id)
            || step.is_empty()
            || step.contains('/')
            || step.starts_with('.')
        {
            return 0;
        }
        let layout = self.run_layout(run_id);
        let outputs = layout.step_dir(step).join("outputs");
        [outputs, layout.work_dir(step)]
            .iter()
            .map(|d| retention::remove_counting(d))
            .sum()
    }

    /// The run record `id`.
    ///
    /// # Errors
    /// Db or decoding errors.
    pub fn run_get(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(get_json(&self.runs, id.as_bytes(), "run")
            .map_err(|e| self.map_db(e))?
            .map(|r| self.shown(r)))
    }

    fn shown(&self, mut r: RunRecord) -> RunRecord {
        if r.status == RunStatus::Running && self.interrupted.contains(&r.id) {
            r.status = RunStatus::Interrupted;
        }
        r
    }

    /// All run records, newest first (by start time: ids made in the same second are not
    /// in time order).
    ///
    /// # Errors
    /// Db errors.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.runs.iter() {
            let (_, v) = item.map_err(|e| self.db_err(e))?;
            if let Ok(r) = serde_json::from_slice::<RunRecord>(&v) {
                out.push(self.shown(r));
            }
        }
        out.sort_by(|a, b| (b.started_unix_ms, &b.id).cmp(&(a.started_unix_ms, &a.id)));
        Ok(out)
    }

    // ----- latest fingerprints -----

    /// The latest fingerprint of `step` in `pipeline`.
    ///
    /// # Errors
    /// Db or decoding errors.
    pub fn latest_get(
        &self,
        pipeline: &str,
        step: &str,
    ) -> Result<Option<LatestRecord>, StoreError> {
        get_json(&self.latest, &latest_key(pipeline, step), "latest").map_err(|e| self.map_db(e))
    }

    /// Record the latest fingerprint of `step` in `pipeline` (flushed with the next flush).
    ///
    /// # Errors
    /// Db errors.
    pub fn latest_put(
        &self,
        pipeline: &str,
        step: &str,
        rec: &LatestRecord,
    ) -> Result<(), StoreError> {
        put_json(&self.latest, &latest_key(pipeline, step), rec).map_err(|e| self.map_db(e))
    }

    fn map_db(&self, e: JsonDbError) -> StoreError {
        match e {
            JsonDbError::Db(e) => self.db_err(e),
            JsonDbError::Decode { what, message } => StoreError::Record { what, message },
        }
    }
}

fn latest_key(pipeline: &str, step: &str) -> Vec<u8> {
    let mut k = pipeline.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(step.as_bytes());
    k
}

enum JsonDbError {
    Db(sled::Error),
    Decode { what: String, message: String },
}

fn get_json<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    what: &str,
) -> Result<Option<T>, JsonDbError> {
    match tree.get(key).map_err(JsonDbError::Db)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| JsonDbError::Decode {
                what: format!("{what} {}", String::from_utf8_lossy(key)),
                message: e.to_string(),
            }),
    }
}

fn put_json<T: serde::Serialize>(
    tree: &sled::Tree,
    key: &[u8],
    value: &T,
) -> Result<(), JsonDbError> {
    let bytes = serde_json::to_vec(value).map_err(|e| JsonDbError::Decode {
        what: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })?;
    tree.insert(key, bytes).map_err(JsonDbError::Db)?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
