//! Resume support: results of finished mini-batches (or any numbered unit of a step) are
//! appended to `progress/<id>.bin` and indexed in the `progress` tree (ParallelRunStep uses
//! `<key>.<step>` as the id). A commit fsyncs the
//! data file once and flushes sled once, however many results it covers.

use fs_err::os::unix::fs::FileExt;
use fs_err::{File, OpenOptions};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Store;
use crate::error::StoreError;

/// Where one committed result lives in the data file, and what the step said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// Byte offset in the data file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// blake3 of the bytes (hex), checked on read.
    pub hash: String,
    /// The step's own metadata (counts, errors).
    pub meta: Value,
}

/// The progress log of one step key. Not shared between threads: one owner appends.
#[derive(Debug)]
pub struct ProgressLog<'s> {
    store: &'s Store,
    key: String,
    path: PathBuf,
    file: File,
    end: u64,
    pending: Vec<(u64, ProgressRecord)>,
}

impl Store {
    /// The progress log for a step key (created on first use).
    ///
    /// # Errors
    /// I/O errors opening the data file.
    pub fn progress_log(&self, key: &str) -> Result<ProgressLog<'_>, StoreError> {
        let path = self.progress_data_path(key);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let end = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        Ok(ProgressLog {
            store: self,
            key: key.to_string(),
            path,
            file,
            end,
            pending: Vec::new(),
        })
    }
}

impl Store {
    /// The data file of progress log `key`: `progress/<key>.bin`.
    fn progress_data_path(&self, key: &str) -> PathBuf {
        self.root.join("progress").join(format!("{key}.bin"))
    }

    /// The staging folder of progress log `key`: `progress/<key>.d`, where a step keeps files
    /// that must survive a crash until its output is gathered. Not created here.
    pub fn staging_dir(&self, key: &str) -> PathBuf {
        self.root.join("progress").join(format!("{key}.d"))
    }

    /// Forget the resume progress of `key`: its records, data file and staging folder
    /// (`progress/<key>.d`). Called once the key's cache entry is durable.
    ///
    /// # Errors
    /// Db or I/O errors.
    pub fn clear_progress(&self, key: &str) -> Result<(), StoreError> {
        let staging = self.staging_dir(key);
        let data = self.progress_data_path(key);
        if data.exists() {
            self.progress_log(key)?.clear()?;
        }
        match fs_err::remove_dir_all(&staging) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&staging, e)),
        }
    }
}

fn record_key(key: &str, index: u64) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(b'/');
    k.extend_from_slice(&index.to_be_bytes());
    k
}

impl ProgressLog<'_> {
    /// Results committed by earlier (possibly interrupted) runs, by index.
    ///
    /// # Errors
    /// Db errors.
    pub fn committed(&self) -> Result<BTreeMap<u64, ProgressRecord>, StoreError> {
        let mut prefix = self.key.as_bytes().to_vec();
        prefix.push(b'/');
        let mut out = BTreeMap::new();
        for item in self.store.progress.scan_prefix(&prefix) {
            let (k, v) = item.map_err(|e| self.store.db_err(e))?;
            let Some(idx) = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            if let Ok(rec) = serde_json::from_slice::<ProgressRecord>(&v) {
                if rec
                    .offset
                    .checked_add(rec.len)
                    .is_some_and(|e| e <= self.end)
                {
                    out.insert(idx, rec);
                }
            }
        }
        Ok(out)
    }

    /// Append a result; durable only after [`ProgressLog::commit`]. Returns where it is (it
    /// can be read back at once).
    ///
    /// # Errors
    /// I/O errors writing the data file.
    pub fn append(
        &mut self,
        index: u64,
        meta: Value,
        data: &[u8],
    ) -> Result<ProgressRecord, StoreError> {
        self.file
            .write_all(data)
            .map_err(|e| StoreError::io(&self.path, e))?;
        let rec = ProgressRecord {
            offset: self.end,
            len: data.len() as u64,
            hash: blake3::hash(data).to_hex().to_string(),
            meta,
        };
        self.end += data.len() as u64;
        self.pending.push((index, rec.clone()));
        Ok(rec)
    }

    /// Number of appended results not yet committed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Make every appended result durable: one fsync of the data file, one sled flush.
    ///
    /// # Errors
    /// I/O or db errors.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(&self.path, e))?;
        let mut batch = sled::Batch::default();
        for (idx, rec) in self.pending.drain(..) {
            let v = serde_json::to_vec(&rec).map_err(|e| StoreError::Record {
                what: "progress".into(),
                message: e.to_string(),
            })?;
            batch.insert(record_key(&self.key, idx), v);
        }
        self.store
            .progress
            .apply_batch(batch)
            .map_err(|e| self.store.db_err(e))?;
        self.store.flush()
    }

    /// The bytes of a committed (or appended) result, checked against its hash.
    ///
    /// # Errors
    /// I/O errors, or [`StoreError::DamagedObject`] when the bytes do not match.
    pub fn read(&self, rec: &ProgressRecord) -> Result<Vec<u8>, StoreError> {
        // A record from the db is checked against the file before memory is sized by it.
        if rec.offset.checked_add(rec.len).is_none_or(|e| e > self.end) {
            return Err(StoreError::Record {
                what: "progress".into(),
                message: format!(
                    "record at {} (+{}) is past the end of {}",
                    rec.offset,
                    rec.len,
                    self.path.display()
                ),
            });
        }
        let mut buf = vec![0u8; rec.len as usize];
        self.file
            .read_exact_at(&mut buf, rec.offset)
            .map_err(|e| StoreError::io(&self.path, e))?;
        let actual = blake3::hash(&buf).to_hex().to_string();
        if actual != rec.hash {
            return Err(StoreError::DamagedObject {
                hash: rec.hash.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Forget this key's progress (after the step's output is in the cache).
    ///
    /// # Errors
    /// Db or I/O errors.
    pub fn clear(self) -> Result<(), StoreError> {
        let mut prefix = self.key.as_bytes().to_vec();
        prefix.push(b'/');
        let mut batch = sled::Batch::default();
        for item in self.store.progress.scan_prefix(&prefix).keys() {
            batch.remove(item.map_err(|e| self.store.db_err(e))?);
        }
        self.store
            .progress
            .apply_batch(batch)
            .map_err(|e| self.store.db_err(e))?;
        self.store.flush()?;
        drop(self.file);
        match fs_err::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{OpenOptions, Store};
    use serde_json::json;

    #[test]
    fn only_committed_results_survive_a_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let store = Store::open(dir.path(), OpenOptions::default())?;
            let mut log = store.progress_log("k1")?;
            log.append(0, json!({"n": 0}), b"zero")?;
            log.append(2, json!({"n": 2}), b"two")?;
            log.commit()?;
            log.append(1, json!({"n": 1}), b"one")?; // never committed
        }
        let store = Store::open(dir.path(), OpenOptions::default())?;
        let log = store.progress_log("k1")?;
        let done = log.committed()?;
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(log.read(&done[&2])?, b"two");
        log.clear()?;
        assert!(store.progress_log("k1")?.committed()?.is_empty());
        Ok(())
    }
}
