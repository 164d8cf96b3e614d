//! Content-addressed objects: immutable, read-only files named by their blake3 hash, written
//! to a temp file, fsynced and renamed into place.

use fs_err::{self as fs, File};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::filehash::hash_file_uncached;
use super::records::{ObjectRef, OutputManifest};
use super::Store;
use crate::error::StoreError;
use crate::fingerprint::merkle_hash;

impl Store {
    /// Path of the object `hash`.
    pub fn object_path(&self, hash: &str) -> PathBuf {
        let (a, b) = hash.split_at(hash.len().min(2));
        self.root.join("objects").join(a).join(b)
    }

    /// Rehash an object: `Ok(())` when its content matches its name.
    ///
    /// # Errors
    /// [`StoreError::MissingObject`] or [`StoreError::DamagedObject`].
    pub fn verify_object(&self, obj: &ObjectRef) -> Result<(), StoreError> {
        let path = self.object_path(&obj.hash);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => {
                return Err(StoreError::MissingObject {
                    hash: obj.hash.clone(),
                })
            }
        };
        let actual = hash_file_uncached(&path, meta.len())?.to_hex().to_string();
        if actual != obj.hash || meta.len() != obj.size {
            return Err(StoreError::DamagedObject {
                hash: obj.hash.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Move every file under `dir` into the object store (hard link, or copy across devices)
    /// and return the manifest. Objects are durable (file and folder fsynced) on return.
    ///
    /// # Errors
    /// I/O errors on `dir` or the objects folder.
    pub fn ingest_dir(&self, dir: &Path) -> Result<OutputManifest, StoreError> {
        let mut files = BTreeMap::new();
        let mut touched_dirs = BTreeSet::new();
        // The output folder itself must be the real folder the engine made: a step that put a
        // symbolic link there would have us ingest (and make read-only) what it points at.
        match fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(StoreError::UnsafePath {
                    dest: dir.to_path_buf(),
                    message: "the output folder was replaced by a link or a file; a step must write files into it".into(),
                });
            }
            _ => {}
        }
        if dir.exists() {
            for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
                let entry = entry.map_err(|e| StoreError::io(dir, e.into()))?;
                let kind = entry.file_type();
                if kind.is_dir() {
                    continue;
                }
                if !kind.is_file() {
                    // A link (or fifo, socket) would be seen by consumers in this run but not
                    // stored: a later reuse would differ. Refuse it by name.
                    let what = if kind.is_symlink() {
                        "a symbolic link"
                    } else {
                        "not a regular file"
                    };
                    return Err(StoreError::UnsupportedOutput {
                        path: entry.path().to_path_buf(),
                        message: format!(
                            "{what}: outputs must be regular files (write a copy instead)"
                        ),
                    });
                }
                let rel = relative_slash(dir, entry.path());
                let obj = self.put_object(entry.path(), &mut touched_dirs)?;
                files.insert(rel, obj);
            }
        }
        // Empty folders are not part of an output (a manifest lists files): remove them, so that
        // a consumer in this run sees exactly what a later reuse materialises.
        if dir.is_dir() {
            for entry in walkdir::WalkDir::new(dir)
                .min_depth(1)
                .contents_first(true)
                .into_iter()
                .flatten()
            {
                if entry.file_type().is_dir() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        for d in touched_dirs {
            File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::io(&d, e))?;
        }
        let hash = merkle_hash(files.iter().map(|(k, v)| (k.as_str(), v.hash.as_str())));
        Ok(OutputManifest { hash, files })
    }

    pub(super) fn put_object(
        &self,
        src: &Path,
        touched: &mut BTreeSet<PathBuf>,
    ) -> Result<ObjectRef, StoreError> {
        let meta = fs::metadata(src).map_err(|e| StoreError::io(src, e))?;
        let hash = hash_file_uncached(src, meta.len())?.to_hex().to_string();
        let obj = ObjectRef {
            hash,
            size: meta.len(),
        };
        let dest = self.object_path(&obj.hash);
        if dest.exists() {
            match self.verify_object(&obj) {
                Ok(()) => {
                    link_back(&dest, src, &meta);
                    return Ok(obj);
                }
                // A damaged object is replaced by the good bytes we have now.
                Err(_) => {
                    let _ = fs::remove_file(&dest);
                }
            }
        }
        let parent = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        if !parent.exists() {
            fs::create_dir_all(&parent).map_err(|e| StoreError::io(&parent, e))?;
            // A new shard folder is an entry of objects/: make that durable too.
            touched.insert(self.root.join("objects"));
        }
        // Unique per write: two steps may store identical bytes at the same time.
        static NEXT_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp =
            self.root
                .join("objects/tmp")
                .join(format!("{}-{n}-{}", std::process::id(), obj.hash));
        let _ = fs::remove_file(&tmp);
        // Link only a file that is the step's own (one link): a file with other links (a step
        // that hard-linked a user's file into its output) is copied, so making the object
        // read-only never changes a file outside the store.
        let own = meta.nlink() == 1;
        if !own || fs::hard_link(src, &tmp).is_err() {
            fs::copy(src, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
        }
        let f = File::open(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        let mut perms = f
            .metadata()
            .map_err(|e| StoreError::io(&tmp, e))?
            .permissions();
        perms.set_readonly(true);
        fs::set_permissions(&tmp, perms).map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
        touched.insert(parent);
        link_back(&dest, src, &meta);
        Ok(obj)
    }

    /// Put the files of `manifest` under `dest` (hard links to the objects, copies as fallback).
    ///
    /// # Errors
    /// I/O errors, or a missing object.
    pub fn materialise(&self, manifest: &OutputManifest, dest: &Path) -> Result<(), StoreError> {
        fs::create_dir_all(dest).map_err(|e| StoreError::io(dest, e))?;
        let real_dest = dest.canonicalize().map_err(|e| StoreError::io(dest, e))?;
        let mut checked: HashSet<PathBuf> = HashSet::new();
        for (rel, obj) in &manifest.files {
            // A manifest is data read back from the db: never let a name in it point the link
            // out of `dest` (`..`, an absolute path), whoever wrote it.
            let rel_path = crate::relpath::decode(rel).map_err(|e| StoreError::UnsafePath {
                dest: dest.to_path_buf(),
                message: e.to_string(),
            })?;
            let target = dest.join(rel_path);
            if let Some(p) = target.parent() {
                if checked.insert(p.to_path_buf()) {
                    fs::create_dir_all(p).map_err(|e| StoreError::io(p, e))?;
                    // The folder really is inside `dest`: no link on the way points out.
                    let real = p.canonicalize().map_err(|e| StoreError::io(p, e))?;
                    if !real.starts_with(&real_dest) {
                        return Err(StoreError::UnsafePath {
                            dest: dest.to_path_buf(),
                            message: format!("{rel} leads through a link to {}", real.display()),
                        });
                    }
                }
            }
            // Never write through a link that sits where the file goes.
            if fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&target).map_err(|e| StoreError::io(&target, e))?;
            }
            let src = self.object_path(&obj.hash);
            if !src.exists() {
                return Err(StoreError::MissingObject {
                    hash: obj.hash.clone(),
                });
            }
            let _ = fs::remove_file(&target);
            if fs::hard_link(&src, &target).is_err() {
                fs::copy(&src, &target).map_err(|e| StoreError::io(&target, e))?;
            }
        }
        Ok(())
    }

    /// Every object file in the store, as (hash, size).
    ///
    /// # Errors
    /// I/O errors reading the objects folder.
    pub fn objects(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let root = self.root.join("objects");
        let mut out = Vec::new();
        for shard in fs::read_dir(&root).map_err(|e| StoreError::io(&root, e))? {
            let shard = shard.map_err(|e| StoreError::io(&root, e))?;
            let name = shard.file_name().to_string_lossy().into_owned();
            // Only names the store writes (`<2 hex>/<62 hex>`): anything else is not ours.
            if !is_hex(&name, 2) || !shard.path().is_dir() {
                continue;
            }
            for obj in fs::read_dir(shard.path()).map_err(|e| StoreError::io(shard.path(), e))? {
                let obj = obj.map_err(|e| StoreError::io(shard.path(), e))?;
                let rest = obj.file_name().to_string_lossy().into_owned();
                if !is_hex(&rest, 62) {
                    continue;
                }
                let size = obj.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((format!("{name}{rest}"), size));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Replace the output file `src` by a hard link to its object `dest` (atomically: a link beside
/// `src`, renamed over it), so that what consumers read in the run folder is the stored,
/// verified object itself, not a second copy that could change unseen. Best effort: across
/// devices `src` stays as it is.
fn link_back(dest: &Path, src: &Path, src_meta: &std::fs::Metadata) {
    if fs::metadata(dest).is_ok_and(|d| d.ino() == src_meta.ino() && d.dev() == src_meta.dev()) {
        return;
    }
    let Some(name) = src.file_name() else { return };
    let mut tmp_name = std::ffi::OsString::from(".stepgraph-link-");
    tmp_name.push(name);
    let tmp = src.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(dest, &tmp).is_ok() && fs::rename(&tmp, src).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// Whether `s` is `len` lowercase hex digits.
pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` is a temp file name that `put_object` makes in `objects/tmp`:
/// `<pid>-<n>-<64 hex hash>`.
pub(crate) fn is_temp_name(name: &str) -> bool {
    let mut parts = name.splitn(3, '-');
    let digits =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_some_and(|h| is_hex(h, 64))
}

/// `path` relative to `base`, `/`-separated, in the exact encoding of [`crate::relpath`].
pub(crate) fn relative_slash(base: &Path, path: &Path) -> String {
    crate::relpath::encode(path.strip_prefix(base).unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::super::{OpenOptions, Store};

    #[test]
    fn materialise_never_leaves_its_folder() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("store"), OpenOptions::default())?;
        let src = dir.path().join("src");
        fs_err::create_dir_all(&src)?;
        fs_err::write(src.join("f.txt"), "x")?;
        let good = store.ingest_dir(&src)?;
        let obj = good.files.values().next().cloned().ok_or("no object")?;
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(&outside)?;
        for bad in [
            "../escape.txt",
            "/tmp/escape.txt",
            "a/../../escape.txt",
            "link/f.txt",
        ] {
            let dest = dir.path().join("dest");
            let _ = fs_err::remove_dir_all(&dest);
            fs_err::create_dir_all(&dest)?;
            fs_err::os::unix::fs::symlink(&outside, dest.join("link"))?;
            let mut m = good.clone();
            m.files.clear();
            m.files.insert(bad.to_string(), obj.clone());
            let err = store.materialise(&m, &dest);
            assert!(
                matches!(err, Err(crate::StoreError::UnsafePath { .. })),
                "{bad}: {err:?}"
            );
            assert_eq!(fs_err::read_dir(&outside)?.count(), 0, "{bad}");
        }
        Ok(())
    }

    #[test]
    fn ingest_then_materialise_round_trips_and_detects_damage(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("s"), OpenOptions::default())?;
        let out = dir.path().join("out");
        fs_err::create_dir_all(out.join("sub"))?;
        fs_err::write(out.join("a.txt"), b"alpha")?;
        fs_err::write(out.join("sub/b.txt"), b"beta")?;
        let m = store.ingest_dir(&out)?;
        assert_eq!(m.files.keys().collect::<Vec<_>>(), ["a.txt", "sub/b.txt"]);
        let dest = dir.path().join("mat");
        store.materialise(&m, &dest)?;
        assert_eq!(fs_err::read(dest.join("sub/b.txt"))?, b"beta");
        let obj = &m.files["a.txt"];
        store.verify_object(obj)?;
        let p = store.object_path(&obj.hash);
        let mut perms = fs_err::metadata(&p)?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs_err::set_permissions(&p, perms)?;
        fs_err::write(&p, b"alphX")?;
        assert!(store.verify_object(obj).is_err());
        Ok(())
    }
}
