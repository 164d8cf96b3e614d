//! The store from the command line: retention commands, a full disk, a damaged database,
//! interrupted runs, and a reader that closes the pipe early.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{Out, BIN};

/// A folder with `p.json`: one command step writing `size` bytes that differ on every run.
struct Project {
    dir: tempfile::TempDir,
    store: PathBuf,
}

impl Project {
    fn new(size: usize) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join(".stepgraph");
        let p = Project { dir, store };
        p.write(
            "make.py",
            &format!(
                "import os, sys\nos.makedirs(sys.argv[1], exist_ok=True)\n\
                 sys.stderr.write('making\\n' * 50000)\n\
                 open(os.path.join(sys.argv[1], 'big.bin'), 'wb').write(os.urandom({size}))\n"
            ),
        );
        p.write(
            "p.json",
            r#"{"name": "store-cli", "steps": [{"name": "make", "type": "command",
               "command": ["python3", "make.py", "{outputs.out}"], "source_directory": ".",
               "outputs": ["out"]}]}"#,
        );
        p
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).expect("write");
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .env("NO_COLOR", "1");
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        Out(self.cmd(args).output().expect("run stepgraph"))
    }
}

fn run_ids(p: &Project) -> Vec<String> {
    p.run(&["runs"])
        .ok()
        .stdout()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// No Rust debug output or panic in what the user reads.
#[track_caller]
fn assert_clean(text: &str) {
    for bad in ["panicked", "Os {", "StorageFull", "kind:", "RUST_BACKTRACE"] {
        assert!(!text.contains(bad), "{bad:?} in:\n{text}");
    }
}

#[test]
fn every_command_ends_quietly_when_its_reader_is_gone() {
    let p = Project::new(1000);
    p.run(&["run", "p.json"]).ok();
    let id = run_ids(&p).remove(0);
    let commands: Vec<Vec<&str>> = vec![
        vec!["logs", &id, "make"],
        vec!["runs"],
        vec!["runs", "--json"],
        vec!["runs", "show", &id],
        vec!["cache", "ls"],
        vec!["cache", "verify"],
        vec!["cache", "gc", "--dry-run"],
        vec!["runs", "prune", "--keep", "5", "--dry-run"],
        vec!["graph", "p.json"],
        vec!["graph", "p.json", "--format", "json"],
        vec!["graph", &id, "--format", "dot"],
        vec!["status", "p.json"],
        vec!["explain", "p.json"],
        vec!["validate", "p.json"],
        vec!["run", "p.json", "--dry-run"],
        vec!["run", "p.json"],
        vec!["run", "p.json", "--json"],
        vec!["--help"],
    ];
    for args in commands {
        // The read end is closed before the command starts: its first write gets EPIPE.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Out(p
            .cmd(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run stepgraph"));
        assert_eq!(out.code(), 0, "{args:?}: {}", out.stderr());
        assert!(
            !out.stderr().contains("panicked") && !out.stderr().contains("Broken pipe"),
            "{args:?}: {}",
            out.stderr()
        );
    }
}

#[test]
fn runs_prune_and_cache_gc_bring_the_store_back_to_one_copy() {
    let p = Project::new(2 << 20);
    p.run(&["run", "p.json"]).ok();
    for _ in 0..3 {
        p.run(&["run", "p.json", "--force", "make"]).ok();
    }
    let ids = run_ids(&p);
    assert_eq!(ids.len(), 4);
    let ls = p.run(&["cache", "ls"]).ok().stdout();
    assert!(ls.contains("disk") && ls.contains("exclusive"), "{ls}");
    assert!(ls.contains("2.0 MiB"), "{ls}");

    let gc = p.run(&["cache", "gc"]).ok().stdout();
    assert!(gc.contains("3 unreferenced objects"), "{gc}");
    assert!(gc.contains("still linked from runs/ folders"), "{gc}");

    p.run(&["runs", "rm", &ids[3]]).ok();
    let dry = p.run(&["runs", "prune", "--keep", "1", "--dry-run"]).ok();
    assert!(
        dry.stdout().contains("would remove 2 runs (kept 1)"),
        "{}",
        dry.stdout()
    );
    assert_eq!(run_ids(&p).len(), 3, "a dry run removes nothing");
    let prune = p.run(&["runs", "prune", "--keep", "1"]).ok().stdout();
    assert!(prune.contains("removed 2 runs (kept 1)"), "{prune}");
    assert_eq!(run_ids(&p), [ids[0].clone()]);
    assert!(!p.store.join("runs").join(&ids[1]).exists());
    let bad = p.run(&["runs", "rm", "no-such-run"]);
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr().contains("unknown run"), "{}", bad.stderr());

    let ls = p.run(&["cache", "ls"]).ok().stdout();
    let total = ls
        .lines()
        .find(|l| l.starts_with("store "))
        .unwrap_or_default()
        .to_string();
    assert!(total.contains("objects 2.0 MiB"), "{ls}");
    // The kept run's output is reused.
    let again = p.run(&["run", "p.json"]).ok().stdout();
    assert!(again.contains("(0 ran, 1 reused"), "{again}");
}

#[test]
fn cache_gc_help_says_how_the_options_combine() {
    let p = Project::new(10);
    let help = p.run(&["cache", "gc", "--help"]).ok().stdout();
    for want in [
        "--keep-last",
        "--older-than",
        "--max-size",
        "--dry-run",
        "latest run of each pipeline",
        "cheapest to recompute",
        "last link",
    ] {
        assert!(help.contains(want), "{want:?} missing from:\n{help}");
    }
    let bad = p.run(&["cache", "gc", "--max-size", "12 parsecs"]);
    assert_eq!(bad.code(), 2);
    let bad = p.run(&["cache", "gc", "--older-than", "soon"]);
    assert_eq!(bad.code(), 2);
}

#[test]
fn garbage_in_db_conf_is_repaired_once_and_the_cache_still_serves() {
    let p = Project::new(1000);
    p.run(&["run", "p.json"]).ok();
    std::fs::write(
        p.store.join("db/conf"),
        b"\xff\xfe not a sled config \xff\xff\xff\xff\xff\xff",
    )
    .expect("scribble");
    let out = p.run(&["run", "p.json"]).ok();
    assert_eq!(
        out.stderr().matches("warning:").count(),
        1,
        "{}",
        out.stderr()
    );
    assert!(out.stderr().contains("moved it to"), "{}", out.stderr());
    assert!(
        out.stdout().contains("(0 ran, 1 reused"),
        "{}",
        out.stdout()
    );
    let again = p.run(&["runs"]).ok();
    assert!(!again.stderr().contains("warning"), "{}", again.stderr());
    assert_eq!(again.stdout().lines().count(), 3, "{}", again.stdout());
}

/// Start `stepgraph run` of a one-step pipeline whose step sleeps 5 s, and return once the step
/// runs (so the run's record is written).
fn start_slow_run(p: &Project) -> std::process::Child {
    p.write(
        "slow.py",
        "import sys, time\nopen(sys.argv[1], 'w').write('started')\ntime.sleep(5)\n",
    );
    let marker = p.path("started.txt");
    p.write(
        "slow.json",
        &format!(
            r#"{{"name": "slow", "steps": [{{"name": "sleep-a-while", "type": "command",
              "command": ["python3", "slow.py", {marker:?}], "source_directory": ".",
              "allow_reuse": false}}]}}"#
        ),
    );
    let child = p
        .cmd(&["run", "slow.json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    for _ in 0..400 {
        if marker.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(marker.exists(), "the step never started");
    child
}

#[test]
fn a_killed_run_is_shown_as_interrupted() {
    let p = Project::new(10);
    let mut child = start_slow_run(&p);
    child.kill().expect("kill");
    child.wait().expect("wait");
    let runs = p.run(&["runs"]).ok().stdout();
    assert!(runs.contains("interrupted"), "{runs}");
    let json = p.run(&["runs", "--json"]).ok().stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["status"], "interrupted");
    assert!(v[0]["pid"].as_u64().is_some(), "{json}");
}

#[test]
fn a_deleted_lock_file_gives_a_clear_error_while_the_store_is_in_use() {
    let p = Project::new(10);
    let mut child = start_slow_run(&p);
    std::fs::remove_file(p.store.join("lock")).expect("delete the lock file");
    let out = p.run(&["runs"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.code(), 2, "{}", out.stdout());
    assert!(
        out.stderr().contains("in use by another process") && out.stderr().contains("lock file"),
        "{}",
        out.stderr()
    );
    assert_clean(&out.stderr());
}

/// A tmpfs mounted on a temporary folder for the test's life (unmounted on drop, also when
/// the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after printing why) when mounting is impossible here; under CI=true that is a
    /// failure, not a skip.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the full-disk test needs to mount a tmpfs (run as root): {why}");
        }
        eprintln!("skipping the full-disk test: cannot mount a tmpfs ({why})");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write until the disk is full, then give back `leave` bytes.
    fn fill(&self, name: &str, leave: u64) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join(name)).expect("filler");
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![7u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(leave)).expect("shrink filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a process still holds a file there): detach it now, free it later.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn a_full_disk_still_lets_runs_be_listed_pruned_and_gc_free_space() {
    let Some(disk) = Tmpfs::mount("24M") else {
        return;
    };
    let mut p = Project::new(3 << 20);
    p.store = disk.path().join("store");
    p.run(&["run", "p.json"]).ok();
    p.run(&["run", "p.json", "--force", "make"]).ok();
    // A run with less than the margin free is refused before it starts (no record, no
    // folder left behind)...
    disk.fill("filler", 3 << 19);
    let failed = p.run(&["run", "p.json", "--force", "make"]);
    assert_eq!(failed.code(), 2, "{}", failed.stdout());
    assert_clean(&failed.stderr());
    let folders = std::fs::read_dir(p.store.join("runs"))
        .expect("runs/")
        .count();
    assert_eq!(folders, 2, "a refused run leaves no folder");
    disk.fill("filler-2", 0);
    // ...and a run on the full disk is refused before it starts, and says why in words.
    let err = p.run(&["run", "p.json", "--force", "make"]).fails(2);
    assert!(err.contains("is full") && err.contains("cache gc"), "{err}");
    assert_clean(&err);
    // Reading and freeing still work.
    let ids = run_ids(&p);
    assert_eq!(ids.len(), 2, "{ids:?}");
    for args in [
        vec!["runs"],
        vec!["runs", "show", &ids[0]],
        vec!["cache", "ls"],
        vec!["logs", &ids[1], "make"],
    ] {
        let out = p.run(&args).ok();
        assert_clean(&out.stderr());
    }
    let prune = p.run(&["runs", "prune", "--keep", "1"]).ok();
    assert_clean(&prune.stderr());
    let gc = p.run(&["cache", "gc"]).ok();
    assert_clean(&gc.stderr());
    assert!(gc.stdout().contains("freed"), "{}", gc.stdout());
    // With the space freed, a run works again.
    std::fs::remove_file(disk.path().join("filler")).expect("unfill");
    p.run(&["run", "p.json", "--force", "make"]).ok();

    // A store that cannot even be created on the full disk: the error names the disk and
    // the fix.
    disk.fill("filler", 0);
    let mut fresh = Project::new(10);
    fresh.store = disk.path().join("fresh/store");
    let err = fresh.run(&["run", "p.json"]).fails(2);
    assert!(
        err.contains("is full") && err.contains("runs prune"),
        "{err}"
    );
    assert_clean(&err);
}

/// Every regular file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_folder_that_is_not_a_store_is_never_adopted_and_gc_leaves_foreign_files_alone() {
    // A user's folder with the store's folder names in it is refused, untouched.
    let mut p = Project::new(100);
    let user = p.path("u");
    for (rel, text) in [
        ("entries/notes.json", "{\"my\":\"data\"}"),
        ("objects/ab/cdef", "precious"),
        ("objects/tmp/important", "x"),
        ("progress/model.bin", "p"),
    ] {
        let f = user.join(rel);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, text).expect("write");
    }
    let before = files(&user);
    p.store = user.clone();
    for args in [vec!["runs"], vec!["cache", "gc"], vec!["run", "p.json"]] {
        let out = p.run(&args);
        assert_eq!(out.code(), 2, "{args:?}: {}", out.stdout());
        assert!(
            out.stderr().contains("is not a stepgraph store"),
            "{}",
            out.stderr()
        );
        assert_clean(&out.stderr());
    }
    assert_eq!(files(&user), before, "nothing written or removed");
    // In a real store, gc removes only names the store writes.
    p.store = p.path(".stepgraph");
    p.run(&["run", "p.json"]).ok();
    let foreign = [
        "entries/notes.json",
        "objects/ab/cdef",
        "objects/tmp/important",
        "progress/model.bin",
    ];
    for rel in foreign {
        let f = p.store.join(rel);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, "mine").expect("write");
    }
    let gc = p.run(&["cache", "gc"]).ok();
    assert!(
        gc.stdout().contains("left alone 4 files"),
        "{}",
        gc.stdout()
    );
    for rel in foreign {
        assert!(p.store.join(rel).exists(), "{rel} removed by gc");
    }
    // An empty folder is fine, and becomes a store.
    p.store = p.path("empty");
    std::fs::create_dir(&p.store).expect("mkdir");
    p.run(&["runs"]).ok();
}

#[test]
fn a_missing_db_is_rebuilt_and_record_less_run_folders_can_be_removed() {
    let p = Project::new(1000);
    p.run(&["run", "p.json"]).ok();
    p.run(&["run", "p.json"]).ok();
    let ids = run_ids(&p);
    assert_eq!(ids.len(), 2);
    std::fs::remove_dir_all(p.store.join("db")).expect("rm db");
    let runs = p.run(&["runs"]).ok();
    assert!(runs.stderr().contains("is missing"), "{}", runs.stderr());
    assert_clean(&runs.stderr());
    assert_eq!(run_ids(&p).len(), 2);
    let again = p.run(&["run", "p.json"]).ok();
    assert!(again.stdout().contains("1 reused"), "{}", again.stdout());
    p.run(&["cache", "gc"]).ok();
    assert_eq!(
        std::fs::read_dir(p.store.join("entries"))
            .expect("entries")
            .count(),
        1,
        "the entry's JSON copy stays"
    );
    // Run folders without a record: `runs rm` takes them, gc and prune remove them.
    let runs_dir = p.store.join("runs");
    for id in ["20200101-000000-aaaa", "20200101-000000-bbbb"] {
        std::fs::create_dir_all(runs_dir.join(id).join("make/outputs")).expect("mkdir");
        std::fs::write(runs_dir.join(id).join("make/outputs/x"), vec![1u8; 9000]).expect("w");
    }
    p.run(&["runs", "rm", "20200101-000000-aaaa"]).ok();
    assert!(!runs_dir.join("20200101-000000-aaaa").exists());
    let gc = p.run(&["cache", "gc"]).ok();
    assert!(
        gc.stdout().contains("1 run folders without a record"),
        "{}",
        gc.stdout()
    );
    assert!(!runs_dir.join("20200101-000000-bbbb").exists());
    assert_eq!(run_ids(&p).len(), 3);
}

#[test]
fn logs_are_printed_as_bytes_even_when_not_utf8() {
    let p = Project::new(10);
    p.write(
        "lg.json",
        r#"{"name":"lg","steps":[{"name":"cmd","type":"command",
            "command":["sh","-c","echo important; printf 'caf\\351\\n'; exit 3"]}]}"#,
    );
    let run = p.run(&["run", "lg.json"]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let id = run_ids(&p).remove(0);
    let logs = p.run(&["logs", &id, "cmd"]).ok();
    let out = &logs.0.stdout;
    let has = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"important\n"), "{}", logs.stdout());
    assert!(has(b"caf\xe9\n"), "{}", logs.stdout());
}

#[test]
fn store_errors_are_one_clean_sentence() {
    let p = Project::new(10);
    // An empty folder given as the store becomes one.
    std::fs::create_dir(&p.store).expect("mkdir store");
    p.run(&["runs"]).ok();
    // The lock file is a folder.
    std::fs::remove_file(p.store.join("lock")).expect("rm lock");
    std::fs::create_dir(p.store.join("lock")).expect("mkdir lock");
    let err = p.run(&["runs"]).fails(2);
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    std::fs::remove_dir(p.store.join("lock")).expect("rmdir lock");
    // A store folder that is a file.
    std::fs::remove_dir_all(p.store.join("progress")).expect("rm progress");
    std::fs::write(p.store.join("progress"), "x").expect("write");
    let err = p.run(&["runs"]).fails(2);
    assert_eq!(err.matches("File exists").count(), 1, "{err}");
    std::fs::remove_file(p.store.join("progress")).expect("rm");
    // A damaged database is described in words.
    p.run(&["run", "p.json"]).ok();
    for e in std::fs::read_dir(p.store.join("db")).expect("db").flatten() {
        if e.path().is_file() && e.file_name() != "conf" {
            std::fs::write(e.path(), vec![0x5a; 4096]).expect("scribble");
        }
    }
    let out = p.run(&["runs"]).ok();
    assert!(
        out.stderr().contains("could not be used"),
        "{}",
        out.stderr()
    );
    for bad in ["backtrace", "offset None", "os error"] {
        assert!(!out.stderr().contains(bad), "{}", out.stderr());
    }
}

#[test]
fn a_plan_that_cannot_be_made_is_bad_input() {
    let p = Project::new(10);
    p.write(
        "ds.json",
        r#"{"name":"ds","datasets":{"docs":{"type":"file","path":"missing","pattern":"*.txt"}},
            "steps":[{"name":"cat","type":"command","command":["cat","{inputs.docs}"],
            "inputs":{"docs":"docs"}}]}"#,
    );
    for args in [
        vec!["run", "ds.json", "--dry-run"],
        vec!["explain", "ds.json"],
        vec!["status", "ds.json"],
    ] {
        let out = p.run(&args);
        assert_eq!(out.code(), 2, "{args:?}: {}{}", out.stdout(), out.stderr());
    }
}

#[test]
fn a_step_that_fills_the_disk_leaves_a_store_that_recovers() {
    let Some(disk) = Tmpfs::mount("20M") else {
        return;
    };
    let mut p = Project::new(10);
    p.store = disk.path().join("st");
    p.write(
        "big.json",
        r#"{"name":"full","steps":[{"name":"big","type":"command","command":["sh","-c",
            "head -c 6000000 /dev/urandom > $0/b","{outputs.o}"],"outputs":["o"],
            "allow_reuse":false}]}"#,
    );
    p.write(
        "fill.json",
        r#"{"name":"full2","steps":[{"name":"fill","type":"command","command":["sh","-c",
            "head -c 30000000 /dev/zero > $0/b","{outputs.o}"],"outputs":["o"]}]}"#,
    );
    p.run(&["run", "big.json"]).ok();
    let fill = p.run(&["run", "fill.json"]);
    assert_eq!(fill.code(), 1, "a failed step: {}", fill.stderr());
    assert_clean(&fill.stderr());
    // The run ended normally: its record says failed, not interrupted.
    let runs = p.run(&["runs"]).ok();
    let line = runs
        .stdout()
        .lines()
        .find(|l| l.contains("full2"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("failed"), "{}", runs.stdout());
    // Listing and freeing work; a run waits for room.
    for args in [vec!["runs"], vec!["cache", "ls"], vec!["cache", "gc"]] {
        let out = p.run(&args).ok();
        assert_clean(&out.stderr());
    }
    let prune = p.run(&["runs", "prune", "--keep", "0"]).ok();
    assert_clean(&prune.stderr());
    p.run(&["cache", "gc"]).ok();
    p.run(&["run", "big.json"]).ok();
    p.run(&["cache", "gc"]).ok();
    let asides = std::fs::read_dir(&p.store)
        .expect("store")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("db.corrupt-"))
        .count();
    assert_eq!(asides, 0, "gc removes databases moved aside");
}
