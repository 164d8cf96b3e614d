//! Helpers shared by the CLI test binaries.
#![allow(dead_code)]

use std::process::Output;

/// The `stepgraph` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_stepgraph");

/// What one `stepgraph` invocation gave.
pub(crate) struct Out(pub Output);

impl Out {
    /// The exit code (-1 when killed by a signal).
    pub(crate) fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    /// Standard output, lossily as text.
    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    /// Standard error, lossily as text.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Assert exit code `code`, printing both streams otherwise.
    #[track_caller]
    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    /// Assert exit code 0 (printing both streams otherwise).
    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        self.assert_code(0);
        self
    }

    /// Assert exit code `code` (printing both streams otherwise) and return standard error.
    #[track_caller]
    pub(crate) fn fails(self, code: i32) -> String {
        self.assert_code(code);
        self.stderr()
    }
}

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
