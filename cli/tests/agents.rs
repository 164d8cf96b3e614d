//! A ParallelRunStep's workers behind agents, without Slurm: `STEPGRAPH_LOCAL_AGENTS=1` starts
//! the agents (`stepgraph agent`, this binary) as local processes, over loopback, through the
//! same coordinator, protocol and authentication as a Slurm job's.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Project;

/// 40 documents, a Python entry taking `delay` seconds a document that prints where it ran,
/// and a spec with `node_count` 2 × 1 process, 2 documents a mini-batch, append_row.
fn project(delay: f64) -> Project {
    let p = Project {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    for i in 0..40 {
        p.write(&format!("data/d{i:02}.txt"), &"w ".repeat(i + 1));
    }
    p.write(
        "scripts/score.py",
        &format!(
            r#"import os, time
def init():
    pass
def run(mini_batch):
    out = []
    for f in mini_batch:
        time.sleep({delay})
        print("scored", os.path.basename(f), "on", os.environ.get("STEPGRAPH_NODE_ID"))
        out.append("%s %d" % (os.path.basename(f), len(open(f).read().split())))
    return out
"#
        ),
    );
    p.write(
        "pipeline.json",
        r#"{"name": "agents",
  "datasets": {"docs": {"type": "file", "path": "data", "pattern": "*.txt"}},
  "steps": [
    {"name": "score-docs", "type": "parallel_run", "inputs": ["docs"], "output": "scores",
     "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
       "mini_batch_size": "2", "error_threshold": 0, "run_max_try": 1,
       "output_action": "append_row", "process_count_per_node": 1, "node_count": 2}}]}"#,
    );
    p
}

/// The step's folder of the only run in `store`.
fn step_dir(store: &Path) -> Option<PathBuf> {
    let run = std::fs::read_dir(store.join("runs"))
        .ok()?
        .flatten()
        .next()?;
    Some(run.path().join("score-docs"))
}

/// The gathered output of the only run in `store`.
fn output(store: &Path) -> Vec<u8> {
    let dir = step_dir(store).expect("a run").join("outputs/scores");
    let file = std::fs::read_dir(&dir)
        .expect("outputs")
        .flatten()
        .next()
        .expect("an output file");
    std::fs::read(file.path()).expect("read output")
}

fn run(p: &Project, store: &str, agents: bool) -> common::Out {
    let mut c = p.cmd(&["--store", store, "run", "pipeline.json"]);
    if agents {
        c.env("STEPGRAPH_LOCAL_AGENTS", "1");
    }
    common::Out(c.output().expect("run"))
}

#[test]
fn local_agents_give_output_byte_identical_to_a_local_run_and_both_nodes_work() {
    let p = project(0.0);
    run(&p, "local", false).ok();
    let out = run(&p, "agents", true).ok();
    assert_eq!(output(&p.path("agents")), output(&p.path("local")));
    let err = out.stderr();
    assert!(err.contains("node local-0: worker-"), "{err}");
    let dir = step_dir(&p.path("agents")).expect("run");
    for node in ["local-0", "local-1"] {
        let stdout = dir.join(format!("logs/user/stdout/{node}/process000.stdout.txt"));
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        assert!(
            text.contains(&format!("on {node}")),
            "{} did no work: {text:?}",
            stdout.display()
        );
    }
    let result = std::fs::read_to_string(dir.join("logs/job_result.txt")).expect("job_result");
    assert!(
        result.contains("compute: local agents (round 1), 2 nodes × 1 process"),
        "{result}"
    );
    assert!(
        !dir.join("work/agent.token").exists(),
        "the token is removed"
    );
}

/// Wait up to `limit` for `f`.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The pid of node `node`'s agent, from `logs/sys/agents.txt`.
fn agent_pid(dir: &Path, node: &str) -> Option<String> {
    let log = std::fs::read_to_string(dir.join("logs/sys/agents.txt")).ok()?;
    log.lines().find_map(|l| {
        let rest = l.split("agent pid ").nth(1)?;
        let (pid, after) = rest.split_once(' ')?;
        after
            .starts_with(&format!("on node {node} "))
            .then(|| pid.to_string())
    })
}

/// Documents scored so far (the workers' stdout logs, written as they go).
fn done_count(dir: &Path) -> usize {
    ["local-0", "local-1"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(dir.join(format!("logs/user/stdout/{n}/process000.stdout.txt")))
                .unwrap_or_default()
                .matches("scored")
                .count()
        })
        .sum()
}

#[test]
fn killing_one_agent_mid_run_requeues_its_work_and_the_output_is_unchanged() {
    let p = project(0.15);
    run(&p, "local", false).ok();
    let store = p.path("agents");
    let child = p
        .cmd(&["--store", "agents", "run", "pipeline.json"])
        .env("STEPGRAPH_LOCAL_AGENTS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pid = None;
    let started = wait_until(Duration::from_secs(60), || {
        let Some(dir) = step_dir(&store) else {
            return false;
        };
        pid = agent_pid(&dir, "local-1");
        pid.is_some() && done_count(&dir) >= 4
    });
    assert!(started, "the agents did not start");
    let pid = pid.expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill -9");
    assert!(killed.success(), "kill -9 {pid}");
    let out = common::Out(child.wait_with_output().expect("wait")).ok();
    assert_eq!(output(&store), output(&p.path("local")));
    let err = out.stderr();
    assert!(
        err.contains("node local-1 lost") && err.contains("requeued"),
        "{err}"
    );
    let dir = step_dir(&store).expect("run");
    let result = std::fs::read_to_string(dir.join("logs/job_result.txt")).expect("job_result");
    assert!(result.contains("status: succeeded"), "{result}");
    assert!(result.contains("0 failed"), "{result}");
}

#[test]
fn sigint_during_a_run_stops_the_agents() {
    let p = project(0.2);
    let store = p.path("agents");
    let mut child = p
        .cmd(&["--store", "agents", "run", "pipeline.json"])
        .env("STEPGRAPH_LOCAL_AGENTS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut pids = Vec::new();
    let started = wait_until(Duration::from_secs(60), || {
        let Some(dir) = step_dir(&store) else {
            return false;
        };
        pids = ["local-0", "local-1"]
            .iter()
            .filter_map(|n| agent_pid(&dir, n))
            .collect();
        pids.len() == 2 && done_count(&dir) >= 1
    });
    assert!(started, "the agents did not start");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let status = child.wait().expect("wait");
    assert!(!status.success(), "an interrupted run fails");
    for pid in &pids {
        let gone = wait_until(Duration::from_secs(20), || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "agent {pid} outlived the interrupted run");
    }
}
