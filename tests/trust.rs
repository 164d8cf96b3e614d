//! What the cache may never do (issue 7, items 1-4): write outside the store and the run's own
//! folders, confuse two file names, launder damaged bytes into a valid entry, or take a store's
//! own files as input.

use std::collections::BTreeMap;
use std::error::Error;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stepgraph_engine::{
    run, BuildError, CollectSink, Event, FileDataset, OpenOptions, Pipeline, PipelineData,
    StepStatus, Store,
};
use stepgraph_steps::{CommandStep, FnStep};

use crate::common::{
    ev, jobs, produce_consume_steps, read_output, verify_entries, Counter, Workspace,
};

type TestResult = Result<(), Box<dyn Error>>;

/// Every file and folder under `dir` with its mode, size and content hash: a before/after
/// picture of a folder that nothing may touch.
type Picture = BTreeMap<PathBuf, (u32, u64, String)>;

fn picture(dir: &Path) -> Result<Picture, Box<dyn Error>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e?;
        let meta = std::fs::symlink_metadata(e.path())?;
        let hash = if meta.is_file() {
            blake3::hash(&std::fs::read(e.path())?).to_hex().to_string()
        } else {
            String::new()
        };
        out.insert(e.path().to_path_buf(), (meta.mode(), meta.nlink(), hash));
    }
    Ok(out)
}

fn sentinel(ws: &Workspace) -> PathBuf {
    ws.write("sentinel/victim/data.txt", "the user's own file\n");
    ws.write("sentinel/notes.txt", "keep me\n");
    ws.path().join("sentinel")
}

fn invalid_names(e: &stepgraph_engine::BuildErrors) -> Vec<(String, String)> {
    e.0.iter()
        .filter_map(|e| match e {
            BuildError::InvalidName { field, name, .. } => Some((field.clone(), name.clone())),
            _ => None,
        })
        .collect()
}

// ----- item 1: names never become paths out of the run folder -----

#[test]
fn output_names_that_are_paths_are_refused_at_build() -> TestResult {
    let ws = Workspace::new();
    let victim = sentinel(&ws).join("victim");
    let victim = victim.to_string_lossy().into_owned();
    let step = CommandStep::new("copy", ["python3", "-c", "pass"])
        .output("copied", PipelineData::new("copied"))
        .output(victim.as_str(), PipelineData::new(victim.as_str()))
        .output("../x", PipelineData::new("x"));
    let err = match Pipeline::builder("attack").step(step).build() {
        Ok(_) => return Err("a path as an output name was accepted".into()),
        Err(e) => e,
    };
    assert_eq!(
        invalid_names(&err),
        [
            ("output port".to_string(), victim.clone()),
            ("output port".to_string(), "../x".to_string()),
        ]
    );
    assert!(err.to_string().contains("not a valid name"), "{err}");
    Ok(())
}

#[test]
fn dataset_and_input_names_that_are_paths_are_refused_at_build() -> TestResult {
    let ws = Workspace::new();
    ws.write("docs/a.txt", "a");
    let step = FnStep::new("read", "v1", |_| Ok(()))
        .input(
            "..",
            FileDataset::from_files("../docs", ws.path().join("docs")),
        )
        .output("out", PipelineData::new("a/b"));
    let err = match Pipeline::builder("attack").step(step).build() {
        Ok(_) => return Err("path-like names were accepted".into()),
        Err(e) => e,
    };
    assert_eq!(
        invalid_names(&err),
        [
            ("input port".to_string(), "..".to_string()),
            ("dataset name".to_string(), "../docs".to_string()),
            ("output data".to_string(), "a/b".to_string()),
        ]
    );
    Ok(())
}

#[test]
fn a_spec_output_name_that_is_a_path_exits_with_a_message_naming_the_field() -> TestResult {
    let ws = Workspace::new();
    let victim = sentinel(&ws).join("victim");
    let spec = serde_json::json!({
        "name": "attack",
        "steps": [{"name": "copy", "type": "command", "command": ["python3", "-c", "pass"],
                   "outputs": ["copied", victim.to_string_lossy()]}]
    });
    let path = ws.write("pipeline.json", &spec.to_string());
    let before = picture(&ws.path().join("sentinel"))?;
    let err = match stepgraph_steps::load_spec(&path) {
        Ok(_) => return Err("the spec was accepted".into()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("pipeline.json"), "{err}");
    assert!(err.contains("copy"), "{err}");
    assert!(err.contains("output"), "{err}");
    assert!(err.contains("not a valid name"), "{err}");
    assert_eq!(picture(&ws.path().join("sentinel"))?, before);
    Ok(())
}

#[test]
fn a_step_that_links_a_users_file_into_its_output_never_changes_that_file() -> TestResult {
    let ws = Workspace::new();
    let dir = sentinel(&ws);
    let before = picture(&dir)?;
    let target = dir.join("victim/data.txt");
    let step = FnStep::new("linker", "v1", move |ctx| {
        std::fs::hard_link(&target, ctx.output("out")?.join("data.txt"))?;
        Ok(())
    })
    .output("out", PipelineData::new("linked"));
    let p = Pipeline::builder("attack").step(step).build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.step("linker").map(|r| r.status), Some(StepStatus::Ran));
    // Reused on the next run: materialising must not touch the user's file either.
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.step("linker").map(|r| r.status), Some(StepStatus::Reused));
    assert_eq!(
        read_output(&s, "linker", "out", "data.txt")?,
        "the user's own file\n"
    );
    // The step's own link is the one extra link; mode and content are the user's.
    let after = picture(&dir)?;
    for (path, (mode, _, hash)) in &before {
        let (m, _, h) = after.get(path).ok_or("a sentinel file vanished")?;
        assert_eq!((m, h), (mode, hash), "{}", path.display());
    }
    assert_eq!(after.len(), before.len());
    Ok(())
}

#[test]
fn an_output_folder_replaced_by_a_link_fails_the_step_and_touches_nothing() -> TestResult {
    let ws = Workspace::new();
    let dir = sentinel(&ws);
    let before = picture(&dir)?;
    let victim = dir.join("victim");
    let step = FnStep::new("swapper", "v1", move |ctx| {
        let out = ctx.output("out")?;
        std::fs::remove_dir(out)?;
        std::os::unix::fs::symlink(&victim, out)?;
        Ok(())
    })
    .output("out", PipelineData::new("swapped"));
    let p = Pipeline::builder("attack").step(step).build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let rec = s.step("swapper").ok_or("no record")?;
    assert_eq!(rec.status, StepStatus::Failed);
    assert!(
        rec.error
            .as_deref()
            .unwrap_or("")
            .contains("refusing to write outside"),
        "{:?}",
        rec.error
    );
    assert_eq!(picture(&dir)?, before);
    assert!(store.cache_entries()?.is_empty());
    Ok(())
}

// ----- item 2: file names are exact bytes -----

fn bytes_name(dir: &Path, name: &[u8], contents: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(OsStr::from_bytes(name));
    std::fs::write(&p, contents)?;
    Ok(p)
}

#[test]
fn names_that_differ_only_in_non_utf8_bytes_are_two_inputs() -> TestResult {
    let ws = Workspace::new();
    let data = ws.path().join("data");
    let ff = bytes_name(&data, b"a\xff.txt", "ff1 ")?;
    let fe = bytes_name(&data, b"a\xfe.txt", "fe1 ")?;
    let runs = Counter::new();
    let r = runs.clone();
    let step = FnStep::new("concat", "v1", move |ctx| {
        r.hit();
        let mut text = String::new();
        for f in ctx.input_files("data")? {
            text.push_str(&std::fs::read_to_string(f)?);
        }
        std::fs::write(ctx.output("out")?.join("all.txt"), text)?;
        Ok(())
    })
    .input("data", FileDataset::from_files("data", &data))
    .output("out", PipelineData::new("all"));
    let p = Pipeline::builder("bytes").step(step).build()?;
    let store = ws.store();
    let out = |s: &stepgraph_engine::RunSummary| read_output(s, "concat", "out", "all.txt");
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(out(&s)?, "fe1 ff1 ");
    let entry = store.cache_entries()?.pop().ok_or("no entry")?;
    let manifest = entry
        .fingerprint
        .components
        .get("inputs.data")
        .ok_or("no inputs.data component")?;
    let text = serde_json::to_string(&manifest.preimage)?;
    assert!(
        text.contains("a\\\\xff.txt") && text.contains("a\\\\xfe.txt"),
        "{text}"
    );

    // Editing either name, in turn, reruns the step with the new bytes.
    std::fs::write(&ff, "ff2 ")?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.step("concat").map(|r| r.status), Some(StepStatus::Ran));
    assert_eq!(out(&s)?, "fe1 ff2 ");
    std::fs::write(&fe, "fe2 ")?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.step("concat").map(|r| r.status), Some(StepStatus::Ran));
    assert_eq!(out(&s)?, "fe2 ff2 ");
    assert_eq!(runs.get(), 3);
    Ok(())
}

#[test]
fn outputs_with_non_utf8_names_round_trip_through_the_store() -> TestResult {
    let ws = Workspace::new();
    let step = FnStep::new("writer", "v1", |ctx| {
        let out = ctx.output("out")?;
        bytes_name(out, b"r\xff.txt", "one")?;
        bytes_name(out, b"r\xfe.txt", "two")?;
        Ok(())
    })
    .output("out", PipelineData::new("written"));
    let p = Pipeline::builder("bytes-out").step(step).build()?;
    let store = ws.store();
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.step("writer").map(|r| r.status), Some(StepStatus::Reused));
    let out = s.output_dir("writer", "out");
    assert_eq!(
        std::fs::read_to_string(out.join(OsStr::from_bytes(b"r\xff.txt")))?,
        "one"
    );
    assert_eq!(
        std::fs::read_to_string(out.join(OsStr::from_bytes(b"r\xfe.txt")))?,
        "two"
    );
    Ok(())
}

// ----- item 3: damaged bytes are never laundered through early cutoff -----

fn produce_consume(produced: &Counter, consumed: &Counter) -> Result<Pipeline, Box<dyn Error>> {
    let (produce, consume) = produce_consume_steps(produced, consumed);
    Ok(Pipeline::builder("rot")
        .step(produce)
        .step(consume)
        .build()?)
}

/// Flip one byte of the object holding `produce`'s output, keeping its size and mtime (bit
/// rot that the stat memo cannot see).
fn rot_produced_object(store: &Store) -> TestResult {
    let entry = store
        .cache_entries()?
        .into_iter()
        .find(|e| e.step == "produce")
        .ok_or("no entry for produce")?;
    let obj = entry
        .outputs
        .get("out")
        .and_then(|m| m.files.get("good.txt"))
        .ok_or("no good.txt")?;
    let path = store.object_path(&obj.hash);
    let mtime = std::fs::metadata(&path)?.modified()?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let mut bytes = std::fs::read(&path)?;
    bytes[4] ^= 0x20;
    std::fs::write(&path, bytes)?;
    std::fs::File::open(&path)?.set_modified(mtime)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
    Ok(())
}

#[test]
fn forced_consumer_of_a_rotten_upstream_reruns_the_upstream_first() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (np, nc) = (Counter::new(), Counter::new());
    let p = produce_consume(&np, &nc)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    // Let the stat memo record the object, as a long-lived store would have it.
    let entry = store.cache_entries()?;
    for e in &entry {
        for m in e.outputs.values() {
            for o in m.files.values() {
                let path = store.object_path(&o.hash);
                let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
                std::fs::File::open(&path)?.set_modified(old)?;
            }
        }
    }
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    rot_produced_object(&store)?;

    let mut opts = jobs(1);
    opts.plan.force = ["consume".to_string()].into();
    let sink = CollectSink::default();
    let s = run(&p, &store, &opts, &sink)?;
    assert_eq!(
        sink.step_events(),
        ev(&[
            ("reused", "produce"),
            ("started", "produce"),
            ("finished", "produce"),
            ("started", "consume"),
            ("finished", "consume"),
        ])
    );
    let rejected: Vec<String> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CacheEntryRejected { step, reason, .. } => Some(format!("{step}: {reason}")),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].starts_with("produce: output file good.txt"),
        "{rejected:?}"
    );
    assert_eq!((np.get(), nc.get()), (2, 2));
    assert_eq!(
        read_output(&s, "consume", "out", "upper.txt")?,
        "THE GOOD CONTENT\n"
    );
    assert_eq!(
        read_output(&s, "produce", "out", "good.txt")?,
        "the good content\n"
    );
    // Every entry left in the cache holds exactly the bytes its hashes name.
    verify_entries(&store, store.cache_entries()?)?;
    Ok(())
}

#[test]
fn a_rotten_upstream_with_two_consumers_reruns_once() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (np, nc) = (Counter::new(), Counter::new());
    let (produce, consume) = produce_consume_steps(&np, &nc);
    let n2 = Counter::new();
    let c2 = n2.clone();
    let second = FnStep::new("count", "v1", move |ctx| {
        c2.hit();
        let text = std::fs::read_to_string(ctx.input("made")?.join("good.txt"))?;
        std::fs::write(ctx.output("out")?.join("n.txt"), text.len().to_string())?;
        Ok(())
    })
    .input("made", PipelineData::new("made"))
    .output("out", PipelineData::new("counted"));
    let p = Pipeline::builder("rot2")
        .step(produce)
        .step(consume)
        .step(second)
        .build()?;
    run(&p, &store, &jobs(2), &CollectSink::default())?;
    rot_produced_object(&store)?;
    let mut opts = jobs(2);
    opts.plan.force = ["consume".to_string(), "count".to_string()].into();
    let sink = CollectSink::default();
    let s = run(&p, &store, &opts, &sink)?;
    assert_eq!(np.get(), 2, "{:?}", sink.step_events());
    assert_eq!((nc.get(), n2.get()), (2, 2));
    assert_eq!(
        read_output(&s, "consume", "out", "upper.txt")?,
        "THE GOOD CONTENT\n"
    );
    assert_eq!(read_output(&s, "count", "out", "n.txt")?, "17");
    assert!(s
        .steps
        .iter()
        .all(|r| r.status == StepStatus::Ran || r.status == StepStatus::Reused));
    Ok(())
}

// ----- item 4: no store is ever an input -----

#[test]
fn stores_inside_a_dataset_or_source_folder_are_never_inputs() -> TestResult {
    let ws = Workspace::new();
    ws.write("a.txt", "a");
    ws.write(
        "tool.py",
        "import sys, os\nopen(os.path.join(sys.argv[1], 'ok.txt'), 'w').write('ok')\n",
    );
    // A second store in the same folder, found by its marker, not by being the configured one.
    drop(Store::open(
        ws.path().join("other-store"),
        OpenOptions::default(),
    )?);
    let runs = Counter::new();
    let r = runs.clone();
    let read = FnStep::new("list-all", "v1", move |ctx| {
        r.hit();
        let names: Vec<String> = ctx
            .input_files("here")?
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        std::fs::write(ctx.output("out")?.join("files.txt"), names.join("\n"))?;
        Ok(())
    })
    .input("here", FileDataset::from_files("here", ws.path()))
    .output("out", PipelineData::new("listed"));
    let tool = CommandStep::new("tool", ["python3", "tool.py", "{outputs.out}"])
        .source_directory(ws.path())
        .output("out", PipelineData::new("tooled"));
    let p = Pipeline::builder("dot").step(read).step(tool).build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let listed = read_output(&s, "list-all", "out", "files.txt")?;
    assert!(!listed.contains("store"), "{listed}");
    assert!(listed.contains("a.txt"), "{listed}");
    let work = s.run_dir.join("tool").join("work");
    if work.exists() {
        for e in walkdir::WalkDir::new(&work) {
            let e = e?;
            assert!(
                !e.path()
                    .strip_prefix(&work)?
                    .to_string_lossy()
                    .contains("store"),
                "store copied into the work folder: {}",
                e.path().display()
            );
        }
    }
    // The second run sees exactly the same inputs and code: everything is reused.
    let sink = CollectSink::default();
    run(&p, &store, &jobs(1), &sink)?;
    assert_eq!(
        sink.step_events(),
        ev(&[("reused", "list-all"), ("reused", "tool")])
    );
    assert_eq!(runs.get(), 1);
    Ok(())
}

#[test]
fn a_step_that_changes_its_input_in_place_fails_and_its_sibling_reads_clean_bytes() -> TestResult {
    let ws = Workspace::new();
    let upstream = FnStep::new("upstream", "v1", |ctx| {
        std::fs::write(ctx.output("u")?.join("data.txt"), "clean\n")?;
        Ok(())
    })
    .output("u", PipelineData::new("u"));
    let careless = FnStep::new("aaa-careless", "v1", |ctx| {
        let f = ctx.input("i")?.join("data.txt");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))?;
        let mut text = std::fs::read_to_string(&f)?;
        text.push_str("APPENDED\n");
        std::fs::write(&f, &text)?;
        std::fs::write(ctx.output("a")?.join("a"), text)?;
        Ok(())
    })
    .input("i", PipelineData::new("u"))
    .output("a", PipelineData::new("a"));
    let reader = FnStep::new("bbb-reader", "v1", |ctx| {
        let text = std::fs::read_to_string(ctx.input("i")?.join("data.txt"))?;
        std::fs::write(ctx.output("b")?.join("b"), text)?;
        Ok(())
    })
    .input("i", PipelineData::new("u"))
    .output("b", PipelineData::new("b"));
    let p = Pipeline::builder("poison")
        .step(upstream)
        .step(careless)
        .step(reader)
        .build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let careless = s.step("aaa-careless").ok_or("no record")?;
    assert_eq!(careless.status, StepStatus::Failed);
    assert!(
        careless
            .error
            .as_deref()
            .unwrap_or("")
            .contains("changed its inputs in place"),
        "{:?}",
        careless.error
    );
    assert_eq!(
        s.step("bbb-reader").map(|r| r.status),
        Some(StepStatus::Ran)
    );
    assert_eq!(read_output(&s, "bbb-reader", "b", "b")?, "clean\n");
    // Nothing computed from the changed bytes is cached; what is cached verifies.
    let entries = store.cache_entries()?;
    assert!(entries.iter().all(|e| e.step != "aaa-careless"));
    verify_entries(&store, entries)?;
    Ok(())
}

#[test]
fn symbolic_links_in_an_output_fail_the_step_by_name() -> TestResult {
    let ws = Workspace::new();
    let step = FnStep::new("linker", "v1", |ctx| {
        let out = ctx.output("m")?;
        std::fs::write(out.join("model-v3.bin"), "weights")?;
        std::os::unix::fs::symlink("model-v3.bin", out.join("latest.bin"))?;
        Ok(())
    })
    .output("m", PipelineData::new("m"));
    let p = Pipeline::builder("links").step(step).build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let rec = s.step("linker").ok_or("no record")?;
    assert_eq!(rec.status, StepStatus::Failed);
    let err = rec.error.as_deref().unwrap_or("");
    assert!(
        err.contains("latest.bin") && err.contains("symbolic link"),
        "{err}"
    );
    assert!(store.cache_entries()?.is_empty());
    Ok(())
}

#[test]
fn code_reached_through_a_symbolic_link_in_the_source_folder_is_hashed() -> TestResult {
    let ws = Workspace::new();
    ws.write("lib/helper.py", "VALUE = 1\n");
    ws.write(
        "scripts/main.py",
        "import sys, helper\nopen(sys.argv[1] + '/out.txt', 'w').write(str(helper.VALUE))\n",
    );
    std::os::unix::fs::symlink("../lib/helper.py", ws.path().join("scripts/helper.py"))?;
    let step = CommandStep::new("cmd", ["python3", "main.py", "{outputs.res}"])
        .source_directory(ws.path().join("scripts"))
        .output("res", PipelineData::new("res"));
    let p = Pipeline::builder("symsrc").step(step).build()?;
    let store = ws.store();
    let out = |s: &stepgraph_engine::RunSummary| read_output(s, "cmd", "res", "out.txt");
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(out(&s)?, "1");
    ws.write("lib/helper.py", "VALUE = 2\n");
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.step("cmd").map(|r| r.status), Some(StepStatus::Ran));
    assert_eq!(out(&s)?, "2");
    Ok(())
}

#[test]
fn a_dataset_that_is_a_store_is_refused_by_name() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let step = FnStep::new("read", "v1", |_| Ok(()))
        .input("all", FileDataset::from_files("all", ws.store_path()))
        .output("out", PipelineData::new("out"));
    let p = Pipeline::builder("self").step(step).build()?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let rec = s.step("read").ok_or("no record")?;
    assert_eq!(rec.status, StepStatus::Failed);
    assert!(
        rec.error
            .as_deref()
            .unwrap_or("")
            .contains("is a stepgraph store"),
        "{:?}",
        rec.error
    );
    Ok(())
}

#[test]
fn a_huge_jobs_value_runs_with_as_many_threads_as_there_are_steps() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let step = FnStep::new("one", "v1", |ctx| {
        std::fs::write(ctx.output("out")?.join("x"), "x")?;
        Ok(())
    })
    .output("out", PipelineData::new("out"));
    let p = Pipeline::builder("wide").step(step).build()?;
    let s = run(&p, &store, &jobs(1_000_000), &CollectSink::default())?;
    assert_eq!(s.step("one").map(|r| r.status), Some(StepStatus::Ran));
    Ok(())
}

#[test]
fn a_step_sees_only_the_parameters_in_its_key() -> TestResult {
    let ws = Workspace::new();
    let step = CommandStep::new(
        "ccc",
        [
            "sh",
            "-c",
            "echo \"[$AML_PARAMETER_mode]\" > \"$0/r.txt\"",
            "{outputs.out}",
        ],
    )
    .output("out", PipelineData::new("out"));
    let p = Pipeline::builder("par")
        .parameter(stepgraph_engine::PipelineParameter::new("mode", "a"))
        .step(step)
        .build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(read_output(&s, "ccc", "out", "r.txt")?, "[]\n");
    let mut opts = jobs(1);
    opts.plan.params = [("mode".to_string(), serde_json::json!("b"))].into();
    let s = run(&p, &store, &opts, &CollectSink::default())?;
    assert_eq!(s.step("ccc").map(|r| r.status), Some(StepStatus::Reused));
    assert_eq!(read_output(&s, "ccc", "out", "r.txt")?, "[]\n");
    Ok(())
}

#[test]
fn every_file_of_a_tabular_dataset_counts_in_its_key_in_order() -> TestResult {
    let ws = Workspace::new();
    let x = ws.write("x/d.csv", "v\n1\n2\n");
    let y = ws.write("y/d.csv", "v\n3\n4\n");
    let store = ws.store();
    let key_of = |paths: Vec<PathBuf>| -> Result<String, Box<dyn Error>> {
        let ds = stepgraph_engine::TabularDataset::from_delimited_files("t", paths);
        let step = FnStep::new("read", "v1", |_| Ok(()))
            .input("t", ds)
            .output("out", PipelineData::new("out"));
        let p = Pipeline::builder("tab").step(step).build()?;
        let plan = stepgraph_engine::plan(&p, &store, &Default::default())?;
        let fp = plan.steps[0].fingerprint.clone().ok_or("no fingerprint")?;
        Ok(fp.key().0)
    };
    let both = key_of(vec![x.clone(), y.clone()])?;
    assert_ne!(both, key_of(vec![y.clone(), x.clone()])?, "order is data");
    assert_ne!(
        key_of(vec![x.clone()])?,
        key_of(vec![x.clone(), x.clone()])?,
        "repeats are data"
    );
    ws.write("x/d.csv", "v\n9\n9\n");
    assert_ne!(both, key_of(vec![x, y])?, "a namesake's edit is seen");
    Ok(())
}

#[test]
fn an_input_changed_while_the_step_runs_is_never_cached_under_the_old_key() -> TestResult {
    let ws = Workspace::new();
    let data = ws.write("data/a.txt", "original\n");
    let first = Counter::new();
    let f = first.clone();
    let step = FnStep::new("reader", "v1", move |ctx| {
        let file = ctx.input("d")?.join("a.txt");
        let text = std::fs::read_to_string(&file)?;
        // Someone edits the dataset while the step runs (only during the first run).
        if f.get() == 0 {
            std::fs::write(&file, "CHANGED\n")?;
        }
        f.hit();
        std::fs::write(ctx.output("out")?.join("r.txt"), text)?;
        Ok(())
    })
    .input(
        "d",
        FileDataset::from_files("d", data.parent().ok_or("no parent")?),
    )
    .output("out", PipelineData::new("out"));
    let p = Pipeline::builder("race").step(step).build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let rec = s.step("reader").ok_or("no record")?;
    assert_eq!(rec.status, StepStatus::Failed);
    let err = rec.error.as_deref().unwrap_or("");
    assert!(
        err.contains("inputs changed while the step ran") && err.contains("a.txt"),
        "{err}"
    );
    assert!(store.cache_entries()?.is_empty());
    // Put the original bytes back: nothing computed from the other content can be served.
    std::fs::write(&data, "original\n")?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    assert_eq!(s.step("reader").map(|r| r.status), Some(StepStatus::Ran));
    assert_eq!(read_output(&s, "reader", "out", "r.txt")?, "original\n");
    Ok(())
}

#[test]
fn empty_folders_in_an_output_are_gone_for_consumers_in_the_same_run_too() -> TestResult {
    let ws = Workspace::new();
    let up = FnStep::new("up1", "v1", |ctx| {
        let out = ctx.output("out")?;
        std::fs::create_dir_all(out.join("emptydir/deeper"))?;
        std::fs::write(out.join("f"), "hi")?;
        Ok(())
    })
    .output("out", PipelineData::new("out"));
    let down = FnStep::new("down", "v1", |ctx| {
        let names: Vec<String> = walkdir::WalkDir::new(ctx.input("x")?)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        std::fs::write(ctx.output("r")?.join("l.txt"), names.join(","))?;
        Ok(())
    })
    .input("x", PipelineData::new("out"))
    .output("r", PipelineData::new("r"));
    let p = Pipeline::builder("emp").step(up).step(down).build()?;
    let store = ws.store();
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let fresh = read_output(&s, "down", "r", "l.txt")?;
    let mut opts = jobs(1);
    opts.plan.force = ["down".to_string()].into();
    let s = run(&p, &store, &opts, &CollectSink::default())?;
    let reused_up = read_output(&s, "down", "r", "l.txt")?;
    assert_eq!(fresh, "f");
    assert_eq!(reused_up, fresh);
    Ok(())
}
