//! Workers: long-lived processes speaking the JSON-lines protocol (Python harness or any
//! program), or in-process Rust entry instances. A worker runs one mini-batch try at a time.

use fs_err::OpenOptions;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::Value;

use super::entry::{load, EntryContext, EntryFactory, EntryScript};
use super::partition::MiniBatchSpec;
use super::protocol::{self, Incoming, Init, LineRead, Reply, Request, Run, RunResult, Text};
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
    /// The remote worker's node or connection was lost before the try finished: `None`
    /// requeues the mini-batch (not counted as a try); `Some(reason)` fails the step (an
    /// agent cannot see a path, every node of the job was lost for good).
    Lost(Option<String>),
}

impl TryOutcome {
    /// The outcome of a `result` reply, from a process or an in-process entry: its rows
    /// joined into one buffer on the worker's thread.
    fn from_result(result: RunResult) -> Self {
        let rows = result.rows.unwrap_or_default();
        let mut joined = Vec::with_capacity(rows.iter().map(|r| r.0.len() + 1).sum());
        for row in rows {
            joined.extend_from_slice(row.0.as_bytes());
            joined.push(b'\n');
        }
        TryOutcome::Ok {
            count: result.count,
            rows: joined,
            columns: result.columns.map(|c| c.into_iter().map(|t| t.0).collect()),
        }
    }

    /// The outcome of an `error` reply (the text is kept as a bounded excerpt).
    fn raised(error: Option<&str>) -> Self {
        TryOutcome::Raised(excerpt(error.unwrap_or("run() failed").as_bytes()))
    }
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
    pub init: Init,
    pub timeout: Duration,
}

pub(crate) struct ProcessWorker {
    spec: ProcessSpec,
    child: KillHandle,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<Raw>>,
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

    fn start(&mut self) -> Result<(), StartError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)?;
        let Some((program, args)) = self.spec.argv.split_first() else {
            return Err(StartError::Empty);
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
            .stderr(Stdio::from(log.into_file()));
        let mut child = crate::process::spawn(&mut cmd).map_err(|source| StartError::Spawn {
            program: program.clone(),
            source,
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            kill_tree(&mut child);
            let _ = child.wait();
            crate::process::reaped(&child);
            return Err(StartError::NoPipes);
        };
        // At most one line waits in the channel: a worker flooding its stdout is read no
        // faster than the lines are handled.
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 16, stdout);
            loop {
                let mut line = Vec::new();
                let incoming = match protocol::read_line(&mut reader, &mut line, MAX_PROTOCOL_LINE)
                {
                    Ok(LineRead::Eof) | Err(_) => break,
                    Ok(LineRead::Line) => Raw::Line(line),
                    Ok(LineRead::TooLong) => Raw::TooLong,
                };
                let stop = matches!(incoming, Raw::TooLong);
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
        let init = Request::Init(self.spec.init.clone());
        if let Err(e) = self.send(&init) {
            let why = self.death_reason();
            return Err(StartError::Init(format!("could not send init: {e}; {why}")));
        }
        // Azure's first_task_creation_timeout (600 s), or the run timeout if that is longer.
        let init_timeout = self.spec.timeout.max(INIT_TIMEOUT);
        let unexpected = match self.recv(Some(init_timeout)) {
            Received::Reply(Reply::Ready { .. }) => return Ok(()),
            Received::Reply(Reply::InitFailed { error }) => {
                self.stop_process();
                return Err(StartError::Init(excerpt(
                    error.as_deref().unwrap_or("init failed").as_bytes(),
                )));
            }
            Received::Reply(reply) => serde_json::to_value(reply).unwrap_or_default(),
            Received::Other(value) => value,
            Received::Broken(error) => {
                serde_json::to_value(Reply::ProtocolError { error: Some(error) })
                    .unwrap_or_default()
            }
            Received::Eof => {
                return Err(StartError::Init(format!(
                    "worker exited during init: {}",
                    self.death_reason()
                )))
            }
            Received::Timeout => {
                self.stop_process();
                return Err(StartError::Init(format!(
                    "init() did not finish within {} s; the worker was killed",
                    init_timeout.as_secs()
                )));
            }
            Received::Cancelled => return Err(StartError::Init("cancelled".into())),
        };
        self.stop_process();
        Err(StartError::Init(format!(
            "unexpected reply to init: {}",
            excerpt(unexpected.to_string().as_bytes())
        )))
    }

    fn send(&mut self, msg: &Request) -> std::io::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(std::io::Error::other("worker is not running"));
        };
        protocol::write_line(stdin, msg)
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
                Ok(Raw::TooLong) => return Received::Broken(protocol::too_long()),
                Ok(Raw::Line(line)) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return match protocol::parse_reply(&line) {
                        Ok(Incoming::Reply(reply)) => Received::Reply(reply),
                        Ok(Incoming::Other(value)) => Received::Other(value),
                        Err(error) => Received::Broken(error.to_string()),
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

    /// The worker broke the protocol (a line too long or not JSON, or its own
    /// `protocol_error`): the try fails and the worker is stopped.
    fn broken(&mut self, error: &str) -> TryOutcome {
        let e = excerpt(error.as_bytes());
        let why = self.death_reason();
        TryOutcome::Died(format!("protocol error: {e}; {why}"))
    }

    /// The outcome of a `result` for the mini-batch being run. Its count was checked when
    /// it was read: run() may return more elements than it was given (a frame that grew), so
    /// any count from 0 up is one.
    fn finished(&mut self, result: RunResult) -> TryOutcome {
        if self.spec.init.collect_rows && result.rows.is_none() {
            return self.protocol_violation(format!(
                "the result of mini-batch {} has no \"rows\" list (output_action append_row)",
                result.index
            ));
        }
        TryOutcome::from_result(result)
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

/// What [`ProcessWorker::recv`] got.
enum Received {
    /// A reply of the protocol.
    Reply(Reply),
    /// A JSON line that is no reply (skipped while running, unless it is a broken result).
    Other(Value),
    /// A line too long or not JSON (the error says which).
    Broken(String),
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
enum Raw {
    /// One line (newline included when there was one).
    Line(Vec<u8>),
    /// A line longer than [`MAX_PROTOCOL_LINE`]; nothing more is read.
    TooLong,
}

/// Why a worker process could not be started.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// Its log file could not be opened (the message names it).
    #[error(transparent)]
    Log(#[from] std::io::Error),
    /// No program to run.
    #[error("the worker command is empty")]
    Empty,
    /// The program could not be started.
    #[error("cannot start worker {program:?}: {source}")]
    Spawn {
        /// The program.
        program: OsString,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// The process has no stdin or stdout pipe.
    #[error("worker started without pipes")]
    NoPipes,
    /// The worker's `init()` failed, or it did not answer `init` as the protocol says (a
    /// traceback, an exit status, a timeout).
    #[error("{0}")]
    Init(String),
}

impl Worker for ProcessWorker {
    fn run(&mut self, index: u64, spec: &MiniBatchSpec) -> TryOutcome {
        if !self.alive() {
            if let Err(e) = self.start() {
                if self.cancel.is_cancelled() {
                    return TryOutcome::Cancelled;
                }
                return TryOutcome::InitFailed(e.to_string());
            }
        }
        if let Err(e) = self.send(&Request::Run(Run::new(index, spec))) {
            return TryOutcome::Died(format!(
                "could not send mini-batch: {e}; {}",
                self.death_reason()
            ));
        }
        loop {
            let reply = match self.recv(Some(self.spec.timeout)) {
                Received::Reply(reply) => reply,
                Received::Other(value) => match protocol::bad_count(&value, index) {
                    Some(what) => return self.protocol_violation(what),
                    // A stale reply (to a try that timed out earlier) is skipped.
                    None => continue,
                },
                Received::Broken(e) => return self.broken(&e),
                Received::Eof => return TryOutcome::Died(self.death_reason()),
                Received::Timeout => {
                    self.stop_process();
                    return TryOutcome::TimedOut(self.spec.timeout.as_secs());
                }
                Received::Cancelled => {
                    self.stop_process();
                    return TryOutcome::Cancelled;
                }
            };
            match reply {
                Reply::Result(result) if result.index == index => return self.finished(result),
                Reply::Error { index: i, error } if i == index => {
                    return TryOutcome::raised(error.as_deref())
                }
                Reply::ProtocolError { error } => {
                    return self.broken(error.as_deref().unwrap_or_default())
                }
                // A stale reply (to a try that timed out earlier) is skipped.
                _ => continue,
            }
        }
    }

    fn shutdown(&mut self) {
        if self.alive() && self.send(&Request::Shutdown).is_ok() {
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
            Err(e) => return TryOutcome::Raised(excerpt(e.to_string().as_bytes())),
        };
        let Some(inst) = self.instance.as_mut() else {
            return TryOutcome::InitFailed("no entry instance".into());
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inst.run(&batch))) {
            Ok(Ok(rows)) => TryOutcome::from_result(RunResult {
                index,
                count: rows.len() as u64,
                rows: Some(rows.into_iter().map(Text).collect()),
                columns: None,
            }),
            Ok(Err(e)) => TryOutcome::raised(Some(&e.to_string())),
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
