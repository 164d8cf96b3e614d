//! Content hashes of input files, memoised by (path, size, mtime, inode) like git's index, so a
//! no-op rerun stats its inputs instead of reading them.

use fs_err::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::Store;
use crate::error::StoreError;

/// Files at least this big are hashed memory-mapped, on all cores.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// Size of one mapped window (a multiple of blake3's 1 KiB chunk).
const MMAP_WINDOW: u64 = 64 << 20;

/// The memo record: size, mtime (s, ns), inode, device, hash.
const MEMO_LEN: usize = 8 * 5 + 32;

/// Files modified more recently than this are not memoised (coarse file-system clocks tick
/// in up to 2 s).
const RACY_WINDOW: Duration = Duration::from_secs(2);

impl Store {
    /// blake3 (hex) of a file's content, taken from the memo when the file's size, mtime,
    /// inode and device are unchanged (unless `verify`).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be read.
    pub fn hash_file(&self, path: &Path, verify: bool) -> Result<String, StoreError> {
        let meta = fs_err::metadata(path).map_err(|e| StoreError::io(path, e))?;
        let stat = [
            meta.size(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ino(),
            meta.dev(),
        ];
        let key = path.as_os_str().as_encoded_bytes();
        if !verify {
            if let Ok(Some(v)) = self.filehash.get(key) {
                if v.len() == MEMO_LEN && stat_matches(&v, &stat) {
                    return Ok(hex(&v[40..72]));
                }
            }
        }
        let hash = hash_file_uncached(path, meta.size())?;
        // "Racy git": a file modified within the last timestamp tick can be rewritten with the
        // same size in the same tick, keeping its stat; such a file is not memoised (it is
        // rehashed next time), nor is one whose mtime lies in the future.
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= RACY_WINDOW);
        if settled {
            let mut rec = Vec::with_capacity(MEMO_LEN);
            for s in stat {
                rec.extend_from_slice(&s.to_le_bytes());
            }
            rec.extend_from_slice(hash.as_bytes());
            // The memo is a cache: losing it costs a rehash, so it is not flushed here.
            let _ = self.filehash.insert(key, rec);
        }
        Ok(hash.to_hex().to_string())
    }
}

fn stat_matches(rec: &[u8], stat: &[u64; 5]) -> bool {
    stat.iter().enumerate().all(|(i, s)| {
        rec.get(i * 8..i * 8 + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .is_some_and(|b| u64::from_le_bytes(b) == *s)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// blake3 of a file, without the memo: big files through memory-mapped windows hashed on
/// all cores, small ones read whole.
///
/// Big files are mapped one window at a time (not whole, as `b3sum` and blake3's
/// `update_mmap_rayon` do), so hashing a 2 GB input adds at most a window to the process's
/// resident memory, at the same speed.
///
/// # Errors
/// [`StoreError::Io`] when the file cannot be read.
pub fn hash_file_uncached(path: &Path, size: u64) -> Result<blake3::Hash, StoreError> {
    let mut hasher = blake3::Hasher::new();
    if size >= MMAP_THRESHOLD {
        hash_windows(&mut hasher, path, size, MMAP_WINDOW)?;
    } else {
        let mut buf = Vec::with_capacity(size as usize);
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| StoreError::io(path, e))?;
        hasher.update(&buf);
    }
    Ok(hasher.finalize())
}

fn hash_windows(
    hasher: &mut blake3::Hasher,
    path: &Path,
    size: u64,
    window: u64,
) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(window);
        let map = map_window(&file, offset, len).map_err(|e| StoreError::io(path, e))?;
        hasher.update_rayon(&map);
        offset += len;
    }
    Ok(())
}

/// Map `len` bytes of `file` from `offset`, read-only.
#[allow(unsafe_code)]
fn map_window(file: &File, offset: u64, len: u64) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and dropped before the next one is made. If another
    // process truncates the file while it is hashed, reads past the new end fault (SIGBUS);
    // this is the same contract as blake3's own `update_mmap_rayon` and `b3sum`.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len as usize)
            .map(file)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{OpenOptions, Store};

    #[test]
    fn windowed_hash_equals_the_whole_file_hash() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("big.bin");
        let data: Vec<u8> = (0..(3 << 20) + 12345u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        fs_err::write(&f, &data)?;
        let mut h = blake3::Hasher::new();
        super::hash_windows(&mut h, &f, data.len() as u64, 64 << 10)?;
        assert_eq!(h.finalize(), blake3::hash(&data));
        assert_eq!(
            super::hash_file_uncached(&f, data.len() as u64)?,
            blake3::hash(&data)
        );
        Ok(())
    }

    #[test]
    fn memo_hit_skips_reading_and_change_is_seen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("s"), OpenOptions::default())?;
        let f = dir.path().join("a.txt");
        fs_err::write(&f, b"hello")?;
        let h1 = store.hash_file(&f, false)?;
        assert_eq!(h1, blake3::hash(b"hello").to_hex().to_string());
        assert_eq!(store.hash_file(&f, false)?, h1);
        fs_err::write(&f, b"world!")?;
        assert_eq!(
            store.hash_file(&f, false)?,
            blake3::hash(b"world!").to_hex().to_string()
        );
        Ok(())
    }
}
