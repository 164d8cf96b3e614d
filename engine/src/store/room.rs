//! Room on the store's disk: the `reserve` ballast, write probes, free space, what can be
//! freed before the database is open, and the check that a folder may become a store.

use std::path::Path;

use super::{is_store_dir, objects, retention, OpenOptions, RESERVE_BYTES, RUN_MARGIN, SLED_ROOM};
use crate::error::StoreError;

pub(super) fn reserve_warning(root: &Path) -> String {
    format!(
        "the disk holding {} is full: used the store's reserve to open it; free space, e.g. \
         `stepgraph runs prune --keep 1` then `stepgraph cache gc`",
        root.display()
    )
}

/// Write `len` zero bytes to `path` (no fsync: the space is taken at write time).
pub(super) fn write_zeros(path: &Path, len: usize) -> bool {
    use std::io::Write;
    let ok = fs_err::File::create(path)
        .and_then(|mut f| f.write_all(&vec![0u8; len]))
        .is_ok();
    if !ok {
        let _ = fs_err::remove_file(path);
    }
    ok
}

/// Create the `reserve` ballast when it is missing (best effort: on a full disk it is left
/// out, and made again at a later open). True when it was made now (so there was room).
pub(super) fn ensure_reserve(root: &Path) -> bool {
    let path = root.join("reserve");
    if path.exists() {
        return false;
    }
    let tmp = root.join("reserve.tmp");
    if write_zeros(&tmp, RESERVE_BYTES) && fs_err::rename(&tmp, &path).is_ok() {
        return true;
    }
    let _ = fs_err::remove_file(&tmp);
    false
}

/// Whether `len` bytes can be written on the store's disk: a probe file of that size can be
/// written (free-space figures lie under quotas; a write does not).
pub(super) fn has_room(root: &Path, len: usize) -> bool {
    let probe = root.join("space-probe");
    let ok = write_zeros(&probe, len);
    let _ = fs_err::remove_file(&probe);
    ok
}

/// Bytes free for this user on the disk holding `path`, when the OS says.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (
        u64::from(s.blocks_available()),
        u64::from(s.fragment_size()),
    );
    Some(blocks.saturating_mul(size))
}

/// Refuse a folder that holds files and is not a store: adopting it would let `cache gc`
/// remove the user's files.
pub(super) fn refuse_foreign_folder(root: &Path) -> Result<(), StoreError> {
    let entries = match fs_err::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // A file where the folder should be.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(StoreError::NotAFolder {
                path: root.to_path_buf(),
            })
        }
        Err(e) => return Err(StoreError::io(root, e)),
    };
    if is_store_dir(root) {
        return Ok(());
    }
    // Files the store writes before its marker (a store interrupted at its first open).
    const EARLY: [&str; 4] = ["lock", "reserve", "reserve.tmp", "space-probe"];
    for e in entries.flatten() {
        let name = e.file_name();
        if !EARLY.iter().any(|n| name == *n) {
            return Err(StoreError::NotAStore {
                path: root.to_path_buf(),
                example: name.to_string_lossy().into_owned(),
            });
        }
    }
    Ok(())
}

/// Whether `name` is a database moved aside by [`open_db`] (`db.corrupt-<ms>`).
pub(crate) fn is_aside_db(name: &str) -> bool {
    name.strip_prefix("db.corrupt-")
        .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
}

/// On a full disk, before the database is open: remove what is garbage by its name alone
/// (databases moved aside, temp files of interrupted writes: we hold the lock, so nobody
/// writes them). Returns the bytes freed.
pub(super) fn free_without_db(root: &Path) -> u64 {
    let mut freed = 0;
    let mut candidates = Vec::new();
    for e in fs_err::read_dir(root).into_iter().flatten().flatten() {
        if is_aside_db(&e.file_name().to_string_lossy()) {
            candidates.push(e.path());
        }
    }
    for e in fs_err::read_dir(root.join("objects/tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if objects::is_temp_name(&e.file_name().to_string_lossy()) {
            candidates.push(e.path());
        }
    }
    for p in candidates {
        freed += retention::remove_counting(&p);
    }
    freed
}

pub(super) fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// Delete the ballast; whether there was one.
pub(super) fn release_reserve(root: &Path) -> bool {
    fs_err::remove_file(root.join("reserve")).is_ok()
}

/// sled writes when it opens (a new log segment, a snapshot) and can damage its log when that
/// fails half-way: never let it start on a full disk. Make room from the reserve when
/// `options` allow, else stop with a clear error. True when the reserve was used.
pub(super) fn make_room(
    root: &Path,
    options: OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<bool, StoreError> {
    let mut reserve_used = false;
    if !options.use_reserve && !has_room(root, RUN_MARGIN) {
        // A run would fill the disk and leave nothing for the commands that free space.
        return Err(StoreError::DiskFull {
            path: root.to_path_buf(),
        });
    }
    if !ensure_reserve(root) && !has_room(root, SLED_ROOM) {
        // Garbage that needs no database to be found goes first.
        let freed = free_without_db(root);
        if freed > 0 {
            warnings.push(format!(
                "the disk holding {} is full: removed {} of the store's leftovers (damaged \
                 databases moved aside, temp files) to open it",
                root.display(),
                human_bytes(freed)
            ));
        }
        let room = freed > 0 && has_room(root, SLED_ROOM);
        if !room && options.use_reserve && release_reserve(root) {
            reserve_used = true;
            warnings.push(reserve_warning(root));
        } else if !room && !options.use_reserve {
            return Err(StoreError::DiskFull {
                path: root.to_path_buf(),
            });
        }
    }
    Ok(reserve_used)
}
