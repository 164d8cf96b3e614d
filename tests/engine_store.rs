//! The store: one user at a time, and damaged objects are never served.

use std::error::Error;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use stepgraph_engine::GcOptions;
use stepgraph_engine::{
    run, CollectSink, Event, OpenOptions, Pipeline, PipelineData, RunStatus, StepStatus, Store,
    StoreError,
};
use stepgraph_steps::FnStep;

use crate::common::{ev, jobs, produce_consume_steps, read_output, Counter, Workspace};

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

fn produce_consume(produced: &Counter, consumed: &Counter) -> Result<Pipeline, Box<dyn Error>> {
    let (produce, consume) = produce_consume_steps(produced, consumed);
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
        read_output(&s, "produce", "out", "good.txt")?,
        "the good content\n"
    );
    assert_eq!(
        read_output(&s, "consume", "out", "upper.txt")?,
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
        read_output(&s, "produce", "out", "good.txt")?,
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

/// produce -> consume run twice in a fresh store, the produced object aged in between, so
/// that the second run (a reuse) records it in the stat memo.
struct Memoised {
    p: Pipeline,
    produced: Counter,
    /// The produced object.
    obj: PathBuf,
    /// The mtime it was aged to.
    aged: std::time::SystemTime,
    store: Store,
    _ws: Workspace,
}

impl Memoised {
    fn new() -> Result<Self, Box<dyn Error>> {
        let ws = Workspace::new();
        let store = ws.store();
        let (produced, consumed) = (Counter::new(), Counter::new());
        let p = produce_consume(&produced, &consumed)?;
        run(&p, &store, &jobs(1), &CollectSink::default())?;
        let obj = produced_object(&store)?;
        let aged = age(&obj)?;
        // This reuse records the object in the stat memo.
        run(&p, &store, &jobs(1), &CollectSink::default())?;
        Ok(Memoised {
            p,
            produced,
            obj,
            aged,
            store,
            _ws: ws,
        })
    }
}

#[test]
fn memoised_object_edited_in_place_is_rejected_without_verify() -> TestResult {
    let m = Memoised::new()?;
    flip_byte(&m.obj)?; // changes the mtime: the memo no longer matches.
    let sink = CollectSink::default();
    run(&m.p, &m.store, &jobs(1), &sink)?;
    assert_eq!(rejected_steps(&sink), ["produce"]);
    assert_eq!(m.produced.get(), 2);
    Ok(())
}

#[test]
fn verify_rejects_damage_that_keeps_size_and_mtime() -> TestResult {
    let m = Memoised::new()?;
    flip_byte(&m.obj)?;
    std::fs::File::open(&m.obj)?.set_modified(m.aged)?; // bit rot: same size, same mtime.
    let mut opts = jobs(1);
    opts.plan.verify = true;
    let sink = CollectSink::default();
    let s = run(&m.p, &m.store, &opts, &sink)?;
    assert_eq!(rejected_steps(&sink), ["produce"]);
    assert_eq!(
        read_output(&s, "produce", "out", "good.txt")?,
        "the good content\n"
    );
    Ok(())
}

/// Disk usage of `dir` as `du` counts it (blocks of each inode once), leaving out `db/` (sled
/// grows and shrinks on its own) and the `reserve` ballast.
fn du(dir: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        let mut n = if seen.insert((m.dev(), m.ino())) {
            m.blocks() * 512
        } else {
            0
        };
        if m.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                if e.file_name() != "db" && e.file_name() != "reserve" {
                    n += walk(&e.path(), seen);
                }
            }
        }
        n
    }
    walk(dir, &mut std::collections::HashSet::new())
}

/// A step whose output is 1 MiB of bytes that differ on every execution (a forced rerun
/// stores a new copy).
fn one_mib_step(runs: &Counter) -> Result<Pipeline, Box<dyn Error>> {
    let n = runs.clone();
    let step = FnStep::new("big", "v1", move |ctx| {
        n.hit();
        let fill = n.get() as u8;
        std::fs::write(ctx.output("out")?.join("big.bin"), vec![fill; 1 << 20])?;
        Ok(())
    })
    .output("out", PipelineData::new("big"));
    Ok(Pipeline::builder("grow").step(step).build()?)
}

#[test]
fn forced_reruns_grow_the_store_and_prune_then_gc_free_exactly_what_they_report() -> TestResult {
    const MIB: u64 = 1 << 20;
    let ws = Workspace::new();
    let store = ws.store();
    let n = Counter::new();
    let p = one_mib_step(&n)?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let one_copy = du(&ws.store_path());
    let mut opts = jobs(1);
    opts.plan.force.insert("big".into());
    for _ in 0..5 {
        run(&p, &store, &opts, &CollectSink::default())?;
    }
    let grown = du(&ws.store_path());
    assert!(grown >= one_copy + 5 * MIB, "{grown} vs {one_copy}");

    // gc alone frees nothing of the old outputs: the run folders still link them.
    let gc = store.gc(&GcOptions::default())?;
    assert_eq!(gc.objects, 5);
    assert_eq!(gc.still_linked, 5);
    assert_eq!(du(&ws.store_path()), grown - gc.bytes);
    assert!(gc.bytes < MIB, "{gc:?}");

    let prune = store.runs_prune(1, false)?;
    assert_eq!(prune.removed.len(), 5);
    let gc2 = store.gc(&GcOptions::default())?;
    let after = du(&ws.store_path());
    assert_eq!(
        grown - after,
        gc.bytes + prune.bytes + gc2.bytes,
        "reported freed bytes equal the real decrease"
    );
    assert!(prune.bytes >= 5 * MIB, "{prune:?}");
    assert!(after < one_copy + MIB / 2, "{after} vs one copy {one_copy}");
    assert_eq!(store.runs()?.len(), 1);
    // The kept run's output is still served from the cache.
    let sink = CollectSink::default();
    run(&p, &store, &jobs(1), &sink)?;
    assert_eq!(sink.step_events(), ev(&[("reused", "big")]));
    Ok(())
}

#[test]
fn garbage_in_db_conf_moves_the_db_aside_and_rebuilds_the_cache_from_the_store() -> TestResult {
    let ws = Workspace::new();
    let (np, nc) = (Counter::new(), Counter::new());
    let p = produce_consume(&np, &nc)?;
    {
        let store = ws.store();
        run(&p, &store, &jobs(1), &CollectSink::default())?;
    }
    std::fs::write(
        ws.store_path().join("db/conf"),
        b"\xff\xfe garbage that is not a sled config \xff\xff\xff\xff",
    )?;
    let store = Store::open(ws.store_path(), OpenOptions::default())?;
    let warnings = store.warnings().to_vec();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("moved it to") && warnings[0].contains("2 cache entries"),
        "{warnings:?}"
    );
    assert_eq!(store.runs()?.len(), 1);
    let sink = CollectSink::default();
    run(&p, &store, &jobs(1), &sink)?;
    assert_eq!(
        sink.step_events(),
        ev(&[("reused", "produce"), ("reused", "consume")])
    );
    assert_eq!((np.get(), nc.get()), (1, 1));
    drop(store);
    // Said once: the next open finds a healthy db.
    assert!(ws.store().warnings().is_empty());
    Ok(())
}

#[test]
fn a_run_left_running_by_a_dead_process_is_marked_interrupted() -> TestResult {
    let ws = Workspace::new();
    let n = Counter::new();
    let p = one_mib_step(&n)?;
    let id = {
        let store = ws.store();
        let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
        // What a process killed mid-run leaves behind.
        let mut rec = store.run_get(&s.run_id)?.ok_or("no record")?;
        rec.status = RunStatus::Running;
        rec.finished_unix_ms = None;
        rec.pid = Some(u32::MAX);
        store.run_put(&rec)?;
        s.run_id
    };
    let store = ws.store();
    let rec = store.run_get(&id)?.ok_or("no record")?;
    assert_eq!(rec.status, RunStatus::Interrupted);
    assert_eq!(store.runs()?[0].status, RunStatus::Interrupted);
    // A record without a pid (written before pids were recorded) still reads.
    let text = std::fs::read_to_string(store.run_dir(&id).join("run.json"))?;
    let mut v: serde_json::Value = serde_json::from_str(&text)?;
    v.as_object_mut().ok_or("not an object")?.remove("pid");
    let old: stepgraph_engine::RunRecord = serde_json::from_value(v)?;
    assert_eq!(old.pid, None);
    Ok(())
}

#[test]
fn a_deleted_lock_file_gives_a_clear_error_not_a_debug_dump() -> TestResult {
    let ws = Workspace::new();
    let _holder = ws.store();
    std::fs::remove_file(ws.store_path().join("lock"))?;
    let err = Store::open(ws.store_path(), OpenOptions::default())
        .err()
        .ok_or("second open succeeded")?;
    assert!(matches!(err, StoreError::LockLost { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("in use by another process") && text.contains("lock file"),
        "{text}"
    );
    assert!(
        !text.contains("Os {") && !text.contains("WouldBlock"),
        "{text}"
    );
    Ok(())
}
