//! The store's own lock file, taken before sled is opened (sled reports a second open only as
//! an io error string, even inside one process).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
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
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if wait {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    return Err(locked_error(root, &mut file));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
            }
        }
        let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let text = format!("{}\n{}\n", std::process::id(), since);
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(StoreLock { _file: file })
    }
}

fn locked_error(root: &Path, file: &mut File) -> StoreError {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut lines = text.lines();
    StoreError::Locked {
        path: PathBuf::from(root),
        pid: lines.next().unwrap_or("?").to_string(),
        since: lines.next().unwrap_or("?").to_string(),
    }
}
