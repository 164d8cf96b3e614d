//! The store: a sled database (an index) and content-addressed objects (the truth).
//!
//! Layout under the store root (default `.stepgraph/`):
//! - `.stepgraph-store`: the marker that makes any folder recognisable as a store
//!   ([`is_store_dir`]), so datasets and source snapshots skip it.
//! - `lock`: held (flock) by the one process using the store; holds its pid and start time.
//! - `db/`: sled, trees `cache`, `runs`, `latest`, `filehash`, `progress`.
//! - `objects/ab/cdef...`: read-only files named by their blake3 hash.
//! - `progress/<key>.<step>.bin`, `progress/<key>.<step>.d/`: mini-batch results and staged
//!   outputs of unfinished ParallelRunSteps (resume).
//! - `runs/<run-id>/<step>/`: materialised outputs, work and log folders.

mod filehash;
mod lock;
mod marker;
mod objects;
pub(crate) use objects::relative_slash;
mod progress;
pub mod records;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use filehash::hash_file_uncached;
pub use marker::{is_store_dir, STORE_MARKER};
pub use objects::GcReport;
pub use progress::{ProgressLog, ProgressRecord};
use records::{CacheEntry, LatestRecord, RunRecord, SCHEMA_VERSION};

use crate::error::StoreError;

/// How to open a store.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Wait for another process to release the store instead of failing with `Locked`.
    pub wait: bool,
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
}

const SCHEMA_KEY: &[u8] = b"schema_version";

impl Store {
    /// Open (creating if needed) the store at `root`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds it (unless `options.wait`),
    /// [`StoreError::Io`] / [`StoreError::Db`] when it cannot be created or opened.
    /// A database that sled reports as corrupt, or of another schema version, is moved aside
    /// and rebuilt (objects are kept); [`Store::warnings`] says so.
    pub fn open(root: impl AsRef<Path>, options: OpenOptions) -> Result<Store, StoreError> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        let root = root.canonicalize().map_err(|e| StoreError::io(&root, e))?;
        let lock = lock::StoreLock::acquire(&root, options.wait)?;
        marker::ensure_marker(&root);
        for dir in ["objects", "objects/tmp", "runs", "progress"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        let mut warnings = Vec::new();
        let db = open_db(&root.join("db"), &mut warnings)?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|e| StoreError::Db {
                path: root.join("db"),
                message: e.to_string(),
            })
        };
        Ok(Store {
            cache: tree("cache")?,
            runs: tree("runs")?,
            latest: tree("latest")?,
            filehash: tree("filehash")?,
            progress: tree("progress")?,
            root,
            _lock: lock,
            db,
            warnings,
        })
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
        StoreError::Db {
            path: self.root.join("db"),
            message: e.to_string(),
        }
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
        put_json(&self.cache, entry.key.as_bytes(), entry).map_err(|e| self.map_db(e))?;
        self.flush()
    }

    /// Remove the cache entry `key`; returns whether there was one.
    ///
    /// # Errors
    /// Db errors.
    pub fn cache_remove(&self, key: &str) -> Result<bool, StoreError> {
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
        put_json(&self.runs, run.id.as_bytes(), run).map_err(|e| self.map_db(e))?;
        self.flush()
    }

    /// The run record `id`.
    ///
    /// # Errors
    /// Db or decoding errors.
    pub fn run_get(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        get_json(&self.runs, id.as_bytes(), "run").map_err(|e| self.map_db(e))
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
                out.push(r);
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

/// Open sled; a corrupt db or one of another schema is moved aside and a fresh one made.
fn open_db(path: &Path, warnings: &mut Vec<String>) -> Result<sled::Db, StoreError> {
    let db_err = |e: sled::Error| StoreError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let reason = match sled::open(path) {
        Ok(db) => match db.get(SCHEMA_KEY).map_err(db_err)? {
            None => {
                db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(db_err)?;
                db.flush().map_err(db_err)?;
                return Ok(db);
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => return Ok(db),
            Some(v) => {
                drop(db);
                format!(
                    "schema version {} (this stepgraph uses {SCHEMA_VERSION})",
                    String::from_utf8_lossy(&v)
                )
            }
        },
        Err(e @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_))) => e.to_string(),
        Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => e.to_string(),
        Err(e) => return Err(db_err(e)),
    };
    let aside = path.with_file_name(format!("db.corrupt-{}", now_unix_ms()));
    std::fs::rename(path, &aside).map_err(|e| StoreError::io(path, e))?;
    warnings.push(format!(
        "store database {} could not be used ({reason}); moved it to {} and started an empty one (objects are kept)",
        path.display(),
        aside.display()
    ));
    let db = sled::open(path).map_err(db_err)?;
    db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
        .map_err(db_err)?;
    db.flush().map_err(db_err)?;
    Ok(db)
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
