//! Removing files and counting the disk space that really goes: sizes as `du` counts them
//! (`st_blocks * 512`), each inode once, and a file only when its last link goes.

use fs_err as fs;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Remove a file or folder (best effort), returning the disk space really freed.
pub(crate) fn remove_counting(path: &Path) -> u64 {
    let mut freed = Freed::default();
    let _ = freed.tree(path, false);
    freed.total()
}

pub(super) fn disk(meta: &std::fs::Metadata) -> u64 {
    meta.blocks() * 512
}

/// Space freed by removals: a file counts when its last link goes.
#[derive(Default)]
pub(super) struct Freed {
    bytes: u64,
    /// Dry runs: (dev, inode) -> (links, links seen, disk usage).
    seen: HashMap<(u64, u64), (u64, u64, u64)>,
}

impl Freed {
    /// Remove (or with `dry`, pretend to remove) one file or symlink.
    pub(super) fn file(&mut self, path: &Path, dry: bool) -> std::io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        if dry {
            let e =
                self.seen
                    .entry((meta.dev(), meta.ino()))
                    .or_insert((meta.nlink(), 0, disk(&meta)));
            e.1 += 1;
            return Ok(());
        }
        if meta.nlink() == 1 {
            self.bytes += disk(&meta);
        }
        remove_with_writable_parent(path, |p| fs::remove_file(p))
    }

    /// Remove a folder and everything in it.
    pub(super) fn tree(&mut self, path: &Path, dry: bool) -> std::io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return self.file(path, dry);
        }
        if !dry && meta.permissions().mode() & 0o700 != 0o700 {
            // Work copies may hold read-only folders: their entries cannot go otherwise.
            let mode = meta.permissions().mode() | 0o700;
            fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        for e in fs::read_dir(path)? {
            self.tree(&e?.path(), dry)?;
        }
        self.bytes += disk(&meta);
        if !dry {
            remove_with_writable_parent(path, |p| fs::remove_dir(p))?;
        }
        Ok(())
    }

    /// The total; for a dry run, inodes all of whose links would go.
    pub(super) fn total(&self) -> u64 {
        self.bytes
            + self
                .seen
                .values()
                .filter(|(links, seen, _)| seen >= links)
                .map(|(_, _, d)| d)
                .sum::<u64>()
    }
}

pub(super) fn remove_with_writable_parent(
    path: &Path,
    op: impl Fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match op(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let parent = path.parent().unwrap_or(path);
            let mode = fs::metadata(parent)?.permissions().mode() | 0o700;
            fs::set_permissions(parent, std::fs::Permissions::from_mode(mode))?;
            op(path)
        }
        r => r,
    }
}
