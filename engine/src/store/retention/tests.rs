// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::records::{CacheEntry, RunRecord, RunStatus, StepRecord, SCHEMA_VERSION};
use super::super::{now_unix_ms, OpenOptions, Store};
use super::GcOptions;
use crate::model::{StepCounts, StepStatus};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A cache entry of step `step` whose one output file has `len` bytes of `fill`.
fn entry(
    store: &Store,
    step: &str,
    fill: u8,
    len: usize,
    duration_ms: u64,
    age: Duration,
) -> Result<String, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("out.bin"), vec![fill; len])?;
    let manifest = store.ingest_dir(dir.path())?;
    let key = format!("{fill:02x}{}", "0".repeat(62));
    store.cache_put(&CacheEntry {
        schema: SCHEMA_VERSION,
        key: key.clone(),
        pipeline: "p".into(),
        step: step.into(),
        outputs: BTreeMap::from([("out".to_string(), manifest)]),
        fingerprint: Default::default(),
        counts: StepCounts::default(),
        run_id: "r".into(),
        duration_ms,
        created_unix_ms: now_unix_ms() - age.as_millis() as u64,
        units: None,
    })?;
    Ok(key)
}

fn run_using(store: &Store, id: &str, started: u64, keys: &[&str]) -> TestResult {
    store.run_put(&RunRecord {
        schema: SCHEMA_VERSION,
        id: id.into(),
        pipeline: "p".into(),
        started_unix_ms: started,
        finished_unix_ms: Some(started + 1),
        status: RunStatus::Succeeded,
        params: BTreeMap::new(),
        graph: Default::default(),
        steps: keys
            .iter()
            .enumerate()
            .map(|(i, k)| StepRecord {
                key: Some(k.to_string()),
                ..StepRecord::new(format!("s{i}"), StepStatus::Reused)
            })
            .collect(),
        pid: None,
    })?;
    Ok(())
}

fn keys(store: &Store) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut k: Vec<String> = store.cache_entries()?.into_iter().map(|e| e.key).collect();
    k.sort();
    Ok(k)
}

const MIB: usize = 1 << 20;

#[test]
fn default_gc_keeps_what_the_latest_run_uses_and_keep_last_keeps_more() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), OpenOptions::default())?;
    let day = Duration::from_secs(86_400);
    let a = entry(&store, "s0", 1, 100, 10, day * 3)?;
    let b = entry(&store, "s0", 2, 100, 10, day * 2)?;
    let c = entry(&store, "s0", 3, 100, 10, day)?;
    run_using(&store, "old", 1, &[&a])?;
    run_using(&store, "new", 2, &[&c])?;
    let dry = store.gc(&GcOptions {
        keep_last: Some(2),
        dry_run: true,
        ..GcOptions::default()
    })?;
    assert_eq!(dry.entries.iter().map(|e| &e.key).collect::<Vec<_>>(), [&a]);
    assert_eq!(keys(&store)?.len(), 3, "a dry run removes nothing");
    // --older-than: only entries older than 2.5 days are candidates (a), but a is used
    // by no latest run, so it goes; b (2 days) stays.
    let r = store.gc(&GcOptions {
        older_than: Some(day * 5 / 2),
        ..GcOptions::default()
    })?;
    assert_eq!(r.entries.len(), 1);
    assert_eq!(keys(&store)?, [b.clone(), c.clone()]);
    assert_eq!(r.objects, 1);
    assert!(r.bytes > 0);
    // The default keeps only what the latest run of the pipeline used.
    let r = store.gc(&GcOptions::default())?;
    assert_eq!(r.entries.iter().map(|e| &e.key).collect::<Vec<_>>(), [&b]);
    assert_eq!(keys(&store)?, [c]);
    assert!(!store.entries_dir().join(format!("{b}.json")).exists());
    Ok(())
}

#[test]
fn max_size_evicts_the_cheapest_recompute_per_byte_first() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), OpenOptions::default())?;
    let day = Duration::from_secs(86_400);
    let slow = entry(&store, "slow", 1, MIB, 100_000, day)?;
    let fast = entry(&store, "fast", 2, MIB, 1_000, day)?;
    let medium = entry(&store, "medium", 3, MIB, 50_000, day)?;
    let total = store.usage()?.total;
    // Room for the store minus one and a half entries: two must go.
    let max = total - (MIB as u64 * 3 / 2);
    let r = store.gc(&GcOptions {
        max_size: Some(max),
        ..GcOptions::default()
    })?;
    let gone: Vec<&str> = r.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(gone, [fast.as_str(), medium.as_str()]);
    assert_eq!(keys(&store)?, [slow]);
    assert!(!r.over_max_size);
    assert!(store.usage()?.total <= max);
    // Two objects, and their entries' JSON copies.
    assert!(
        (2 * MIB as u64..2 * MIB as u64 + 65536).contains(&r.bytes),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn a_dry_run_reports_what_the_real_gc_frees() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), OpenOptions::default())?;
    entry(&store, "a", 1, MIB, 1, Duration::ZERO)?;
    entry(&store, "b", 2, 3000, 1, Duration::ZERO)?;
    let dry = store.gc(&GcOptions {
        dry_run: true,
        ..GcOptions::default()
    })?;
    let real = store.gc(&GcOptions::default())?;
    assert_eq!(dry.bytes, real.bytes);
    assert_eq!(dry.entries.len(), 2);
    assert_eq!(real.objects, 2);
    assert!(store.cache_entries()?.is_empty());
    Ok(())
}

#[test]
fn gc_removes_the_environments_no_remaining_entry_holds() -> TestResult {
    use crate::fingerprint::{Component, Fingerprint};
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("s"), OpenOptions::default())?;
    let held = "0123456789abcdef0123456789abcdef";
    let loose = "fedcba9876543210fedcba9876543210";
    let key = entry(&store, "a", 1, 10, 1, Duration::ZERO)?;
    let mut e = store.cache_get(&key)?.ok_or("no entry")?;
    let mut fp = Fingerprint::default();
    fp.insert(
        "environment",
        Component::value(serde_json::json!({ "env_hash": held, "freeze": ["six==1.16.0"] })),
    );
    e.fingerprint = fp;
    store.cache_put(&e)?;
    run_using(&store, "r1", now_unix_ms(), &[&key])?;
    let envs = store.root().join("envs");
    for h in [held, loose] {
        std::fs::create_dir_all(envs.join(h).join("venv/bin"))?;
        std::fs::write(envs.join(h).join("freeze.txt"), "six==1.16.0\n")?;
        std::fs::write(envs.join(format!("{h}.lock")), "")?;
    }
    std::fs::write(envs.join("README"), "mine")?;
    let dry = store.gc(&GcOptions {
        dry_run: true,
        ..GcOptions::default()
    })?;
    assert_eq!(dry.envs, 1);
    assert!(envs.join(loose).is_dir());
    let report = store.gc(&GcOptions::default())?;
    assert_eq!(report.envs, 1);
    assert!(report.foreign.contains(&envs.join("README")), "{report:?}");
    assert!(envs.join(held).join("freeze.txt").is_file());
    assert!(envs.join(format!("{held}.lock")).is_file());
    assert!(!envs.join(loose).exists());
    assert!(!envs.join(format!("{loose}.lock")).exists());
    assert!(envs.join("README").is_file());
    Ok(())
}

#[test]
fn a_step_that_failed_in_the_latest_run_keeps_its_latest_output_and_its_progress() -> TestResult {
    use crate::store::units::UnitRecord;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), OpenOptions::default())?;
    let day = Duration::from_secs(86_400);
    let older = entry(&store, "s0", 1, 100, 10, day * 3)?;
    let newest = entry(&store, "s0", 2, 100, 10, day * 2)?;
    // The latest run's s0 has a key with no entry: it failed, or the run was killed.
    run_using(&store, "r9", now_unix_ms(), &[&"f".repeat(64)])?;
    let mut w = store.unit_writer();
    for (key, step) in [("progress", "s0"), ("abandoned", "renamed-away")] {
        let obj = w.put_bytes(key.as_bytes())?;
        w.add(UnitRecord {
            key: key.into(),
            pipeline: "p".into(),
            step: step.into(),
            meta: serde_json::Value::Null,
            objects: BTreeMap::from([("rows".to_string(), obj)]),
            created_unix_ms: now_unix_ms(),
        });
    }
    w.commit()?;
    let report = store.gc(&GcOptions::default())?;
    assert_eq!(
        keys(&store)?,
        vec![newest.clone()],
        "{older} goes, {newest} stays"
    );
    assert_eq!((report.units, report.units_kept), (1, 1));
    let left: Vec<String> = store.unit_entries()?.into_iter().map(|u| u.key).collect();
    assert_eq!(left, ["progress"]);
    Ok(())
}
