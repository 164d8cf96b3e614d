//! Fuzz the JSON pipeline spec parser: any bytes give `Ok` or a `SpecError`, never a panic.
//!
//! The base folder holds the files the example specs refer to (`scripts/score.py`, `data/`),
//! so inputs that get past the JSON and type layers also reach the configuration rules and the
//! pipeline builder.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        // Kept for the whole run (`keep`: not removed on exit; it is tiny).
        let dir = tempfile::tempdir().expect("temp dir").keep();
        for sub in ["scripts", "data/reviews", "data"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        std::fs::write(dir.join("scripts/score.py"), "def run(b):\n    return b\n").expect("write");
        std::fs::write(dir.join("data/reviews/a.txt"), "good\n").expect("write");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = stepgraph_steps::parse_spec(text, "fuzz.json", base());
    }
});
