//! The `stepgraph` binary and the processes of its steps: the defined step environment
//! (`env_passthrough`), bounded memory and errors when a worker floods its stdout, and step
//! processes that die with `stepgraph run` on SIGTERM, SIGHUP and SIGKILL.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_stepgraph");

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(p, text).expect("write");
}

fn stepgraph(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .args(args)
        .env_remove("STEPGRAPH_STORE")
        .env_remove("SECRET_TOKEN")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run stepgraph")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file below `dir`, as bytes.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p.display().to_string(), b));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const ENV_SPEC: &str = r#"{
  "name": "env-test",
  "datasets": {"docs": {"type": "file", "path": "data"}},
  "steps": [
    {"name": "py-plain", "type": "parallel_run", "inputs": ["docs"], "output": "py_plain",
     "parallel_run_config": {"source_directory": "scripts", "entry_script": "env.py",
       "error_threshold": 0, "process_count_per_node": 1}},
    {"name": "py-listed", "type": "parallel_run", "inputs": ["docs"], "output": "py_listed",
     "parallel_run_config": {"source_directory": "scripts", "entry_script": "env.py",
       "error_threshold": 0, "process_count_per_node": 1, "env_passthrough": ["SECRET_TOKEN"]}},
    {"name": "cmd-plain", "type": "command",
     "command": ["sh", "-c", "echo \"${SECRET_TOKEN-unset} home=${HOME-unset}\" > \"$0\"/env.txt", "{outputs.cmd_plain}"],
     "outputs": ["cmd_plain"]},
    {"name": "cmd-listed", "type": "command",
     "command": ["sh", "-c", "echo \"${SECRET_TOKEN-unset}\" > \"$0\"/env.txt", "{outputs.cmd_listed}"],
     "outputs": ["cmd_listed"], "env_passthrough": ["SECRET_TOKEN"]}
  ]
}"#;

/// The file `name` of output `data` (the folder is named by the output's data) of step `step`
/// in the run that printed `out`.
fn output_of(dir: &Path, out: &Output, step: &str, data: &str, name: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {stdout}"));
    let p = dir
        .join(".stepgraph/runs")
        .join(id)
        .join(step)
        .join("outputs")
        .join(data)
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn caller_variables_reach_steps_only_when_listed_and_their_values_rerun_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "data/one.txt", "1");
    write(
        d,
        "scripts/env.py",
        "import os\n\ndef run(mini_batch):\n    return [os.environ.get('SECRET_TOKEN', 'unset') + ' home=' + os.environ.get('HOME', 'unset')]\n",
    );
    write(d, "pipeline.json", ENV_SPEC);
    let secret = [("SECRET_TOKEN", "s3cret-value-1"), ("HOME", "/home/test")];
    let first = stepgraph(d, &["run", "pipeline.json", "--jobs", "1"], &secret);
    assert!(first.status.success(), "{}", text(&first));
    // (step, output data name, file, its text)
    for (step, data, file, want) in [
        (
            "py-plain",
            "py_plain",
            "parallel_run_step.txt",
            "unset home=/home/test\n",
        ),
        (
            "cmd-plain",
            "cmd_plain",
            "env.txt",
            "unset home=/home/test\n",
        ),
        (
            "py-listed",
            "py_listed",
            "parallel_run_step.txt",
            "s3cret-value-1 home=/home/test\n",
        ),
        ("cmd-listed", "cmd_listed", "env.txt", "s3cret-value-1\n"),
    ] {
        assert_eq!(output_of(d, &first, step, data, file), want, "{step}");
    }
    // The value is in the fingerprint as a hash only: never in clear in the store.
    for (path, bytes) in all_bytes(&d.join(".stepgraph")) {
        if path.contains("/outputs/") || path.contains("/objects/") {
            continue; // the steps' own outputs print it on purpose
        }
        assert!(!contains(&bytes, b"s3cret-value-1"), "secret in {path}");
    }
    let same = stepgraph(d, &["run", "pipeline.json", "--jobs", "1"], &secret);
    assert!(
        String::from_utf8_lossy(&same.stdout).contains("(0 ran, 4 reused"),
        "{}",
        text(&same)
    );
    let changed = [("SECRET_TOKEN", "s3cret-value-2"), ("HOME", "/home/test")];
    let again = stepgraph(d, &["run", "pipeline.json", "--jobs", "1"], &changed);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("(2 ran, 2 reused"),
        "only the steps listing SECRET_TOKEN rerun: {}",
        text(&again)
    );
    assert_eq!(
        output_of(d, &again, "cmd-listed", "cmd_listed", "env.txt"),
        "s3cret-value-2\n"
    );
}

const FLOOD_WORKER: &str = r#"import json, sys
SIZE, END = int(sys.argv[1]), sys.argv[2]
for line in sys.stdin:
    m = json.loads(line)
    if m["type"] == "init":
        print(json.dumps({"type": "ready"}), flush=True)
    elif m["type"] == "run":
        chunk = "x" * (1 << 20)
        for _ in range(SIZE >> 20):
            sys.stdout.write(chunk)
        sys.stdout.write("\n" if END == "newline" else "")
        sys.stdout.flush()
"#;

#[test]
fn a_worker_flooding_stdout_fails_its_step_with_bounded_errors_logs_db_and_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, "data/one.txt", "1");
    write(d, "scripts/flood.py", FLOOD_WORKER);
    let hwm = d.join("engine-hwm.txt");
    let spec = format!(
        r#"{{
  "name": "flood",
  "datasets": {{"docs": {{"type": "file", "path": "data"}}}},
  "steps": [
    {{"name": "a-line", "type": "parallel_run", "inputs": ["docs"], "output": "a",
     "parallel_run_config": {{"source_directory": "scripts",
       "entry_command": ["python3", "flood.py", "100000000", "newline"],
       "error_threshold": 0, "run_max_try": 1, "process_count_per_node": 1}}}},
    {{"name": "b-no-newline", "type": "parallel_run", "inputs": ["docs"], "output": "b",
     "parallel_run_config": {{"source_directory": "scripts",
       "entry_command": ["python3", "flood.py", "300000000", "none"],
       "error_threshold": 0, "run_max_try": 1, "process_count_per_node": 1}}}},
    {{"name": "z-probe", "type": "command", "allow_reuse": false,
     "command": ["sh", "-c", "grep VmHWM /proc/$PPID/status > {hwm}"]}}
  ]
}}"#,
        hwm = hwm.display()
    );
    write(d, "pipeline.json", &spec);
    // One job: the probe (last by name) reads the engine's peak memory after both floods.
    let out = stepgraph(d, &["run", "pipeline.json", "--jobs", "1"], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all:.3000}");
    assert!(
        all.contains("worker protocol line over 67108864 bytes"),
        "{all:.3000}"
    );
    assert!(
        out.stdout.len() + out.stderr.len() < 64 * 1024,
        "{} bytes printed",
        out.stdout.len() + out.stderr.len()
    );
    let probe_time = std::fs::metadata(&hwm)
        .and_then(|m| m.modified())
        .expect("the probe ran");
    let mut results = 0;
    for (path, bytes) in all_bytes(&d.join(".stepgraph")) {
        if path.ends_with("job_result.txt") {
            results += 1;
            assert!(bytes.len() < 20 * 1024, "{path}: {} bytes", bytes.len());
            let written = std::fs::metadata(&path).and_then(|m| m.modified());
            assert!(
                written.is_ok_and(|t| t <= probe_time),
                "the probe ran after {path}"
            );
        }
    }
    assert_eq!(results, 2, "both flooding steps wrote their job_result.txt");
    let store_bytes: usize = all_bytes(&d.join(".stepgraph"))
        .iter()
        .map(|(_, b)| b.len())
        .sum();
    assert!(store_bytes < 8 << 20, "store holds {store_bytes} bytes");
    let probe = std::fs::read_to_string(&hwm).expect("the probe ran");
    let kib: u64 = probe
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("VmHWM line: {probe}"));
    eprintln!("engine peak RSS: {kib} KiB");
    assert!(kib < 200 * 1024, "engine peak RSS {kib} KiB");
}

// ----- step processes die with `stepgraph run`, however it is stopped -----

/// Live (not zombie) processes whose command line is exactly `cmdline` (NUL-separated).
fn processes_with_cmdline(cmdline: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let alive = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .is_some_and(|state| state != "Z");
        if alive && std::fs::read(e.path().join("cmdline")).unwrap_or_default() == cmdline {
            out.push(pid);
        }
    }
    out
}

/// Poll `f` until it returns true or `limit` passes (a wait, not a timing assertion).
fn wait_until(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

#[test]
fn step_processes_do_not_outlive_stepgraph_run_on_term_hup_or_kill() {
    for (i, signal) in ["TERM", "HUP", "KILL"].iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // Unique argvs: a `sleep` started by the shell (a grandchild of stepgraph in the
        // command's process group), and one in a session of its own.
        let seconds = format!("{}.{}", 3100 + i, std::process::id());
        let daemon = format!("{}.{}", 3200 + i, std::process::id());
        let spec = serde_json::json!({
            "name": "k",
            "steps": [{"name": "slow", "type": "command",
                "command": ["sh", "-c",
                    format!("setsid sleep {daemon} & sleep {seconds}; echo hi > \"$0\"/f"),
                    "{outputs.o}"],
                "outputs": ["o"]}]
        });
        write(d, "p.json", &spec.to_string());
        let mut run = Command::new(BIN)
            .current_dir(d)
            .args(["run", "p.json"])
            .env_remove("STEPGRAPH_STORE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start stepgraph");
        let cmdline = format!("sleep\0{seconds}\0");
        let daemon_cmdline = format!("sleep\0{daemon}\0");
        let started = wait_until(std::time::Duration::from_secs(60), || {
            !processes_with_cmdline(cmdline.as_bytes()).is_empty()
                && !processes_with_cmdline(daemon_cmdline.as_bytes()).is_empty()
        });
        assert!(started, "the step never started");
        let killed = Command::new("kill")
            .args([format!("-{signal}"), run.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = run.wait().expect("wait");
        assert!(!status.success(), "SIG{signal}: {status:?}");
        // After SIGKILL the kernel and the watchdog kill the step's processes asynchronously.
        let survivors = || {
            let mut pids = processes_with_cmdline(cmdline.as_bytes());
            pids.extend(processes_with_cmdline(daemon_cmdline.as_bytes()));
            pids
        };
        let gone = wait_until(std::time::Duration::from_secs(10), || {
            survivors().is_empty()
        });
        let survivors = survivors();
        for pid in &survivors {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        assert!(
            gone,
            "SIG{signal}: step processes {survivors:?} outlived stepgraph run"
        );
    }
}
