//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Write `contents` to `dir/rel`, creating folders.
pub fn write(dir: &Path, rel: &str, contents: &str) -> PathBuf {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("create test folder");
    }
    std::fs::write(&p, contents).expect("write test file");
    p
}
