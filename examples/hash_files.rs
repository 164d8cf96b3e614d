//! Hash the given files the way the engine hashes step inputs, printing `HASH  PATH` lines
//! like `b3sum`. Used by `bench/hash_vs_b3sum.sh` to compare against `b3sum` process to
//! process.
//!
//! ```text
//! hash_files [--mode store|uncached] FILE...
//! ```
//!
//! - `--mode store` (default): open a fresh store in a temporary folder and call
//!   `Store::hash_file(path, verify = true)` for every file, in parallel over files with rayon
//!   (as `resolve::hash_all` does); files of 1 MiB or more use blake3's mmap + rayon path.
//!   Includes opening the store (sled) and writing the stat memo.
//! - `--mode uncached`: `stepgraph_engine::hash_file_uncached` with the same rayon
//!   fan-out, no store at all.
//!
//! Build: `CARGO_TARGET_DIR=/tmp/target-bench cargo build --release --example hash_files`

// Examples use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rayon::prelude::*;
use stepgraph_engine::hash_file_uncached;
use stepgraph_engine::{OpenOptions, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut mode = "store".to_string();
    if args.first().map(String::as_str) == Some("--mode") {
        if args.len() < 2 {
            return Err("--mode needs a value".into());
        }
        mode = args[1].clone();
        args.drain(..2);
    }
    let paths: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
    if paths.is_empty() {
        return Err("usage: hash_files [--mode store|uncached] FILE...".into());
    }
    let hashes: Vec<String> = match mode.as_str() {
        "store" => {
            let dir = tempfile::Builder::new()
                .prefix("hash-files-store")
                .tempdir()?;
            let store = Store::open(dir.path(), OpenOptions::default())?;
            paths
                .par_iter()
                .map(|p| store.hash_file(p, true).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?
        }
        "uncached" => paths
            .par_iter()
            .map(|p| {
                let size = std::fs::metadata(p).map_err(|e| e.to_string())?.size();
                hash_file_uncached(p, size)
                    .map(|h| h.to_hex().to_string())
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("unknown mode {other:?}").into()),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (h, p) in hashes.iter().zip(&paths) {
        writeln!(out, "{h}  {}", p.display())?;
    }
    out.flush()?;
    Ok(())
}
