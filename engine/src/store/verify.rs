//! `cache verify`: rehash every object every cache entry names and drop the entries that name a
//! damaged or missing one (their steps run again next time).

use rayon::prelude::*;

use super::Store;
use crate::error::StoreError;

/// A cache entry dropped by [`Store::verify_cache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedEntry {
    /// The entry's key.
    pub key: String,
    /// The step that produced it.
    pub step: String,
    /// What was wrong, one item per damaged or missing file (`rel: reason`).
    pub problems: Vec<String>,
}

/// What [`Store::verify_cache`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: usize,
    /// Entries dropped, in key order.
    pub dropped: Vec<DroppedEntry>,
}

impl Store {
    /// Rehash (in parallel) every object named by a cache entry. An entry naming a damaged or
    /// missing object is removed, and a damaged object too (no entry may serve it again; the
    /// step that produced it reruns and stores the right bytes).
    ///
    /// # Errors
    /// Db errors while listing or removing entries.
    pub fn verify_cache(&self) -> Result<VerifyReport, StoreError> {
        let entries = self.cache_entries()?;
        let mut dropped: Vec<DroppedEntry> = entries
            .par_iter()
            .filter_map(|e| {
                let problems: Vec<String> = e
                    .outputs
                    .values()
                    .flat_map(|m| m.files.iter())
                    .filter_map(|(rel, o)| match self.verify_object(o) {
                        Ok(()) => None,
                        Err(err) => {
                            if matches!(err, StoreError::DamagedObject { .. }) {
                                let _ = fs_err::remove_file(self.object_path(&o.hash));
                            }
                            Some(format!("{rel}: {err}"))
                        }
                    })
                    .collect();
                (!problems.is_empty()).then(|| DroppedEntry {
                    key: e.key.clone(),
                    step: e.step.clone(),
                    problems,
                })
            })
            .collect();
        dropped.sort_by(|a, b| a.key.cmp(&b.key));
        for d in &dropped {
            self.cache_remove(&d.key)?;
        }
        Ok(VerifyReport {
            checked: entries.len(),
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::records::{CacheEntry, SCHEMA_VERSION};
    use super::super::{OpenOptions, Store};

    fn entry(
        store: &Store,
        key: &str,
        dir: &std::path::Path,
    ) -> Result<CacheEntry, Box<dyn std::error::Error>> {
        let manifest = store.ingest_dir(dir)?;
        let entry = CacheEntry {
            schema: SCHEMA_VERSION,
            key: key.to_string(),
            pipeline: "p".into(),
            step: "s".into(),
            outputs: [("out".to_string(), manifest)].into_iter().collect(),
            fingerprint: Default::default(),
            counts: Default::default(),
            run_id: "r".into(),
            duration_ms: 1,
            created_unix_ms: 1,
            units: None,
        };
        store.cache_put(&entry)?;
        Ok(entry)
    }

    #[test]
    fn verify_drops_entries_with_damaged_objects_and_removes_those_objects(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("store"), OpenOptions::default())?;
        for (name, text) in [("good", "fine bytes"), ("bad", "rotten bytes")] {
            let d = dir.path().join(name);
            fs_err::create_dir_all(&d)?;
            fs_err::write(d.join("f.txt"), text)?;
        }
        let good = entry(&store, &"a".repeat(64), &dir.path().join("good"))?;
        let bad = entry(&store, &"b".repeat(64), &dir.path().join("bad"))?;
        let obj = bad.outputs["out"].files["f.txt"].clone();
        let path = store.object_path(&obj.hash);
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        fs_err::write(&path, "Rotten bytes")?;

        let report = store.verify_cache()?;
        assert_eq!(report.checked, 2);
        assert_eq!(report.dropped.len(), 1);
        assert_eq!(report.dropped[0].key, bad.key);
        assert!(report.dropped[0].problems[0].starts_with("f.txt: "));
        assert!(!path.exists(), "the damaged object is removed");
        assert!(store.cache_get(&bad.key)?.is_none());
        assert!(store.cache_get(&good.key)?.is_some());
        assert_eq!(store.verify_cache()?.dropped, vec![]);
        Ok(())
    }
}
