// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use super::*;

#[test]
fn second_open_is_locked_and_names_the_store() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let _a = Store::open(dir.path(), OpenOptions::default())?;
    match Store::open(dir.path(), OpenOptions::default()) {
        Err(StoreError::Locked { path, pid, .. }) => {
            assert_eq!(path, dir.path().canonicalize()?);
            assert_eq!(pid, std::process::id().to_string());
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_lock_this_process_is_letting_go_of_is_waited_for() -> Result<(), Box<dyn std::error::Error>> {
    // A store being dropped by another thread (or a lock descriptor inherited by a child
    // between fork and exec) must not make this process's next open fail as "in use".
    let dir = tempfile::tempdir()?;
    let a = Store::open(dir.path(), OpenOptions::default())?;
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(a);
    });
    let b = Store::open(dir.path(), OpenOptions::default());
    dropper.join().map_err(|_| "dropper panicked")?;
    assert!(b.is_ok(), "{:?}", b.err());
    Ok(())
}

#[test]
fn reopen_after_drop_keeps_records() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        let s = Store::open(dir.path(), OpenOptions::default())?;
        s.latest_put(
            "p",
            "s",
            &LatestRecord {
                key: "k".into(),
                fingerprint: Default::default(),
                run_id: "r".into(),
            },
        )?;
        s.flush()?;
    }
    let s = Store::open(dir.path(), OpenOptions::default())?;
    assert_eq!(
        s.latest_get("p", "s")?.map(|r| r.key),
        Some("k".to_string())
    );
    Ok(())
}

#[test]
fn a_failed_step_dir_loses_outputs_and_work_but_keeps_logs(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let s = Store::open(dir.path(), OpenOptions::default())?;
    let step = s.run_dir("r1").join("big");
    for sub in ["outputs/o", "work", "logs"] {
        std::fs::create_dir_all(step.join(sub))?;
        std::fs::write(step.join(sub).join("f"), vec![1u8; 10_000])?;
    }
    assert!(s.discard_failed_step_dir("r1", "big") >= 20_000);
    assert!(!step.join("outputs").exists() && !step.join("work").exists());
    assert!(step.join("logs/f").is_file());
    // Never outside the run folder.
    assert_eq!(s.discard_failed_step_dir("../x", "big"), 0);
    assert_eq!(s.discard_failed_step_dir("r1", ".."), 0);
    // With room on the disk, a failed step's folders are kept for a look.
    std::fs::create_dir_all(step.join("outputs"))?;
    if free_bytes(dir.path()).is_some_and(|f| f > RUN_MARGIN as u64 * 2) {
        assert_eq!(s.free_after_failure("r1", "big"), 0);
        assert!(step.join("outputs").exists());
    }
    Ok(())
}

#[test]
fn corrupt_db_is_moved_aside_not_a_panic() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    drop(Store::open(dir.path(), OpenOptions::default())?);
    // Scribble over every file of the db.
    for e in walkdir::WalkDir::new(dir.path().join("db")) {
        let e = e?;
        if e.file_type().is_file() {
            std::fs::write(e.path(), b"garbage garbage garbage garbage")?;
        }
    }
    let s = Store::open(dir.path(), OpenOptions::default())?;
    assert!(s.cache_entries()?.is_empty());
    Ok(())
}
