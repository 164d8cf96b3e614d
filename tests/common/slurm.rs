//! Whether the Slurm tests can run: a cluster whose `sinfo` answers with the `debug`
//! partition (`.ci/slurm-up.sh` starts one on this host). Shared by the end-to-end tests
//! (`tests/common`) and the CLI tests (`cli/tests/common`), which include this file beside
//! `skip.rs`.

/// The partition the Slurm tests submit to (`.ci/slurm-up.sh`'s).
pub(crate) const SLURM_PARTITION: &str = "debug";

/// Whether a Slurm cluster with the `debug` partition answers. When it does not: under
/// `CI=true`, panic with the reason (CI runs `.ci/slurm-up.sh` first, so the tests fail rather
/// than skip); elsewhere, say `skipped: slurm: …` once and return false.
pub(crate) fn slurm_cluster() -> bool {
    static ANSWER: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    match ANSWER.get_or_init(probe) {
        Ok(()) => true,
        Err(why) if super::skip::in_ci() => panic!(
            "the Slurm tests need a cluster under CI=true: {why} (run `bash .ci/slurm-up.sh` as root)"
        ),
        Err(why) => {
            super::skip::skipped(
                "slurm",
                &format!("{why}; `bash .ci/slurm-up.sh` (as root) starts a two-node cluster"),
            );
            false
        }
    }
}

/// `sinfo` answers within 20 s, listing the `debug` partition with a node that can run jobs
/// (idle, mixed, allocated or completing: a cluster whose nodes are all down would keep the
/// tests' jobs pending forever).
fn probe() -> Result<(), String> {
    let listed = sinfo(&["-h", "-N", "-o", "%P %t"])?;
    let states: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(p, _)| p.trim_end_matches('*') == SLURM_PARTITION)
        .map(|(_, state)| state.trim())
        .collect();
    if states.is_empty() {
        return Err(format!(
            "the Slurm cluster has no partition {SLURM_PARTITION:?} (sinfo -N lists: {})",
            listed.trim().replace('\n', ", ")
        ));
    }
    let usable = |s: &&str| {
        ["idle", "mix", "alloc", "comp"]
            .iter()
            .any(|u| s.trim_end_matches(['*', '~', '#', '!', '%', '$', '@', '^', '-']) == *u)
    };
    if !states.iter().any(usable) {
        return Err(format!(
            "no node of partition {SLURM_PARTITION:?} can run jobs (states: {})",
            states.join(", ")
        ));
    }
    Ok(())
}

/// What `sinfo ARGS` prints, if it answers within 20 s.
fn sinfo(args: &[&str]) -> Result<String, String> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new("sinfo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("no Slurm cluster: cannot run sinfo: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no Slurm cluster: sinfo did not answer within 20 s".into());
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("no Slurm cluster: sinfo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "no Slurm cluster: sinfo failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
