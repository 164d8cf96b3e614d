//! Tests of the `stepgraph` binary on temporary folders.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{Out, Project};

impl Project {
    /// A project with a 2-step spec: a ParallelRunStep over text files and a summarising command.
    fn new() -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Project { dir };
        for i in 1..=12 {
            p.write(
                &format!("data/doc-{i:02}.txt"),
                &format!("document number {i}\n"),
            );
        }
        p.write(
            "scripts/score.py",
            "import os\n\ndef init():\n    pass\n\ndef run(mini_batch):\n    return [f\"{os.path.basename(p)} {len(open(p).read())}\" for p in mini_batch]\n",
        );
        p.write(
            "scripts/summarize.py",
            "import sys, os\nrows = open(os.path.join(sys.argv[1], 'parallel_run_step.txt')).read().splitlines()\nos.makedirs(sys.argv[2], exist_ok=True)\nopen(os.path.join(sys.argv[2], 'report.txt'), 'w').write(f'{len(rows)} rows tag={sys.argv[3]}\\n')\n",
        );
        p.write("pipeline.json", &Self::spec(""));
        p
    }

    fn spec(extra_prc: &str) -> String {
        format!(
            r#"{{
  "name": "cli-test",
  "parameters": {{"tag": "alpha"}},
  "datasets": {{"docs": {{"type": "file", "path": "data", "pattern": "*.txt"}}}},
  "steps": [
    {{"name": "score-docs", "type": "parallel_run", "inputs": ["docs"], "output": "scores",
     "parallel_run_config": {{"source_directory": "scripts", "entry_script": "score.py",
       "mini_batch_size": "4", "error_threshold": 0, "process_count_per_node": 2{extra_prc}}}}},
    {{"name": "summarize", "type": "command",
     "command": ["python3", "summarize.py", "{{inputs.scores}}", "{{outputs.report}}", "{{params.tag}}"],
     "source_directory": "scripts", "inputs": {{"scores": "scores"}}, "outputs": ["report"]}}
  ]
}}"#
        )
    }
}

fn run_id_of(out: &Out) -> String {
    let text = out.stdout();
    let line = text
        .lines()
        .find(|l| l.starts_with("run "))
        .expect("summary line");
    line.trim_start_matches("run ")
        .split(':')
        .next()
        .expect("run id")
        .to_string()
}

#[test]
fn run_twice_second_run_reuses_every_step() {
    let p = Project::new();
    let first = p.run(&["run", "pipeline.json"]).ok();
    assert!(
        first.stdout().contains("(2 ran, 0 reused"),
        "{}",
        first.stdout()
    );
    let second = p.run(&["run", "pipeline.json"]).ok();
    assert!(
        second.stdout().contains("(0 ran, 2 reused"),
        "{}",
        second.stdout()
    );
    assert!(!second.stdout().contains('\x1b'), "no colours when piped");
}

#[test]
fn run_json_prints_one_event_per_line() {
    let p = Project::new();
    let out = p.run(&["run", "pipeline.json", "--json"]).ok();
    let events: Vec<serde_json::Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert!(kinds.contains(&"progress"));
    assert_eq!(kinds.iter().filter(|k| **k == "step_finished").count(), 2);
}

#[test]
fn a_failing_step_exits_1_and_names_the_error() {
    let p = Project::new();
    p.write(
        "scripts/score.py",
        "def run(mini_batch):\n    raise ValueError('no scores today')\n",
    );
    let out = p.run(&["run", "pipeline.json"]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(
        out.stderr().contains("ValueError: no scores today"),
        "{}",
        out.stderr()
    );
    assert!(out.stdout().contains("skipped"), "{}", out.stdout());
}

#[test]
fn dry_run_status_and_explain_name_the_change() {
    let p = Project::new();
    let plan = p.run(&["run", "pipeline.json", "--dry-run"]).ok();
    assert!(plan.stdout().contains("never run"), "{}", plan.stdout());
    p.run(&["run", "pipeline.json"]).ok();
    let status = p.run(&["status", "pipeline.json"]).ok();
    assert!(
        status.stdout().contains("is up to date"),
        "{}",
        status.stdout()
    );

    let explain = p
        .run(&[
            "explain",
            "pipeline.json",
            "summarize",
            "--param",
            "tag=beta",
        ])
        .ok();
    assert!(
        explain
            .stdout()
            .contains("params.tag: \"alpha\" -> \"beta\""),
        "{}",
        explain.stdout()
    );

    p.write("data/doc-05.txt", "changed\n");
    p.write("data/doc-13.txt", "new\n");
    let explain = p.run(&["explain", "pipeline.json"]).ok();
    let text = explain.stdout();
    assert!(
        text.contains("inputs.input: changed doc-05.txt, added doc-13.txt"),
        "{text}"
    );
    assert!(
        text.contains("summarize: will run if upstream output changes"),
        "{text}"
    );
    let status = p.run(&["status", "pipeline.json"]).ok();
    assert!(
        status.stdout().contains("score-docs: will run"),
        "{}",
        status.stdout()
    );
}

#[test]
fn graph_formats_render() {
    let p = Project::new();
    let text = p.run(&["graph", "pipeline.json"]).ok().stdout();
    assert!(
        text.contains("score-docs [parallel_run/1]: would run (never run)"),
        "{text}"
    );
    assert!(
        text.contains("output output: scores -> summarize"),
        "{text}"
    );
    let mermaid = p
        .run(&["graph", "pipeline.json", "--format", "mermaid"])
        .ok()
        .stdout();
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("n0 -->|\"scores\"| n1"), "{mermaid}");
    let json = p
        .run(&["graph", "pipeline.json", "--format", "json"])
        .ok()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("graph json");
    assert_eq!(v["graph"]["nodes"][0]["name"], "score-docs");
    let dot = p
        .run(&["graph", "pipeline.json", "--format", "dot"])
        .ok()
        .stdout();
    assert!(dot.starts_with("digraph"), "{dot}");
    match Command::new("dot").arg("-V").output() {
        Ok(_) => {
            let mut child = Command::new("dot")
                .arg("-Tsvg")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start dot");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(dot.as_bytes())
                .expect("write dot");
            let out = child.wait_with_output().expect("dot output");
            assert!(
                out.status.success(),
                "dot failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
        }
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "graphviz must be installed in CI"
            );
            common::skipped(
                "rendering `graph --format dot` with graphviz",
                "graphviz's `dot` is not on PATH (apt-get install graphviz)",
            );
        }
    }
    // The graph of a past run, by id.
    let run = p.run(&["run", "pipeline.json"]).ok();
    let id = run_id_of(&run);
    let g = p.run(&["graph", &id]).ok().stdout();
    assert!(g.contains("score-docs [parallel_run/1]: ran"), "{g}");
}

#[test]
fn runs_logs_and_show() {
    let p = Project::new();
    let first = p.run(&["run", "pipeline.json"]).ok();
    let id = run_id_of(&first);
    p.run(&["run", "pipeline.json"]).ok();
    let runs = p.run(&["runs"]).ok().stdout();
    let ids: Vec<&str> = runs
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], id, "newest first");
    let show = p.run(&["runs", "show", &id]).ok().stdout();
    assert!(
        show.contains("12 items (0 failed), 3 mini-batches"),
        "{show}"
    );
    let logs = p.run(&["logs", &id, "score-docs"]).ok().stdout();
    assert!(logs.contains("==> job_result.txt <=="), "{logs}");
    assert!(logs.contains("items: 12 processed, 0 failed"), "{logs}");
    // Azure's layout: logs/user/<stream>/<node>/<process>.*, workers node by node.
    assert!(
        logs.contains("==> user/stderr/0/process001.stderr.txt <=="),
        "{logs}"
    );
    let worker = p
        .run(&["logs", &id, "score-docs", "--worker", "1"])
        .ok()
        .stdout();
    assert!(
        worker.contains("==> user/stderr/0/process001.stderr.txt <=="),
        "{worker}"
    );
    assert!(!worker.contains("process000"), "{worker}");
    let err = p
        .run(&["logs", &id, "score-docs", "--worker", "2"])
        .fails(2);
    assert!(err.contains("no log for worker 2"), "{err}");
    let err = p.run(&["logs", &id, "nope"]).fails(2);
    assert!(err.contains("has no step \"nope\""), "{err}");
    p.run(&["runs", "show", "nope"]).fails(2);
}

#[test]
fn cache_ls_rm_verify_and_gc_never_delete_referenced_objects() {
    let p = Project::new();
    p.run(&["run", "pipeline.json"]).ok();
    let ls = p.run(&["cache", "ls"]).ok().stdout();
    assert!(
        ls.contains("score-docs") && ls.contains("summarize"),
        "{ls}"
    );
    // Nothing unreferenced yet: gc removes nothing.
    let gc = p.run(&["cache", "gc"]).ok().stdout();
    assert!(
        gc.starts_with("removed 0 cache entries (kept 2), 0 unreferenced objects"),
        "{gc}"
    );
    let verify = p.run(&["cache", "verify"]).ok().stdout();
    assert!(verify.contains("verified 2 entries: 0 dropped"), "{verify}");
    // Removing summarize's entry makes its objects unreferenced; gc removes exactly those.
    p.run(&["cache", "rm", "summarize"]).ok();
    let dry = p.run(&["cache", "gc", "--dry-run"]).ok().stdout();
    assert!(
        dry.starts_with("would remove 0 cache entries (kept 1), 1 unreferenced objects"),
        "{dry}"
    );
    p.run(&["cache", "gc"]).ok();
    // score-docs is still served from the cache with intact objects.
    let again = p.run(&["run", "pipeline.json"]).ok().stdout();
    assert!(again.contains("(1 ran, 1 reused"), "{again}");
    let verify = p.run(&["cache", "verify"]).ok().stdout();
    assert!(verify.contains("0 dropped"), "{verify}");
    p.run(&["cache", "rm", "nothing-here"]).fails(2);
}

#[test]
fn cache_verify_drops_entries_with_damaged_objects() {
    let p = Project::new();
    p.run(&["run", "pipeline.json"]).ok();
    let objects = p.path(".stepgraph/objects");
    let mut damaged = 0;
    for shard in std::fs::read_dir(&objects).expect("objects") {
        let shard = shard.expect("entry").path();
        if shard.file_name().is_some_and(|n| n == "tmp") || !shard.is_dir() {
            continue;
        }
        for obj in std::fs::read_dir(&shard).expect("shard") {
            let obj = obj.expect("obj").path();
            let mut perms = std::fs::metadata(&obj).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&obj, perms).expect("chmod");
            std::fs::write(&obj, b"damaged").expect("damage");
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let verify = p.run(&["cache", "verify"]).ok().stdout();
    assert!(verify.contains("verified 2 entries: 2 dropped"), "{verify}");
    let again = p.run(&["run", "pipeline.json"]).ok().stdout();
    assert!(again.contains("(2 ran, 0 reused"), "{again}");
}

fn assert_bad(p: &Project, spec: &str, want: &[&str]) {
    p.write("bad.json", spec);
    let out = p.run(&["validate", "bad.json"]);
    assert_eq!(
        out.code(),
        2,
        "stdout {} stderr {}",
        out.stdout(),
        out.stderr()
    );
    let err = out.stderr();
    for w in want {
        assert!(err.contains(w), "want {w:?} in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let run = p.run(&["run", "bad.json"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
}

#[test]
fn bad_specs_exit_2_naming_file_step_and_field() {
    let p = Project::new();
    let good = Project::spec("");
    p.run(&["validate", "pipeline.json"]).ok();
    let cycle = r#"{"name": "p", "steps": [
      {"name": "aaa", "type": "command", "command": ["true"], "inputs": {"x": "c"}, "outputs": ["a"]},
      {"name": "bbb", "type": "command", "command": ["true"], "inputs": {"x": "a"}, "outputs": ["b"]},
      {"name": "ccc", "type": "command", "command": ["true"], "inputs": {"x": "b"}, "outputs": ["c"]}]}"#;
    // (spec, what the error must say)
    let cases = [
        (
            good.replace("\"mini_batch_size\"", "\"mini_batchsize\""),
            "bad.json: step \"score-docs\": unknown field \"mini_batchsize\"",
        ),
        (
            good.replace("\"error_threshold\": 0", "\"error_threshold\": \"none\""),
            "bad.json: step \"score-docs\": field \"parallel_run_config.error_threshold\": expected a whole number, got the string \"none\"",
        ),
        (
            good.replace("\"error_threshold\": 0, ", ""),
            "bad.json: step \"score-docs\": field \"parallel_run_config.error_threshold\": is required",
        ),
        (
            good.replace("\"inputs\": [\"docs\"]", "\"inputs\": [\"dcos\"]"),
            "bad.json: step \"score-docs\": field \"inputs\" names unknown data \"dcos\"",
        ),
        (
            good.replace("\"name\": \"cli-test\",", ""),
            "bad.json: missing field \"name\"",
        ),
        (
            "{\"name\": \"x\", \"steps\": [".to_string(),
            "bad.json: invalid JSON",
        ),
        (
            good.replace(
                "\"mini_batch_size\": \"4\"",
                "\"mini_batch_size\": \"4 MB\"",
            ),
            "bad.json: step \"score-docs\": field \"parallel_run_config.mini_batch_size\"",
        ),
        (
            cycle.to_string(),
            "bad.json: cycle between steps: aaa -> bbb -> ccc -> aaa",
        ),
    ];
    for (spec, want) in &cases {
        assert_bad(&p, spec, &[want]);
    }
    // (command, what the error must say)
    for (args, want) in [
        (
            &["validate", "missing.json"][..],
            "missing.json: cannot read",
        ),
        (
            &["run", "pipeline.json", "--param", "nope=1"][..],
            "unknown parameter \"nope\"",
        ),
        (
            &["run", "pipeline.json", "--force", "nope"][..],
            "unknown step \"nope\"",
        ),
    ] {
        let out = p.run(args);
        assert_eq!(out.code(), 2, "{args:?}");
        assert!(out.stderr().contains(want), "{args:?}: {}", out.stderr());
    }
}

/// Type errors in a spec are one sentence naming file, step, field and what was expected.
#[test]
fn spec_type_errors_are_one_sentence_naming_the_field() {
    let p = Project::new();
    let good = Project::spec("");
    let field = "bad.json: step \"score-docs\": field \"parallel_run_config.";
    for (from, to, want) in [
        (
            "\"mini_batch_size\": \"4\"",
            "\"mini_batch_size\": 5.5",
            format!("{field}mini_batch_size\": expected a whole number of files or a size like \"10MB\", got 5.5"),
        ),
        (
            "\"error_threshold\": 0",
            "\"error_threshold\": 1e309",
            format!("{field}error_threshold\": expected a number that fits in 64 bits, got 1e309 (line 8, column 51), which is out of range"),
        ),
    ] {
        p.write("bad.json", &good.replace(from, to));
        let out = p.run(&["validate", "bad.json"]);
        assert_eq!(out.code(), 2, "{}", out.stderr());
        assert_eq!(out.stderr().trim_end(), format!("error: {want}"));
    }
}

#[test]
fn force_reruns_one_step() {
    let p = Project::new();
    p.run(&["run", "pipeline.json"]).ok();
    let out = p
        .run(&["run", "pipeline.json", "--force", "summarize"])
        .ok()
        .stdout();
    assert!(out.contains("(1 ran, 1 reused"), "{out}");
}

fn slow_project() -> Project {
    let p = Project::new();
    p.write("slow.py", "import time\ntime.sleep(3)\n");
    p.write(
        "slow.json",
        r#"{"name": "slow", "steps": [{"name": "sleep-a-while", "type": "command",
          "command": ["python3", "slow.py"], "source_directory": ".", "allow_reuse": false}]}"#,
    );
    p
}

fn wait_for_lock(dir: &Path) {
    for _ in 0..100 {
        if std::fs::read_to_string(dir.join(".stepgraph/lock")).is_ok_and(|s| !s.is_empty()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_second_run_on_a_busy_store_is_refused_or_waits() {
    let p = slow_project();
    let mut first = p
        .cmd(&["run", "slow.json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for_lock(p.dir.path());
    let second = p.run(&["run", "slow.json"]);
    assert_eq!(second.code(), 2, "{}", second.stderr());
    assert!(
        second.stderr().contains("is in use by run pid")
            && second.stderr().contains("(use --wait to wait for it)"),
        "{}",
        second.stderr()
    );
    let waited = p.run(&["run", "slow.json", "--wait"]).ok();
    assert!(waited.stdout().contains("(1 ran"), "{}", waited.stdout());
    assert!(first.wait().expect("first").success());
    let runs = p.run(&["runs"]).ok().stdout();
    assert_eq!(
        runs.lines()
            .skip(1)
            .filter(|l| l.contains("succeeded"))
            .count(),
        2,
        "{runs}"
    );
}

#[test]
fn help_texts_have_examples() {
    let p = Project::new();
    let help = p.run(&["run", "--help"]).ok().stdout();
    assert!(
        help.contains("Examples:") && help.contains("--param"),
        "{help}"
    );
}

#[test]
fn a_pipeline_built_in_code_gets_the_same_subcommands() {
    use stepgraph_engine::{Pipeline, PipelineData};
    use stepgraph_steps::FnStep;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let store = store.to_str().expect("utf-8 path");
    let build = || {
        let hello = FnStep::new("hello", "v1", |ctx| {
            std::fs::write(ctx.output("out")?.join("hello.txt"), "hello")?;
            Ok(())
        })
        .output("out", PipelineData::new("greeting"));
        Pipeline::builder("in-code")
            .step(hello)
            .build()
            .expect("pipeline")
    };
    let code = |args: &[&str]| {
        let mut all = vec!["my-program", "--store", store];
        all.extend_from_slice(args);
        stepgraph_cli::run_with_args(all, Some(build()))
    };
    assert_eq!(code(&["run"]), 0);
    assert_eq!(code(&["run"]), 0);
    assert_eq!(code(&["status"]), 0);
    assert_eq!(code(&["explain", "hello"]), 0);
    assert_eq!(code(&["graph", "--format", "mermaid"]), 0);
    assert_eq!(code(&["cache", "ls"]), 0);
    assert_eq!(code(&["runs"]), 0);
    // A spec file makes no sense for a pipeline built in code.
    assert_eq!(code(&["run", "pipeline.json"]), 2);
    let s = stepgraph_engine::Store::open(store, stepgraph_engine::OpenOptions::default())
        .expect("store");
    let runs = s.runs().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0].steps[0].status,
        stepgraph_engine::StepStatus::Reused
    );
}

#[test]
fn a_declared_model_shows_in_explain_and_metrics_in_runs_show() {
    let p = Project::new();
    p.write("models/prefix.txt", "scored\n");
    p.write(
        "scripts/score.py",
        "import os\nfrom azureml.core import Model, Run\n\ndef init():\n    global prefix\n    prefix = open(Model.get_model_path('prefix')).read().strip()\n\ndef run(mini_batch):\n    Run.get_context().log('docs', len(mini_batch))\n    return [prefix + ' ' + os.path.basename(p) for p in mini_batch]\n",
    );
    let spec = Project::spec("").replacen(
        "\"steps\": [",
        "\"models\": {\"prefix\": {\"path\": \"models/prefix.txt\"}},\n  \"steps\": [",
        1,
    );
    p.write(
        "pipeline.json",
        &spec.replacen(
            "\"output\": \"scores\",",
            "\"output\": \"scores\", \"models\": [\"prefix:1\"],",
            1,
        ),
    );
    let first = p.run(&["run", "pipeline.json"]).ok();
    let id = run_id_of(&first);
    let show = p.run(&["runs", "show", &id]).ok().stdout();
    assert!(show.contains("metrics (<step>/metrics.jsonl"), "{show}");
    let row = show
        .lines()
        .find(|l| l.starts_with("score-docs") && l.contains(" docs "))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(row, ["score-docs", "docs", "log", "3", "4"], "{show}");

    p.write("models/prefix.txt", "rescored\n");
    let explain = p
        .run(&["explain", "pipeline.json", "score-docs"])
        .ok()
        .stdout();
    assert!(
        explain.contains("models.prefix: changed 1/prefix.txt"),
        "{explain}"
    );

    // A step naming a model the spec does not declare is bad input.
    let bad = spec.replacen(
        "\"output\": \"scores\",",
        "\"output\": \"scores\", \"models\": [\"resnet\"],",
        1,
    );
    p.write("pipeline.json", &bad);
    let err = p.run(&["validate", "pipeline.json"]).fails(2);
    assert!(
        err.contains("step \"score-docs\": field \"models[0]\": unknown model \"resnet\""),
        "{err}"
    );
}

#[test]
fn an_incremental_step_explains_how_many_mini_batches_will_run_and_reports_reused_ones() {
    let p = Project::new();
    for i in 13..=60 {
        p.write(
            &format!("data/doc-{i:02}.txt"),
            &format!("document number {i}\n"),
        );
    }
    p.write("pipeline.json", &Project::spec(", \"incremental\": true"));
    let first = p.run(&["run", "pipeline.json"]).ok();
    assert!(
        first.stdout().contains("(2 ran, 0 reused"),
        "{}",
        first.stdout()
    );

    p.write("data/doc-05.txt", "changed\n");
    p.write("data/doc-61.txt", "new\n");
    let explain = p.run(&["explain", "pipeline.json", "score-docs"]).ok();
    let text = explain.stdout();
    assert!(
        text.contains("inputs.input"),
        "the changed input is named: {text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("incremental:"))
        .unwrap_or_else(|| panic!("no incremental line in {text}"));
    // "  incremental: N of M mini-batches will run (K reused)"
    let words: Vec<&str> = line.split_whitespace().collect();
    let to_run: u64 = words[1].replace(',', "").parse().expect("to run");
    let total: u64 = words[3].replace(',', "").parse().expect("total");
    assert!((1..=4).contains(&to_run) && total >= 10, "{line}");

    let dry = p.run(&["run", "pipeline.json", "--dry-run"]).ok();
    assert!(dry.stdout().contains("reused)"), "{}", dry.stdout());

    let second = p.run(&["run", "pipeline.json"]).ok();
    let out = second.stdout() + &second.stderr();
    assert!(out.contains(&format!("reused, {to_run} to run")), "{out}");
    let show = p.run(&["runs", "show", &run_id_of(&second)]).ok();
    assert!(show.stdout().contains(" reused)"), "{}", show.stdout());
    let job_result = std::fs::read_to_string(p.path(&format!(
        ".stepgraph/runs/{}/score-docs/logs/job_result.txt",
        run_id_of(&second)
    )))
    .expect("job_result.txt");
    assert!(job_result.contains("incremental: "), "{job_result}");
}
