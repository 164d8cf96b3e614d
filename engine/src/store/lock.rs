//! The store's own lock file, taken before sled is opened (sled reports a second open only as
//! an io error string, even inside one process).
//!
//! The flock is what matters: the pid and start time written into the file are only for the
//! "in use" message, so failing to write them (a full disk) is not an error.

use fs_err::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StoreError;

/// Held for as long as the store is open; the OS releases it when the process dies.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub(crate) fn acquire(root: &Path, wait: bool) -> Result<StoreLock, StoreError> {
        let path = root.join("lock");
        // A lock that this very process holds is about to go: a `Store` just dropped, or a
        // child forked by another thread that has not yet reached `exec` (which closes the
        // inherited descriptor). Give it a moment before calling the store busy.
        let grace = std::time::Instant::now() + OWN_LOCK_GRACE;
        let mut file = loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    if wait || (held_by_us(&mut file) && std::time::Instant::now() < grace) {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    return Err(locked_error(root, &mut file));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
            }
            // The file may have been deleted (and maybe recreated) between our open and our
            // lock: a lock on an unlinked inode excludes nobody, so take the lock again.
            if same_file(&file, &path) {
                break file;
            }
        };
        let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let text = format!("{}\n{}\n", std::process::id(), since);
        // Overwrite in place, then cut: rewriting bytes the file already has needs no new
        // block, so this mostly works on a full disk too.
        let written = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.set_len(text.len() as u64));
        match written {
            Ok(()) => {}
            // The pid is informative only; the flock is held.
            Err(e) if crate::error::is_disk_full(&e) => {}
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        Ok(StoreLock { _file: file })
    }
}

/// How long a lock held by this process itself is waited for (see [`StoreLock::acquire`]).
pub(crate) const OWN_LOCK_GRACE: Duration = Duration::from_secs(2);

/// Whether the pid written in the lock file is this process's.
fn held_by_us(file: &mut File) -> bool {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    text.lines().next().map(str::trim) == Some(std::process::id().to_string().as_str())
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs_err::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn locked_error(root: &Path, file: &mut File) -> StoreError {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    StoreError::Locked {
        path: PathBuf::from(root),
        pid: lines.next().unwrap_or("(unknown)").to_string(),
        since: lines.next().unwrap_or("(unknown)").to_string(),
    }
}
