//! Runs the Python harness's own unit tests (steps/python/tests) as part of `cargo test`.

use std::path::Path;
use std::process::Command;

#[test]
fn python_harness_unit_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python harness tests failed:\n{stderr}"
    );
    // unittest's closing lines: "Ran N tests" then "OK" (possibly with skips).
    assert!(stderr.contains("\nOK"), "{stderr}");
    println!(
        "{}",
        stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
}
