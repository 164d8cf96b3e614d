//! Workers: long-lived processes speaking the JSON-lines protocol (Python harness or any
//! program), or in-process Rust entry instances. A worker runs one mini-batch try at a time.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{json, Value};

use super::entry::{load, EntryContext, EntryFactory, EntryScript};
use super::partition::MiniBatchSpec;
use super::MAX_PROTOCOL_LINE;
use crate::process::{excerpt, file_excerpt, kill_tree};
use stepgraph_engine::CancelFlag;

/// How long a worker may take to start and finish `init()`.
const INIT_TIMEOUT: Duration = Duration::from_secs(600);

/// The result of one try of one mini-batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TryOutcome {
    /// run() returned `count` elements; `rows` are the collected output lines, each ending
    /// in a newline (joined on the worker's thread, so the coordinator gets one buffer).
    Ok {
        count: u64,
        rows: Vec<u8>,
        columns: Option<Vec<String>>,
    },
    /// run() raised (the traceback or error text).
    Raised(String),
    /// The worker died while running it.
    Died(String),
    /// run() exceeded run_invocation_timeout; the worker was killed.
    TimedOut(u64),
    /// init() failed (the traceback); the worker could not start.
    InitFailed(String),
    /// The run was cancelled.
    Cancelled,
}

/// A handle the coordinator keeps to kill a worker's process from outside.
#[derive(Debug, Clone, Default)]
pub(crate) struct KillHandle(Arc<Mutex<Option<Child>>>);

impl KillHandle {
    pub(crate) fn kill(&self) {
        if let Ok(mut g) = self.0.lock() {
            if let Some(c) = g.as_mut() {
                kill_tree(c);
            }
        }
    }
}

pub(crate) trait Worker: Send {
    /// Run one try; starts (and inits) the worker first when needed.
    fn run(&mut self, index: u64, spec: &MiniBatchSpec) -> TryOutcome;
    /// Call the entry's shutdown and stop.
    fn shutdown(&mut self);
}

/// How to start a process worker.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSpec {
    pub argv: Vec<OsString>,
    pub cwd: PathBuf,
    /// The whole environment of the worker (the caller's is cleared).
    pub env: BTreeMap<OsString, OsString>,
    pub log_path: PathBuf,
    pub init: Value,
    pub timeout: Duration,
}

pub(crate) struct ProcessWorker {
    spec: ProcessSpec,
    child: KillHandle,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<Incoming>>,
    cancel: CancelFlag,
}

impl ProcessWorker {
    pub(crate) fn new(spec: ProcessSpec, cancel: CancelFlag) -> Self {
        ProcessWorker {
            spec,
            child: KillHandle::default(),
            stdin: None,
            lines: None,
            cancel,
        }
    }

    pub(crate) fn kill_handle(&self) -> KillHandle {
        self.child.clone()
    }

    fn alive(&self) -> bool {
        self.stdin.is_some()
    }

    fn start(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)
            .map_err(|e| format!("{}: {e}", self.spec.log_path.display()))?;
        let Some((program, args)) = self.spec.argv.split_first() else {
            return Err("the worker command is empty".into());
        };
        let mut cmd = Command::new(program);
        // Its own process group, so a timeout or an abort kills what the worker started too
        // (Ctrl-C reaches workers through the engine's cancel flag). A defined environment:
        // nothing of the caller's reaches the worker unless listed.
        cmd.args(args)
            .process_group(0)
            .current_dir(&self.spec.cwd)
            .env_clear()
            .envs(&self.spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = crate::process::spawn(&mut cmd)
            .map_err(|e| format!("cannot start worker {program:?}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            kill_tree(&mut child);
            let _ = child.wait();
            crate::process::reaped(&child);
            return Err("worker started without pipes".into());
        };
        // At most one line waits in the channel: a worker flooding its stdout is read no
        // faster than the lines are handled.
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 16, stdout);
            loop {
                let mut line = Vec::new();
                let incoming = match read_bounded_line(&mut reader, &mut line, MAX_PROTOCOL_LINE) {
                    Ok(LineRead::Eof) | Err(_) => break,
                    Ok(LineRead::Line) => Incoming::Line(line),
                    Ok(LineRead::TooLong) => Incoming::TooLong,
                };
                let stop = matches!(incoming, Incoming::TooLong);
                if tx.send(incoming).is_err() || stop {
                    break;
                }
            }
        });
        if let Ok(mut g) = self.child.0.lock() {
            *g = Some(child);
        }
        self.stdin = Some(stdin);
        self.lines = Some(rx);
        let init = self.spec.init.clone();
        if let Err(e) = self.send(&init) {
            let why = self.death_reason();
            return Err(format!("could not send init: {e}; {why}"));
        }
        // Azure's first_task_creation_timeout (600 s), or the run timeout if that is longer.
        let init_timeout = self.spec.timeout.max(INIT_TIMEOUT);
        match self.recv(Some(init_timeout)) {
            Received::Message(m) => match m.get("type").and_then(Value::as_str) {
                Some("ready") => Ok(()),
                Some("init_failed") => {
                    let text = m
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("init failed")
                        .to_string();
                    self.stop_process();
                    Err(excerpt(text.as_bytes()))
                }
                _ => {
                    self.stop_process();
                    Err(format!(
                        "unexpected reply to init: {}",
                        excerpt(m.to_string().as_bytes())
                    ))
                }
            },
            Received::Eof => Err(format!(
                "worker exited during init: {}",
                self.death_reason()
            )),
            Received::Timeout => {
                self.stop_process();
                Err(format!(
                    "init() did not finish within {} s; the worker was killed",
                    init_timeout.as_secs()
                ))
            }
            Received::Cancelled => Err("cancelled".into()),
        }
    }

    fn send(&mut self, msg: &Value) -> std::io::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(std::io::Error::other("worker is not running"));
        };
        let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.flush()
    }

    fn recv(&mut self, timeout: Option<Duration>) -> Received {
        let Some(rx) = self.lines.as_ref() else {
            return Received::Eof;
        };
        let start = std::time::Instant::now();
        loop {
            if self.cancel.is_cancelled() {
                return Received::Cancelled;
            }
            let wait = Duration::from_millis(100);
            match rx.recv_timeout(wait) {
                Ok(Incoming::TooLong) => {
                    return Received::Message(json!({
                        "type": "protocol_error",
                        "error": format!("worker protocol line over {MAX_PROTOCOL_LINE} bytes"),
                    }))
                }
                Ok(Incoming::Line(line)) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return match serde_json::from_slice::<Value>(&line) {
                        Ok(v) => Received::Message(v),
                        Err(_) => Received::Message(json!({
                            "type": "protocol_error",
                            "error": format!("not a JSON line: {}", excerpt(line.trim_ascii_end())),
                        })),
                    };
                }
                Err(RecvTimeoutError::Disconnected) => return Received::Eof,
                Err(RecvTimeoutError::Timeout) => {
                    if timeout.is_some_and(|t| start.elapsed() >= t) {
                        return Received::Timeout;
                    }
                }
            }
        }
    }

    /// Exit status and the end of the worker's log, after it died.
    fn death_reason(&mut self) -> String {
        let status = self.child.0.lock().ok().and_then(|mut g| {
            let c = g.as_mut()?;
            for _ in 0..50 {
                if let Ok(Some(s)) = c.try_wait() {
                    return Some(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        self.stop_process();
        let what = match status {
            Some(s) => describe_status(s),
            None => "unknown status".to_string(),
        };
        let log = file_excerpt(&self.spec.log_path);
        if log.trim().is_empty() {
            what
        } else {
            format!("{what}; its log:\n{}", log.trim_end())
        }
    }

    /// A reply that breaks the protocol fails the try: the worker is stopped (it cannot be
    /// trusted with the next mini-batch) and `what` names the mini-batch and the field.
    fn protocol_violation(&mut self, what: String) -> TryOutcome {
        self.stop_process();
        TryOutcome::Died(format!("protocol error: {what}"))
    }

    fn stop_process(&mut self) {
        self.stdin = None;
        self.lines = None;
        if let Ok(mut g) = self.child.0.lock() {
            if let Some(mut c) = g.take() {
                kill_tree(&mut c);
                if c.wait().is_ok() {
                    crate::process::reaped(&c);
                }
            }
        }
    }
}

enum Received {
    Message(Value),
    Eof,
    Timeout,
    Cancelled,
}

fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("worker exited with code {c}"),
        (None, Some(sig)) => format!("worker killed by signal {sig}"),
        _ => "worker stopped".to_string(),
    }
}

/// What the stdout reader thread hands over.
enum Incoming {
    /// One line (newline included when there was one).
    Line(Vec<u8>),
    /// A line longer than [`MAX_PROTOCOL_LINE`]; nothing more is read.
    TooLong,
}

/// What [`read_bounded_line`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum LineRead {
    /// End of input, nothing read.
    Eof,
    /// A line (ending in a newline, or the last line of the input without one).
    Line,
    /// More than `max` bytes without a newline; `buf` holds `max + 1` of them.
    TooLong,
}

/// Read one line into `buf`, never more than `max` bytes plus its newline.
pub(crate) fn read_bounded_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let n = reader
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', buf)?;
    Ok(if n == 0 {
        LineRead::Eof
    } else if buf.last() == Some(&b'\n') || buf.len() <= max {
        LineRead::Line
    } else {
        LineRead::TooLong
    })
}

/// A path in a protocol message: a JSON string when it is valid UTF-8, else
/// `{"b64": "<standard base64 of its bytes>"}`, so names are passed exactly, never lossily.
pub(crate) fn path_value(path: &Path) -> Value {
    match path.to_str() {
        Some(s) => Value::String(s.to_string()),
        None => json!({ "b64": base64(path.as_os_str().as_bytes()) }),
    }
}

/// Standard base64 (RFC 4648, with padding).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `run` message for a mini-batch.
pub(crate) fn run_message(index: u64, spec: &MiniBatchSpec) -> Value {
    match spec {
        MiniBatchSpec::Files { files } => json!({
            "type": "run", "index": index, "kind": "files",
            "files": files.iter().map(|f| path_value(f)).collect::<Vec<_>>(),
        }),
        MiniBatchSpec::Tabular {
            segments,
            partition_key_value,
            ..
        } => json!({
            "type": "run", "index": index, "kind": "tabular",
            "segments": segments.iter().map(|s| json!({
                "path": path_value(&s.path),
                "format": s.format.as_str(),
                "header_end": s.header_end,
                "ranges": s.ranges,
            })).collect::<Vec<_>>(),
            "partition_key_value": partition_key_value,
        }),
    }
}

impl Worker for ProcessWorker {
    fn run(&mut self, index: u64, spec: &MiniBatchSpec) -> TryOutcome {
        if !self.alive() {
            if let Err(e) = self.start() {
                if self.cancel.is_cancelled() {
                    return TryOutcome::Cancelled;
                }
                return TryOutcome::InitFailed(e);
            }
        }
        if let Err(e) = self.send(&run_message(index, spec)) {
            return TryOutcome::Died(format!(
                "could not send mini-batch: {e}; {}",
                self.death_reason()
            ));
        }
        loop {
            match self.recv(Some(self.spec.timeout)) {
                Received::Message(m) => {
                    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                    let same = m.get("index").and_then(Value::as_u64) == Some(index);
                    match kind {
                        "result" if same => {
                            let collect_rows = self
                                .spec
                                .init
                                .get("collect_rows")
                                .and_then(Value::as_bool)
                                .unwrap_or(false);
                            // run() may return more elements than it was given (a frame
                            // that grew), so any count from 0 up is one.
                            let count = match m.get("count").and_then(Value::as_u64) {
                                Some(c) => c,
                                None => {
                                    let given = m
                                        .get("count")
                                        .map_or_else(|| "none".to_string(), Value::to_string);
                                    return self.protocol_violation(format!(
                                        "the result of mini-batch {index} has \"count\" {}, \
                                         not a number of items from 0 to {}",
                                        excerpt(given.as_bytes()),
                                        u64::MAX
                                    ));
                                }
                            };
                            let listed = m.get("rows").and_then(Value::as_array);
                            if collect_rows && listed.is_none() {
                                return self.protocol_violation(format!(
                                    "the result of mini-batch {index} has no \"rows\" list \
                                     (output_action append_row)"
                                ));
                            }
                            let mut rows = Vec::new();
                            for v in listed.into_iter().flatten() {
                                match v.as_str() {
                                    Some(s) => rows.extend_from_slice(s.as_bytes()),
                                    None => rows.extend_from_slice(v.to_string().as_bytes()),
                                }
                                rows.push(b'\n');
                            }
                            let columns = m.get("columns").and_then(Value::as_array).map(|a| {
                                a.iter()
                                    .map(|v| {
                                        v.as_str()
                                            .map(str::to_string)
                                            .unwrap_or_else(|| v.to_string())
                                    })
                                    .collect()
                            });
                            return TryOutcome::Ok {
                                count,
                                rows,
                                columns,
                            };
                        }
                        "error" if same => {
                            return TryOutcome::Raised(excerpt(
                                m.get("error")
                                    .and_then(Value::as_str)
                                    .unwrap_or("run() failed")
                                    .as_bytes(),
                            ))
                        }
                        "protocol_error" => {
                            let e = excerpt(
                                m.get("error")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .as_bytes(),
                            );
                            let why = self.death_reason();
                            return TryOutcome::Died(format!("protocol error: {e}; {why}"));
                        }
                        // A stale reply (to a try that timed out earlier) is skipped.
                        _ => continue,
                    }
                }
                Received::Eof => return TryOutcome::Died(self.death_reason()),
                Received::Timeout => {
                    self.stop_process();
                    return TryOutcome::TimedOut(self.spec.timeout.as_secs());
                }
                Received::Cancelled => {
                    self.stop_process();
                    return TryOutcome::Cancelled;
                }
            }
        }
    }

    fn shutdown(&mut self) {
        if self.alive() && self.send(&json!({"type": "shutdown"})).is_ok() {
            let _ = self.recv(Some(Duration::from_secs(10)));
        }
        self.stop_process();
    }
}

/// An in-process Rust entry instance.
pub(crate) struct RustWorker {
    factory: EntryFactory,
    ctx: EntryContext,
    instance: Option<Box<dyn EntryScript>>,
}

impl RustWorker {
    pub(crate) fn new(factory: EntryFactory, ctx: EntryContext) -> Self {
        RustWorker {
            factory,
            ctx,
            instance: None,
        }
    }
}

/// Rows as newline-terminated lines in one buffer; the rows are freed on this thread.
fn join_rows(rows: Vec<String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.iter().map(|r| r.len() + 1).sum());
    for r in rows {
        out.extend_from_slice(r.as_bytes());
        out.push(b'\n');
    }
    out
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Worker for RustWorker {
    fn run(&mut self, index: u64, spec: &MiniBatchSpec) -> TryOutcome {
        if self.instance.is_none() {
            let factory = self.factory.clone();
            let ctx = self.ctx.clone();
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let mut inst = factory();
                inst.init(&ctx).map(|()| inst).map_err(|e| e.to_string())
            }));
            match made {
                Ok(Ok(inst)) => self.instance = Some(inst),
                Ok(Err(e)) => return TryOutcome::InitFailed(excerpt(e.as_bytes())),
                Err(p) => {
                    return TryOutcome::InitFailed(format!(
                        "init panicked: {}",
                        excerpt(panic_text(p).as_bytes())
                    ))
                }
            }
        }
        let batch = match load(index, spec) {
            Ok(b) => b,
            Err(e) => return TryOutcome::Raised(excerpt(e.as_bytes())),
        };
        let Some(inst) = self.instance.as_mut() else {
            return TryOutcome::InitFailed("no entry instance".into());
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inst.run(&batch))) {
            Ok(Ok(rows)) => TryOutcome::Ok {
                count: rows.len() as u64,
                rows: join_rows(rows),
                columns: None,
            },
            Ok(Err(e)) => TryOutcome::Raised(excerpt(e.to_string().as_bytes())),
            Err(p) => {
                // A panicking instance is replaced, like a dead worker process.
                self.instance = None;
                TryOutcome::Died(format!(
                    "run panicked: {}",
                    excerpt(panic_text(p).as_bytes())
                ))
            }
        }
    }

    fn shutdown(&mut self) {
        if let Some(mut inst) = self.instance.take() {
            let _ = inst.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn paths_keep_their_exact_bytes_in_run_messages() {
        let a = PathBuf::from(OsStr::from_bytes(b"/d/a\xff.txt"));
        let b = PathBuf::from("/d/b.txt");
        let m = run_message(0, &MiniBatchSpec::Files { files: vec![a, b] });
        assert_eq!(
            m["files"],
            json!([{ "b64": base64(b"/d/a\xff.txt") }, "/d/b.txt"])
        );
    }

    #[test]
    fn lines_are_read_up_to_the_limit_and_never_further() {
        let mut input: &[u8] = b"ok\n0123456789tail\nlast";
        let mut buf = Vec::new();
        assert_eq!(
            read_bounded_line(&mut input, &mut buf, 5).ok(),
            Some(LineRead::Line)
        );
        assert_eq!(buf, b"ok\n");
        buf.clear();
        assert_eq!(
            read_bounded_line(&mut input, &mut buf, 5).ok(),
            Some(LineRead::TooLong)
        );
        assert_eq!(buf, b"012345", "max + 1 bytes read, no more");
        let mut input: &[u8] = b"12345\nabc";
        buf.clear();
        assert_eq!(
            read_bounded_line(&mut input, &mut buf, 5).ok(),
            Some(LineRead::Line),
            "exactly the limit plus its newline is fine"
        );
        buf.clear();
        assert_eq!(
            read_bounded_line(&mut input, &mut buf, 5).ok(),
            Some(LineRead::Line)
        );
        assert_eq!(buf, b"abc");
        buf.clear();
        assert_eq!(
            read_bounded_line(&mut input, &mut buf, 5).ok(),
            Some(LineRead::Eof)
        );
    }
}
