//! Crash loop: `stepgraph run` (the real binary) is SIGKILLed at random points of an
//! `append_row` and a `summary_only` pipeline, then run again to completion; the output must be
//! byte-identical to an uninterrupted run's and `cache verify` must find nothing to drop.
//!
//! The kill takes the engine and every process it started (its workers run in their own
//! process groups), as a crash of the machine or an OOM kill of the whole session would: the
//! store must be consistent whatever instant the crash hits.
//!
//! - Kill points are uniform over the length of an uninterrupted run; sometimes the resumed run
//!   is killed too before the final run. Only kills that hit a running engine count.
//! - `STEPGRAPH_CRASH_LOOP_KILLS` sets the number of kills (default 10, alternating between the
//!   two pipelines); `STEPGRAPH_CRASH_LOOP_SEED` replays a sequence (the seed is printed).
//! - The binary is `target/<profile>/stepgraph`, next to this test's `deps/` folder
//!   (`cargo test --workspace` builds it), or `STEPGRAPH_BIN`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::write;

/// The `stepgraph` binary of this build.
fn stepgraph_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STEPGRAPH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    // target/<profile>/deps/tests-HASH -> target/<profile>/stepgraph
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("stepgraph"))
        .expect("the test binary is in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p stepgraph-cli` (cargo test --workspace does), or set STEPGRAPH_BIN",
        bin.display()
    );
    bin
}

/// splitmix64: a small seeded generator, so a failing sequence of kill points can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const APPEND_PY: &str = r#"import os, time

def init():
    pass

def run(mini_batch):
    rows = []
    for p in mini_batch:
        time.sleep(0.004)
        with open(p) as f:
            rows.append("%s %d %s" % (os.path.basename(p), len(f.read()), "x" * 20))
    return rows
"#;

/// One file per mini-batch, named from the mini-batch (the rule for `summary_only`).
const SUMMARY_PY: &str = r#"import os, time
from azureml_user.parallel_run import EntryScript

def init():
    global out
    out = EntryScript().output_dir

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    text = []
    for p in mini_batch:
        time.sleep(0.004)
        with open(p) as f:
            text.append(f.read().upper())
    with open(os.path.join(out, "batch-" + names[0]), "w") as f:
        f.write("".join(text))
    return names
"#;

fn spec(name: &str, step: &str, script: &str, action: &str) -> String {
    format!(
        r#"{{"name": "{name}",
  "datasets": {{"docs": {{"type": "file", "path": "data", "pattern": "*.txt"}}}},
  "steps": [{{"name": "{step}", "type": "parallel_run", "inputs": ["docs"], "output": "out",
    "parallel_run_config": {{"source_directory": "scripts", "entry_script": "{script}",
      "mini_batch_size": "4", "error_threshold": 0, "process_count_per_node": 2,
      "run_max_try": 3, "output_action": "{action}"}}}}]}}"#
    )
}

/// A pipeline of the loop: its spec file and its one step.
struct Case {
    spec: &'static str,
    step: &'static str,
}

const CASES: [Case; 2] = [
    Case {
        spec: "append.json",
        step: "append-rows",
    },
    Case {
        spec: "summary.json",
        step: "write-batches",
    },
];

fn project(dir: &Path) {
    for i in 0..200 {
        write(
            dir,
            &format!("data/doc-{i:03}.txt"),
            &format!("document {i}: {}\n", "word ".repeat(i % 7 + 1)),
        );
    }
    write(dir, "scripts/append.py", APPEND_PY);
    write(dir, "scripts/summary.py", SUMMARY_PY);
    write(
        dir,
        "append.json",
        &spec("crash-append", "append-rows", "append.py", "append_row"),
    );
    write(
        dir,
        "summary.json",
        &spec(
            "crash-summary",
            "write-batches",
            "summary.py",
            "summary_only",
        ),
    );
}

fn stepgraph(dir: &Path, store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(stepgraph_bin());
    c.current_dir(dir)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("STEPGRAPH_STORE")
        .env("NO_COLOR", "1");
    c
}

/// Run to completion; the run id.
fn run_to_end(dir: &Path, store: &Path, spec: &str) -> String {
    let out = stepgraph(dir, store, &["run", spec])
        .output()
        .expect("start stepgraph");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stepgraph run {spec} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no run id in\n{stdout}"))
}

/// Every file under `root`, by relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read output file"));
            }
        }
    }
    out
}

fn outputs(store: &Path, run_id: &str, step: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    tree(&store.join("runs").join(run_id).join(step).join("outputs"))
}

/// The pids of `pid`'s descendants (from /proc), children before grandchildren.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    // Processes may be gone already: the exit status does not matter.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// SIGKILL the engine and everything it started. The tree is frozen first (SIGSTOP) so that no
/// process is started between listing and killing. Returns when the engine is reaped.
fn crash(child: &mut Child) {
    let engine = child.id();
    signal("STOP", &[engine]);
    let mut all = Vec::new();
    loop {
        let found = descendants(engine);
        let new: Vec<u32> = found.iter().copied().filter(|p| !all.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        signal("STOP", &new);
        all.extend(new);
    }
    all.push(engine);
    signal("KILL", &all);
    let _ = child.wait();
    // Wait until the workers (reparented once the engine died) are gone too.
    let give_up = Instant::now() + Duration::from_secs(20);
    while all
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
        && Instant::now() < give_up
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true)
}

#[test]
fn sigkill_at_random_points_never_changes_the_output_nor_damages_the_store() {
    let kills: u64 = std::env::var("STEPGRAPH_CRASH_LOOP_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("STEPGRAPH_CRASH_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    println!("crash loop: {kills} kills, STEPGRAPH_CRASH_LOOP_SEED={seed}");
    let mut rng = Rng(seed);
    let ws = tempfile::tempdir().expect("temp dir");
    let dir = ws.path();
    project(dir);

    // Reference: uninterrupted runs, and how long they take (the range of kill points).
    let reference_store = dir.join("reference-store");
    let mut reference = Vec::new();
    for case in &CASES {
        let started = Instant::now();
        let id = run_to_end(dir, &reference_store, case.spec);
        let took = started.elapsed();
        let out = outputs(&reference_store, &id, case.step);
        assert!(!out.is_empty(), "{}: no output", case.spec);
        reference.push((out, took));
    }

    // A kill counts when it hits a running engine; a run may end before its kill point, so the
    // attempts are bounded.
    let mut kill = 0;
    let mut attempts = 0;
    let mut round = 0;
    while kill < kills && attempts < 4 * kills {
        let which = round % CASES.len();
        let case = &CASES[which];
        let (expected, took) = &reference[which];
        let store = dir.join(format!("store-{round}"));
        // One kill, or sometimes a second one while the run resumes.
        let kills_now = (1 + rng.below(2)).min(kills - kill);
        for _ in 0..kills_now {
            let max_ms = (took.as_millis() as u64).max(50);
            let delay = Duration::from_millis(rng.below(max_ms));
            let mut child = stepgraph(dir, &store, &["run", case.spec])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start stepgraph");
            std::thread::sleep(delay);
            attempts += 1;
            if child.try_wait().expect("poll stepgraph").is_some() {
                println!("{} ended before {} ms", case.spec, delay.as_millis());
                break;
            }
            crash(&mut child);
            kill += 1;
            println!("kill {kill}: {} after {} ms", case.spec, delay.as_millis());
        }
        let id = run_to_end(dir, &store, case.spec);
        let got = outputs(&store, &id, case.step);
        assert!(
            got == *expected,
            "{} (seed {seed}, kill {kill}): the output after the crash differs from the uninterrupted run's: files {:?} vs {:?}",
            case.spec,
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        let verify = stepgraph(dir, &store, &["cache", "verify"])
            .output()
            .expect("start stepgraph cache verify");
        let verify_out = String::from_utf8_lossy(&verify.stdout);
        assert!(
            verify.status.success() && verify_out.contains(" 0 dropped"),
            "{} (seed {seed}, kill {kill}): cache verify is not clean:\n{verify_out}\n{}",
            case.spec,
            String::from_utf8_lossy(&verify.stderr)
        );
        std::fs::remove_dir_all(&store).expect("remove the loop's store");
        round += 1;
    }
    println!("crash loop: {kill} kills in {attempts} attempts, no difference found");
    assert!(
        kill > 0 || kills == 0,
        "no run was still going at its kill point (seed {seed})"
    );
}
