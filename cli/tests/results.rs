//! Finding results: `outputs`, `get`, the final outputs after `run`, `runs show ID --json`,
//! `logs` of a reused step, and how the store is found.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{sg, Out, BIN};

/// A project folder with a 2-step pipeline: `score-docs` (data `scores`, port `output`) and
/// `summarize` (data `report`).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path());
    dir
}

/// Write the project's files into `dir`.
fn fill(dir: &Path) {
    let write = |rel: &str, text: &str| common::write_file(dir, rel, text);
    for i in 1..=4 {
        write(&format!("data/doc-{i}.txt"), &format!("document {i}\n"));
    }
    write(
        "scripts/score.py",
        "import os\n\ndef run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch]\n",
    );
    write(
        "scripts/summarize.py",
        "import sys, os\nprint('summarizing')\nrows = open(os.path.join(sys.argv[1], 'parallel_run_step.txt')).read().splitlines()\nos.makedirs(sys.argv[2], exist_ok=True)\nopen(os.path.join(sys.argv[2], 'report.txt'), 'w').write(f'{len(rows)} rows\\n')\n",
    );
    write(
        "pipeline.json",
        &common::score_and_summarize_spec("results", 2, 1, "report", ""),
    );
}

/// The run id in `run`'s last line (`run ID: succeeded …`).
fn run_id(out: &Out) -> String {
    out.stdout()
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split(':')
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no run id in {}", out.stdout()))
}

fn output_dir(project: &Path, run: &str, step: &str, name: &str) -> PathBuf {
    project
        .join(".stepgraph/runs")
        .join(run)
        .join(step)
        .join("outputs")
        .join(name)
}

#[test]
fn output_folders_are_named_by_their_data_and_run_ends_with_the_final_outputs() {
    let p = project();
    let out = sg(p.path(), &["run", "pipeline.json"]).ok();
    let id = run_id(&out);
    // The ParallelRunStep's port is `output`; its folder is its data's name.
    let scores = output_dir(p.path(), &id, "score-docs", "scores");
    assert!(scores.join("parallel_run_step.txt").is_file());
    assert!(!output_dir(p.path(), &id, "score-docs", "output").exists());
    // `run` ends with the final step's output folder (not the intermediate one).
    let text = out.stdout();
    let tail: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("outputs"))
        .collect();
    assert_eq!(tail.len(), 2, "{text}");
    let line = tail[1];
    assert!(line.contains("summarize:report"), "{text}");
    let shown = line.split_whitespace().last().expect("path");
    assert_eq!(
        p.path().join(shown),
        output_dir(p.path(), &id, "summarize", "report"),
        "{text}"
    );
    assert!(p.path().join(shown).join("report.txt").is_file());
    // A reusing run shows its own folders too.
    let again = sg(p.path(), &["run", "pipeline.json"]).ok();
    let id2 = run_id(&again);
    assert!(
        again
            .stdout()
            .contains(&format!("runs/{id2}/summarize/outputs/report")),
        "{}",
        again.stdout()
    );
    // `--json` stays JSON lines only.
    let json = sg(p.path(), &["run", "pipeline.json", "--json"]).ok();
    for l in json.stdout().lines() {
        serde_json::from_str::<serde_json::Value>(l).expect("a JSON line");
    }
}

#[test]
fn outputs_lists_step_output_path_and_size_of_the_latest_run_or_a_given_one() {
    let p = project();
    let first = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    let second = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    let text = sg(p.path(), &["outputs"]).ok().stdout();
    assert!(text.starts_with(&format!("run {second} ")), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("score-docs"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["score-docs", "scores", "reused"], "{row}");
    assert!(
        row.ends_with(&format!(
            ".stepgraph/runs/{second}/score-docs/outputs/scores"
        )),
        "{row}"
    );
    let size = std::fs::metadata(
        output_dir(p.path(), &second, "score-docs", "scores").join("parallel_run_step.txt"),
    )
    .expect("output file")
    .len();
    assert!(row.contains(&format!("{size} B (1 file)")), "{row}");
    // JSON, for a given run.
    let json = sg(p.path(), &["outputs", &first, "--json"]).ok().stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["run"], first.as_str());
    let outs = v["outputs"].as_array().expect("outputs");
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0]["step"], "score-docs");
    assert_eq!(outs[0]["output"], "scores");
    assert_eq!(outs[0]["port"], "output");
    assert_eq!(outs[0]["size"], size);
    assert_eq!(
        PathBuf::from(outs[1]["path"].as_str().expect("path")),
        std::fs::canonicalize(output_dir(p.path(), &first, "summarize", "report"))
            .expect("canonical")
    );
    // Unknown runs and empty stores are errors that say what to do.
    let err = sg(p.path(), &["outputs", "nope"]).fails(2);
    assert!(err.contains("unknown run \"nope\""), "{err}");
    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(empty.path().join(".stepgraph")).expect("mkdir");
    let err = sg(empty.path(), &["outputs", "--store", ".stepgraph"]).fails(2);
    assert!(err.contains("no runs in"), "{err}");
}

#[test]
fn get_copies_or_links_one_output_and_refuses_a_non_empty_dest_without_force() {
    let p = project();
    let first = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    let second = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    let stored =
        output_dir(p.path(), &second, "score-docs", "scores").join("parallel_run_step.txt");
    let want = std::fs::read_to_string(&stored).expect("stored output");
    // STEP alone when it has one output; from the latest run, where the step was reused.
    let said = sg(p.path(), &["get", "score-docs", "got"]).ok().stdout();
    assert!(
        said.contains(&format!("copied score-docs:scores of run {second}")),
        "{said}"
    );
    let copy = p.path().join("got/parallel_run_step.txt");
    assert_eq!(std::fs::read_to_string(&copy).expect("copy"), want);
    let meta = std::fs::metadata(&copy).expect("copy");
    assert_ne!(
        meta.ino(),
        std::fs::metadata(&stored).expect("stored").ino()
    );
    assert!(
        !meta.permissions().readonly(),
        "a copy is the user's to edit"
    );
    // A non-empty DEST is refused, and the message says how to go on.
    let err = sg(p.path(), &["get", "score-docs", "got"]).fails(2);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    std::fs::write(&copy, "edited").expect("edit");
    std::fs::write(p.path().join("got/mine.txt"), "mine").expect("write");
    sg(p.path(), &["get", "score-docs", "got", "--force"]).ok();
    assert_eq!(std::fs::read_to_string(&copy).expect("copy"), want);
    assert!(p.path().join("got/mine.txt").is_file(), "other files stay");
    // STEP:OUTPUT by data name or port, from a given run, as hard links.
    sg(
        p.path(),
        &[
            "get",
            "summarize:report",
            "linked",
            "--run",
            &first,
            "--link",
        ],
    )
    .ok();
    let linked = std::fs::metadata(p.path().join("linked/report.txt")).expect("linked");
    let source =
        std::fs::metadata(output_dir(p.path(), &first, "summarize", "report").join("report.txt"))
            .expect("stored");
    assert_eq!(linked.ino(), source.ino());
    sg(p.path(), &["get", "score-docs:output", "by-port"]).ok();
    assert!(p.path().join("by-port/parallel_run_step.txt").is_file());
    // Bad names say what there is.
    let err = sg(p.path(), &["get", "score-docs:nope", "x"]).fails(2);
    assert!(err.contains("outputs: scores"), "{err}");
    let err = sg(p.path(), &["get", "nope", "x", "--run", &first]).fails(2);
    assert!(err.contains("score-docs, summarize"), "{err}");
    assert!(!p.path().join("x").exists());
    // Never into the store itself.
    let err = sg(p.path(), &["get", "score-docs", ".stepgraph/runs/mine"]).fails(2);
    assert!(err.contains("inside the store"), "{err}");
    assert!(!p.path().join(".stepgraph/runs/mine").exists());
}

#[test]
fn runs_flags_are_taken_before_or_after_the_action() {
    let p = project();
    let id = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    for args in [
        ["runs", "show", id.as_str(), "--json"],
        ["runs", "--json", "show", id.as_str()],
    ] {
        let text = sg(p.path(), &args).ok().stdout();
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["id"], id.as_str(), "{args:?}");
    }
    // The text form says where the outputs are listed.
    let text = sg(p.path(), &["runs", "show", &id]).ok().stdout();
    assert!(
        text.ends_with(&format!("outputs: stepgraph outputs {id}\n")),
        "{text}"
    );
}

#[test]
fn logs_of_a_reused_step_come_from_the_run_that_made_it() {
    let p = project();
    let first = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    let second = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    let text = sg(p.path(), &["logs", &second, "summarize"]).ok().stdout();
    assert!(
        text.starts_with(&format!(
            "step \"summarize\" was reused in run {second}: it ran in run {first}"
        )),
        "{text}"
    );
    assert!(text.contains("summarizing"), "{text}");
    // Once that run is removed, the logs are gone, and `logs` says so.
    sg(p.path(), &["runs", "rm", &first]).ok();
    let text = sg(p.path(), &["logs", &second, "summarize"]).ok().stdout();
    assert!(text.contains("which has been removed"), "{text}");
}

#[test]
fn the_store_is_found_in_a_parent_or_next_to_the_spec_and_store_flags_win() {
    let p = project();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let spec = p.path().join("pipeline.json");
    let spec = spec.to_str().expect("utf-8 path");
    // No store anywhere: `run` makes one next to the spec, not in the current folder.
    sg(elsewhere.path(), &["run", spec]).ok();
    assert!(p.path().join(".stepgraph/runs").is_dir());
    assert!(!elsewhere.path().join(".stepgraph").exists());
    // From elsewhere, `status` finds it next to the spec and does not say "never run".
    let status = sg(elsewhere.path(), &["status", spec]).ok();
    assert!(
        status.stdout().contains("is up to date"),
        "{}",
        status.stdout()
    );
    assert!(!elsewhere.path().join(".stepgraph").exists());
    // From a subfolder of the project, the nearest store in a parent is used.
    std::fs::create_dir_all(p.path().join("sub/dir")).expect("mkdir");
    let status = sg(
        &p.path().join("sub/dir"),
        &["status", "../../pipeline.json"],
    )
    .ok();
    assert!(
        status.stdout().contains("is up to date"),
        "{}",
        status.stdout()
    );
    let runs = sg(&p.path().join("sub/dir"), &["runs"]).ok().stdout();
    assert!(runs.contains("results"), "{runs}");
    assert!(!p.path().join("sub/dir/.stepgraph").exists());
    // --store and STEPGRAPH_STORE win over discovery.
    let other = elsewhere.path().join("other-store");
    let other = other.to_str().expect("utf-8 path");
    let status = sg(p.path(), &["status", "pipeline.json", "--store", other]).ok();
    assert!(status.stdout().contains("never run"), "{}", status.stdout());
    let env_store = elsewhere.path().join("env-store");
    let out = Out(Command::new(BIN)
        .current_dir(p.path())
        .args(["status", "pipeline.json"])
        .env("STEPGRAPH_STORE", &env_store)
        .output()
        .expect("run stepgraph"));
    assert!(out.ok().stdout().contains("never run"));
    assert!(env_store.join(".stepgraph-store").is_file());
    // A command with a spec that finds no store says which new one it uses (next to the spec);
    // one without a spec is refused instead of given a new, empty store.
    let fresh = tempfile::tempdir().expect("tempdir");
    fill(&fresh.path().join("proj"));
    let out = sg(fresh.path(), &["status", "proj/pipeline.json"]).ok();
    assert!(out.stdout().contains("never run"), "{}", out.stdout());
    assert!(
        out.stderr().contains("using a new one") && out.stderr().contains("proj/.stepgraph"),
        "{}",
        out.stderr()
    );
    assert!(fresh.path().join("proj/.stepgraph").is_dir());
    let lone = tempfile::tempdir().expect("tempdir");
    for args in [
        &["runs"][..],
        &["outputs"],
        &["logs", "r", "s"],
        &["cache", "ls"],
    ] {
        let err = sg(lone.path(), args).fails(2);
        assert!(err.contains("no stepgraph store here"), "{args:?}: {err}");
    }
    assert!(!lone.path().join(".stepgraph").exists());
}

#[test]
fn runs_made_before_output_folders_were_named_by_data_stay_readable() {
    let p = project();
    let id = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    // An old run: the ParallelRunStep's folder was named by its port.
    std::fs::rename(
        output_dir(p.path(), &id, "score-docs", "scores"),
        output_dir(p.path(), &id, "score-docs", "output"),
    )
    .expect("rename");
    let text = sg(p.path(), &["outputs"]).ok().stdout();
    assert!(
        text.contains(&format!(".stepgraph/runs/{id}/score-docs/outputs/output")),
        "{text}"
    );
    sg(p.path(), &["get", "score-docs", "old"]).ok();
    assert!(p.path().join("old/parallel_run_step.txt").is_file());
}

/// A project whose only step writes part of its output and fails.
fn failing_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write(
        "scripts/fail.py",
        "import sys, os\nos.makedirs(sys.argv[1], exist_ok=True)\nopen(os.path.join(sys.argv[1], 'partial.txt'), 'w').write('half')\nsys.exit(3)\n",
    );
    write(
        "pipeline.json",
        r#"{"name": "failing", "steps": [
  {"name": "bad", "type": "command", "command": ["python3", "fail.py", "{outputs.broken}"],
   "source_directory": "scripts", "outputs": ["broken"]}]}"#,
    );
    dir
}

#[test]
fn a_failed_steps_leftovers_are_neither_final_outputs_nor_gettable() {
    let p = failing_project();
    let out = sg(p.path(), &["run", "pipeline.json"]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    let id = run_id(&out);
    assert!(
        p.path()
            .join(format!(
                ".stepgraph/runs/{id}/bad/outputs/broken/partial.txt"
            ))
            .is_file(),
        "the failed step left a file (for debugging)"
    );
    assert!(
        !out.stdout().contains("bad:broken"),
        "a failed step's folder is not a result: {}",
        out.stdout()
    );
    let err = sg(p.path(), &["get", "bad", "got", "--run", &id]).fails(2);
    assert!(err.contains("it failed"), "{err}");
    assert!(!p.path().join("got").exists());
}

#[test]
fn get_takes_a_symlinked_empty_folder_and_refuses_a_file_or_a_link_across_file_systems() {
    let p = project();
    sg(p.path(), &["run", "pipeline.json"]).ok();
    // DEST a symbolic link to an empty folder: that folder is filled.
    let target = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(target.path(), p.path().join("via-link")).expect("symlink");
    sg(p.path(), &["get", "summarize", "via-link"]).ok();
    assert!(target.path().join("report.txt").is_file());
    // DEST a file: said so, with or without --force, and the file is left alone.
    std::fs::write(p.path().join("a-file"), "mine").expect("write");
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec!["get", "summarize", "a-file"];
        args.extend_from_slice(extra);
        let err = sg(p.path(), &args).fails(2);
        assert!(err.contains("a-file is a file"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join("a-file")).expect("read"),
        "mine"
    );
    // --link to another file system: one clear sentence, and nothing made.
    let shm = Path::new("/dev/shm");
    let other = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten()
        .filter(|d| {
            std::fs::metadata(d.path()).expect("meta").dev()
                != std::fs::metadata(p.path()).expect("meta").dev()
        });
    if let Some(other) = other {
        let dest = other.path().join("linked");
        let dest = dest.to_str().expect("utf-8");
        let err = sg(p.path(), &["get", "summarize", dest, "--link"]).fails(2);
        assert!(
            err.contains("another file system") && err.contains("leave --link out"),
            "{err}"
        );
        assert!(!Path::new(dest).exists(), "no empty DEST left behind");
        sg(p.path(), &["get", "summarize", dest]).ok();
    }
}

#[test]
fn a_store_flag_or_variable_naming_a_missing_folder_is_refused_by_commands_that_only_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("typo/store");
    let missing_s = missing.to_str().expect("utf-8");
    for args in [
        &["outputs"][..],
        &["runs"][..],
        &["runs", "show", "x"][..],
        &["logs", "x", "y"][..],
        &["get", "a", "b"][..],
        &["cache", "ls"][..],
        &["cache", "gc"][..],
        &["report"][..],
    ] {
        let mut with_flag = vec!["--store", missing_s];
        with_flag.extend_from_slice(args);
        let err = sg(dir.path(), &with_flag).fails(2);
        assert!(err.contains("no stepgraph store at"), "{args:?}: {err}");
        let out = Out(Command::new(BIN)
            .current_dir(dir.path())
            .args(args)
            .env("STEPGRAPH_STORE", &missing)
            .output()
            .expect("run stepgraph"));
        let err = out.fails(2);
        assert!(err.contains("no stepgraph store at"), "{args:?}: {err}");
        assert!(!dir.path().join("typo").exists(), "{args:?} made a store");
    }
    // A run makes it.
    fill(dir.path());
    sg(dir.path(), &["--store", missing_s, "run", "pipeline.json"]).ok();
    sg(dir.path(), &["--store", missing_s, "outputs"]).ok();
}

#[test]
fn a_stepgraph_file_where_the_store_would_go_is_named_as_a_file() {
    let p = project();
    std::fs::write(p.path().join(".stepgraph"), "not a store").expect("write");
    let err = sg(p.path(), &["run", "pipeline.json"]).fails(2);
    assert!(
        err.contains(".stepgraph is a file, not a stepgraph store folder"),
        "{err}"
    );
    let err = sg(p.path(), &["--store", "pipeline.json", "runs"]).fails(2);
    assert!(err.contains("pipeline.json is a file"), "{err}");
}

#[test]
fn outputs_json_of_a_project_in_a_folder_whose_name_is_not_utf8_does_not_panic() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join(std::ffi::OsStr::from_bytes(b"proj\xff"));
    std::fs::create_dir(&project).expect("mkdir");
    fill(&project);
    sg(&project, &["run", "pipeline.json"]).ok();
    let out = sg(&project, &["outputs", "--json"]).ok().stdout();
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let path = v["outputs"][0]["path"].as_str().expect("path");
    assert!(path.contains("proj\u{fffd}"), "{path}");
}

#[test]
fn outputs_does_not_follow_a_link_loop_left_by_a_failed_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Outputs may not hold links: the step fails and leaves them behind.
    std::fs::write(
        dir.path().join("pipeline.json"),
        r#"{"name": "loops", "steps": [{"name": "mk-loop", "type": "command",
  "command": ["sh", "-c", "mkdir -p \"$1/sub\"; echo x > \"$1/sub/f\"; ln -s . \"$1/sub/a\"; ln -s . \"$1/sub/b\"", "sh", "{outputs.out}"],
  "outputs": ["out"]}]}"#,
    )
    .expect("write");
    assert_eq!(sg(dir.path(), &["run", "pipeline.json"]).code(), 1);
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["outputs", "--json"])
        .env_remove("STEPGRAPH_STORE")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("outputs followed the link loop");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["outputs"][0]["files"], 1, "{v}");
}

#[test]
fn an_output_whose_folder_was_removed_is_said_to_be_missing() {
    let p = project();
    let id = run_id(&sg(p.path(), &["run", "pipeline.json"]).ok());
    std::fs::remove_dir_all(p.path().join(".stepgraph/runs").join(&id).join("summarize"))
        .expect("rm");
    let out = sg(p.path(), &["outputs"]).ok().stdout();
    let row = out
        .lines()
        .find(|l| l.starts_with("summarize"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("its folder was removed"), "{out}");
    let err = sg(p.path(), &["get", "summarize", "got", "--run", &id]).fails(2);
    assert!(err.contains("is missing"), "{err}");
}
