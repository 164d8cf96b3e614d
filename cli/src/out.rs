//! Every byte the CLI prints goes through here. Writes to stdout return `io::Result`, so a
//! closed pipe (`stepgraph logs RUN STEP | head -1`) comes back as an error that
//! [`crate::run_cli`] turns into a quiet exit 0, never a panic. SIGPIPE stays ignored (Rust's
//! default): the engine writes to worker pipes in the same process and must see EPIPE as an
//! error there, not die of it.
//!
//! Messages on stderr are best effort: when stderr is gone there is nobody to tell.

use std::io::{self, Write};

thread_local! {
    /// While [`capture`] runs: what would have gone to stdout.
    static CAPTURED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Write `s` to stdout (or to the text being captured).
pub(crate) fn stdout(s: &str) -> io::Result<()> {
    let taken = CAPTURED.with_borrow_mut(|c| c.as_mut().map(|c| c.push_str(s)).is_some());
    if taken {
        return Ok(());
    }
    io::stdout().lock().write_all(s.as_bytes())
}

/// Run `f`, keeping what it prints to stdout (through [`stdout`]) and returning it with
/// `f`'s result: `graph -o FILE` writes the text a command would print.
pub(crate) fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let before = CAPTURED.with_borrow_mut(|c| c.replace(String::new()));
    let result = f();
    let text = CAPTURED
        .with_borrow_mut(|c| std::mem::replace(c, before))
        .unwrap_or_default();
    (result, text)
}

/// Write raw bytes to stdout (logs are shown as they are, UTF-8 or not).
pub(crate) fn stdout_bytes(b: &[u8]) -> io::Result<()> {
    io::stdout().lock().write_all(b)
}

/// An error and its causes as one line: each cause is added only when the text so far does
/// not already say it (errors that print their source, e.g. `path: No such file`, would
/// otherwise say it twice).
pub(crate) fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // What the user can do about a busy store is a CLI matter: say it here.
    if e.chain().any(|c| {
        matches!(
            c.downcast_ref::<stepgraph_engine::StoreError>(),
            Some(stepgraph_engine::StoreError::Locked { .. })
        )
    }) {
        line.push_str(" (use --wait to wait for it)");
    }
    line
}

/// Write `s` to stderr, ignoring failures.
pub(crate) fn stderr(s: &str) {
    let _ = io::stderr().lock().write_all(s.as_bytes());
}

/// Flush stdout (at the end of a command, so a late EPIPE is seen too).
pub(crate) fn flush() -> io::Result<()> {
    io::stdout().lock().flush()
}

/// Whether an error is a closed stdout pipe.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `print!` that returns `io::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::stdout(&format!($($arg)*))
    };
}

/// `println!` that returns `io::Result<()>`.
macro_rules! outln {
    () => {
        $crate::out::stdout("\n")
    };
    ($($arg:tt)*) => {
        $crate::out::stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};
