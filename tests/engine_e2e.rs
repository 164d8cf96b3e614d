//! Engine end-to-end: reuse, reruns, early cutoff, forcing, failures and run records, through
//! the public API with `FnStep` closures whose executions are counted.

use std::error::Error;
use std::path::Path;
use std::time::{Duration, SystemTime};

use stepgraph_engine::{
    run, CollectSink, EngineError, Event, FileDataset, Pipeline, PipelineData, RunOptions,
    RunStatus, RunSummary, StepError, StepStatus, Store,
};
use stepgraph_steps::{FnContext, FnStep};

use crate::common::{ev, jobs, read_output, Counter, Workspace};

type TestResult = Result<(), Box<dyn Error>>;

/// Every file of input `port`, concatenated in path order.
fn read_input(ctx: &FnContext<'_>, port: &str) -> Result<String, StepError> {
    let mut s = String::new();
    for f in ctx.input_files(port)? {
        s.push_str(&std::fs::read_to_string(f)?);
    }
    Ok(s)
}

/// Write `contents` to `file` in output `port`.
fn write_output(
    ctx: &FnContext<'_>,
    port: &str,
    file: &str,
    contents: &str,
) -> Result<(), StepError> {
    std::fs::write(ctx.output(port)?.join(file), contents)?;
    Ok(())
}

/// Execution counters of the diamond's steps.
#[derive(Default, Clone)]
struct DiamondCounts {
    a: Counter,
    b: Counter,
    c: Counter,
    d: Counter,
}

impl DiamondCounts {
    fn all(&self) -> [usize; 4] {
        [self.a.get(), self.b.get(), self.c.get(), self.d.get()]
    }
}

/// `a-read` (reads `docs/`) feeds `b-upper` and `c-rev`, which both feed `d-join`.
/// With `extra`, `c-rev` also reads the dataset `extra/`, which nothing else reads.
fn diamond(ws: &Workspace, n: &DiamondCounts, extra: bool) -> Result<Pipeline, Box<dyn Error>> {
    let (ca, cb, cc, cd) = (n.a.clone(), n.b.clone(), n.c.clone(), n.d.clone());
    let a = FnStep::new("a-read", "v1", move |ctx| {
        ca.hit();
        let text = read_input(ctx, "docs")?;
        write_output(ctx, "out", "a.txt", &text)
    })
    .input(
        "docs",
        FileDataset::from_files("docs", ws.path().join("docs")),
    )
    .output("out", PipelineData::new("a-out"));
    let b = FnStep::new("b-upper", "v1", move |ctx| {
        cb.hit();
        let text = read_input(ctx, "src")?;
        write_output(ctx, "out", "b.txt", &text.to_uppercase())
    })
    .input("src", PipelineData::new("a-out"))
    .output("out", PipelineData::new("b-out"));
    let mut c = FnStep::new("c-rev", "v1", move |ctx| {
        cc.hit();
        let mut text: String = read_input(ctx, "src")?.chars().rev().collect();
        if extra {
            text.push_str(&read_input(ctx, "extra")?);
        }
        write_output(ctx, "out", "c.txt", &text)
    })
    .input("src", PipelineData::new("a-out"))
    .output("out", PipelineData::new("c-out"));
    if extra {
        c = c.input(
            "extra",
            FileDataset::from_files("extra", ws.path().join("extra")),
        );
    }
    let d = FnStep::new("d-join", "v1", move |ctx| {
        cd.hit();
        let text = format!("{}|{}", read_input(ctx, "left")?, read_input(ctx, "right")?);
        write_output(ctx, "out", "d.txt", &text)
    })
    .input("left", PipelineData::new("b-out"))
    .input("right", PipelineData::new("c-out"))
    .output("out", PipelineData::new("d-out"));
    Ok(Pipeline::builder("diamond")
        .step(d)
        .step(c)
        .step(b)
        .step(a)
        .build()?)
}

fn diamond_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("docs/one.txt", "ab");
    ws.write("docs/two.txt", "cd");
    ws.write("extra/x.txt", "x1");
    ws
}

/// The diamond over a fresh [`diamond_workspace`], with its store and its counters.
struct Diamond {
    p: Pipeline,
    n: DiamondCounts,
    store: Store,
    ws: Workspace,
}

impl Diamond {
    /// The diamond (`extra`: see [`diamond`]), nothing run yet.
    fn new(extra: bool) -> Result<Self, Box<dyn Error>> {
        let ws = diamond_workspace();
        let store = ws.store();
        let n = DiamondCounts::default();
        let p = diamond(&ws, &n, extra)?;
        Ok(Diamond { p, n, store, ws })
    }

    /// Run it with `opts`, collecting its events.
    fn run(&self, opts: &RunOptions) -> Result<(RunSummary, CollectSink), Box<dyn Error>> {
        run_collect(&self.p, &self.store, opts)
    }

    /// Run it with one job, its events not looked at.
    fn run_quiet(&self) -> Result<RunSummary, Box<dyn Error>> {
        Ok(run(
            &self.p,
            &self.store,
            &jobs(1),
            &CollectSink::default(),
        )?)
    }
}

/// Run `p` with `opts`, collecting its events.
fn run_collect(
    p: &Pipeline,
    store: &Store,
    opts: &RunOptions,
) -> Result<(RunSummary, CollectSink), Box<dyn Error>> {
    let sink = CollectSink::default();
    let s = run(p, store, opts, &sink)?;
    Ok((s, sink))
}

fn all_ran(names: &[&str]) -> Vec<(&'static str, String)> {
    names
        .iter()
        .flat_map(|n| [("started", n.to_string()), ("finished", n.to_string())])
        .collect()
}

const DIAMOND: [&str; 4] = ["a-read", "b-upper", "c-rev", "d-join"];

#[test]
fn diamond_first_run_executes_every_step_in_dependency_order() -> TestResult {
    let d = Diamond::new(false)?;
    let (s, sink) = d.run(&jobs(1))?;
    assert_eq!(s.status, RunStatus::Succeeded);
    assert_eq!(sink.step_events(), all_ran(&DIAMOND));
    assert_eq!(d.n.all(), [1, 1, 1, 1]);
    assert_eq!(read_output(&s, "d-join", "out", "d.txt")?, "ABCD|dcba");
    Ok(())
}

#[test]
fn diamond_second_run_reuses_every_step_without_executing() -> TestResult {
    let d = Diamond::new(false)?;
    d.run_quiet()?;
    let (s, sink) = d.run(&jobs(1))?;
    assert_eq!(
        sink.step_events(),
        ev(&[
            ("reused", "a-read"),
            ("reused", "b-upper"),
            ("reused", "c-rev"),
            ("reused", "d-join")
        ])
    );
    assert_eq!(
        d.n.all(),
        [1, 1, 1, 1],
        "no closure may execute on a full cache hit"
    );
    assert_eq!(s.status, RunStatus::Succeeded);
    assert_eq!(
        read_output(&s, "d-join", "out", "d.txt")?,
        "ABCD|dcba",
        "a reused output is materialised in the new run"
    );
    Ok(())
}

/// Run the diamond (`extra`: see [`diamond`]), rewrite `rel` with `contents`, run it again:
/// the second run emits `events`, the steps have run `counts` times in all, and `d.txt` is
/// `joined`.
fn check_input_change(
    extra: bool,
    (rel, contents): (&str, &str),
    events: Vec<(&'static str, String)>,
    counts: [usize; 4],
    joined: &str,
) -> TestResult {
    let d = Diamond::new(extra)?;
    d.run_quiet()?;
    d.ws.write(rel, contents);
    let (s, sink) = d.run(&jobs(1))?;
    assert_eq!(sink.step_events(), events);
    assert_eq!(d.n.all(), counts);
    assert_eq!(read_output(&s, "d-join", "out", "d.txt")?, joined);
    Ok(())
}

#[test]
fn diamond_input_change_reruns_every_step_downstream_of_the_reader() -> TestResult {
    check_input_change(
        false,
        ("docs/two.txt", "ef"),
        all_ran(&DIAMOND),
        [2, 2, 2, 2],
        "ABEF|feba",
    )
}

#[test]
fn diamond_branch_dataset_change_reruns_only_that_branch_and_the_join() -> TestResult {
    check_input_change(
        true,
        ("extra/x.txt", "x2"),
        ev(&[
            ("reused", "a-read"),
            ("reused", "b-upper"),
            ("started", "c-rev"),
            ("finished", "c-rev"),
            ("started", "d-join"),
            ("finished", "d-join"),
        ]),
        [1, 1, 2, 2],
        "ABCD|dcbax2",
    )
}

/// `count` writes the number of lines of `lines/`; `report` formats that number.
fn line_count_pipeline(
    ws: &Workspace,
    count_runs: &Counter,
    report_runs: &Counter,
) -> Result<Pipeline, Box<dyn Error>> {
    let (cc, cr) = (count_runs.clone(), report_runs.clone());
    let count = FnStep::new("count", "v1", move |ctx| {
        cc.hit();
        let n = read_input(ctx, "lines")?.lines().count();
        write_output(ctx, "out", "n.txt", &n.to_string())
    })
    .input(
        "lines",
        FileDataset::from_files("lines", ws.path().join("lines")),
    )
    .output("out", PipelineData::new("n"));
    let report = FnStep::new("report", "v1", move |ctx| {
        cr.hit();
        let n = read_input(ctx, "n")?;
        write_output(ctx, "out", "report.txt", &format!("{n} lines"))
    })
    .input("n", PipelineData::new("n"))
    .output("out", PipelineData::new("report"));
    Ok(Pipeline::builder("lines")
        .step(count)
        .step(report)
        .build()?)
}

fn early_cutoff_flag(sink: &CollectSink, step: &str) -> Option<bool> {
    sink.events().into_iter().find_map(|e| match e {
        Event::StepReused {
            step: s,
            early_cutoff,
            ..
        } if s == step => Some(early_cutoff),
        _ => None,
    })
}

#[test]
fn unchanged_upstream_output_cuts_off_the_downstream_rerun() -> TestResult {
    let ws = Workspace::new();
    ws.write("lines/l.txt", "a\nb\nc\n");
    let store = ws.store();
    let (nc, nr) = (Counter::new(), Counter::new());
    let p = line_count_pipeline(&ws, &nc, &nr)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    ws.write("lines/l.txt", "x\ny\nz\n");
    let (s, sink) = run_collect(&p, &store, &jobs(1))?;
    assert_eq!(
        sink.step_events(),
        ev(&[
            ("started", "count"),
            ("finished", "count"),
            ("reused", "report")
        ])
    );
    assert_eq!((nc.get(), nr.get()), (2, 1));
    assert_eq!(early_cutoff_flag(&sink, "report"), Some(true));
    assert_eq!(read_output(&s, "report", "out", "report.txt")?, "3 lines");
    Ok(())
}

#[test]
fn plain_reuse_is_not_reported_as_early_cutoff() -> TestResult {
    let ws = Workspace::new();
    ws.write("lines/l.txt", "a\nb\n");
    let store = ws.store();
    let p = line_count_pipeline(&ws, &Counter::new(), &Counter::new())?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let (_, sink) = run_collect(&p, &store, &jobs(1))?;
    assert_eq!(early_cutoff_flag(&sink, "count"), Some(false));
    assert_eq!(early_cutoff_flag(&sink, "report"), Some(false));
    Ok(())
}

fn set_mtime(path: &Path, t: SystemTime) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(t)
}

#[test]
fn touched_input_with_same_content_reruns_nothing() -> TestResult {
    let d = Diamond::new(false)?;
    d.run_quiet()?;
    set_mtime(
        &d.ws.path().join("docs/one.txt"),
        SystemTime::now() + Duration::from_secs(120),
    )?;
    let (_, sink) = d.run(&jobs(1))?;
    assert_eq!(d.n.all(), [1, 1, 1, 1]);
    assert!(sink.step_events().iter().all(|(k, _)| *k == "reused"));
    Ok(())
}

#[test]
fn input_rewritten_with_the_same_bytes_reruns_nothing() -> TestResult {
    let d = Diamond::new(false)?;
    d.run_quiet()?;
    let f = d.ws.path().join("docs/one.txt");
    std::fs::remove_file(&f)?;
    d.ws.write("docs/one.txt", "ab");
    d.run_quiet()?;
    assert_eq!(d.n.all(), [1, 1, 1, 1]);
    Ok(())
}

/// The stat memo must not trust a file whose mtime is not older than the moment it was hashed:
/// on a coarse clock a same-size rewrite in the same tick keeps size, inode and mtime.
/// Pinning the mtime (here, slightly ahead) reproduces that tick deterministically.
#[test]
fn same_size_rewrite_keeping_the_mtime_is_still_detected() -> TestResult {
    let ws = Workspace::new();
    let f = ws.write("lines/l.txt", "a\nb\n");
    let pinned = SystemTime::now() + Duration::from_secs(60);
    set_mtime(&f, pinned)?;
    let store = ws.store();
    let (nc, nr) = (Counter::new(), Counter::new());
    let p = line_count_pipeline(&ws, &nc, &nr)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    std::fs::write(&f, "a\n\n\n")?; // same size, one more line
    set_mtime(&f, pinned)?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(read_output(&s, "report", "out", "report.txt")?, "3 lines");
    Ok(())
}

/// `fixed` may be reused; `always` (allow_reuse off) reads it.
fn reuse_off_pipeline(fixed: &Counter, always: &Counter) -> Result<Pipeline, Box<dyn Error>> {
    let (cf, ca) = (fixed.clone(), always.clone());
    let f = FnStep::new("fixed", "v1", move |ctx| {
        cf.hit();
        write_output(ctx, "out", "f.txt", "f")
    })
    .output("out", PipelineData::new("f"));
    let a = FnStep::new("always", "v1", move |ctx| {
        ca.hit();
        let text = read_input(ctx, "f")?;
        write_output(ctx, "out", "a.txt", &text)
    })
    .input("f", PipelineData::new("f"))
    .output("out", PipelineData::new("a"))
    .allow_reuse(false);
    Ok(Pipeline::builder("reuse-off").step(f).step(a).build()?)
}

#[test]
fn allow_reuse_false_step_runs_every_time() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (nf, na) = (Counter::new(), Counter::new());
    let p = reuse_off_pipeline(&nf, &na)?;
    for _ in 0..3 {
        run(&p, &store, &jobs(1), &CollectSink::default())?;
    }
    let (_, sink) = run_collect(&p, &store, &jobs(1))?;
    assert_eq!(
        sink.step_events(),
        ev(&[
            ("reused", "fixed"),
            ("started", "always"),
            ("finished", "always")
        ])
    );
    assert_eq!((nf.get(), na.get()), (1, 4));
    Ok(())
}

#[test]
fn forced_step_reruns_and_its_unchanged_output_cuts_off_downstream() -> TestResult {
    let d = Diamond::new(false)?;
    d.run_quiet()?;
    let mut opts = jobs(1);
    opts.plan.force.insert("b-upper".into());
    let (_, sink) = d.run(&opts)?;
    assert_eq!(
        sink.step_events(),
        ev(&[
            ("reused", "a-read"),
            ("started", "b-upper"),
            ("finished", "b-upper"),
            ("reused", "c-rev"),
            ("reused", "d-join"),
        ])
    );
    assert_eq!(d.n.all(), [1, 2, 1, 1]);
    assert_eq!(early_cutoff_flag(&sink, "d-join"), Some(true));
    Ok(())
}

#[test]
fn regenerate_outputs_reruns_every_step() -> TestResult {
    let d = Diamond::new(false)?;
    d.run_quiet()?;
    let mut opts = jobs(1);
    opts.plan.regenerate_outputs = true;
    let (_, sink) = d.run(&opts)?;
    assert_eq!(sink.step_events(), all_ran(&DIAMOND));
    assert_eq!(d.n.all(), [2, 2, 2, 2]);
    Ok(())
}

#[test]
fn forcing_an_unknown_step_is_an_error_before_anything_runs() -> TestResult {
    let d = Diamond::new(false)?;
    let mut opts = jobs(1);
    opts.plan.force.insert("no-such-step".into());
    match run(&d.p, &d.store, &opts, &CollectSink::default()) {
        Err(EngineError::UnknownStep { name }) => assert_eq!(name, "no-such-step"),
        other => panic!("expected UnknownStep, got {other:?}"),
    }
    assert_eq!(d.n.all(), [0, 0, 0, 0]);
    assert!(d.store.runs()?.is_empty());
    Ok(())
}

/// `src` feeds `bad` (fails) -> `bad-child` -> `bad-grandchild`, and `good`.
fn failing_pipeline(
    good_runs: &Counter,
    skipped_runs: &Counter,
    fail_with: impl Fn() -> Result<(), StepError> + Send + Sync + 'static,
) -> Result<Pipeline, Box<dyn Error>> {
    let src = FnStep::new("src", "v1", |ctx| write_output(ctx, "out", "s.txt", "s"))
        .output("out", PipelineData::new("s"));
    let bad = FnStep::new("bad", "v1", move |_ctx| fail_with())
        .input("s", PipelineData::new("s"))
        .output("out", PipelineData::new("bad-out"));
    let (c1, c2) = (skipped_runs.clone(), skipped_runs.clone());
    let child = FnStep::new("bad-child", "v1", move |ctx| {
        c1.hit();
        write_output(ctx, "out", "c.txt", "c")
    })
    .input("x", PipelineData::new("bad-out"))
    .output("out", PipelineData::new("child-out"));
    let grandchild = FnStep::new("bad-grandchild", "v1", move |_ctx| {
        c2.hit();
        Ok(())
    })
    .input("x", PipelineData::new("child-out"));
    let g = good_runs.clone();
    let good = FnStep::new("good", "v1", move |ctx| {
        g.hit();
        write_output(ctx, "out", "g.txt", &read_input(ctx, "s")?)
    })
    .input("s", PipelineData::new("s"))
    .output("out", PipelineData::new("good-out"));
    Ok(Pipeline::builder("failing")
        .step(src)
        .step(bad)
        .step(child)
        .step(grandchild)
        .step(good)
        .build()?)
}

#[test]
fn failing_step_skips_its_descendants_while_a_sibling_branch_succeeds() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (good, skipped) = (Counter::new(), Counter::new());
    let p = failing_pipeline(&good, &skipped, || {
        Err(StepError::new("model file is corrupt"))
    })?;
    let (s, sink) = run_collect(&p, &store, &jobs(1))?;
    assert_eq!(
        sink.step_events(),
        ev(&[
            ("started", "src"),
            ("finished", "src"),
            ("started", "bad"),
            ("failed", "bad"),
            ("skipped", "bad-child"),
            ("skipped", "bad-grandchild"),
            ("started", "good"),
            ("finished", "good"),
        ])
    );
    assert_eq!(s.status, RunStatus::Failed);
    let status = |n: &str| s.step(n).map(|r| r.status);
    assert_eq!(status("src"), Some(StepStatus::Ran));
    assert_eq!(status("bad"), Some(StepStatus::Failed));
    assert_eq!(status("bad-child"), Some(StepStatus::Skipped));
    assert_eq!(status("bad-grandchild"), Some(StepStatus::Skipped));
    assert_eq!(status("good"), Some(StepStatus::Ran));
    let err = s
        .step("bad")
        .and_then(|r| r.error.clone())
        .unwrap_or_default();
    assert!(err.contains("model file is corrupt"), "{err}");
    assert_eq!((good.get(), skipped.get()), (1, 0));
    Ok(())
}

#[test]
fn failed_step_is_not_cached_and_runs_again_next_time() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let tries = Counter::new();
    let t = tries.clone();
    let p = failing_pipeline(&Counter::new(), &Counter::new(), move || {
        t.hit();
        Err(StepError::new("still broken"))
    })?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(tries.get(), 2);
    assert_eq!(s.step("bad").map(|r| r.status), Some(StepStatus::Failed));
    Ok(())
}

#[test]
fn panicking_step_fails_without_aborting_the_run() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let good = Counter::new();
    let p = failing_pipeline(&good, &Counter::new(), || {
        panic!("index out of range in scorer")
    })?;
    let s = run(&p, &store, &jobs(2), &CollectSink::default())?;
    assert_eq!(s.status, RunStatus::Failed);
    let err = s
        .step("bad")
        .and_then(|r| r.error.clone())
        .unwrap_or_default();
    assert!(err.contains("index out of range in scorer"), "{err}");
    assert_eq!(s.step("good").map(|r| r.status), Some(StepStatus::Ran));
    assert_eq!(good.get(), 1);
    Ok(())
}

/// A step whose output folder cannot be created fails with a message naming that folder and
/// what was tried, not a bare "Not a directory". The folder's parent is a regular file (put
/// there by the step before it), which fails for root too.
#[test]
fn step_whose_output_folder_cannot_be_created_fails_naming_the_folder() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let first = FnStep::new("first", "v1", |ctx| {
        let run_dir = ctx.step_context().work_dir.parent().and_then(Path::parent);
        let run_dir = run_dir.ok_or_else(|| StepError::new("no run folder"))?;
        std::fs::write(run_dir.join("second"), "a file where a folder goes")?;
        write_output(ctx, "out", "f.txt", "f")
    })
    .output("out", PipelineData::new("f"));
    let second = FnStep::new("second", "v1", |ctx| write_output(ctx, "out", "s.txt", "s"))
        .input("f", PipelineData::new("f"))
        .output("out", PipelineData::new("s"));
    let p = Pipeline::builder("blocked")
        .step(first)
        .step(second)
        .build()?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.status, RunStatus::Failed);
    assert_eq!(s.step("second").map(|r| r.status), Some(StepStatus::Failed));
    let err = s
        .step("second")
        .and_then(|r| r.error.clone())
        .unwrap_or_default();
    // The output folder is named by its data (`s`), not its port (`out`).
    let folder = store.run_layout(&s.run_id).output_dir("second", "s");
    assert_eq!(folder, s.output_dir("second", "out"));
    assert!(
        err.contains(&format!(
            "failed to create directory `{}`",
            folder.display()
        )),
        "{err}"
    );
    Ok(())
}

/// `late` must not start before `early` AND `slow` finished, even though `early` reaches it by
/// two edges (two of its outputs) and `slow` only finishes after `early`.
#[test]
fn step_waits_for_every_parent_when_one_parent_has_several_edges_to_it() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let early = FnStep::new("early", "v1", |ctx| {
        write_output(ctx, "x", "x.txt", "x")?;
        write_output(ctx, "y", "y.txt", "y")
    })
    .output("x", PipelineData::new("ex"))
    .output("y", PipelineData::new("ey"));
    // Finishes only once `early` is in the cache, i.e. strictly after `early` finished.
    // A step sees no store: it watches the cache entries' JSON copies (`entries/<key>.json`).
    let entries = ws.store_path().join("entries");
    let slow = FnStep::new("slow", "v1", move |ctx| {
        let early_cached = || {
            std::fs::read_dir(&entries)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(r#""step":"early""#))
                })
        };
        let mut waited = 0;
        while !early_cached() {
            waited += 1;
            if waited > 3000 {
                return Err(StepError::new("early never finished"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        write_output(ctx, "out", "s.txt", "s")
    })
    .output("out", PipelineData::new("s"));
    let late_runs = Counter::new();
    let lr = late_runs.clone();
    let late = FnStep::new("late", "v1", move |ctx| {
        lr.hit();
        let text = format!(
            "{}{}{}",
            read_input(ctx, "x")?,
            read_input(ctx, "y")?,
            read_input(ctx, "s")?
        );
        write_output(ctx, "out", "l.txt", &text)
    })
    .input("x", PipelineData::new("ex"))
    .input("y", PipelineData::new("ey"))
    .input("s", PipelineData::new("s"))
    .output("out", PipelineData::new("l"));
    let p = Pipeline::builder("parallel-edges")
        .step(early)
        .step(slow)
        .step(late)
        .build()?;
    let sink = CollectSink::default();
    let s = run(&p, &store, &jobs(2), &sink)?;
    // Started once, never failed (an early start fails for want of `slow`'s output, and a
    // second start then hides it in the summary).
    let mut events = sink.step_events();
    events.sort();
    let mut expected = all_ran(&["early", "slow", "late"]);
    expected.sort();
    assert_eq!(events, expected);
    assert_eq!(late_runs.get(), 1);
    assert_eq!(read_output(&s, "late", "out", "l.txt")?, "xys");
    Ok(())
}

#[test]
fn runs_are_listed_newest_first() -> TestResult {
    let ws = diamond_workspace();
    let store = ws.store();
    let p = diamond(&ws, &DiamondCounts::default(), false)?;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(run(&p, &store, &jobs(1), &CollectSink::default())?.run_id);
    }
    ids.reverse();
    let listed: Vec<String> = store.runs()?.into_iter().map(|r| r.id).collect();
    assert_eq!(listed, ids);
    Ok(())
}

#[test]
fn run_record_keeps_step_statuses_and_the_graph_snapshot() -> TestResult {
    let ws = diamond_workspace();
    let store = ws.store();
    let p = diamond(&ws, &DiamondCounts::default(), false)?;
    let first = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let second = run(&p, &store, &jobs(1), &CollectSink::default())?;

    let r1 = store
        .run_get(&first.run_id)?
        .ok_or("first run not recorded")?;
    assert_eq!(r1.status, RunStatus::Succeeded);
    assert_eq!(r1.pipeline, "diamond");
    assert!(r1.finished_unix_ms.is_some());
    let steps: Vec<(String, StepStatus)> = r1
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.status))
        .collect();
    assert_eq!(
        steps,
        DIAMOND
            .iter()
            .map(|n| (n.to_string(), StepStatus::Ran))
            .collect::<Vec<_>>()
    );
    assert_eq!(r1.steps, first.steps);

    let r2 = store
        .run_get(&second.run_id)?
        .ok_or("second run not recorded")?;
    for s in &r2.steps {
        assert_eq!(s.status, StepStatus::Reused, "{}", s.name);
        assert_eq!(
            s.reused_from.as_deref(),
            Some(first.run_id.as_str()),
            "{}",
            s.name
        );
    }

    let g = &r1.graph;
    assert_eq!(g.pipeline, "diamond");
    let nodes: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes, DIAMOND);
    let edges: Vec<(String, String, Option<String>)> = g
        .edges
        .iter()
        .map(|e| {
            (
                e.from.clone(),
                e.to.clone(),
                e.data.as_ref().map(|d| d.data.clone()),
            )
        })
        .collect();
    let expected = [
        ("a-read", "b-upper", "a-out"),
        ("a-read", "c-rev", "a-out"),
        ("b-upper", "d-join", "b-out"),
        ("c-rev", "d-join", "c-out"),
    ]
    .map(|(f, t, d)| (f.to_string(), t.to_string(), Some(d.to_string())));
    assert_eq!(edges, expected);
    assert!(store.run_get("no-such-run")?.is_none());
    Ok(())
}

/// A closure cannot be hashed: two steps both declaring version "v1" over the same input must
/// still each run their own code, never receive each other's cached output.
#[test]
fn fn_steps_with_the_same_version_and_inputs_never_share_outputs() -> TestResult {
    let ws = diamond_workspace();
    let store = ws.store();
    let (nu, nl) = (Counter::new(), Counter::new());
    let (cu, cl) = (nu.clone(), nl.clone());
    let docs = FileDataset::from_files("docs", ws.path().join("docs"));
    let upper = FnStep::new("upper", "v1", move |ctx| {
        cu.hit();
        write_output(
            ctx,
            "out",
            "t.txt",
            &read_input(ctx, "docs")?.to_uppercase(),
        )
    })
    .input("docs", docs.clone())
    .output("out", PipelineData::new("up"));
    let lower = FnStep::new("lower", "v1", move |ctx| {
        cl.hit();
        write_output(ctx, "out", "t.txt", &read_input(ctx, "docs")?)
    })
    .input("docs", docs)
    .output("out", PipelineData::new("low"));
    let p = Pipeline::builder("twins").step(upper).step(lower).build()?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!((nu.get(), nl.get()), (1, 1));
    assert_eq!(read_output(&s, "lower", "out", "t.txt")?, "abcd");
    assert_eq!(read_output(&s, "upper", "out", "t.txt")?, "ABCD");
    Ok(())
}

#[test]
fn overriding_an_undeclared_parameter_is_an_error() -> TestResult {
    let d = Diamond::new(false)?;
    let mut opts = jobs(1);
    opts.plan.params.insert("nope".into(), serde_json::json!(1));
    match run(&d.p, &d.store, &opts, &CollectSink::default()) {
        Err(EngineError::UnknownParameter { name, .. }) => assert_eq!(name, "nope"),
        other => panic!("expected UnknownParameter, got {other:?}"),
    }
    assert_eq!(d.n.all(), [0, 0, 0, 0]);
    Ok(())
}

#[test]
fn cancelled_run_executes_nothing_and_is_recorded_as_cancelled() -> TestResult {
    let d = Diamond::new(false)?;
    let opts = jobs(2);
    opts.cancel.cancel();
    let sink = CollectSink::default();
    let s = run(&d.p, &d.store, &opts, &sink)?;
    assert_eq!(s.status, RunStatus::Cancelled);
    assert_eq!(d.n.all(), [0, 0, 0, 0]);
    assert!(
        s.steps.iter().all(|r| r.status == StepStatus::Cancelled),
        "{:?}",
        s.steps
    );
    assert_eq!(
        d.store.run_get(&s.run_id)?.map(|r| r.status),
        Some(RunStatus::Cancelled)
    );
    Ok(())
}
