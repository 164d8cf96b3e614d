//! JSON copies of the index, so a database that cannot be opened can be rebuilt: every cache
//! entry is also `entries/<key>.json` and every run record `runs/<id>/run.json`, each written
//! atomically (temp file, fsync, rename, folder fsync).

use fs_err::{self as fs, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::records::{CacheEntry, LatestRecord, RunRecord, SCHEMA_VERSION};
use super::Store;
use crate::error::StoreError;

/// Write `value` as JSON to `dir/name`, atomically and durably.
pub(crate) fn write_json_atomic<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
) -> Result<(), StoreError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Record {
        what: name.to_string(),
        message: e.to_string(),
    })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let dest = dir.join(name);
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
        .and_then(|_| fs::rename(&tmp, &dest));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io(&dest, e));
    }
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Whether `name` is a temp file of [`write_json_atomic`].
pub(crate) fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Whether the store at `root` has JSON copies to rebuild an index from: an entry copy or a
/// run record copy.
pub(crate) fn has_copies(root: &Path) -> bool {
    let any = |dir: &Path, ok: &dyn Fn(&fs::DirEntry) -> bool| {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| ok(&e))
    };
    any(&root.join("entries"), &|e| {
        super::retention::is_entry_copy_name(&e.file_name().to_string_lossy())
    }) || any(&root.join("runs"), &|e| e.path().join("run.json").is_file())
}

/// What a rebuild recovered.
#[derive(Debug, Default)]
pub(crate) struct Rebuilt {
    pub entries: usize,
    pub entries_dropped: usize,
    pub runs: usize,
}

impl Store {
    pub(crate) fn entries_dir(&self) -> std::path::PathBuf {
        self.root.join("entries")
    }

    /// Refill an empty index from the JSON copies: cache entries whose objects all exist with
    /// their recorded size, every readable run record of this schema, and the latest
    /// fingerprint of each step (from the newest run that used a surviving entry).
    pub(crate) fn rebuild_from_mirrors(&self) -> Result<Rebuilt, StoreError> {
        let mut out = Rebuilt::default();
        if let Ok(rd) = fs::read_dir(self.entries_dir()) {
            for f in rd.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if is_temp(&name) || !name.ends_with(".json") {
                    continue;
                }
                let Some(entry) = fs::read(f.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
                    .filter(|e| e.schema == SCHEMA_VERSION && name == format!("{}.json", e.key))
                else {
                    continue;
                };
                let intact = entry
                    .outputs
                    .values()
                    .flat_map(|m| m.files.values())
                    .all(|o| {
                        fs::metadata(self.object_path(&o.hash)).is_ok_and(|m| m.len() == o.size)
                    });
                if intact {
                    super::put_json(&self.cache, entry.key.as_bytes(), &entry)
                        .map_err(|e| self.map_db(e))?;
                    out.entries += 1;
                } else {
                    out.entries_dropped += 1;
                }
            }
        }
        let mut runs = Vec::new();
        if let Ok(rd) = fs::read_dir(self.root.join("runs")) {
            for d in rd.flatten() {
                let Some(rec) = fs::read(d.path().join("run.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok())
                    .filter(|r| r.schema == SCHEMA_VERSION && d.file_name() == r.id.as_str())
                else {
                    continue;
                };
                super::put_json(&self.runs, rec.id.as_bytes(), &rec).map_err(|e| self.map_db(e))?;
                runs.push(rec);
            }
        }
        out.runs = runs.len();
        runs.sort_by_key(|r| r.started_unix_ms);
        for r in &runs {
            for s in &r.steps {
                let Some(key) = &s.key else { continue };
                if let Some(entry) = self.cache_get(key)? {
                    self.latest_put(
                        &r.pipeline,
                        &s.name,
                        &LatestRecord {
                            key: key.clone(),
                            fingerprint: entry.fingerprint,
                            run_id: r.id.clone(),
                        },
                    )?;
                }
            }
        }
        self.flush()?;
        Ok(out)
    }

    /// Stores made before the JSON copies existed: write them once (best effort; retried at
    /// the next open when it fails, e.g. on a full disk).
    pub(crate) fn write_missing_mirrors(&self) {
        let dir = self.entries_dir();
        if dir.exists() {
            return;
        }
        let staging = self.root.join("entries.new");
        let _ = fs::remove_dir_all(&staging);
        let mut ok = fs::create_dir_all(&staging).is_ok();
        if ok {
            if let Ok(entries) = self.cache_entries() {
                for e in &entries {
                    ok &= write_json_atomic(&staging, &format!("{}.json", e.key), e).is_ok();
                }
            }
        }
        if ok {
            if let Ok(runs) = self.runs() {
                for r in &runs {
                    let run_dir = self.run_dir(&r.id);
                    if !run_dir.join("run.json").exists() {
                        ok &= write_json_atomic(&run_dir, "run.json", r).is_ok();
                    }
                }
            }
        }
        if !ok || fs::rename(&staging, &dir).is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
    }
}
