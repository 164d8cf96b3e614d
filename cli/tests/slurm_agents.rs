//! A ParallelRunStep on the local Slurm cluster (`.ci/slurm-up.sh`: nodes n1 and n2,
//! partition `debug`): one job of `node_count` agents (`srun stepgraph agent …`). These tests
//! fail under `CI=true` when the cluster is missing and skip elsewhere.
//!
//! The cluster's two nodes have one CPU each and a job takes both: the tests run one at a time.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Out, Project};

/// One test at a time on the cluster.
static CLUSTER: Mutex<()> = Mutex::new(());

/// 40 documents, a Python entry taking `delay` seconds a document, and a spec whose step runs
/// on `compute` (`"local"` or `"hpc"`, the cluster's `debug` partition) with `node_count` 2 ×
/// 1 process, 2 documents a mini-batch, append_row.
fn project(delay: f64, compute: &str) -> Project {
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
        print("scored", os.path.basename(f), "on", os.environ.get("SLURMD_NODENAME"))
        out.append("%s %d" % (os.path.basename(f), len(open(f).read().split())))
    return out
"#
        ),
    );
    let compute_field = if compute == "hpc" {
        r#", "compute": "hpc""#
    } else {
        ""
    };
    p.write(
        "pipeline.json",
        &format!(
            r#"{{"name": "slurm-agents",
  "compute": {{"hpc": {{"type": "slurm", "partition": "{}", "time": "00:10:00"}}}},
  "datasets": {{"docs": {{"type": "file", "path": "data", "pattern": "*.txt"}}}},
  "steps": [
    {{"name": "score-docs", "type": "parallel_run", "inputs": ["docs"], "output": "scores"{compute_field},
     "parallel_run_config": {{"source_directory": "scripts", "entry_script": "score.py",
       "mini_batch_size": "2", "error_threshold": 0, "run_max_try": 1,
       "output_action": "append_row", "process_count_per_node": 1, "node_count": 2}}}}]}}"#,
            common::SLURM_PARTITION
        ),
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

/// The output of the same step run locally.
fn local_output() -> Vec<u8> {
    let p = project(0.0, "local");
    Out(p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .output()
        .expect("run"))
    .ok();
    output(&p.path("store"))
}

fn agents_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("logs/sys/agents.txt")).unwrap_or_default()
}

/// The id of the Slurm job of the step (`submitted Slurm job N` in its agents log).
fn job_id(dir: &Path) -> Option<String> {
    agents_log(dir).lines().find_map(|l| {
        let rest = l.split("submitted Slurm job ").nth(1)?;
        let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!id.is_empty()).then_some(id)
    })
}

/// The pid of node `node`'s agent (the cluster's nodes are processes of this host).
fn agent_pid(dir: &Path, node: &str) -> Option<String> {
    agents_log(dir).lines().find_map(|l| {
        let rest = l.split("agent pid ").nth(1)?;
        let (pid, after) = rest.split_once(' ')?;
        after
            .starts_with(&format!("on node {node} "))
            .then(|| pid.to_string())
    })
}

/// Documents scored so far on `nodes` (the workers' stdout logs).
fn scored(dir: &Path, nodes: &[&str]) -> usize {
    nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(dir.join(format!("logs/user/stdout/{n}/process000.stdout.txt")))
                .unwrap_or_default()
                .matches("scored")
                .count()
        })
        .sum()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Whether Slurm still lists job `id` as pending or running.
fn job_listed(id: &str) -> bool {
    Command::new("squeue")
        .args(["-h", "-o", "%i", "-t", "PD,R,CG,CF"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == id)
        })
        .unwrap_or(false)
}

fn cluster() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !common::slurm_cluster() {
        return None;
    }
    Some(CLUSTER.lock().unwrap_or_else(|p| p.into_inner()))
}

#[test]
fn two_slurm_nodes_give_output_byte_identical_to_a_local_run_and_both_do_work() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.0, "hpc");
    let out = Out(p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .output()
        .expect("run"))
    .ok();
    assert_eq!(output(&p.path("store")), local_output());
    let dir = step_dir(&p.path("store")).expect("run");
    for node in ["n1", "n2"] {
        assert!(scored(&dir, &[node]) > 0, "node {node} did no work");
        assert!(dir
            .join(format!("logs/sys/node/{node}/agent.txt"))
            .is_file());
        // Workers see Slurm's variables of their node.
        let stdout = std::fs::read_to_string(
            dir.join(format!("logs/user/stdout/{node}/process000.stdout.txt")),
        )
        .unwrap_or_default();
        assert!(stdout.contains(&format!(" on {node}\n")), "{stdout}");
    }
    let err = out.stderr();
    assert!(err.contains("submitted Slurm job"), "{err}");
    assert!(
        err.contains("node n1: worker-") && err.contains("node n2: worker-"),
        "{err}"
    );
    let id = job_id(&dir).expect("job id");
    let result = std::fs::read_to_string(dir.join("logs/job_result.txt")).expect("job_result");
    assert!(
        result.contains(&format!("compute: Slurm job {id}, 2 nodes × 1 process")),
        "{result}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || !job_listed(&id)),
        "job {id} still listed"
    );
}

#[test]
fn killing_one_nodes_agent_mid_run_completes_with_identical_output() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.15, "hpc");
    let store = p.path("store");
    let child = p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pid = None;
    let started = wait_until(Duration::from_secs(120), || {
        let Some(dir) = step_dir(&store) else {
            return false;
        };
        pid = agent_pid(&dir, "n2");
        pid.is_some() && scored(&dir, &["n1", "n2"]) >= 4
    });
    assert!(started, "the agents did not start");
    let pid = pid.expect("pid");
    let killed = Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 {pid}");
    let out = Out(child.wait_with_output().expect("wait")).ok();
    assert_eq!(output(&store), local_output());
    let err = out.stderr();
    assert!(
        err.contains("node n2 lost") && err.contains("requeued"),
        "{err}"
    );
}

#[test]
fn an_agent_with_a_wrong_token_is_refused_and_the_run_goes_on() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.1, "hpc");
    let store = p.path("store");
    let child = p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut addr = None;
    let started = wait_until(Duration::from_secs(120), || {
        let Some(dir) = step_dir(&store) else {
            return false;
        };
        addr = agents_log(&dir).lines().find_map(|l| {
            let rest = l.split("listening on ").nth(1)?;
            rest.split_whitespace().next().map(str::to_string)
        });
        addr.is_some() && scored(&dir, &["n1", "n2"]) >= 1
    });
    assert!(started, "the agents did not start");
    let addr = addr.expect("address");
    p.write("wrong.token", &"ab".repeat(32));
    let intruder = Out(Command::new(common::BIN)
        .args(["agent", "--connect", &addr, "--token-file"])
        .arg(p.path("wrong.token"))
        .output()
        .expect("agent"));
    let said = intruder.fails(2);
    assert!(
        said.contains("did not prove it holds the run's token"),
        "{said}"
    );
    Out(child.wait_with_output().expect("wait")).ok();
    let dir = step_dir(&store).expect("run");
    let log = agents_log(&dir);
    assert!(log.contains("refused connection from"), "{log}");
    assert_eq!(output(&store), local_output());
}

#[test]
fn sigint_leaves_no_slurm_job() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.3, "hpc");
    let store = p.path("store");
    let mut child = p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut id = None;
    let started = wait_until(Duration::from_secs(120), || {
        let Some(dir) = step_dir(&store) else {
            return false;
        };
        id = job_id(&dir);
        id.is_some() && scored(&dir, &["n1", "n2"]) >= 1
    });
    assert!(started, "the agents did not start");
    let id = id.expect("job id");
    assert!(job_listed(&id), "job {id} runs");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let status = child.wait().expect("wait");
    assert!(!status.success(), "an interrupted run fails");
    assert!(
        wait_until(Duration::from_secs(30), || !job_listed(&id)),
        "Slurm job {id} outlived the interrupted run"
    );
}

#[test]
fn a_sigkilled_coordinator_leaves_no_job_and_the_rerun_resumes() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.15, "hpc");
    let store = p.path("store");
    let mut child = p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut id = None;
    let started = wait_until(Duration::from_secs(120), || {
        let Some(dir) = step_dir(&store) else {
            return false;
        };
        id = job_id(&dir);
        // Some mini-batches committed (every 250 ms) before the kill.
        id.is_some() && scored(&dir, &["n1", "n2"]) >= 12
    });
    assert!(started, "the agents did not start");
    let id = id.expect("job id");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // The agents see their connection drop and exit: the job ends.
    assert!(
        wait_until(Duration::from_secs(60), || !job_listed(&id)),
        "Slurm job {id} outlived its SIGKILLed coordinator"
    );
    let out = Out(p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .output()
        .expect("rerun"))
    .ok();
    let err = out.stderr();
    assert!(err.contains("resuming:"), "{err}");
    let runs: Vec<PathBuf> = std::fs::read_dir(store.join("runs"))
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .collect();
    let rerun = runs
        .iter()
        .filter(|r| r.join("score-docs/outputs/scores").is_dir())
        .max()
        .expect("rerun's output");
    let file = std::fs::read_dir(rerun.join("score-docs/outputs/scores"))
        .expect("outputs")
        .flatten()
        .next()
        .expect("output file");
    assert_eq!(std::fs::read(file.path()).expect("read"), local_output());
}

#[test]
fn node_count_1_on_slurm_runs_one_agent_the_same_way() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.0, "hpc");
    let spec = std::fs::read_to_string(p.path("pipeline.json")).expect("spec");
    p.write(
        "pipeline.json",
        &spec.replace("\"node_count\": 2", "\"node_count\": 1"),
    );
    let out = Out(p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .output()
        .expect("run"))
    .ok();
    let err = out.stderr();
    assert!(err.contains("1 node × 1 process"), "{err}");
    assert_eq!(output(&p.path("store")), local_output());
}

/// The pids of the agents authenticated so far, in order.
fn agent_pids(dir: &Path) -> Vec<String> {
    agents_log(dir)
        .lines()
        .filter(|l| l.contains(" authenticated: "))
        .filter_map(|l| {
            let rest = l.split("agent pid ").nth(1)?;
            rest.split_whitespace().next().map(str::to_string)
        })
        .collect()
}

#[test]
fn every_node_lost_resubmits_the_job_twice_then_fails_naming_it() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.3, "hpc");
    let store = p.path("store");
    let child = p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    for round in 1..=3 {
        let mut pids = Vec::new();
        let up = wait_until(Duration::from_secs(120), || {
            let Some(dir) = step_dir(&store) else {
                return false;
            };
            let ready = agents_log(&dir).matches(" ready").count();
            pids = agent_pids(&dir);
            ready >= 2 * round && pids.len() >= 2 * round
        });
        assert!(up, "round {round}: the agents did not start");
        for pid in &pids[2 * (round - 1)..2 * round] {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let err = Out(child.wait_with_output().expect("wait")).fails(1);
    let dir = step_dir(&store).expect("run");
    let ids: Vec<String> = agents_log(&dir)
        .lines()
        .filter_map(|l| {
            let rest = l.split("Slurm job ").nth(1)?;
            let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (!id.is_empty()).then_some(id)
        })
        .collect();
    let last = ids.last().expect("a job id");
    assert!(
        err.contains(&format!(
            "all 2 nodes of Slurm job {last} were lost (its state: "
        )) && err.contains("it was submitted 3 times"),
        "{err}"
    );
    assert_eq!(err.matches("resubmitted as Slurm job").count(), 2, "{err}");
    assert!(
        wait_until(Duration::from_secs(30), || ids
            .iter()
            .all(|id| !job_listed(id))),
        "a job outlived the failed step"
    );
}

#[test]
fn a_job_that_can_never_start_fails_the_step_and_is_cancelled() {
    let Some(_cluster) = cluster() else { return };
    let p = project(0.0, "hpc");
    let spec = std::fs::read_to_string(p.path("pipeline.json")).expect("spec");
    // The nodes have one CPU each: Slurm keeps the job pending (PartitionConfig) for ever.
    p.write(
        "pipeline.json",
        &spec.replace(
            r#""time": "00:10:00""#,
            r#""time": "00:10:00", "cpus_per_task": 4"#,
        ),
    );
    let err = Out(p
        .cmd(&["--store", "store", "run", "pipeline.json"])
        .output()
        .expect("run"))
    .fails(1);
    assert!(
        err.contains("cannot start: it is pending for a reason that never clears")
            && err.contains("PartitionConfig"),
        "{err}"
    );
    let dir = step_dir(&p.path("store")).expect("run");
    let id = job_id(&dir).expect("job id");
    assert!(
        err.contains(&format!("Slurm job {id} cannot start")),
        "{err}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || !job_listed(&id)),
        "Slurm job {id} was left pending"
    );
}
