//! Runs the Python harness's own unit tests (steps/python/tests) as part of `cargo test`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

#[test]
fn python_harness_unit_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s", "tests"])
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
    // Skipped groups (the DataFrame tests without pandas): one line each in `cargo test`'s own
    // output (written to the stream itself: libtest captures only print!/eprint!), and a
    // failure in CI (CI=true), which installs everything they need.
    let skipped = skip_reasons(&stderr);
    assert!(
        skipped.is_empty() || !std::env::var("CI").is_ok_and(|v| v == "true"),
        "Python harness tests were skipped in CI: {skipped:?}"
    );
    for (reason, n) in skipped {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {n} Python harness tests (steps/python/tests): {reason}"
        );
    }
}

/// The reasons of the tests unittest's verbose output reports as skipped, with their counts
/// (`test_x (mod.Class.test_x) ... skipped 'pandas not installed'`).
fn skip_reasons(verbose: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in verbose.lines() {
        if let Some((_, reason)) = line.split_once(" ... skipped ") {
            *out.entry(reason.trim().trim_matches('\'').to_string())
                .or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn skip_reasons_are_counted_per_reason() {
    let text = "test_a (t.A.test_a) ... ok\n\
                test_b (t.A.test_b) ... skipped 'pandas not installed'\n\
                test_c (t.A.test_c) ... skipped 'pandas not installed'\n";
    let got = skip_reasons(text);
    assert_eq!(got.len(), 1);
    assert_eq!(got.get("pandas not installed"), Some(&2));
}
