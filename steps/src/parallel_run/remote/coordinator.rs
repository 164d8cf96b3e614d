//! The coordinator's side: a listener for the step's lifetime, the handshake, one link per
//! agent, and [`RemoteWorker`]s — the dispatcher's `Worker`s, one per agent process slot — so
//! retries, limits, commits and gathering stay the dispatcher's, exactly as in a local run.
//!
//! Node slots: the job has `node_count` nodes; an agent that authenticates takes the first
//! free slot. A lost agent's in-flight tries come back as `TryOutcome::Lost` (requeued, not a
//! try) and its slot's workers send later mini-batches to a live agent's process of the same
//! number (queued there behind that process's own). When every node is lost the job is
//! resubmitted, at most [`MAX_RESUBMITS`] times; then the step fails naming the job and its
//! state.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use stepgraph_engine::CancelFlag;

use super::super::partition::MiniBatchSpec;
use super::super::protocol::Run;
use super::super::worker::{TryOutcome, Worker};
use super::auth::{nonce, Role, Token};
use super::launch::{AgentCommand, JobState, Launcher};
use super::wire::{
    read_frame, write_frame, Challenge, Hello, NeededPath, Proof, Setup, ToAgent, ToCoordinator,
    WireError, WireProcess, AGENT_PROTOCOL, FRAME_LIMIT, HANDSHAKE_LIMIT,
};
use super::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, PING_INTERVAL};

/// How long after the first agent is ready a node whose agent has not come is given up on
/// (its workers then send their mini-batches to the agents that came).
const AGENT_START_GRACE: Duration = Duration::from_secs(60);

/// Connections in their handshake at once; more are closed at once (and logged).
const MAX_HANDSHAKES: usize = 64;

/// How many times a job whose nodes were all lost is submitted again.
pub(crate) const MAX_RESUBMITS: u32 = 2;

/// What the agents are given.
pub(crate) struct Plan {
    /// Every worker process, in worker order (`node_count × per_node`).
    pub(crate) processes: Vec<WireProcess>,
    /// Processes per node.
    pub(crate) per_node: usize,
    /// Nodes.
    pub(crate) node_count: usize,
    /// The step's `logs/`.
    pub(crate) log_dir: PathBuf,
    /// Paths each agent checks first.
    pub(crate) needs: Vec<NeededPath>,
    /// Each worker's tries run only on its own node's process (an incremental summary_only
    /// step takes a worker's files from that process's own folder): a lost node's tries are
    /// handed back for the live nodes' workers instead of being sent to another node.
    pub(crate) pinned: bool,
}

impl Plan {
    /// `2 nodes × 1 process`.
    fn shape(&self) -> String {
        let nodes = match self.node_count {
            1 => "1 node".to_string(),
            n => format!("{n} nodes"),
        };
        let processes = match self.per_node {
            1 => "1 process".to_string(),
            n => format!("{n} processes"),
        };
        format!("{nodes} × {processes}")
    }
}

/// One agent's connection.
struct Link {
    /// Its node's name.
    name: String,
    /// Its node slot.
    slot: usize,
    writer: Mutex<TcpStream>,
    /// Tries in flight on it, by mini-batch.
    waiting: Mutex<HashMap<u64, Sender<TryOutcome>>>,
    alive: AtomicBool,
}

impl Link {
    /// The link is gone: tries waiting on it get `Lost`.
    fn lose(&self) {
        self.alive.store(false, Ordering::SeqCst);
        if let Ok(w) = self.writer.lock() {
            let _ = w.shutdown(Shutdown::Both);
        }
        if let Ok(mut w) = self.waiting.lock() {
            w.clear();
        }
    }

    fn send(&self, message: &ToAgent) -> Result<(), WireError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| WireError::Io(std::io::Error::other("writer poisoned")))?;
        write_frame(&mut *w, message, &[])
    }
}

enum Node {
    /// No agent yet.
    Waiting,
    /// An agent authenticated and got its set-up; not ready yet.
    Starting,
    Live(Arc<Link>),
    /// Lost (why).
    Dead(String),
}

struct State {
    nodes: Vec<Node>,
    /// Set when the step must fail (an agent cannot see a path, the job is lost for good).
    fatal: Option<String>,
    closed: bool,
    /// The job's name (`Slurm job 123`).
    job: String,
    submissions: u32,
    /// When the first agent became ready.
    first_live: Option<Instant>,
    names: BTreeSet<String>,
    links: Vec<Arc<Link>>,
}

pub(crate) struct Shared {
    plan: Plan,
    token: Token,
    cancel: CancelFlag,
    cmd: AgentCommand,
    state: Mutex<State>,
    changed: Condvar,
    launcher: Mutex<Box<dyn Launcher>>,
    /// `logs/sys/agents.txt`.
    log: Mutex<Option<fs_err::File>>,
    /// Messages for the run's progress.
    notices: Sender<String>,
    /// Connections in their handshake.
    handshakes: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, text: &str) {
        if let Ok(mut g) = self.log.lock() {
            if let Some(f) = g.as_mut() {
                let _ = writeln!(f, "{} {text}", super::unix_ms());
            }
        }
    }

    fn notice(&self, text: String) {
        self.log(&text);
        let _ = self.notices.send(text);
    }

    fn launcher(&self) -> MutexGuard<'_, Box<dyn Launcher>> {
        self.launcher.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a loss: when no node is left, resubmit the job or fail the step.
    fn after_loss(&self) {
        let mut st = self.state();
        if st.closed || st.fatal.is_some() || self.cancel.is_cancelled() {
            return;
        }
        if !st.nodes.iter().all(|n| matches!(n, Node::Dead(_))) {
            return;
        }
        let last = st
            .nodes
            .iter()
            .find_map(|n| match n {
                Node::Dead(why) => Some(why.clone()),
                _ => None,
            })
            .unwrap_or_default();
        // The job usually ends a moment after its last agent: say its final state then.
        let mut job_state = self.launcher().state();
        let until = Instant::now() + Duration::from_secs(3);
        while matches!(job_state, JobState::Running) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            job_state = self.launcher().state();
        }
        let job_state = match job_state {
            JobState::Queued(s) | JobState::Ended(s) | JobState::Hopeless(s) => s,
            JobState::Running => "RUNNING".into(),
        };
        if st.submissions > MAX_RESUBMITS {
            st.fatal = Some(format!(
                "all {} nodes of {} were lost (its state: {job_state}); it was submitted {} times; last loss: {last}",
                st.nodes.len(),
                st.job,
                st.submissions
            ));
            self.log(st.fatal.as_deref().unwrap_or_default());
            self.changed.notify_all();
            return;
        }
        let old = st.job.clone();
        let mut launcher = self.launcher();
        launcher.cancel();
        match launcher.submit(&self.cmd) {
            Ok(job) => {
                st.submissions += 1;
                st.job = job.clone();
                for n in &mut st.nodes {
                    *n = Node::Waiting;
                }
                drop(launcher);
                drop(st);
                self.notice(format!(
                    "every node of {old} was lost ({job_state}; last: {last}): resubmitted as {job}"
                ));
            }
            Err(e) => {
                st.fatal = Some(format!(
                    "every node of {old} was lost ({job_state}; last: {last}) and it could not be resubmitted: {e}"
                ));
            }
        }
        self.changed.notify_all();
    }

    /// A live link for node slot `slot`: its own agent's, or (its node lost) another live
    /// one's; waits while none is ready.
    fn link_for(&self, slot: usize) -> Result<Arc<Link>, TryOutcome> {
        let mut st = self.state();
        loop {
            if self.cancel.is_cancelled() {
                return Err(TryOutcome::Cancelled);
            }
            if st.submissions == 0 && st.fatal.is_none() {
                self.submit_first(&mut st);
            }
            if let Some(f) = &st.fatal {
                return Err(TryOutcome::Lost(Some(f.clone())));
            }
            let n = st.nodes.len();
            // A node whose agent never came (its task failed to start) while others work:
            // its workers use theirs.
            let given_up = st
                .first_live
                .is_some_and(|t| t.elapsed() >= AGENT_START_GRACE);
            match st.nodes.get(slot) {
                Some(Node::Live(l)) if l.alive.load(Ordering::SeqCst) => return Ok(l.clone()),
                Some(Node::Waiting) if !given_up => {}
                Some(Node::Dead(_) | Node::Waiting) if self.plan.pinned => {
                    // Not counted as a try; a live node's worker takes it from the queue.
                    drop(st);
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(TryOutcome::Lost(None));
                }
                Some(Node::Dead(_) | Node::Waiting) => {
                    let other = (1..n).find_map(|k| match &st.nodes[(slot + k) % n] {
                        Node::Live(l) if l.alive.load(Ordering::SeqCst) => Some(l.clone()),
                        _ => None,
                    });
                    if let Some(l) = other {
                        return Ok(l);
                    }
                }
                _ => {}
            }
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Submit the job (the first time a worker needs it).
    fn submit_first(&self, st: &mut State) {
        self.log("submitting the agents' job");
        let submitted = self.launcher().submit(&self.cmd);
        match submitted {
            Ok(job) => {
                st.job = job.clone();
                st.submissions = 1;
                self.notice(format!(
                    "submitted {job}: {}, agents connect to {}",
                    self.plan.shape(),
                    self.cmd.addr
                ));
            }
            Err(e) => st.fatal = Some(format!("cannot submit the agents' job: {e}")),
        }
    }

    /// Stop: no more connections; the agents are told to stop (or cut off when the run
    /// failed or was cancelled) and the job is cancelled.
    fn close(&self) {
        let (links, abrupt) = {
            let mut st = self.state();
            st.closed = true;
            (
                st.links.clone(),
                st.fatal.is_some() || self.cancel.is_cancelled(),
            )
        };
        self.changed.notify_all();
        if !abrupt {
            for l in &links {
                if l.alive.load(Ordering::SeqCst) {
                    let _ = l.send(&ToAgent::Shutdown);
                }
            }
            // The agents close their end once their workers have shut down.
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until && links.iter().any(|l| l.alive.load(Ordering::SeqCst)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for l in &links {
            l.lose();
        }
        self.launcher().cancel();
        let _ = fs_err::remove_file(&self.cmd.token_file);
        let st = self.state();
        self.log(&format!(
            "closed: {} ({} submissions){}",
            st.job,
            st.submissions,
            if abrupt { ", cut off" } else { "" }
        ));
        let mut nodes: Vec<&str> = Vec::new();
        for l in &st.links {
            if !nodes.contains(&l.name.as_str()) {
                nodes.push(&l.name);
            }
        }
        let resubmitted = match st.submissions {
            0 | 1 => String::new(),
            n => format!(" (submitted {n} times: every node was lost)"),
        };
        let _ = fs_err::write(
            self.plan.log_dir.join("sys").join("compute.txt"),
            format!(
                "compute: {}{resubmitted}, {}; agents on {}\n",
                st.job,
                self.plan.shape(),
                if nodes.is_empty() {
                    "no node".to_string()
                } else {
                    nodes.join(", ")
                },
            ),
        );
    }
}

/// Dropped when the last worker is: closes the listener, the links and the job.
pub(crate) struct Lease(pub(crate) Arc<Shared>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Everything needed to start the agents.
pub(crate) struct Start {
    pub(crate) plan: Plan,
    pub(crate) token: Token,
    pub(crate) cancel: CancelFlag,
    pub(crate) listener: TcpListener,
    pub(crate) cmd: AgentCommand,
    pub(crate) launcher: Box<dyn Launcher>,
    pub(crate) notices: Sender<String>,
}

/// Listen and return the workers (one per agent process slot); the job is submitted when the
/// first of them gets a mini-batch (a step whose mini-batches were all resumed submits none).
pub(crate) fn start(s: Start) -> Result<Vec<RemoteWorker>, String> {
    let log = fs_err::create_dir_all(s.plan.log_dir.join("sys"))
        .ok()
        .and_then(|()| {
            fs_err::OpenOptions::new()
                .create(true)
                .append(true)
                .open(s.plan.log_dir.join("sys").join("agents.txt"))
                .ok()
        });
    let (node_count, per_node) = (s.plan.node_count, s.plan.per_node);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            nodes: (0..node_count).map(|_| Node::Waiting).collect(),
            fatal: None,
            closed: false,
            job: String::new(),
            submissions: 0,
            first_live: None,
            names: BTreeSet::new(),
            links: Vec::new(),
        }),
        plan: s.plan,
        token: s.token,
        cancel: s.cancel,
        cmd: s.cmd,
        changed: Condvar::new(),
        launcher: Mutex::new(s.launcher),
        log: Mutex::new(log),
        notices: s.notices,
        handshakes: AtomicUsize::new(0),
    });
    s.listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    shared.log(&format!(
        "listening on {} for {}",
        shared.cmd.addr,
        shared.plan.shape()
    ));
    let lease = Arc::new(Lease(shared.clone()));
    {
        let shared = shared.clone();
        let listener = s.listener;
        std::thread::spawn(move || accept_loop(&shared, &listener));
    }
    {
        let shared = shared.clone();
        std::thread::spawn(move || monitor(&shared));
    }
    let workers = (0..node_count * per_node)
        .map(|w| RemoteWorker {
            lease: lease.clone(),
            slot: w / per_node.max(1),
            process: w % per_node.max(1),
        })
        .collect();
    Ok(workers)
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        if shared.state().closed {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                // A flood of connections costs at most MAX_HANDSHAKES threads and buffers.
                if shared.handshakes.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
                    shared.handshakes.fetch_sub(1, Ordering::SeqCst);
                    shared.log(&format!(
                        "refused connection from {peer}: {MAX_HANDSHAKES} handshakes under way"
                    ));
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                let shared = shared.clone();
                std::thread::spawn(move || {
                    admit(&shared, stream, peer);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                shared.log(&format!("accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Watch the job while nodes wait for their agents: a job that ended first loses them.
fn monitor(shared: &Arc<Shared>) {
    let mut said = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let waiting = {
            let st = shared.state();
            if st.closed {
                return;
            }
            st.submissions > 0 && st.nodes.iter().any(|n| matches!(n, Node::Waiting))
        };
        if !waiting {
            continue;
        }
        let state = shared.launcher().state();
        match state {
            JobState::Queued(why) => {
                if why != said {
                    let job = shared.state().job.clone();
                    shared.notice(format!("{job} waiting in the queue ({why})"));
                    said = why;
                }
            }
            JobState::Running => {}
            JobState::Hopeless(why) => {
                let mut st = shared.state();
                let job = st.job.clone();
                st.fatal.get_or_insert(format!(
                    "{job} cannot start: it is pending for a reason that never clears ({why}): \
                     it asks for more than the partition, account or QOS allows (see the \
                     compute target's settings); it was cancelled"
                ));
                drop(st);
                shared.log(&format!("{job}: {why}: given up"));
                shared.changed.notify_all();
                return;
            }
            JobState::Ended(how) => {
                {
                    let mut st = shared.state();
                    let job = st.job.clone();
                    for n in &mut st.nodes {
                        if matches!(n, Node::Waiting) {
                            *n = Node::Dead(format!(
                                "{job} ended ({how}) before an agent connected for this node"
                            ));
                        }
                    }
                }
                shared.log(&format!("job ended while nodes waited: {how}"));
                shared.changed.notify_all();
                shared.after_loss();
            }
        }
    }
}

/// Refuse a connection: say why in the log (and to the peer, without detail). No link.
fn refuse(
    shared: &Shared,
    mut stream: TcpStream,
    peer: SocketAddr,
    why: &str,
    tell: &str,
) -> Option<(Arc<Link>, TcpStream)> {
    shared.log(&format!("refused connection from {peer}: {why}"));
    let _ = write_frame(
        &mut stream,
        &ToAgent::Refused {
            reason: tell.to_string(),
        },
        &[],
    );
    let _ = stream.shutdown(Shutdown::Both);
    None
}

/// The handshake of one connection, then its link.
fn admit(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let link = handshake(shared, stream, peer);
    shared.handshakes.fetch_sub(1, Ordering::SeqCst);
    if let Some((link, stream)) = link {
        read_loop(shared, &link, stream);
    }
}

/// The handshake of one connection: its link when the agent authenticated and got its
/// set-up.
fn handshake(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(Arc<Link>, TcpStream)> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    // One deadline for the whole handshake, not one per read.
    let mut limited = stream.try_clone().ok()?;
    let mut reader = super::wire::Deadline::new(&mut limited, HANDSHAKE_TIMEOUT);
    let hello: Hello = match read_frame(&mut reader, HANDSHAKE_LIMIT) {
        Ok((h, _)) => h,
        Err(e) => {
            shared.log(&format!("refused connection from {peer}: no hello: {e}"));
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
    };
    if hello.protocol != AGENT_PROTOCOL {
        let why = format!(
            "agent protocol {} (this stepgraph speaks {AGENT_PROTOCOL})",
            hello.protocol
        );
        return refuse(shared, stream, peer, &why, &why);
    }
    let Ok(mine) = nonce() else {
        return refuse(shared, stream, peer, "no random nonce", "internal error");
    };
    let challenge = Challenge {
        proof: shared.token.prove(Role::Coordinator, &hello.nonce, &mine),
        nonce: mine.clone(),
    };
    if write_frame(&mut stream, &challenge, &[]).is_err() {
        return None;
    }
    let proof: Proof = match read_frame(&mut reader, HANDSHAKE_LIMIT) {
        Ok((p, _)) => p,
        Err(e) => {
            shared.log(&format!("refused connection from {peer}: no proof: {e}"));
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
    };
    if !shared
        .token
        .verify(Role::Agent, &hello.nonce, &mine, &proof.proof)
    {
        let why = format!(
            "wrong token (agent said node {:?}, pid {})",
            crate::process::escape_controls(&hello.node),
            hello.pid
        );
        return refuse(shared, stream, peer, &why, "authentication failed");
    }
    // Authenticated: take a node slot.
    let (slot, name) = {
        let mut st = shared.state();
        if st.closed {
            drop(st);
            return refuse(shared, stream, peer, "the step is over", "the step is over");
        }
        let Some(slot) = st.nodes.iter().position(|n| matches!(n, Node::Waiting)) else {
            drop(st);
            return refuse(
                shared,
                stream,
                peer,
                "no free node slot",
                "no free node slot",
            );
        };
        st.nodes[slot] = Node::Starting;
        let base = super::safe_node_name(&hello.node);
        let mut name = base.clone();
        let mut k = 1;
        while st.names.contains(&name) {
            name = format!("{base}-{k}");
            k += 1;
        }
        st.names.insert(name.clone());
        (slot, name)
    };
    let plan = &shared.plan;
    let per = plan.per_node;
    let setup = Setup {
        slot,
        node: name.clone(),
        log_dir: super::super::protocol::WirePath(plan.log_dir.clone()),
        processes: plan.processes[slot * per..(slot + 1) * per].to_vec(),
        needs: plan.needs.clone(),
    };
    let _ = stream.set_write_timeout(None);
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            shared.state().nodes[slot] = Node::Waiting;
            shared.log(&format!("connection from {peer}: {e}"));
            return None;
        }
    };
    let link = Arc::new(Link {
        name: name.clone(),
        slot,
        writer: Mutex::new(writer),
        waiting: Mutex::new(HashMap::new()),
        alive: AtomicBool::new(true),
    });
    shared.state().links.push(link.clone());
    shared.log(&format!(
        "agent pid {} on node {name} ({peer}) authenticated: node slot {slot}",
        hello.pid
    ));
    if let Err(e) = link.send(&ToAgent::Setup(setup)) {
        lost(shared, &link, &format!("cannot send its set-up: {e}"));
        return None;
    }
    Some((link, stream))
}

/// What one agent sends, until its connection ends.
fn read_loop(shared: &Arc<Shared>, link: &Arc<Link>, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let pinger = {
        let link = link.clone();
        std::thread::spawn(move || {
            while link.alive.load(Ordering::SeqCst) {
                std::thread::sleep(PING_INTERVAL);
                if link.alive.load(Ordering::SeqCst) && link.send(&ToAgent::Ping).is_err() {
                    break;
                }
            }
        })
    };
    let why = loop {
        match read_frame::<_, ToCoordinator>(&mut stream, FRAME_LIMIT) {
            Ok((ToCoordinator::Ready, _)) => {
                let per = shared.plan.per_node;
                let first = link.slot * per;
                {
                    let mut st = shared.state();
                    st.nodes[link.slot] = Node::Live(link.clone());
                    st.first_live.get_or_insert_with(Instant::now);
                }
                shared.changed.notify_all();
                let workers = match per {
                    1 => format!("worker-{first}"),
                    _ => format!("worker-{first}..worker-{}", first + per - 1),
                };
                shared.notice(format!("node {}: {workers} ready", link.name));
            }
            Ok((ToCoordinator::Fatal { message }, _)) => {
                let mut st = shared.state();
                st.fatal.get_or_insert(message.clone());
                drop(st);
                shared.log(&message);
                shared.changed.notify_all();
                break message;
            }
            Ok((ToCoordinator::Done { index, outcome, .. }, blob)) => {
                let tx = link.waiting.lock().ok().and_then(|mut w| w.remove(&index));
                if let Some(tx) = tx {
                    let _ = tx.send(outcome.into_outcome(blob));
                }
            }
            Ok((ToCoordinator::Ping, _)) => {}
            Err(e) => break e.to_string(),
        }
    };
    lost(shared, link, &why);
    let _ = pinger.join();
}

/// A link ended: its tries are lost, its node is dead (unless the step is over).
fn lost(shared: &Arc<Shared>, link: &Arc<Link>, why: &str) {
    link.lose();
    let was_up = {
        let mut st = shared.state();
        let up = !st.closed
            && match &st.nodes[link.slot] {
                Node::Live(l) => Arc::ptr_eq(l, link),
                Node::Starting => true,
                Node::Waiting | Node::Dead(_) => false,
            };
        if up {
            st.nodes[link.slot] = Node::Dead(format!("node {}: {why}", link.name));
            // The node may come back in a resubmitted job under its own name.
            st.names.remove(&link.name);
        }
        up
    };
    shared.changed.notify_all();
    if !was_up {
        return;
    }
    shared.notice(format!(
        "node {} lost ({why}): its mini-batches are requeued on the other nodes",
        link.name
    ));
    shared.after_loss();
}

/// A worker of the dispatcher whose tries run on an agent's process.
pub(crate) struct RemoteWorker {
    lease: Arc<Lease>,
    slot: usize,
    process: usize,
}

impl Worker for RemoteWorker {
    fn run(&mut self, index: u64, spec: &MiniBatchSpec) -> TryOutcome {
        let shared = &self.lease.0;
        let link = match shared.link_for(self.slot) {
            Ok(l) => l,
            Err(outcome) => return outcome,
        };
        let (tx, rx) = bounded(1);
        if let Ok(mut w) = link.waiting.lock() {
            w.insert(index, tx);
        }
        let run = ToAgent::Run {
            process: self.process,
            items: spec.item_count(),
            run: Run::new(index, spec),
        };
        if !link.alive.load(Ordering::SeqCst) || link.send(&run).is_err() {
            link.lose();
            return TryOutcome::Lost(None);
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(outcome) => return outcome,
                Err(RecvTimeoutError::Disconnected) => return TryOutcome::Lost(None),
                Err(RecvTimeoutError::Timeout) => {
                    if shared.cancel.is_cancelled() {
                        return TryOutcome::Cancelled;
                    }
                    if let Some(f) = &shared.state().fatal {
                        return TryOutcome::Lost(Some(f.clone()));
                    }
                }
            }
        }
    }

    fn shutdown(&mut self) {}
}

#[cfg(test)]
impl RemoteWorker {
    /// Cut node slot `slot`'s link from this side (what a dead node's connection does).
    pub(crate) fn cut_for_test(&self, slot: usize) {
        let links = self.lease.0.state().links.clone();
        for l in links.iter().filter(|l| l.slot == slot) {
            l.lose();
        }
    }
}
