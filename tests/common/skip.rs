//! Saying that tests were skipped, and whether they may be: shared by the end-to-end tests
//! (`tests/common`) and the CLI tests (`cli/tests/common`, which includes this file).

/// Say once per `group`, in `cargo test`'s own output, that its checks were skipped and why.
/// Written to the process's stderr directly: libtest captures `print!`/`eprint!` of passing
/// tests, not writes to the stream itself, so this line shows without `--nocapture`.
pub(crate) fn skipped(group: &str, reason: &str) {
    use std::io::Write;
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if said.iter().any(|g| g == group) {
        return;
    }
    said.push(group.to_string());
    let _ = writeln!(std::io::stderr(), "skipped: {group}: {reason}");
}

/// Whether tests run in CI (`CI=true`), where a missing tool fails instead of skipping.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
