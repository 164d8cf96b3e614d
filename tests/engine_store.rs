//! The store: one user at a time, and damaged objects are never served.

use std::error::Error;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use stepgraph_engine::{
    run, CollectSink, Event, OpenOptions, Pipeline, PipelineData, StepStatus, Store, StoreError,
};
use stepgraph_steps::FnStep;

use crate::common::{ev, jobs, Counter, Workspace};

type TestResult = Result<(), Box<dyn Error>>;

#[test]
fn second_open_of_a_store_in_use_is_locked() -> TestResult {
    let ws = Workspace::new();
    let _first = ws.store();
    match Store::open(ws.store_path(), OpenOptions::default()) {
        Err(StoreError::Locked { path, pid, .. }) => {
            assert_eq!(path, ws.store_path().canonicalize()?);
            assert_eq!(pid, std::process::id().to_string());
        }
        other => panic!("expected StoreError::Locked, got {other:?}"),
    }
    Ok(())
}

#[test]
fn locked_error_message_names_the_store_and_holder() -> TestResult {
    let ws = Workspace::new();
    let _first = ws.store();
    let err = Store::open(ws.store_path(), OpenOptions::default())
        .err()
        .ok_or("second open succeeded")?;
    let text = err.to_string();
    assert!(text.contains("in use"), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    Ok(())
}

#[test]
fn store_opens_again_after_the_holder_is_dropped() -> TestResult {
    let ws = Workspace::new();
    let first = ws.store();
    drop(first);
    let again = Store::open(ws.store_path(), OpenOptions::default())?;
    assert!(again.cache_entries()?.is_empty());
    Ok(())
}

/// `produce` writes `good.txt`; `consume` writes its upper-case copy (different bytes, so the
/// two steps share no object).
fn produce_consume(produced: &Counter, consumed: &Counter) -> Result<Pipeline, Box<dyn Error>> {
    let (p, c) = (produced.clone(), consumed.clone());
    let produce = FnStep::new("produce", "v1", move |ctx| {
        p.hit();
        std::fs::write(ctx.output("out")?.join("good.txt"), "the good content\n")?;
        Ok(())
    })
    .output("out", PipelineData::new("made"));
    let consume = FnStep::new("consume", "v1", move |ctx| {
        c.hit();
        let text = std::fs::read_to_string(ctx.input("made")?.join("good.txt"))?;
        std::fs::write(ctx.output("out")?.join("upper.txt"), text.to_uppercase())?;
        Ok(())
    })
    .input("made", PipelineData::new("made"))
    .output("out", PipelineData::new("upper"));
    Ok(Pipeline::builder("damage")
        .step(produce)
        .step(consume)
        .build()?)
}

/// The object holding `produce`'s `good.txt`, made writable.
fn produced_object(store: &Store) -> Result<PathBuf, Box<dyn Error>> {
    let entry = store
        .cache_entries()?
        .into_iter()
        .find(|e| e.step == "produce")
        .ok_or("no cache entry for produce")?;
    let obj = entry
        .outputs
        .get("out")
        .and_then(|m| m.files.get("good.txt"))
        .ok_or("no good.txt in produce's output")?;
    let path = store.object_path(&obj.hash);
    assert_eq!(std::fs::read(&path)?, b"the good content\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

fn rejected_steps(sink: &CollectSink) -> Vec<String> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CacheEntryRejected { step, .. } => Some(step),
            _ => None,
        })
        .collect()
}

fn damaged_object_is_rerun_not_served(
    damage: impl Fn(&PathBuf) -> std::io::Result<()>,
) -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (np, nc) = (Counter::new(), Counter::new());
    let p = produce_consume(&np, &nc)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    damage(&produced_object(&store)?)?;

    let sink = CollectSink::default();
    let s = run(&p, &store, &jobs(1), &sink)?;
    assert_eq!(rejected_steps(&sink), ["produce"]);
    assert_eq!(
        sink.step_events(),
        ev(&[
            ("started", "produce"),
            ("finished", "produce"),
            ("reused", "consume")
        ])
    );
    assert_eq!((np.get(), nc.get()), (2, 1));
    assert_eq!(s.step("produce").map(|r| r.status), Some(StepStatus::Ran));
    assert_eq!(
        std::fs::read_to_string(s.output_dir("produce", "out").join("good.txt"))?,
        "the good content\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.output_dir("consume", "out").join("upper.txt"))?,
        "THE GOOD CONTENT\n"
    );

    // The store healed: the next run reuses everything, serving the good bytes.
    let sink = CollectSink::default();
    let s = run(&p, &store, &jobs(1), &sink)?;
    assert!(rejected_steps(&sink).is_empty());
    assert_eq!(
        sink.step_events(),
        ev(&[("reused", "produce"), ("reused", "consume")])
    );
    assert_eq!(
        std::fs::read_to_string(s.output_dir("produce", "out").join("good.txt"))?,
        "the good content\n"
    );
    Ok(())
}

#[test]
fn object_with_a_flipped_byte_is_rejected_and_the_step_reruns() -> TestResult {
    damaged_object_is_rerun_not_served(|path| {
        let mut bytes = std::fs::read(path)?;
        bytes[4] ^= 0x20;
        std::fs::write(path, bytes)
    })
}

#[test]
fn truncated_object_is_rejected_and_the_step_reruns() -> TestResult {
    damaged_object_is_rerun_not_served(|path| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(3)
    })
}

#[test]
fn missing_object_is_rejected_and_the_step_reruns() -> TestResult {
    damaged_object_is_rerun_not_served(|path| std::fs::remove_file(path))
}

/// Age an object's mtime so the stat memo records it (files younger than 2 s are not memoised).
fn age(path: &PathBuf) -> std::io::Result<std::time::SystemTime> {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::open(path)?.set_modified(old)?;
    Ok(old)
}

fn flip_byte(path: &PathBuf) -> std::io::Result<()> {
    let mut perms = std::fs::metadata(path)?.permissions();
    perms.set_mode(0o644);
    std::fs::set_permissions(path, perms)?;
    let mut bytes = std::fs::read(path)?;
    bytes[4] ^= 0x20;
    std::fs::write(path, bytes)
}

#[test]
fn memoised_object_edited_in_place_is_rejected_without_verify() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (np, nc) = (Counter::new(), Counter::new());
    let p = produce_consume(&np, &nc)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let obj = produced_object(&store)?;
    age(&obj)?;
    // This reuse records the object in the stat memo.
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    flip_byte(&obj)?; // changes the mtime: the memo no longer matches.
    let sink = CollectSink::default();
    run(&p, &store, &jobs(1), &sink)?;
    assert_eq!(rejected_steps(&sink), ["produce"]);
    assert_eq!(np.get(), 2);
    Ok(())
}

#[test]
fn verify_rejects_damage_that_keeps_size_and_mtime() -> TestResult {
    let ws = Workspace::new();
    let store = ws.store();
    let (np, nc) = (Counter::new(), Counter::new());
    let p = produce_consume(&np, &nc)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let obj = produced_object(&store)?;
    let old = age(&obj)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    flip_byte(&obj)?;
    std::fs::File::open(&obj)?.set_modified(old)?; // bit rot: same size, same mtime.
    let mut opts = jobs(1);
    opts.plan.verify = true;
    let sink = CollectSink::default();
    let s = run(&p, &store, &opts, &sink)?;
    assert_eq!(rejected_steps(&sink), ["produce"]);
    assert_eq!(
        std::fs::read_to_string(s.output_dir("produce", "out").join("good.txt"))?,
        "the good content\n"
    );
    Ok(())
}
