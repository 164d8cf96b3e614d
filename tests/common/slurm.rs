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

/// `sinfo -h -o %P` lists the `debug` partition within 20 s.
fn probe() -> Result<(), String> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new("sinfo")
        .args(["-h", "-o", "%P"])
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
    let listed = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "no Slurm cluster: sinfo failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if !listed
        .lines()
        .any(|p| p.trim().trim_end_matches('*') == SLURM_PARTITION)
    {
        return Err(format!(
            "the Slurm cluster has no partition {SLURM_PARTITION:?} (sinfo lists: {})",
            listed.split_whitespace().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}
