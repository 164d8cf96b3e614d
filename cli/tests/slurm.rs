//! `stepgraph validate` with steps on Slurm: the client commands must be on PATH and the
//! partition known to `sinfo` (the partition checks need the local cluster of
//! `.ci/slurm-up.sh`: they fail under `CI=true` without it and skip elsewhere).

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::{command, slurm_cluster, write_file, Out, SLURM_PARTITION};

/// A spec whose steps `first` and `second` run on compute `hpc` (`partition`, when given), and
/// `third` locally.
fn spec(dir: &std::path::Path, partition: Option<&str>) {
    let hpc = match partition {
        Some(p) => format!(r#"{{"type": "slurm", "partition": "{p}"}}"#),
        None => r#"{"type": "slurm"}"#.to_string(),
    };
    write_file(
        dir,
        "pipeline.json",
        &format!(
            r#"{{"name": "on-slurm", "compute": {{"hpc": {hpc}}},
              "steps": [
                {{"name": "first", "type": "command", "command": ["true"], "compute": "hpc"}},
                {{"name": "second", "type": "command", "command": ["true"], "compute": "hpc",
                  "run_after": ["first"]}},
                {{"name": "third", "type": "command", "command": ["true"]}}]}}"#
        ),
    );
}

#[test]
fn validate_says_when_slurm_s_commands_are_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    spec(dir.path(), Some(SLURM_PARTITION));
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = Out(command(dir.path(), &["validate", "pipeline.json"])
        .env("PATH", &empty)
        .output()
        .expect("run stepgraph"));
    let err = out.fails(2);
    assert!(
        err.contains(
            r#"error: pipeline.json: steps "first", "second" run on Slurm, but sbatch, srun, squeue, scancel, sinfo, scontrol are not found on PATH"#
        ),
        "{err}"
    );
}

#[test]
fn validate_checks_the_partition_with_sinfo() {
    if !slurm_cluster() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    spec(dir.path(), Some("no-such-partition"));
    let err = Out(command(dir.path(), &["validate", "pipeline.json"])
        .output()
        .expect("run stepgraph"))
    .fails(2);
    assert!(
        err.contains(&format!(
            r#"error: pipeline.json: compute "hpc" (used by steps "first", "second"): partition "no-such-partition" is not known to sinfo (partitions: {SLURM_PARTITION} (default)"#
        )),
        "{err}"
    );
    for partition in [Some(SLURM_PARTITION), None] {
        spec(dir.path(), partition);
        let out = Out(command(dir.path(), &["validate", "pipeline.json"])
            .output()
            .expect("run stepgraph"))
        .ok();
        assert!(
            out.stdout()
                .contains(r#"ok: pipeline "on-slurm" with 3 steps"#),
            "{}",
            out.stdout()
        );
    }
}

#[test]
fn a_step_naming_an_undeclared_compute_is_a_spec_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "pipeline.json",
        r#"{"name": "on-slurm", "compute": {"hpc": {"type": "slurm"}},
            "steps": [{"name": "first", "type": "command", "command": ["true"], "compute": "gpu"}]}"#,
    );
    for cmd in ["validate", "run"] {
        let err = Out(command(dir.path(), &[cmd, "pipeline.json"])
            .output()
            .expect("run stepgraph"))
        .fails(2);
        assert!(
            err.contains(r#"pipeline.json: step "first": field "compute": unknown compute "gpu" (declared compute: hpc; "local" is this machine)"#),
            "{cmd}: {err}"
        );
    }
}
