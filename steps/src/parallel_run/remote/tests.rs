//! Agents over loopback, no Slurm: agents run as threads of the test (`run_agent`), their
//! workers are a small `entry_command` program speaking the worker protocol.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::unbounded;
use stepgraph_engine::CancelFlag;

use super::super::config::AppendRowFormat;
use super::super::partition::MiniBatchSpec;
use super::super::protocol::{Init, WirePath, PROTOCOL_VERSION};
use super::super::worker::{TryOutcome, Worker};
use super::agent::{run_agent, AgentError, AgentOptions};
use super::auth::Token;
use super::coordinator::{self, Plan, RemoteWorker};
use super::launch::{AgentCommand, JobState, Launcher};
use super::wire::{
    read_frame, write_frame, Challenge, Hello, NeededPath, Proof, ToAgent, WireProcess,
    AGENT_PROTOCOL, HANDSHAKE_LIMIT,
};

/// Answers each mini-batch with one row per file: `<node> <file name>` (the node from
/// `STEPGRAPH_NODE_ID`, so a test sees where it ran), sleeping `SLEEP` seconds first.
const WORKER: &str = r#"import json, os, sys, time
node = os.environ.get("STEPGRAPH_NODE_ID", "?")
for line in sys.stdin:
    m = json.loads(line)
    if m["type"] == "init":
        print(json.dumps({"type": "ready"}), flush=True)
    elif m["type"] == "run":
        time.sleep(float(os.environ.get("SLEEP", "0")))
        rows = [os.path.basename(f) for f in m["files"]]
        print(json.dumps({"type": "result", "index": m["index"], "count": len(rows),
                          "rows": rows, "node": node}), flush=True)
    elif m["type"] == "shutdown":
        print(json.dumps({"type": "bye"}), flush=True)
        break
"#;

/// Agents as threads of this process; "cancel" cuts nothing (the links are cut by the test).
struct ThreadLauncher {
    token_file: PathBuf,
    results: Arc<Mutex<Vec<Result<(), String>>>>,
    submitted: usize,
}

impl Launcher for ThreadLauncher {
    fn submit(&mut self, cmd: &AgentCommand) -> Result<String, String> {
        self.submitted += 1;
        for i in 0..cmd.nodes {
            let opts = AgentOptions {
                connect: cmd.addr.clone(),
                token_file: self.token_file.clone(),
                node: Some(format!("t{i}")),
            };
            let results = self.results.clone();
            std::thread::spawn(move || {
                let r = run_agent(&opts).map_err(|e| e.to_string());
                if let Ok(mut g) = results.lock() {
                    g.push(r);
                }
            });
        }
        Ok(format!("thread job {}", self.submitted))
    }
    fn state(&mut self) -> JobState {
        JobState::Running
    }
    fn cancel(&mut self) {}
}

struct Setup {
    dir: tempfile::TempDir,
    token_file: PathBuf,
    log_dir: PathBuf,
    data: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fs_err::create_dir_all(&data).expect("data");
    for i in 0..20 {
        fs_err::write(data.join(format!("f{i:02}.txt")), "x").expect("file");
    }
    fs_err::write(dir.path().join("worker.py"), WORKER).expect("worker");
    let log_dir = dir.path().join("logs");
    fs_err::create_dir_all(log_dir.join("user")).expect("logs");
    Setup {
        token_file: dir.path().join("agent.token"),
        log_dir,
        data,
        dir,
    }
}

fn process(s: &Setup, w: usize, sleep: &str) -> WireProcess {
    let env: Vec<(WirePath, WirePath)> = [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("SLEEP", sleep.to_string()),
        ("STEPGRAPH_PROCESS_NAME", "process000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (WirePath(k.into()), WirePath(v.into())))
    .collect();
    WireProcess {
        worker: w,
        argv: vec![
            WirePath("python3".into()),
            WirePath(s.dir.path().join("worker.py")),
        ],
        cwd: WirePath(s.dir.path().to_path_buf()),
        env,
        init: Init {
            protocol: PROTOCOL_VERSION,
            entry_script: WirePath(PathBuf::new()),
            source_directory: WirePath(s.dir.path().to_path_buf()),
            arguments: Vec::new(),
            output_dir: WirePath(s.dir.path().to_path_buf()),
            working_dir: WirePath(s.dir.path().to_path_buf()),
            log_dir: WirePath(s.log_dir.join("user")),
            agent_name: format!("worker-{w}"),
            side_inputs: BTreeMap::new(),
            max_line_bytes: super::super::MAX_PROTOCOL_LINE as u64,
            append_row_format: AppendRowFormat::Text,
            collect_rows: true,
            tabular_format: None,
        },
        timeout_ms: 60_000,
    }
}

/// Start a coordinator for `nodes` thread agents of one process each.
fn start(
    s: &Setup,
    nodes: usize,
    sleep: &str,
    needs: Vec<NeededPath>,
) -> (
    Vec<RemoteWorker>,
    String,
    crossbeam_channel::Receiver<String>,
) {
    let token = Token::create(&s.token_file).expect("token");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let (tx, rx) = unbounded();
    let workers = coordinator::start(coordinator::Start {
        plan: Plan {
            processes: (0..nodes).map(|w| process(s, w, sleep)).collect(),
            per_node: 1,
            node_count: nodes,
            log_dir: s.log_dir.clone(),
            needs,
            pinned: false,
        },
        token,
        cancel: CancelFlag::new(),
        listener,
        cmd: AgentCommand {
            exe: "unused".into(),
            addr: addr.clone(),
            token_file: s.token_file.clone(),
            nodes,
            log_dir: s.log_dir.clone(),
            work_dir: s.dir.path().to_path_buf(),
            step: "t".into(),
        },
        launcher: Box::new(ThreadLauncher {
            token_file: s.token_file.clone(),
            results: Arc::default(),
            submitted: 0,
        }),
        notices: tx,
    })
    .expect("start");
    (workers, addr, rx)
}

fn batch(s: &Setup, files: &[usize]) -> MiniBatchSpec {
    MiniBatchSpec::Files {
        files: files
            .iter()
            .map(|i| s.data.join(format!("f{i:02}.txt")))
            .collect(),
        partition_key_value: None,
        partitions: Vec::new(),
    }
}

fn agents_log(s: &Setup) -> String {
    fs_err::read_to_string(s.log_dir.join("sys").join("agents.txt")).unwrap_or_default()
}

#[test]
fn mini_batches_round_trip_through_two_agents() {
    let s = setup();
    let (mut workers, _, notices) = start(&s, 2, "0", Vec::new());
    let out = workers[0].run(0, &batch(&s, &[0, 1]));
    assert_eq!(
        out,
        TryOutcome::Ok {
            count: 2,
            rows: b"f00.txt\nf01.txt\n".to_vec(),
            columns: None
        }
    );
    let out = workers[1].run(1, &batch(&s, &[2]));
    assert!(matches!(out, TryOutcome::Ok { count: 1, .. }), "{out:?}");
    let ready: Vec<String> = notices.try_iter().collect();
    assert!(
        ready.iter().any(|n| n.contains("node t0")) && ready.iter().any(|n| n.contains("node t1")),
        "{ready:?}"
    );
    drop(workers);
    // The agents wrote their workers' logs under their node's name; the token is removed.
    assert!(s.log_dir.join("sys/node/t0/agent.txt").is_file());
    assert!(s
        .log_dir
        .join("user/stderr/t1/process000.stderr.txt")
        .is_file());
    assert!(!s.token_file.exists());
    let compute = fs_err::read_to_string(s.log_dir.join("sys/compute.txt")).expect("compute");
    assert!(
        compute.starts_with("compute: thread job 1, 2 nodes"),
        "{compute}"
    );
}

/// A raw client: hello, then the given proof; what the coordinator answers.
fn raw_handshake(addr: &str, proof: &str) -> Result<ToAgent, String> {
    let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let hello = Hello {
        protocol: AGENT_PROTOCOL,
        nonce: "00".repeat(32),
        node: "intruder".into(),
        pid: 1,
    };
    write_frame(&mut c, &hello, &[]).map_err(|e| e.to_string())?;
    let (_challenge, _): (Challenge, _) =
        read_frame(&mut c, HANDSHAKE_LIMIT).map_err(|e| e.to_string())?;
    write_frame(
        &mut c,
        &Proof {
            proof: proof.into(),
        },
        &[],
    )
    .map_err(|e| e.to_string())?;
    let (answer, _): (ToAgent, _) =
        read_frame(&mut c, super::wire::FRAME_LIMIT).map_err(|e| e.to_string())?;
    Ok(answer)
}

#[test]
fn a_wrong_token_is_refused_and_logged() {
    let s = setup();
    // One node: the real agent takes it; the intruder is refused before slots matter.
    let (mut workers, addr, _) = start(&s, 1, "0", Vec::new());
    let answer = raw_handshake(&addr, &"ab".repeat(32));
    assert_eq!(
        answer,
        Ok(ToAgent::Refused {
            reason: "authentication failed".into()
        })
    );
    // An agent holding another token does not even trust the coordinator.
    let other = s.dir.path().join("other.token");
    Token::create(&other).expect("other token");
    let r = run_agent(&AgentOptions {
        connect: addr.clone(),
        token_file: other,
        node: None,
    });
    assert!(
        matches!(&r, Err(AgentError::Handshake { why, .. }) if why.contains("did not prove")),
        "{r:?}"
    );
    // The run goes on with the real agent.
    assert!(matches!(
        workers[0].run(0, &batch(&s, &[3])),
        TryOutcome::Ok { count: 1, .. }
    ));
    let log = agents_log(&s);
    assert!(
        log.contains("wrong token (agent said node \"intruder\", pid 1)"),
        "{log}"
    );
}

#[test]
fn garbage_and_oversized_frames_are_refused_without_panic() {
    let s = setup();
    let (mut workers, addr, _) = start(&s, 1, "0", Vec::new());
    for bytes in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // A header announcing 4 GiB: refused before anything is allocated.
        [u32::MAX.to_be_bytes(), 0u32.to_be_bytes()].concat(),
        [5u32.to_be_bytes(), 0u32.to_be_bytes()]
            .concat()
            .into_iter()
            .chain(*b"{{{{{")
            .collect(),
    ] {
        let mut c = TcpStream::connect(&addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        use std::io::Write;
        let _ = c.write_all(&bytes);
        // The coordinator closes the connection.
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    assert!(matches!(
        workers[0].run(0, &batch(&s, &[4])),
        TryOutcome::Ok { count: 1, .. }
    ));
    let log = agents_log(&s);
    assert_eq!(log.matches("no hello").count(), 3, "{log}");
    assert!(log.contains("over the limit of 4096 bytes"), "{log}");
}

#[test]
fn an_agent_that_cannot_see_a_path_fails_the_step_naming_it() {
    let s = setup();
    let missing = NeededPath {
        what: "input \"scores\"".into(),
        path: WirePath(Path::new("/nonexistent/shared/scores").into()),
    };
    let (mut workers, _, _) = start(&s, 1, "0", vec![missing]);
    let out = workers[0].run(0, &batch(&s, &[0]));
    let TryOutcome::Lost(Some(why)) = out else {
        panic!("not a fatal loss: {out:?}");
    };
    assert!(
        why.contains("cannot see the input \"scores\" at /nonexistent/shared/scores"),
        "{why}"
    );
}

#[test]
fn a_lost_agent_gives_back_its_try_and_the_others_take_its_work() {
    let s = setup();
    let (workers, _, notices) = start(&s, 2, "1", Vec::new());
    let mut workers = workers.into_iter();
    let (mut w0, mut w1) = (workers.next().expect("w0"), workers.next().expect("w1"));
    // The first try submits the job; then both agents are ready.
    assert!(matches!(
        w1.run(9, &batch(&s, &[9])),
        TryOutcome::Ok { count: 1, .. }
    ));
    let mut ready = 0;
    while ready < 2 {
        let n = notices
            .recv_timeout(Duration::from_secs(30))
            .expect("ready");
        ready += usize::from(n.contains("ready"));
    }
    let s0 = batch(&s, &[5]);
    let running = std::thread::spawn(move || (w0.run(7, &s0), w0));
    std::thread::sleep(Duration::from_millis(300));
    // Cut node slot 0's link from the coordinator's side (as a dead node's would end).
    w1.cut_for_test(0);
    let (out, mut w0) = running.join().expect("join");
    assert_eq!(out, TryOutcome::Lost(None));
    // Worker 0's next try runs on the live node t1.
    let again = w0.run(7, &batch(&s, &[5]));
    assert!(
        matches!(again, TryOutcome::Ok { count: 1, .. }),
        "{again:?}"
    );
    assert!(matches!(
        w1.run(8, &batch(&s, &[6])),
        TryOutcome::Ok { count: 1, .. }
    ));
    let lost: Vec<String> = notices.try_iter().collect();
    assert!(
        lost.iter()
            .any(|n| n.contains(" lost (") && n.contains("requeued")),
        "{lost:?}"
    );
}

/// Wait for a notice containing `what`.
fn wait_notice(notices: &crossbeam_channel::Receiver<String>, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match notices.recv_timeout(Duration::from_secs(30)) {
            Ok(n) => {
                let found = n.contains(what);
                seen.push(n);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no notice {what:?} in {seen:?}"),
        }
    }
}

#[test]
fn every_node_lost_resubmits_the_job_then_fails_naming_it() {
    let s = setup();
    let (workers, _, notices) = start(&s, 2, "0", Vec::new());
    let mut workers = workers.into_iter();
    let (mut w0, mut w1) = (workers.next().expect("w0"), workers.next().expect("w1"));
    for round in 1..=3 {
        let ok = w0.run(round, &batch(&s, &[1]));
        assert!(matches!(ok, TryOutcome::Ok { .. }), "round {round}: {ok:?}");
        let ok = w1.run(10 + round, &batch(&s, &[2]));
        assert!(matches!(ok, TryOutcome::Ok { .. }), "round {round}: {ok:?}");
        w0.cut_for_test(0);
        w0.cut_for_test(1);
        if round < 3 {
            wait_notice(
                &notices,
                &format!("resubmitted as thread job {}", round + 1),
            );
        }
    }
    let out = w0.run(99, &batch(&s, &[3]));
    let TryOutcome::Lost(Some(why)) = out else {
        panic!("not a fatal loss: {out:?}");
    };
    assert!(
        why.contains(
            "all 2 nodes of thread job 3 were lost (its state: RUNNING); it was submitted 3 times"
        ),
        "{why}"
    );
}

#[test]
fn the_bind_address_gives_where_to_listen_and_where_agents_connect() {
    let slurm = super::Target::Slurm(crate::Compute::slurm("hpc"));
    let plan =
        |b: Option<&str>, t: &super::Target| super::bind_plan(b, t).map_err(|e| e.to_string());
    assert_eq!(
        plan(Some("head-1:4000"), &slurm),
        Ok(("head-1".into(), "head-1".into(), 4000))
    );
    assert_eq!(
        plan(Some("10.0.0.5"), &slurm),
        Ok(("10.0.0.5".into(), "10.0.0.5".into(), 0))
    );
    assert_eq!(
        plan(Some("[::1]:7"), &slurm),
        Ok(("::1".into(), "::1".into(), 7))
    );
    assert_eq!(
        plan(Some("[::1]"), &slurm),
        Ok(("::1".into(), "::1".into(), 0))
    );
    assert_eq!(
        plan(Some("fe80::1"), &slurm),
        Ok(("fe80::1".into(), "fe80::1".into(), 0))
    );
    assert!(plan(Some("head:http"), &slurm).is_err_and(|e| e.contains("the port is not a number")));
    assert_eq!(
        plan(None, &slurm),
        Ok(("0.0.0.0".into(), super::host_name(), 0))
    );
    assert_eq!(
        plan(None, &super::Target::Local),
        Ok(("127.0.0.1".into(), "127.0.0.1".into(), 0))
    );
}
