//! Opening the sled index: a damaged, missing or foreign-version database is moved aside (or
//! deleted when the disk has no room for it) and a fresh one opened, for the caller to rebuild
//! from the JSON copies.

use std::path::{Path, PathBuf};

use super::mirror::Rebuilt;
use super::records::SCHEMA_VERSION;
use super::room::free_bytes;
use super::{mirror, now_unix_ms, KEEP_ASIDE_MARGIN, SCHEMA_KEY};
use crate::error::{is_disk_full, StoreError};

pub(super) fn sled_err(root: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull {
            path: root.to_path_buf(),
        },
        e => StoreError::Db {
            path: root.join("db"),
            message: sled_message(&e),
        },
    }
}

/// Why the database was rebuilt.
pub(super) struct MovedAside {
    pub(super) why: String,
    pub(super) aside: Aside,
}

impl MovedAside {
    /// The warning for a database at `db` that was rebuilt as `r`.
    pub(super) fn warning(&self, db: &Path, r: &Rebuilt) -> String {
        let what = match &self.aside {
            Aside::Missing => format!("store database {} is missing", db.display()),
            Aside::Kept(aside) => format!(
                "store database {} could not be used ({}); moved it to {}",
                db.display(),
                self.why,
                aside.display()
            ),
            Aside::Deleted => format!(
                "store database {} could not be used ({}); deleted it (the disk is nearly \
             full, so no copy was kept)",
                db.display(),
                self.why
            ),
        };
        format!(
            "{what}; rebuilt the index from the store's files: {} cache entries{}, {} runs \
         (objects are kept)",
            r.entries,
            if r.entries_dropped > 0 {
                format!(" ({} dropped: objects missing)", r.entries_dropped)
            } else {
                String::new()
            },
            r.runs
        )
    }
}

/// What became of the database that could not be used.
pub(super) enum Aside {
    /// There was none (with JSON copies to rebuild from).
    Missing,
    /// Moved to this path (`db.corrupt-<ms>`), removed by the next `cache gc`.
    Kept(PathBuf),
    /// Deleted: the disk had no room to keep it.
    Deleted,
}

pub(super) enum OpenDbError {
    /// sled's own lock on its files is held by another process.
    Locked,
    /// No space left.
    Full,
    /// Anything else that is not damage (permissions).
    Other(StoreError),
}

/// sled's error in words (its corruption error prints Rust debug output).
fn sled_message(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { .. } => "its files are damaged".to_string(),
        sled::Error::Unsupported(m) => format!("unsupported: {m}"),
        sled::Error::ReportableBug(m) => format!("internal error of the database: {m}"),
        sled::Error::CollectionNotFound(_) => "a tree of the database is missing".to_string(),
        sled::Error::Io(io) => crate::error::io_message(io),
    }
}

pub(super) fn classify(e: sled::Error, path: &Path) -> Result<String, OpenDbError> {
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
        e => Ok(sled_message(&e)),
    }
}

/// Open sled. Any failure other than its lock, a full disk or a permission (garbage in its
/// files, corruption, another sled version, another schema) moves the db aside and opens a
/// fresh one, to be rebuilt by the caller.
pub(super) fn open_db(path: &Path) -> Result<(sled::Db, Option<MovedAside>), OpenDbError> {
    let root = path.parent().unwrap_or(path).to_path_buf();
    let fail = |e: sled::Error| match classify(e, path) {
        Ok(why) => OpenDbError::Other(StoreError::Db {
            path: path.to_path_buf(),
            message: why,
        }),
        Err(e) => e,
    };
    if !path.exists() && mirror::has_copies(&root) {
        // Deleted by hand: rebuild from the JSON copies as for a damaged one.
        let db = fresh_db(&root, path)?;
        return Ok((
            db,
            Some(MovedAside {
                why: "missing".into(),
                aside: Aside::Missing,
            }),
        ));
    }
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
    fs_err::rename(path, &aside).map_err(|e| OpenDbError::Other(StoreError::io(path, e)))?;
    // Keep the damaged copy (for a bug report) only when the disk has room for it to spare.
    let aside = if free_bytes(&root).is_some_and(|free| free >= KEEP_ASIDE_MARGIN) {
        Aside::Kept(aside)
    } else {
        let _ = fs_err::remove_dir_all(&aside);
        Aside::Deleted
    };
    let db = fresh_db(&root, path)?;
    Ok((db, Some(MovedAside { why, aside })))
}

/// A new, empty db at `path` holding only the schema version (the index is then rebuilt).
pub(super) fn fresh_db(root: &Path, path: &Path) -> Result<sled::Db, OpenDbError> {
    let db = sled::open(path).map_err(|e| match e {
        sled::Error::Io(io) if is_disk_full(&io) => OpenDbError::Full,
        e => OpenDbError::Other(sled_err(root, e)),
    })?;
    db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
        .and_then(|_| db.flush())
        .map_err(|e| OpenDbError::Other(sled_err(root, e)))?;
    Ok(db)
}
