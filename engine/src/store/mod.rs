//! The store: a sled database (an index) and content-addressed objects (the truth).
//!
//! Layout under the store root (default `.stepgraph/`):
//! - `.stepgraph-store`: the marker that makes any folder recognisable as a store
//!   ([`is_store_dir`]), so datasets and source snapshots skip it.
//! - `lock`: held (flock) by the one process using the store; holds its pid and start time.
//! - `db/`: sled, trees `cache`, `runs`, `latest`, `filehash`, `progress`.
//! - `entries/<key>.json`, `runs/<run-id>/run.json`: JSON copies of the cache entries and run
//!   records, from which a database that cannot be opened is rebuilt.
//! - `objects/ab/cdef...`: read-only files named by their blake3 hash.
//! - `progress/<key>.<step>.bin`, `progress/<key>.<step>.d/`: mini-batch results and staged
//!   outputs of unfinished ParallelRunSteps (resume).
//! - `runs/<run-id>/<step>/`: materialised outputs, work and log folders.
//! - `reserve`: a few MiB of ballast, deleted when the disk is full so that the database can
//!   still be opened to free space (as CockroachDB's emergency ballast).

mod filehash;
mod lock;
mod marker;
mod mirror;
mod objects;
pub(crate) use objects::relative_slash;
mod progress;
pub mod records;
mod retention;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use filehash::hash_file_uncached;
pub use marker::{is_store_dir, STORE_MARKER};
pub use progress::{ProgressLog, ProgressRecord};
use records::{CacheEntry, LatestRecord, RunRecord, RunStatus, SCHEMA_VERSION};
pub use retention::{EntryUsage, GcOptions, GcReport, RemovedEntry, RunsReport, StoreUsage};

use crate::error::{is_disk_full, StoreError};

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
    /// store's reserve, [`StoreError::Io`] / [`StoreError::Db`] when it cannot be created or
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
        std::fs::create_dir_all(&root).map_err(|e| full(&root, StoreError::io(&root, e)))?;
        let root = root.canonicalize().map_err(|e| StoreError::io(&root, e))?;
        let lock = lock::StoreLock::acquire(&root, options.wait).map_err(|e| full(&root, e))?;
        marker::ensure_marker(&root);
        for dir in ["objects", "objects/tmp", "runs", "progress"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(|e| full(&root, StoreError::io(&p, e)))?;
        }
        let mut warnings = Vec::new();
        // sled writes when it opens (a new log segment, a snapshot) and can damage its log
        // when that fails half-way: never let it start on a full disk. Make room from the
        // reserve when allowed, else stop here with a clear error.
        let mut reserve_used = false;
        if !ensure_reserve(&root) && !has_room(&root) {
            if options.use_reserve && release_reserve(&root) {
                reserve_used = true;
                warnings.push(reserve_warning(&root));
            } else if !options.use_reserve {
                return Err(StoreError::DiskFull { path: root });
            }
        }
        let (db, rebuilt) = loop {
            match open_db(&root.join("db")) {
                Ok(x) => break x,
                Err(OpenDbError::Locked) if options.wait => {
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
            root,
            _lock: lock,
            db,
            warnings,
            interrupted: BTreeSet::new(),
        };
        if let Some(reason) = rebuilt {
            let r = store.rebuild_from_mirrors()?;
            let aside = reason.aside.display();
            store.warnings.push(format!(
                "store database {} could not be used ({}); moved it to {aside} and rebuilt the \
                 index from the store's files: {} cache entries{}, {} runs (objects are kept)",
                store.root.join("db").display(),
                reason.why,
                r.entries,
                if r.entries_dropped > 0 {
                    format!(" ({} dropped: objects missing)", r.entries_dropped)
                } else {
                    String::new()
                },
                r.runs
            ));
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
        put_json(&self.cache, entry.key.as_bytes(), entry).map_err(|e| self.map_db(e))?;
        self.flush()
    }

    /// Remove the cache entry `key`; returns whether there was one.
    ///
    /// # Errors
    /// Db errors.
    pub fn cache_remove(&self, key: &str) -> Result<bool, StoreError> {
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
        mirror::write_json_atomic(&self.run_dir(&run.id), "run.json", run)?;
        put_json(&self.runs, run.id.as_bytes(), run).map_err(|e| self.map_db(e))?;
        self.flush()
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

fn sled_err(root: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull {
            path: root.to_path_buf(),
        },
        e => StoreError::Db {
            path: root.join("db"),
            message: e.to_string(),
        },
    }
}

/// Why the database was moved aside.
struct MovedAside {
    why: String,
    aside: PathBuf,
}

enum OpenDbError {
    /// sled's own lock on its files is held by another process.
    Locked,
    /// No space left.
    Full,
    /// Anything else that is not damage (permissions).
    Other(StoreError),
}

fn classify(e: sled::Error, path: &Path) -> Result<String, OpenDbError> {
    match e {
        sled::Error::Io(io) if is_disk_full(&io) => Err(OpenDbError::Full),
        // sled 0.34 reports its flock failing only as this message.
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            Err(OpenDbError::Locked)
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(OpenDbError::Other(StoreError::io(path, io)))
        }
        // Corruption, an unsupported (garbage) config, a bug report, any other I/O error.
        e => Ok(e.to_string()),
    }
}

/// Open sled. Any failure other than its lock, a full disk or a permission (garbage in its
/// files, corruption, another sled version, another schema) moves the db aside and opens a
/// fresh one, to be rebuilt by the caller.
fn open_db(path: &Path) -> Result<(sled::Db, Option<MovedAside>), OpenDbError> {
    let root = path.parent().unwrap_or(path).to_path_buf();
    let fail = |e: sled::Error| match classify(e, path) {
        Ok(why) => OpenDbError::Other(StoreError::Db {
            path: path.to_path_buf(),
            message: why,
        }),
        Err(e) => e,
    };
    let why = match sled::open(path) {
        Ok(db) => match db.get(SCHEMA_KEY) {
            Ok(None) => {
                db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(fail)?;
                db.flush().map_err(fail)?;
                return Ok((db, None));
            }
            Ok(Some(v)) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => {
                return Ok((db, None))
            }
            Ok(Some(v)) => format!(
                "schema version {} (this stepgraph uses {SCHEMA_VERSION})",
                String::from_utf8_lossy(&v)
            ),
            Err(e) => classify(e, path)?,
        },
        Err(e) => classify(e, path)?,
    };
    let aside = path.with_file_name(format!("db.corrupt-{}", now_unix_ms()));
    std::fs::rename(path, &aside).map_err(|e| OpenDbError::Other(StoreError::io(path, e)))?;
    let db = sled::open(path).map_err(|e| match e {
        sled::Error::Io(io) if is_disk_full(&io) => OpenDbError::Full,
        e => OpenDbError::Other(sled_err(&root, e)),
    })?;
    db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
        .and_then(|_| db.flush())
        .map_err(|e| OpenDbError::Other(sled_err(&root, e)))?;
    Ok((db, Some(MovedAside { why, aside })))
}

fn reserve_warning(root: &Path) -> String {
    format!(
        "the disk holding {} is full: used the store's reserve to open it; free space, e.g. \
         `stepgraph runs prune --keep 1` then `stepgraph cache gc`",
        root.display()
    )
}

/// Write `len` zero bytes to `path` (no fsync: the space is taken at write time).
fn write_zeros(path: &Path, len: usize) -> bool {
    use std::io::Write;
    let ok = std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&vec![0u8; len]))
        .is_ok();
    if !ok {
        let _ = std::fs::remove_file(path);
    }
    ok
}

/// Create the `reserve` ballast when it is missing (best effort: on a full disk it is left
/// out, and made again at a later open). True when it was made now (so there was room).
fn ensure_reserve(root: &Path) -> bool {
    let path = root.join("reserve");
    if path.exists() {
        return false;
    }
    let tmp = root.join("reserve.tmp");
    if write_zeros(&tmp, RESERVE_BYTES) && std::fs::rename(&tmp, &path).is_ok() {
        return true;
    }
    let _ = std::fs::remove_file(&tmp);
    false
}

/// Whether the disk has room for sled to start: a probe file of that size can be written.
fn has_room(root: &Path) -> bool {
    let probe = root.join("space-probe");
    let ok = write_zeros(&probe, SLED_ROOM);
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Delete the ballast; whether there was one.
fn release_reserve(root: &Path) -> bool {
    std::fs::remove_file(root.join("reserve")).is_ok()
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_locked_and_names_the_store() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let _a = Store::open(dir.path(), OpenOptions::default())?;
        match Store::open(dir.path(), OpenOptions::default()) {
            Err(StoreError::Locked { path, pid, .. }) => {
                assert_eq!(path, dir.path().canonicalize()?);
                assert_eq!(pid, std::process::id().to_string());
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn reopen_after_drop_keeps_records() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let s = Store::open(dir.path(), OpenOptions::default())?;
            s.latest_put(
                "p",
                "s",
                &LatestRecord {
                    key: "k".into(),
                    fingerprint: Default::default(),
                    run_id: "r".into(),
                },
            )?;
            s.flush()?;
        }
        let s = Store::open(dir.path(), OpenOptions::default())?;
        assert_eq!(
            s.latest_get("p", "s")?.map(|r| r.key),
            Some("k".to_string())
        );
        Ok(())
    }

    #[test]
    fn corrupt_db_is_moved_aside_not_a_panic() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        drop(Store::open(dir.path(), OpenOptions::default())?);
        // Scribble over every file of the db.
        for e in walkdir::WalkDir::new(dir.path().join("db")) {
            let e = e?;
            if e.file_type().is_file() {
                std::fs::write(e.path(), b"garbage garbage garbage garbage")?;
            }
        }
        let s = Store::open(dir.path(), OpenOptions::default())?;
        assert!(s.cache_entries()?.is_empty());
        Ok(())
    }
}
