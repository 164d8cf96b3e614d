//! The unit memo: results of single units of work of a step (an incremental
//! ParallelRunStep's mini-batches), each under a key the step computes from what the unit
//! depends on, so that a rerun over changed inputs redoes only the units whose key is new.
//!
//! A unit's result is a [`UnitRecord`]: the step's metadata (counts) and named objects (its
//! rows, the files it wrote), stored as ordinary content-addressed objects. Records live in
//! the sled tree `units`; they are written by a [`UnitWriter`] in groups: every object is
//! fsynced when put, the folders that gained objects once per commit, then the records in
//! one sled batch and one flush. A record therefore never names an object that is not
//! durable, and a crash loses at most the units finished since the last commit.
//!
//! Records are not mirrored as JSON: a database rebuilt after damage forgets them, which only
//! costs recomputing those units.

use fs_err::{self as fs, File};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::{CacheEntry, ObjectRef};
use super::Store;
use crate::error::StoreError;

/// One unit's memoised result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// The unit key (hex), computed by the step.
    pub key: String,
    /// The pipeline whose step stored it.
    pub pipeline: String,
    /// The step that stored it.
    pub step: String,
    /// The step's own metadata (counts, column names).
    pub meta: Value,
    /// Named objects: what the unit produced (e.g. `rows`, `files/<relative path>`).
    pub objects: BTreeMap<String, ObjectRef>,
    /// When it was stored (Unix ms).
    pub created_unix_ms: u64,
}

impl Store {
    /// The unit record `key`, when there is one and every object it names is in the store
    /// with its content (checked through the stat memo, as a cache entry's objects are: an
    /// object whose size, mtime or inode changed is rehashed). A record whose objects were
    /// removed or damaged is `None`: the unit runs again. Contents are checked again when
    /// read ([`Store::read_object`]).
    ///
    /// # Errors
    /// Db errors.
    pub fn unit_get(&self, key: &str) -> Result<Option<UnitRecord>, StoreError> {
        let Some(v) = self.units.get(key.as_bytes()).map_err(|e| self.db_err(e))? else {
            return Ok(None);
        };
        let Ok(rec) = serde_json::from_slice::<UnitRecord>(&v) else {
            return Ok(None);
        };
        let intact = rec.objects.values().all(|o| {
            let path = self.object_path(&o.hash);
            fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == o.size)
                && self.hash_file(&path, false).is_ok_and(|h| h == o.hash)
        });
        Ok(intact.then_some(rec))
    }

    /// Every unit record (undecodable ones are skipped).
    ///
    /// # Errors
    /// Db errors.
    pub fn unit_entries(&self) -> Result<Vec<UnitRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.units.iter() {
            let (_, v) = item.map_err(|e| self.db_err(e))?;
            if let Ok(rec) = serde_json::from_slice::<UnitRecord>(&v) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Remove unit records by key (one batch, one flush).
    ///
    /// # Errors
    /// Db errors.
    pub(crate) fn units_remove<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for k in keys {
            batch.remove(k.as_bytes());
            any = true;
        }
        if any {
            self.units.apply_batch(batch).map_err(|e| self.db_err(e))?;
            self.flush()?;
        }
        Ok(())
    }

    /// The bytes of object `obj`, checked against its hash.
    ///
    /// # Errors
    /// [`StoreError::MissingObject`], [`StoreError::DamagedObject`], or I/O errors.
    pub fn read_object(&self, obj: &ObjectRef) -> Result<Vec<u8>, StoreError> {
        let path = self.object_path(&obj.hash);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::MissingObject {
                    hash: obj.hash.clone(),
                })
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        // The recorded size bounds the read: a record never sizes memory past the file.
        let mut buf = Vec::with_capacity(usize::try_from(obj.size.min(1 << 30)).unwrap_or(0));
        f.read_to_end(&mut buf)
            .map_err(|e| StoreError::io(&path, e))?;
        let actual = blake3::hash(&buf).to_hex().to_string();
        if actual != obj.hash || buf.len() as u64 != obj.size {
            return Err(StoreError::DamagedObject {
                hash: obj.hash.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Put object `obj` at `dest` (which must not exist): a copy of its bytes, so that the
    /// file is the caller's own (an output folder's file is later made an object again).
    ///
    /// # Errors
    /// [`StoreError::MissingObject`], a size that does not match, or I/O errors.
    pub fn copy_object(&self, obj: &ObjectRef, dest: &Path) -> Result<(), StoreError> {
        let src = self.object_path(&obj.hash);
        match fs::metadata(&src) {
            Ok(m) if m.len() == obj.size => {}
            Ok(m) => {
                return Err(StoreError::DamagedObject {
                    hash: obj.hash.clone(),
                    actual: format!("a file of {} bytes, not {}", m.len(), obj.size),
                })
            }
            Err(_) => {
                return Err(StoreError::MissingObject {
                    hash: obj.hash.clone(),
                })
            }
        }
        fs::copy(&src, dest).map_err(|e| StoreError::io(dest, e))?;
        // The copy keeps the object's read-only mode; the output file is the step's to own.
        let mut perms = fs::metadata(dest)
            .map_err(|e| StoreError::io(dest, e))?
            .permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(dest, perms).map_err(|e| StoreError::io(dest, e))?;
        Ok(())
    }

    /// Store the keys of the units an output was gathered from as one object (a key per
    /// line), durable on return; `None` for none.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn put_unit_list(&self, keys: &[String]) -> Result<Option<ObjectRef>, StoreError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut text = String::with_capacity(keys.len() * 65);
        for k in keys {
            text.push_str(k);
            text.push('\n');
        }
        let mut w = self.unit_writer();
        let obj = w.put_bytes(text.as_bytes())?;
        w.commit()?;
        Ok(Some(obj))
    }

    /// The keys of the units a cache entry's output was gathered from (none when its list is
    /// missing or damaged: its units are then no longer kept for it).
    pub fn entry_units(&self, entry: &CacheEntry) -> Vec<String> {
        let Some(obj) = &entry.units else {
            return Vec::new();
        };
        match self.read_object(obj) {
            Ok(bytes) => String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A fresh temp file name in `objects/tmp` for a unit's bytes before they become an
    /// object: named as every temp file there (`<pid>-<n>-<64 hex>`, which `cache gc` sweeps
    /// after a crash), from a counter range of its own so that it never meets the temp name
    /// `put_object` gives the same bytes.
    fn unit_temp(&self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join("objects/tmp")
            .join(format!("{}-{n}-{}", std::process::id(), "0".repeat(64)))
    }

    /// A writer of unit records.
    pub fn unit_writer(&self) -> UnitWriter<'_> {
        UnitWriter {
            store: self,
            touched: BTreeSet::new(),
            pending: Vec::new(),
        }
    }
}

/// Writes unit records in groups: objects now, records at [`UnitWriter::commit`].
#[derive(Debug)]
pub struct UnitWriter<'s> {
    store: &'s Store,
    touched: BTreeSet<PathBuf>,
    pending: Vec<UnitRecord>,
}

impl UnitWriter<'_> {
    /// Store `bytes` as an object (the file fsynced; its folder at the next commit).
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_bytes(&mut self, bytes: &[u8]) -> Result<ObjectRef, StoreError> {
        let tmp = self.store.unit_temp();
        {
            let mut f = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
            f.write_all(bytes).map_err(|e| StoreError::io(&tmp, e))?;
        }
        let obj = self.store.put_object(&tmp, &mut self.touched);
        let _ = fs::remove_file(&tmp);
        obj
    }

    /// Store a copy of the file at `path` as an object. A copy, never a link: a process that
    /// still holds the file open must not be able to write into the store.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_file(&mut self, path: &Path) -> Result<ObjectRef, StoreError> {
        let tmp = self.store.unit_temp();
        fs::copy(path, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
        let obj = self.store.put_object(&tmp, &mut self.touched);
        let _ = fs::remove_file(&tmp);
        obj
    }

    /// The bytes of a stored object, checked against its hash ([`Store::read_object`]).
    ///
    /// # Errors
    /// A missing or damaged object, I/O errors.
    pub fn read_object(&self, obj: &ObjectRef) -> Result<Vec<u8>, StoreError> {
        self.store.read_object(obj)
    }

    /// Add a record, written at the next commit.
    pub fn add(&mut self, record: UnitRecord) {
        self.pending.push(record);
    }

    /// Records added and not yet committed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Make the added records durable: the folders of their objects fsynced, then the
    /// records written in one batch and flushed.
    ///
    /// # Errors
    /// I/O or db errors.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        for d in std::mem::take(&mut self.touched) {
            File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::io(&d, e))?;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        self.store.check_sled_room()?;
        let mut batch = sled::Batch::default();
        for rec in self.pending.drain(..) {
            let v = serde_json::to_vec(&rec).map_err(|e| StoreError::Record {
                what: "unit".into(),
                message: e.to_string(),
            })?;
            batch.insert(rec.key.as_bytes(), v);
        }
        self.store
            .units
            .apply_batch(batch)
            .map_err(|e| self.store.db_err(e))?;
        self.store.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{OpenOptions, Store};
    use super::UnitRecord;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn record(key: &str, rows: super::ObjectRef) -> UnitRecord {
        UnitRecord {
            key: key.into(),
            pipeline: "p".into(),
            step: "s".into(),
            meta: json!({"items": 2}),
            objects: BTreeMap::from([("rows".to_string(), rows)]),
            created_unix_ms: 1,
        }
    }

    #[test]
    fn committed_units_survive_a_reopen_and_uncommitted_ones_do_not(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let store = Store::open(dir.path(), OpenOptions::default())?;
            let mut w = store.unit_writer();
            let obj = w.put_bytes(b"a\nb\n")?;
            w.add(record("k1", obj.clone()));
            w.commit()?;
            w.add(record("k2", obj));
            // never committed
        }
        let store = Store::open(dir.path(), OpenOptions::default())?;
        let rec = store.unit_get("k1")?.ok_or("k1 lost")?;
        assert_eq!(store.read_object(&rec.objects["rows"])?, b"a\nb\n");
        assert!(store.unit_get("k2")?.is_none());
        assert_eq!(store.unit_entries()?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_unit_whose_object_is_gone_or_damaged_is_not_served(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path(), OpenOptions::default())?;
        let mut w = store.unit_writer();
        let obj = w.put_bytes(b"rows\n")?;
        w.add(record("k", obj.clone()));
        w.commit()?;
        let path = store.object_path(&obj.hash);
        let mut perms = fs_err::metadata(&path)?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs_err::set_permissions(&path, perms)?;
        // Same size, new content: not served (the mini-batch runs again), and refused when read.
        fs_err::write(&path, b"ROWS\n")?;
        assert!(store.unit_get("k")?.is_none());
        assert!(store.read_object(&obj).is_err());
        fs_err::remove_file(&path)?;
        assert!(store.unit_get("k")?.is_none());
        Ok(())
    }
}
