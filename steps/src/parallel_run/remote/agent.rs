//! `stepgraph agent`: the program a Slurm job runs on each node. It connects to the
//! coordinator, proves it holds the run's token (and checks the coordinator does), receives
//! its workers' set-up, checks it can see the paths they need, starts them (the same
//! [`ProcessWorker`]s, harness and protocol as a local run) and relays mini-batches and
//! results until the coordinator says stop or the connection drops.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use stepgraph_engine::CancelFlag;

use super::super::protocol::Run;
use super::super::worker::{ProcessSpec, ProcessWorker, TryOutcome, Worker};
use super::auth::{nonce, Role, Token, TokenError};
use super::wire::{
    read_frame, spec_of, write_frame, Challenge, Hello, Proof, Setup, ToAgent, ToCoordinator,
    WireError, WireOutcome, AGENT_PROTOCOL, FRAME_LIMIT, HANDSHAKE_LIMIT,
};
use super::{node_name, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, PING_INTERVAL};
use crate::process::{ProcessTree, STEP_TOKEN_VAR};

/// How `stepgraph agent` is started.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The coordinator's `HOST:PORT`.
    pub connect: String,
    /// The run's token file (on the shared file system).
    pub token_file: PathBuf,
    /// The node's name in the logs (default: `SLURMD_NODENAME`, else the host's name).
    pub node: Option<String>,
}

/// Why an agent stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The token file cannot be read.
    #[error("token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The coordinator cannot be reached.
    #[error("cannot connect to the coordinator at {addr}: {source}")]
    Connect {
        /// `HOST:PORT`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The handshake failed (the coordinator's proof, its answer, the connection).
    #[error("handshake with the coordinator at {addr} failed: {why}")]
    Handshake {
        /// `HOST:PORT`.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The coordinator refused this agent.
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
    /// A path the workers need is not visible on this node.
    #[error("{0}")]
    Missing(String),
    /// The connection dropped before the coordinator said stop.
    #[error("connection to the coordinator lost: {0}")]
    Lost(String),
}

/// Run an agent until the coordinator says stop (`Ok`) or the connection drops.
///
/// # Errors
/// The token cannot be read, the coordinator cannot be reached or does not prove it holds the
/// token, a needed path is missing on this node, or the connection dropped.
pub fn run_agent(opts: &AgentOptions) -> Result<(), AgentError> {
    let token = Token::read(&opts.token_file).map_err(|e| AgentError::Token {
        path: opts.token_file.clone(),
        source: match e {
            TokenError::Io(io) => Box::new(io),
            other => Box::new(other),
        },
    })?;
    let node = opts.node.clone().unwrap_or_else(node_name);
    let hs = |why: String| AgentError::Handshake {
        addr: opts.connect.clone(),
        why,
    };
    // A connection closed or timed out during the handshake (the coordinator busy with a
    // flood of other connections) is tried again, for about half a minute.
    let mut attempt = 0u64;
    let (mut stream, setup) = loop {
        let mut stream = connect(&opts.connect)?;
        match handshake(&mut stream, &token, &node) {
            Ok(setup) => break (stream, setup),
            Err(Handshake::Refused(r)) => return Err(AgentError::Refused(r)),
            Err(Handshake::Fatal(why)) => return Err(hs(why)),
            Err(Handshake::Other(why)) if attempt >= 10 => return Err(hs(why)),
            Err(Handshake::Other(_)) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis((500 * attempt).min(3000)));
            }
        }
    };
    let log = AgentLog::open(&setup.log_dir.0, &setup.node);
    log.line(&format!(
        "agent pid {} on {node} connected to {} as node slot {} ({})",
        std::process::id(),
        opts.connect,
        setup.slot,
        setup.node
    ));
    let writer = Arc::new(Mutex::new(
        stream
            .try_clone()
            .map_err(|e| hs(format!("cannot share the connection: {e}")))?,
    ));
    if let Some(missing) = missing_path(&setup) {
        let message = format!("agent on node {}: {missing}", setup.node);
        log.line(&message);
        let _ = send(
            &writer,
            &ToCoordinator::Fatal {
                message: message.clone(),
            },
            &[],
        );
        return Err(AgentError::Missing(message));
    }
    let tree = ProcessTree::new();
    let cancel = CancelFlag::new();
    let mut slots: Vec<Sender<(u64, u64, Run)>> = Vec::new();
    let mut threads = Vec::new();
    for (p, wp) in setup.processes.iter().enumerate() {
        let spec = process_spec(&setup, wp, &tree);
        if let Some(parent) = spec.log_path.parent() {
            let _ = fs_err::create_dir_all(parent);
        }
        let (tx, rx) = unbounded::<(u64, u64, Run)>();
        slots.push(tx);
        let (writer, cancel, log) = (writer.clone(), cancel.clone(), log.clone());
        threads.push(std::thread::spawn(move || {
            let mut worker = ProcessWorker::new(spec, cancel);
            for (index, items, run) in rx.iter() {
                let began = Instant::now();
                let outcome = worker.run(index, &spec_of(&run, items));
                // The worker's own time, beside the coordinator's round trip in
                // logs/sys/node/<slot>/ (bench/slurm.sh compares them).
                log.line(&format!(
                    "mini-batch {index} on process {p}: {} in {:.4} s",
                    match &outcome {
                        TryOutcome::Ok { .. } => "done",
                        _ => "not done",
                    },
                    began.elapsed().as_secs_f64()
                ));
                let (outcome, blob) = WireOutcome::of(outcome);
                let done = ToCoordinator::Done {
                    process: p,
                    index,
                    outcome,
                };
                if send(&writer, &done, &blob).is_err() {
                    break;
                }
            }
            worker.shutdown();
        }));
    }
    if let Err(e) = send(&writer, &ToCoordinator::Ready, &[]) {
        cancel.cancel();
        return Err(AgentError::Lost(e.to_string()));
    }
    let pinger = {
        let (writer, cancel) = (writer.clone(), cancel.clone());
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let t = std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(PING_INTERVAL)
            {
                if cancel.is_cancelled() || send(&writer, &ToCoordinator::Ping, &[]).is_err() {
                    break;
                }
            }
        });
        (stop_tx, t)
    };
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let ended = loop {
        match read_frame::<_, ToAgent>(&mut stream, FRAME_LIMIT) {
            Ok((
                ToAgent::Run {
                    process,
                    items,
                    run,
                },
                _,
            )) => {
                let index = run.index;
                match slots.get(process) {
                    Some(tx) => {
                        let _ = tx.send((index, items, run));
                    }
                    None => break Err(format!("no process {process} on this agent")),
                }
            }
            Ok((ToAgent::Ping, _)) => {}
            Ok((ToAgent::Shutdown, _)) => break Ok(()),
            Ok((other, _)) => break Err(format!("unexpected message {other:?}")),
            Err(e) => break Err(e.to_string()),
        }
    };
    if ended.is_err() {
        // The coordinator is gone: stop the workers now (their tries are requeued elsewhere).
        cancel.cancel();
    }
    drop(slots);
    for t in threads {
        let _ = t.join();
    }
    drop(pinger.0);
    let _ = pinger.1.join();
    drop(tree);
    match ended {
        Ok(()) => {
            log.line("coordinator said stop: workers shut down");
            let _ = stream.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Err(why) => {
            log.line(&format!("connection lost: {why}; workers stopped"));
            Err(AgentError::Lost(why))
        }
    }
}

/// Connect, trying each address of `addr` for a while (the coordinator listens before the job
/// is submitted, but a name may take a moment to resolve on a fresh node).
fn connect(addr: &str) -> Result<TcpStream, AgentError> {
    let err = |source| AgentError::Connect {
        addr: addr.to_string(),
        source,
    };
    let mut last = std::io::Error::other("no address");
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 * attempt));
        }
        let addrs = match addr.to_socket_addrs() {
            Ok(a) => a,
            Err(e) => {
                last = e;
                continue;
            }
        };
        for a in addrs {
            match TcpStream::connect_timeout(&a, HANDSHAKE_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
    }
    Err(err(last))
}

enum Handshake {
    /// The coordinator refused this agent (its reason).
    Refused(String),
    /// The coordinator did not prove it holds the token: never tried again.
    Fatal(String),
    /// The connection closed or timed out: worth another try.
    Other(String),
}

impl From<WireError> for Handshake {
    fn from(e: WireError) -> Self {
        Handshake::Other(e.to_string())
    }
}

/// Hello, check the coordinator's proof, prove ours, get the set-up.
fn handshake(stream: &mut TcpStream, token: &Token, node: &str) -> Result<Setup, Handshake> {
    let other = |e: std::io::Error| Handshake::Other(e.to_string());
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(other)?;
    let mine = nonce().map_err(other)?;
    let hello = Hello {
        protocol: AGENT_PROTOCOL,
        nonce: mine.clone(),
        node: node.to_string(),
        pid: std::process::id(),
    };
    write_frame(stream, &hello, &[])?;
    let (challenge, _): (Challenge, _) = read_frame(stream, HANDSHAKE_LIMIT)?;
    if !token.verify(Role::Coordinator, &mine, &challenge.nonce, &challenge.proof) {
        return Err(Handshake::Fatal(
            "the coordinator did not prove it holds the run's token; not starting its workers"
                .into(),
        ));
    }
    let proof = Proof {
        proof: token.prove(Role::Agent, &mine, &challenge.nonce),
    };
    write_frame(stream, &proof, &[])?;
    // The set-up carries every worker's environment: the authenticated limit applies.
    let (answer, _): (ToAgent, _) = read_frame(stream, FRAME_LIMIT)?;
    match answer {
        ToAgent::Setup(setup) => Ok(setup),
        ToAgent::Refused { reason } => Err(Handshake::Refused(reason)),
        other => Err(Handshake::Other(format!("unexpected answer {other:?}"))),
    }
}

fn send(writer: &Mutex<TcpStream>, message: &ToCoordinator, blob: &[u8]) -> Result<(), WireError> {
    let mut w = writer
        .lock()
        .map_err(|_| WireError::Io(std::io::Error::other("writer poisoned")))?;
    write_frame(&mut *w, message, blob)
}

/// The first needed path this node cannot see, described.
fn missing_path(setup: &Setup) -> Option<String> {
    for need in &setup.needs {
        if let Err(e) = fs_err::metadata(&need.path.0) {
            return Some(format!(
                "cannot see the {} at {}: {} (is it on a file system shared with the \
                 coordinator's host?)",
                need.what,
                need.path.0.display(),
                e.kind()
            ));
        }
    }
    None
}

/// The worker's spec on this node: its logs under the node's name, this node's process tree
/// and Slurm's variables on top of the step's environment.
fn process_spec(setup: &Setup, wp: &super::wire::WireProcess, tree: &ProcessTree) -> ProcessSpec {
    let mut env: BTreeMap<OsString, OsString> = super::wire::env_from_wire(&wp.env);
    env.insert(STEP_TOKEN_VAR.into(), tree.token().into());
    env.insert("STEPGRAPH_NODE_ID".into(), setup.node.clone().into());
    for (k, v) in std::env::vars_os() {
        let b = k.as_encoded_bytes();
        if b.starts_with(b"SLURM_") || b == b"SLURMD_NODENAME" {
            env.insert(k, v);
        }
    }
    let process = env
        .get(std::ffi::OsStr::new("STEPGRAPH_PROCESS_NAME"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("worker-{}", wp.worker));
    let log_path = setup
        .log_dir
        .0
        .join("user")
        .join("stderr")
        .join(&setup.node)
        .join(format!("{process}.stderr.txt"));
    ProcessSpec {
        argv: wp
            .argv
            .iter()
            .map(|a| a.0.clone().into_os_string())
            .collect(),
        cwd: wp.cwd.0.clone(),
        env,
        log_path,
        init: wp.init.clone(),
        timeout: Duration::from_millis(wp.timeout_ms),
    }
}

/// `logs/sys/node/<node>/agent.txt`: what the agent did (best effort), each line stamped
/// with Unix milliseconds.
#[derive(Clone)]
struct AgentLog {
    file: Option<Arc<Mutex<fs_err::File>>>,
}

impl AgentLog {
    fn open(log_dir: &Path, node: &str) -> Self {
        let dir = log_dir.join("sys").join("node").join(node);
        let file = fs_err::create_dir_all(&dir).ok().and_then(|()| {
            fs_err::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("agent.txt"))
                .ok()
        });
        AgentLog {
            file: file.map(|f| Arc::new(Mutex::new(f))),
        }
    }

    fn line(&self, text: &str) {
        if let Some(Ok(mut f)) = self.file.as_ref().map(|f| f.lock()) {
            let _ = writeln!(f, "{} {text}", super::unix_ms());
        }
    }
}
